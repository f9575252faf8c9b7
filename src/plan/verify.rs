//! `passthru verify`: after the reboot, does the running system match what `enable`
//! set up? Each item says what did not take effect and the likely cause.

use super::enable::{cmdline_edit, Enabled};
use crate::check::{Finding, Status};
use crate::host::facts::HostFacts;
use crate::host::pci::PciDevice;

/// One verified fact, as a [`Finding`]: its id says what was verified (`iommu=pt is on
/// the kernel command line`), its status is `ok` or `fail`, its summary what was
/// found, and its remedy the likely cause when the fact does not hold.
fn item(what: String, ok: bool, found: String, cause: Option<String>) -> Finding {
    let status = if ok { Status::Ok } else { Status::Fail };
    let f = Finding::new(what, status, found);
    match cause {
        Some(c) => f.remedy(c),
        None => f,
    }
}

/// Compares the running system with `enabled`.
pub fn verify(enabled: &Enabled, facts: &HostFacts, devices: &[PciDevice]) -> Vec<Finding> {
    let mut items = Vec::new();
    let groups = facts
        .groups
        .as_ref()
        .map(std::collections::BTreeMap::len)
        .unwrap_or(0);
    items.push(item(
        "the IOMMU is on".into(),
        groups > 0,
        format!("{groups} IOMMU groups"),
        (groups == 0).then(|| {
            "the kernel did not enable the IOMMU: check the kernel arguments below and the \
             firmware setup (VT-d / AMD-Vi); `passthru check` says more"
                .into()
        }),
    ));
    let cmdline = facts
        .cmdline
        .as_ref()
        .map(|c| c.raw.clone())
        .unwrap_or_default();
    for arg in &enabled.kernel_args {
        let ok = cmdline_edit::has_arg(&cmdline, arg);
        items.push(item(
            format!("`{arg}` is on the kernel command line"),
            ok,
            format!("/proc/cmdline: {cmdline}"),
            (!ok).then(|| {
                "the bootloader configuration was not regenerated, or this boot used another \
                 entry (a recovery or fallback entry does not carry it)"
                    .into()
            }),
        ));
    }
    for a in &enabled.devices {
        let d = devices.iter().find(|d| d.address == *a);
        let driver = d.and_then(|d| d.driver.clone());
        let ok = driver.as_deref() == Some(crate::plan::bind::VFIO_PCI);
        let by_address = enabled.by_address.contains(a);
        let cause = match (d, driver.as_deref()) {
            (None, _) => Some("the device is gone: was it moved to another slot? run `passthru enable` again with its new address".to_string()),
            (Some(_), Some(crate::plan::bind::VFIO_PCI)) => None,
            (Some(_), Some(other)) if by_address => Some(format!(
                "{other} took it before passthru's hook could claim it by address: the hook runs when \
                 modprobe loads {other}'s module; an initramfs rebuilt without /{} and /{} (or one \
                 whose generator loads modules itself, like booster's) loads {other} without it"
                , super::enable::MODPROBE_FILE, super::enable::OVERRIDE_SCRIPT
            )),
            (Some(_), None) if by_address => Some(format!(
                "no driver took it: passthru's hook claimed it, but vfio-pci did not bind it (is \
                 /{} executable, and did vfio-pci load? `passthru check` shows whether the kernel \
                 has it)",
                super::enable::OVERRIDE_SCRIPT
            )),
            (Some(_), Some(other)) => Some(format!(
                "{other} took it before vfio-pci: the initramfs was not rebuilt with the softdep, or {other} is built into the kernel (then vfio-pci must be built in too, or bind it with `passthru bind`)"
            )),
            (Some(_), None) => Some("no driver took it: vfio-pci did not load at boot (is it in the initramfs? `passthru check` shows whether the kernel has it)".to_string()),
        };
        items.push(item(
            format!("{a} is bound to vfio-pci"),
            ok,
            format!("driver: {}", driver.as_deref().unwrap_or("none")),
            cause,
        ));
    }
    items
}
