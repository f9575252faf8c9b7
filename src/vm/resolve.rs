//! A spec resolved against one host: its devices found (by address or identity) and
//! completed to whole IOMMU groups, vCPUs pinned, firmware located, hugepages planned.
//! The result, a [`Resolution`], feeds the renderers, `vm check`, `vm run` and
//! `vm define` alike, so they all act on the same decisions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hostdisk;
use super::hugepages::{self, HugepageError, HugepageFacts, HugepagePlan};
use super::identity::{self, IdentityError};
use super::pinning::{self, CpuRequest, PinningError};
use super::render::{Accel, Ovmf, VmPlan};
use super::spec::{Cpus, VmSpec};
use crate::host::cpu::{CpuInfo, CpuTopology, CpuVendor};
use crate::host::pci::device::PciError;
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::root::{HostError, HostRoot};
use crate::host::usage::is_host_side_bridge;

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

/// How to resolve.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// KVM or TCG.
    pub accel: Accel,
    /// The VM's own directory (see [`super::store::state_dir`]).
    pub state_dir: PathBuf,
    /// Block devices the host uses (mounted, swap, held by device mapper) may be
    /// the VM's disks (`--allow-disk-in-use`).
    pub allow_host_disks: bool,
}

/// A spec resolved on a host.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// What the renderers take.
    pub plan: VmPlan,
    /// The hugepage plan, when the spec asks for hugepages.
    #[serde(serialize_with = "ser_hugepages")]
    pub hugepages: Option<Result<HugepagePlan, HugepageError>>,
    /// Devices that moved since the spec was written, and other remarks, in words.
    pub notes: Vec<String>,
    /// What the installed QEMU lacks for this VM, with the remedy (see
    /// [`super::check::qemu_blockers`]); filled by the commands that start the VM on
    /// this host (`vm run`, `vm define`, `vm start`), empty otherwise.
    #[serde(skip)]
    pub qemu_blockers: Vec<String>,
    /// What the host itself has that the VM cannot take: more memory than the host
    /// has, disks that are no disks or that the host uses (see [`super::hostdisk`]).
    #[serde(skip)]
    pub host_blockers: Vec<String>,
}

fn ser_hugepages<S: serde::Serializer>(
    h: &Option<Result<HugepagePlan, HugepageError>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match h {
        None => s.serialize_none(),
        Some(Ok(p)) => s.serialize_some(p),
        Some(Err(e)) => s.serialize_some(&serde_json::json!({ "error": e.to_string() })),
    }
}

impl Resolution {
    /// What stops this VM from starting on this host, each with its remedy.
    pub fn blockers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let spec = &self.plan.spec;
        if spec.firmware.uefi && self.plan.ovmf.is_none() {
            out.push(format!(
                "no UEFI firmware{} found: install OVMF (Debian: ovmf, Fedora: edk2-ovmf, Arch: edk2-ovmf)",
                if spec.firmware.secure_boot { " with Secure Boot" } else { "" }
            ));
        }
        if let Some(Err(e)) = &self.hugepages {
            out.push(e.to_string());
        }
        out.extend(self.host_blockers.iter().cloned());
        out.extend(self.qemu_blockers.iter().cloned());
        out
    }
}

/// Why a spec cannot be resolved on this host.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A device of the spec is not on this host.
    #[error("VM {vm}: {source}")]
    Device {
        /// The VM.
        vm: String,
        /// Why.
        source: IdentityError,
    },
    /// The PCI devices could not be read.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// The CPU topology could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The vCPUs cannot be placed.
    #[error(transparent)]
    Pinning(#[from] PinningError),
    /// `cpus` is not a CPU list.
    #[error("cpus: {0}")]
    CpuList(String),
}

/// The devices found (in the spec's order), all devices passed (whole groups), and
/// notes.
type Expanded = (Vec<PciAddress>, Vec<PciAddress>, Vec<String>);

/// The spec's devices with the rest of their IOMMU groups (bridges excluded), or of
/// their slots when the IOMMU is off; the main device first in `found`.
fn expand(spec: &VmSpec, devices: &[PciDevice]) -> Result<Expanded, ResolveError> {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for want in &spec.devices {
        let f = identity::find(devices, want).map_err(|source| ResolveError::Device {
            vm: spec.name.clone(),
            source,
        })?;
        if let Some(old) = f.moved_from {
            notes.push(format!(
                "{} moved from {old} to {} (found by its IDs)",
                want.id.map_or_else(String::new, |i| i.to_string()),
                f.address
            ));
        }
        found.push(f.address);
    }
    let mut out = Vec::new();
    for a in &found {
        let Some(d) = devices.iter().find(|d| d.address == *a) else {
            continue;
        };
        for other in devices.iter().filter(|o| !is_host_side_bridge(o.class)) {
            let together = match d.iommu_group {
                Some(g) => other.iommu_group == Some(g),
                None => other.address.same_slot(*a),
            };
            if together {
                out.push(other.address);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok((found, out, notes))
}

/// Resolves `spec` on `root`.
pub fn resolve(
    root: &HostRoot,
    spec: VmSpec,
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let devices = crate::host::pci::device::read_all(root)?;
    let (found, passed, mut notes) = expand(&spec, &devices)?;
    let mut roms = BTreeMap::new();
    for (want, at) in spec.devices.iter().zip(&found) {
        if let Some(rom) = &want.rom {
            roms.insert(*at, rom.clone());
        }
    }
    let node = found
        .first()
        .and_then(|a| devices.iter().find(|d| d.address == *a))
        .and_then(|d| d.numa_node)
        .and_then(|n| u32::try_from(n).ok());
    let topology = CpuTopology::read(root)?;
    let request = match &spec.cpus {
        Cpus::Count(n) => CpuRequest::Count(*n),
        Cpus::Host(list) => CpuRequest::Host(
            crate::host::cpu::parse_cpu_list(list)
                .map_err(|e| ResolveError::CpuList(e.to_string()))?,
        ),
    };
    let pinning = pinning::plan(&topology, &request, node)?;
    let amd = CpuInfo::read(root).is_ok_and(|c| c.vendor() == CpuVendor::Amd);
    let ovmf = if spec.firmware.uefi {
        find_ovmf(root, spec.firmware.secure_boot)
    } else {
        None
    };
    let hugepages = spec
        .hugepages
        .then(|| hugepages::plan(&HugepageFacts::read(root), spec.memory_mib()));
    let hugepage_kib = match &hugepages {
        None => None,
        Some(Ok(p)) => {
            notes.push(p.reason.clone());
            Some(p.size_kib)
        }
        // Rendered with 2 MiB pages; `vm check` and `vm run` report the problem.
        Some(Err(_)) => Some(2048),
    };
    let mut host_blockers: Vec<String> =
        hostdisk::memory_blocker(root, &spec).into_iter().collect();
    host_blockers.extend(hostdisk::disk_blockers(
        root,
        &spec,
        options.allow_host_disks,
    ));
    Ok(Resolution {
        host_blockers,
        plan: VmPlan {
            spec,
            pinning,
            devices: passed,
            roms,
            amd,
            accel: options.accel,
            ovmf,
            hugepage_kib,
            state_dir: options.state_dir.clone(),
            boot_iso_first: true,
        },
        hugepages,
        notes,
        qemu_blockers: Vec::new(),
    })
}
