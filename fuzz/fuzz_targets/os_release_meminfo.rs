//! `/etc/os-release` and `/proc/meminfo`, as `check` and the hugepage planner read
//! them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::facts::{Distro, Hugepages};
use passthru::vm::hugepages::parse_meminfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = Distro::parse(text);
    let _ = (d.rhel_like(), d.family());
    let h = Hugepages::parse_meminfo(text);
    assert!(h.evidence.len() <= text.lines().count());
    if let Some(kib) = parse_meminfo(text, "MemAvailable") {
        let _ = kib;
    }
    if h.size_kib > 0 {
        assert!(parse_meminfo(text, "Hugepagesize").is_some());
    }
});
