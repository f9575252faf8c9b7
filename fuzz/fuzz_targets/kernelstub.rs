//! kernelstub's `/etc/kernelstub/configuration` (JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::plan::enable::kernelstub_options;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(options) = kernelstub_options(text) {
        // The options come from the JSON's strings: never more text than it held
        // (plus one separating space per item).
        let items = options.split(' ').count();
        assert!(
            options.len() <= text.len() + items,
            "{options:?} from {text:?}"
        );
    }
});
