//! `modules.builtin` and `modules.dep` (the input's first NUL byte separates them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::kernel::modules::{module_name_from_path, normalize, ModuleIndex};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (builtin, dep) = text.split_once('\0').unwrap_or((text, ""));
    let index = ModuleIndex::parse(builtin, dep);
    assert!(index.builtin.len() <= builtin.lines().count());
    assert!(index.loadable.len() <= dep.lines().count());
    for name in index.builtin.iter().chain(index.loadable.keys()) {
        assert!(
            !name.is_empty() && !name.contains('-'),
            "{name:?} is not normalized"
        );
        assert_eq!(normalize(name), *name);
        let _ = index.availability(name);
    }
    for line in builtin.lines() {
        if let Some(name) = module_name_from_path(line) {
            assert!(name.len() <= line.len());
        }
    }
});
