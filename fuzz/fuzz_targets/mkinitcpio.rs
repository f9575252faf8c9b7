//! `/etc/mkinitcpio.conf`: `enable`'s edit of the `MODULES=(…)` array (at the front,
//! as VFIO must load before the graphics drivers) and of `HOOKS=(…)` (at the back)
//! lists every item and changes nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::enable::edit_bash_array;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (name, items, front) in [
        (
            "MODULES",
            &["vfio_pci", "vfio", "vfio_iommu_type1"][..],
            true,
        ),
        ("HOOKS", &["modconf"][..], false),
    ] {
        let once = edit_bash_array(text, name, items, front);
        let prefix = format!("{name}=(");
        let line = once
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(&prefix))
            .expect("an assignment");
        for it in items {
            assert!(line.contains(it), "{it} missing from {line:?}");
        }
        assert_eq!(
            edit_bash_array(&once, name, items, front),
            once,
            "not idempotent: {text:?}"
        );
    }
});
