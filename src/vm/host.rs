//! What a VM's spec needs of the host beyond its PCI devices — the CPUs, the UEFI
//! firmware, the hugepage pools, the memory, what the spec's disks are — read once
//! for the spec by [`VmHost::gather`] (through
//! [`crate::host::snapshot::HostSnapshot::gather_for_vm`]), so that
//! [`super::resolve::resolve`] reads nothing itself.

use std::path::Path;
use std::sync::Arc;

use super::hostdisk;
use super::hugepages::HugepageFacts;
use super::plan::Ovmf;
use super::spec::VmSpec;
use crate::host::cpu::{CpuInfo, CpuTopology, CpuVendor};
use crate::host::root::{HostError, HostRoot};

/// UEFI code and variable-store templates, by distribution: (code, vars, Secure Boot).
const OVMF_PAIRS: &[(&str, &str, bool)] = &[
    (
        "usr/share/OVMF/OVMF_CODE_4M.ms.fd",
        "usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        true,
    ),
    (
        "usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        true,
    ),
    (
        "usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
        true,
    ),
    (
        "usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd",
        "usr/share/edk2/x64/OVMF_VARS.4m.fd",
        true,
    ),
    (
        "usr/share/OVMF/OVMF_CODE_4M.fd",
        "usr/share/OVMF/OVMF_VARS_4M.fd",
        false,
    ),
    (
        "usr/share/OVMF/OVMF_CODE.fd",
        "usr/share/OVMF/OVMF_VARS.fd",
        false,
    ),
    (
        "usr/share/edk2/ovmf/OVMF_CODE.fd",
        "usr/share/edk2/ovmf/OVMF_VARS.fd",
        false,
    ),
    (
        "usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "usr/share/edk2/x64/OVMF_VARS.4m.fd",
        false,
    ),
];

/// The UEFI firmware on `root` (Debian's `ovmf`, Fedora's and Arch's `edk2-ovmf`).
pub fn find_ovmf(root: &HostRoot, secure_boot: bool) -> Option<Ovmf> {
    OVMF_PAIRS
        .iter()
        .filter(|(_, _, sb)| *sb == secure_boot)
        .find(|(code, vars, _)| root.exists(code) && root.exists(vars))
        .map(|(code, vars, _)| Ovmf {
            code: Path::new("/").join(code),
            vars_template: Path::new("/").join(vars),
        })
}

/// What a VM's spec needs of the host beyond its PCI devices, read by
/// [`VmHost::gather`] (through
/// [`crate::host::snapshot::HostSnapshot::gather_for_vm`]) for that spec.
#[derive(Debug, Clone)]
pub struct VmHost {
    /// The CPU topology the vCPUs are pinned on, or why it could not be read.
    pub topology: Result<CpuTopology, Arc<HostError>>,
    /// The host's CPU is AMD's (`/proc/cpuinfo`).
    pub amd: bool,
    /// The UEFI firmware for the spec's Secure Boot setting, when the spec boots UEFI
    /// and the host has it.
    pub ovmf: Option<Ovmf>,
    /// The hugepage pools and the memory available.
    pub hugepages: HugepageFacts,
    /// `MemTotal` in MiB.
    pub mem_total_mib: Option<u64>,
    /// What is wrong with the spec's disks (see [`hostdisk::disk_problems`]).
    pub disks: Vec<hostdisk::DiskProblem>,
}

impl Default for VmHost {
    /// A host of which nothing is known: no CPU, no firmware, no hugepages.
    fn default() -> Self {
        Self {
            topology: Ok(CpuTopology::default()),
            amd: false,
            ovmf: None,
            hugepages: HugepageFacts::default(),
            mem_total_mib: None,
            disks: Vec::new(),
        }
    }
}

impl VmHost {
    /// Reads what `spec` needs of `root`.
    pub fn gather(root: &HostRoot, spec: &VmSpec) -> Self {
        Self {
            topology: CpuTopology::read(root).map_err(Arc::new),
            amd: CpuInfo::read(root).is_ok_and(|c| c.vendor() == CpuVendor::Amd),
            ovmf: spec
                .firmware
                .uefi
                .then(|| find_ovmf(root, spec.firmware.secure_boot))
                .flatten(),
            hugepages: HugepageFacts::read(root),
            mem_total_mib: hostdisk::mem_total_mib(root),
            disks: hostdisk::disk_problems(root, spec),
        }
    }
}
