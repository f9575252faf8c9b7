//! A systemd-boot loader entry (`/boot/loader/entries/*.conf`, kernelstub's and
//! grubby's BLS entries): `enable`'s edit of its `options` line adds every argument,
//! and changes nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::enable::cmdline_edit::has_arg;
use passthru::enable::edit_loader_entry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let add = [
        "amd_iommu=on".to_string(),
        "vfio-pci.ids=1002:73bf".to_string(),
    ];
    let remove = ["amd_iommu=off".to_string()];
    let once = edit_loader_entry(text, &add, &remove);
    let options = once
        .lines()
        .find_map(|l| {
            l.strip_prefix("options")
                .filter(|r| r.starts_with([' ', '\t']))
        })
        .expect("an options line");
    for a in &add {
        assert!(has_arg(options, a), "{a} missing from {options:?}");
    }
    assert!(!has_arg(options, &remove[0]));
    assert_eq!(
        edit_loader_entry(&once, &add, &remove),
        once,
        "not idempotent: {text:?}"
    );
});
