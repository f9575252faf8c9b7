//! Devices the host itself depends on: the controller of the disk that holds `/`,
//! and the network card carrying the default route. Giving either to a VM takes it
//! away from the host, so `list` marks them and `bind` refuses them.
//!
//! The root filesystem is found in `proc/self/mountinfo` (the mount at `/`), its
//! block device through `sys/dev/block/<major>:<minor>` (or by name under
//! `sys/class/block` for filesystems such as btrfs that report an anonymous device
//! number), stacked devices (dm-crypt, LVM, md RAID) through their `slaves/`, and the
//! PCI controller from the real sysfs path of the underlying disk. The default route
//! comes from `proc/net/route` (destination 0.0.0.0/0) and `proc/net/ipv6_route`
//! (::/0), and the interface's `device` link names the NIC.

use std::path::PathBuf;

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};
use crate::pci::address::PciAddress;

/// A PCI controller that the root filesystem lives on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootDiskController {
    /// The controller.
    pub address: PciAddress,
    /// The block device on it that holds `/` (or a part of it), e.g. `nvme0n1`.
    pub block_device: String,
    /// The mountinfo line for `/`, for evidence.
    pub evidence: String,
    /// The file it was read from (root-relative).
    pub source: PathBuf,
}

/// A network card carrying a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteNic {
    /// The NIC.
    pub address: PciAddress,
    /// The interface name, e.g. `enp5s0`.
    pub interface: String,
    /// The route line, for evidence.
    pub evidence: String,
    /// The file it was read from (root-relative).
    pub source: PathBuf,
}

/// The PCI controllers holding the root filesystem (several for RAID / LVM over
/// several disks; none for a network or virtual root such as 9p).
pub fn root_disk_controllers(_root: &HostRoot) -> Result<Vec<RootDiskController>, HostError> {
    unimplemented!()
}

/// The PCI NICs that carry a default route (IPv4 or IPv6).
pub fn default_route_nics(_root: &HostRoot) -> Result<Vec<RouteNic>, HostError> {
    unimplemented!()
}
