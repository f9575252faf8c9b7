//! `/etc/default/grub`: the values read from it, and `enable`'s edit of
//! `GRUB_CMDLINE_LINUX_DEFAULT`, which must add every argument, drop the
//! contradicting ones, and change nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::boot::shell_var;
use passthru::plan::enable::cmdline_edit::has_arg;
use passthru::plan::enable::edit_grub_default;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for key in [
        "GRUB_CMDLINE_LINUX",
        "GRUB_CMDLINE_LINUX_DEFAULT",
        "GRUB_DEFAULT",
    ] {
        if let Some(v) = shell_var(text, key) {
            assert!(v.len() <= text.len());
        }
    }
    let add = [
        "intel_iommu=on".to_string(),
        "iommu=pt".to_string(),
        "vfio-pci.ids=10de:2484,10de:228b".to_string(),
    ];
    let remove = ["intel_iommu=off".to_string(), "iommu=off".to_string()];
    // Refused (a value passthru cannot know, a file that is more than assignments):
    // the step is left BY HAND.
    let Ok(once) = edit_grub_default(text, &add, &remove) else {
        return;
    };
    let value = shell_var(&once, "GRUB_CMDLINE_LINUX_DEFAULT").unwrap_or_default();
    for a in &add {
        assert!(has_arg(&value, a), "{a} missing from {value:?} in {once:?}");
    }
    for r in &remove {
        assert!(!has_arg(&value, r), "{r} kept in {value:?}");
    }
    let twice = edit_grub_default(&once, &add, &remove).expect("its own output is editable");
    assert_eq!(twice, once, "a second edit changed {text:?}");
});
