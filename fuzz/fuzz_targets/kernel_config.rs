//! The kernel configuration (`/boot/config-*`, `/proc/config.gz` text): parse →
//! render → parse gives the same options.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::kernel::config::{ConfigValue, KernelConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = KernelConfig::parse(text, "/boot/config");
    assert!(config.options.len() <= text.lines().count());
    let mut rendered = String::new();
    for (name, value) in &config.options {
        assert!(text.contains(name.as_str()), "{name} is not in the text");
        let line = match value {
            ConfigValue::Builtin => format!("{name}=y"),
            ConfigValue::Module => format!("{name}=m"),
            ConfigValue::NotSet => format!("# {name} is not set"),
            ConfigValue::Value(v) => {
                format!(
                    "{name}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                )
            }
        };
        rendered.push_str(&line);
        rendered.push('\n');
    }
    let again = KernelConfig::parse(&rendered, "/boot/config");
    assert_eq!(
        again.options, config.options,
        "{text:?} rendered as {rendered:?}"
    );
    for name in config.options.keys() {
        let _ = config.get(name);
    }
});
