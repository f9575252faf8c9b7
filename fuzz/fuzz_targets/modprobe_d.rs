//! modprobe.d files and `modules.softdep`: the `install` and `softdep` lines that
//! `enable` must not collide with.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use passthru::plan::enable::by_address::conflicts_in;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut found = BTreeMap::new();
    conflicts_in(text, "etc/modprobe.d/x.conf", &mut found);
    assert!(found.len() <= text.lines().count());
    for (module, conflict) in &found {
        assert!(!module.is_empty() && !module.contains('-') && !module.contains('#'));
        let _ = conflict.explain(module);
    }
});
