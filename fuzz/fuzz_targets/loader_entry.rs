//! A systemd-boot loader entry (`/boot/loader/entries/*.conf`, kernelstub's and
//! grubby's BLS entries): `enable`'s edit of its `options` line adds every argument,
//! and changes nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::plan::enable::cmdline_edit::has_arg;
use passthru::plan::enable::edit_loader_entry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let add = [
        "amd_iommu=on".to_string(),
        "vfio-pci.ids=1002:73bf".to_string(),
    ];
    let remove = ["amd_iommu=off".to_string()];
    let Ok(once) = edit_loader_entry(text, &add, &remove) else {
        return;
    };
    // The boot loader joins every `options` line of an entry.
    let lines: Vec<&str> = once
        .lines()
        .filter_map(|l| {
            l.strip_prefix("options")
                .filter(|r| r.starts_with([' ', '\t']))
        })
        .collect();
    assert!(!lines.is_empty(), "no options line in {once:?}");
    let options = lines.join(" ");
    for a in &add {
        assert!(has_arg(&options, a), "{a} missing from {options:?}");
    }
    for l in &lines {
        assert!(!has_arg(l, &remove[0]), "{} kept in {l:?}", remove[0]);
    }
    assert_eq!(
        edit_loader_entry(&once, &add, &remove).expect("its own output is editable"),
        once,
        "not idempotent: {text:?}"
    );
});
