//! `/proc/cpuinfo`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::cpu::CpuInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let info = CpuInfo::parse(text);
    assert!(info.logical_cpus <= text.lines().count());
    for flag in &info.flags {
        assert!(!flag.is_empty() && info.has_flag(flag));
    }
    let _ = info.vendor();
});
