//! `passthru list`: PCI devices by IOMMU group, with a verdict per group.

use std::collections::BTreeSet;

use clap::ValueEnum;

use super::output::print_json;
use crate::host::pci::device::DeviceKind;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::list::{self, Filter};

/// `list --class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ClassFilter {
    /// Display controllers.
    Gpu,
    /// Audio devices (e.g. a GPU's HDMI audio).
    Audio,
    /// USB controllers.
    Usb,
    /// NVMe controllers.
    Nvme,
    /// Other storage controllers (SATA, SAS, RAID).
    Storage,
    /// Network controllers.
    Net,
}

impl ClassFilter {
    fn kind(self) -> DeviceKind {
        match self {
            Self::Gpu => DeviceKind::Gpu,
            Self::Audio => DeviceKind::Audio,
            Self::Usb => DeviceKind::Usb,
            Self::Nvme => DeviceKind::Nvme,
            Self::Storage => DeviceKind::Storage,
            Self::Net => DeviceKind::Network,
        }
    }
}

/// `passthru list`.
pub(super) fn list(
    json: bool,
    root: &HostRoot,
    gpu: bool,
    class: &[ClassFilter],
    group: Option<u32>,
) -> anyhow::Result<u8> {
    let mut kinds: BTreeSet<DeviceKind> = class.iter().map(|c| c.kind()).collect();
    if gpu {
        kinds.insert(DeviceKind::Gpu);
    }
    let filter = Filter { kinds, group };
    let snapshot = HostSnapshot::gather(root, Needs::LIST)?;
    let report = list::build(&snapshot.devices, &snapshot.names, &snapshot.usage, &filter);
    if let Some(g) = group {
        if report.groups.is_empty() {
            anyhow::bail!("there is no IOMMU group {g} (see `passthru list`)");
        }
    }
    if json {
        print_json(&report)?;
    } else {
        print!("{}", list::render_text(&report));
    }
    Ok(0)
}
