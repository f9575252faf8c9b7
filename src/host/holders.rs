//! Which processes hold a PCI device open.
//!
//! Unbinding a driver waits in the kernel until every user of the device lets go: a
//! display server holding `/dev/dri/card0`, a sound server holding `/dev/snd/pcmC1D3p`,
//! a VM holding `/dev/vfio/14` or a tool that mmapped the device's `resource0`. A
//! `bind`/`unbind` that ignored them would hang; passthru names them instead.
//!
//! Every open file of every process is a symlink in `/proc/<pid>/fd/`. Its target is
//! mapped to a device: DRM and sound nodes through `sys/class/drm/<node>/device` and
//! `sys/class/sound/card<N>/device`, NVIDIA's nodes to every device the `nvidia` driver
//! holds, `/dev/vfio/<group>` to the group's devices, a VFIO device's own node
//! `/dev/vfio/devices/vfio<N>` (kernels 6.6+ built with `CONFIG_VFIO_DEVICE_CDEV`, which a
//! VMM opens through iommufd instead of the group node: QEMU's `-object iommufd`,
//! libvirt's `<driver iommufd='yes'/>`) through `sys/class/vfio-dev/vfio<N>/device`, and
//! sysfs files to the device whose directory they are in.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::host::pci::{PciAddress, PciDevice};
use crate::host::root::HostRoot;

/// A process holding a device open.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Its name (`/proc/<pid>/comm`).
    pub command: String,
    /// The file it holds, e.g. `/dev/dri/card0`.
    pub file: String,
}

/// Processes per device.
pub type Holders = BTreeMap<PciAddress, Vec<Holder>>;

/// The devices a held file belongs to.
fn devices_of(root: &HostRoot, target: &str, devices: &[PciDevice]) -> Vec<PciAddress> {
    let device_link = |class_path: String| {
        root.resolve(class_path)
            .ok()
            .and_then(|p| crate::host::usage::last_pci_address(&p))
            .into_iter()
            .collect::<Vec<_>>()
    };
    if let Some(node) = target.strip_prefix("/dev/dri/") {
        return device_link(format!("sys/class/drm/{node}/device"));
    }
    if let Some(node) = target.strip_prefix("/dev/snd/") {
        // controlC1, pcmC1D3p, hwC1D0, midiC1D0: the card number follows the first 'C'.
        let card: String = node
            .split_once('C')
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        if card.is_empty() {
            return Vec::new();
        }
        return device_link(format!("sys/class/sound/card{card}/device"));
    }
    if target.starts_with("/dev/nvidia") {
        return devices
            .iter()
            .filter(|d| d.driver.as_deref() == Some("nvidia"))
            .map(|d| d.address)
            .collect();
    }
    if let Some(node) = target.strip_prefix("/dev/vfio/devices/") {
        return device_link(format!("sys/class/vfio-dev/{node}/device"));
    }
    if let Some(group) = target.strip_prefix("/dev/vfio/") {
        let Ok(group) = group.parse::<u32>() else {
            return Vec::new();
        };
        return devices
            .iter()
            .filter(|d| d.iommu_group == Some(group))
            .map(|d| d.address)
            .collect();
    }
    if target.starts_with("/sys/") {
        // resource0, config, rom …: the device whose directory holds the file.
        return devices
            .iter()
            .filter(|d| Path::new(target).parent() == Some(d.sysfs_path.as_path()))
            .map(|d| d.address)
            .collect();
    }
    Vec::new()
}

/// Scans `proc/<pid>/fd/*` for files that belong to `devices`. Processes that vanish
/// or cannot be read while scanning are skipped.
pub fn find(root: &HostRoot, devices: &[PciDevice]) -> Holders {
    let mut holders = Holders::new();
    let mut cache: BTreeMap<String, Vec<PciAddress>> = BTreeMap::new();
    let Ok(entries) = root.list_dir("proc") else {
        return holders;
    };
    for pid in entries.iter().filter_map(|e| e.parse::<u32>().ok()) {
        let Ok(fds) = root.list_dir(format!("proc/{pid}/fd")) else {
            continue;
        };
        let mut command: Option<String> = None;
        for fd in fds {
            let Ok(target) = root.read_link(format!("proc/{pid}/fd/{fd}")) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            if !(target.starts_with("/dev/") || target.starts_with("/sys/")) {
                continue;
            }
            let addrs = cache
                .entry(target.clone())
                .or_insert_with(|| devices_of(root, &target, devices))
                .clone();
            if addrs.is_empty() {
                continue;
            }
            let command = command
                .get_or_insert_with(|| {
                    root.read_to_string(format!("proc/{pid}/comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_else(|_| "?".into())
                })
                .clone();
            for a in addrs {
                let list = holders.entry(a).or_default();
                let h = Holder {
                    pid,
                    command: command.clone(),
                    file: target.clone(),
                };
                if !list.contains(&h) {
                    list.push(h);
                }
            }
        }
    }
    holders
}

/// `Xorg (pid 1234) holds /dev/dri/card0; …`.
pub fn describe(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(|h| format!("{} (pid {}) holds {}", h.command, h.pid, h.file))
        .collect::<Vec<_>>()
        .join("; ")
}
