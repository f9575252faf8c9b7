//! What `bind`, `unbind`, `enable` and `disable` take as a device argument: an
//! address, `group:N`, or a name; each kind prints back to text that parses to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::plan::bind::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Target>() {
        Ok(Target::Address(a)) => {
            assert_eq!(a.to_string().parse::<Target>(), Ok(Target::Address(a)));
        }
        Ok(Target::Group(n)) => {
            assert_eq!(format!("group:{n}").parse::<Target>(), Ok(Target::Group(n)));
        }
        Ok(Target::Name(name)) => {
            assert!(!name.is_empty() && name.len() <= text.len());
            assert_eq!(name.trim(), name);
            assert_eq!(name.parse::<Target>(), Ok(Target::Name(name.clone())));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
