//! booster's `/etc/booster.yaml`: `enable`'s edit of `modules_force_load` lists every
//! module once and changes nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::plan::enable::edit_booster_yaml;

const MODULES: [&str; 3] = ["vfio_pci", "vfio", "vfio_iommu_type1"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Refused (a value YAML reads over several lines, a list, escapes): BY HAND.
    let Ok(once) = edit_booster_yaml(text, &MODULES) else {
        return;
    };
    let line = once
        .lines()
        .rev()
        .find(|l| l.starts_with("modules_force_load:"))
        .expect("a modules_force_load line");
    // booster reads `-` and `_` alike: `vfio-pci` already there counts.
    let normal = line.replace('-', "_");
    for m in MODULES {
        assert!(normal.contains(m), "{m} missing from {line:?}");
    }
    assert_eq!(
        edit_booster_yaml(&once, &MODULES).expect("its own output is editable"),
        once,
        "not idempotent: {text:?}"
    );
});
