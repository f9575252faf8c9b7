//! One PCI function, read from its sysfs directory.
//!
//! `/sys/bus/pci/devices/<address>` is a symlink into `/sys/devices/pci<dom>:<bus>/…`;
//! the real path lists every bridge between the root complex and the device, which
//! is how its parent bridges are found. Inside the directory: `vendor`, `device`,
//! `subsystem_vendor`, `subsystem_device`, `class` (0xCCSSPP: class, subclass,
//! programming interface), `revision`, the `driver` and `iommu_group` links,
//! `boot_vga` (display devices only), `reset_method` (kernel 5.15+; older kernels have
//! a `reset` file exactly when some reset method exists) and `numa_node`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};
use crate::pci::address::PciAddress;

/// What kind of device a PCI class code describes, for role hints and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Display controller (class 03): a GPU.
    Gpu,
    /// Audio device (class 04 01 / 04 03), e.g. a GPU's HDMI audio function.
    Audio,
    /// USB controller (class 0c 03).
    Usb,
    /// NVMe controller (class 01 08).
    Nvme,
    /// Other mass storage (SATA, SAS, RAID …, class 01).
    Storage,
    /// Network controller (class 02).
    Network,
    /// PCI bridge or host bridge (class 06).
    Bridge,
    /// Anything else.
    Other,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// `vendor`.
    pub vendor_id: u16,
    /// `device`.
    pub device_id: u16,
    /// `subsystem_vendor`.
    pub subsystem_vendor_id: Option<u16>,
    /// `subsystem_device`.
    pub subsystem_device_id: Option<u16>,
    /// `class`: 24 bits, class << 16 | subclass << 8 | prog-if.
    pub class: u32,
    /// `revision`.
    pub revision: Option<u8>,
    /// The bound driver's name (`driver` link), if any.
    pub driver: Option<String>,
    /// The IOMMU group (`iommu_group` link), if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// `boot_vga`: the firmware's boot display. `None` when the file is absent.
    pub boot_vga: Option<bool>,
    /// `reset_method` split on spaces (`flr`, `pm`, `bus`, …); `None` when the file is
    /// absent (older kernels).
    pub reset_methods: Option<Vec<String>>,
    /// Whether any reset exists: `reset_method` non-empty, or on older kernels the
    /// presence of the `reset` file.
    pub has_reset: bool,
    /// `numa_node` (-1 = none).
    pub numa_node: Option<i32>,
    /// Bridges between the root complex and the device, outermost first.
    pub parents: Vec<PciAddress>,
    /// The device's real directory, relative to the host root.
    pub sysfs_path: PathBuf,
}

/// Why a device could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] HostError),
    /// A file held something that is not what the kernel writes there.
    #[error("{}: unexpected content {content:?}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

impl PciDevice {
    /// The class byte (`class >> 16`).
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// The subclass byte.
    pub fn subclass(&self) -> u8 {
        (self.class >> 8) as u8
    }

    /// Its kind from the class code.
    pub fn kind(&self) -> DeviceKind {
        kind_of_class(self.class)
    }

    /// Whether it is a bridge (PCI-PCI, host, ISA …: class 06).
    pub fn is_bridge(&self) -> bool {
        self.base_class() == 0x06
    }
}

/// The kind of device a 24-bit class code describes.
pub fn kind_of_class(class: u32) -> DeviceKind {
    match ((class >> 16) as u8, (class >> 8) as u8) {
        (0x03, _) => DeviceKind::Gpu,
        (0x04, 0x01 | 0x03) => DeviceKind::Audio,
        (0x0c, 0x03) => DeviceKind::Usb,
        (0x01, 0x08) => DeviceKind::Nvme,
        (0x01, _) => DeviceKind::Storage,
        (0x02, _) => DeviceKind::Network,
        (0x06, _) => DeviceKind::Bridge,
        _ => DeviceKind::Other,
    }
}

/// Reads one device from its real sysfs directory `dir` (an absolute path on the
/// analysing machine); `sysfs_path` is the same directory relative to the host root,
/// from which the parent bridges are taken.
pub fn read_device_dir(
    _address: PciAddress,
    _dir: &Path,
    _sysfs_path: &Path,
) -> Result<PciDevice, PciError> {
    unimplemented!()
}

/// Reads every device in `sys/bus/pci/devices`, sorted by address. An empty or
/// missing directory gives an empty list.
pub fn read_all(_root: &HostRoot) -> Result<Vec<PciDevice>, PciError> {
    unimplemented!()
}
