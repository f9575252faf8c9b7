//! What QEMU prints when `vm check` asks it: `--version`, `-device help`,
//! `-spice help`, `-tpmdev help`, `-netdev help` and its module errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::vm::qemu::{
    parse_module_errors, parse_netdev_help, parse_spice_help, parse_tpmdev_help, QemuCaps,
    QemuVersion,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(v) = QemuVersion::parse(text) {
        let shown = format!("QEMU emulator version {v}");
        assert_eq!(QemuVersion::parse(&shown).map(|w| w.number), Some(v.number));
        let _ = v.major_minor();
    }
    let caps = QemuCaps::parse_device_help(text);
    for name in &caps.devices {
        assert!(!name.contains('"') && text.contains(name.as_str()));
    }
    let (out, err) = text.split_once('\0').unwrap_or((text, text));
    let _ = parse_spice_help(out, err);
    for set in [parse_tpmdev_help(out), parse_netdev_help(out)]
        .into_iter()
        .flatten()
    {
        assert!(set.len() <= out.lines().count());
    }
    for e in parse_module_errors(err) {
        assert!(e.starts_with("failed to open module:") && err.contains(e.as_str()));
    }
});
