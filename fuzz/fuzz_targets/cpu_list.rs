//! The kernel's CPU lists (`0-3,8,10-11`) that the topology files in
//! `/sys/devices/system/cpu` (`thread_siblings_list`, `shared_cpu_list`, a NUMA
//! node's `cpulist`) hold: parse → format → parse gives the same CPUs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::cpu::{format_cpu_list, parse_cpu_list};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cpus) = parse_cpu_list(text) else {
        return;
    };
    assert!(
        cpus.windows(2).all(|w| w[0] < w[1]),
        "not sorted and unique"
    );
    let formatted = format_cpu_list(&cpus);
    assert!(
        formatted.len() <= text.trim().len(),
        "{formatted:?} from {text:?}"
    );
    assert_eq!(
        parse_cpu_list(&formatted).ok(),
        Some(cpus),
        "{text:?} as {formatted:?}"
    );
});
