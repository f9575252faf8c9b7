//! A spec resolved against one host: its devices found (by address or identity) and
//! completed to whole IOMMU groups, vCPUs pinned, firmware located, hugepages planned.
//! The result, a [`Resolution`], feeds the renderers, `vm run` and `vm define`, and
//! `vm check` judges the same [`Decisions`], so they all act on the same choices.
//!
//! Resolving reads nothing: it plans from a [`HostSnapshot`] gathered for the spec
//! ([`HostSnapshot::gather_for_vm`], which reads the [`VmHost`] part: firmware
//! files, hugepage pools, memory, the spec's disks).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::hostdisk;
use super::hugepages::{self, HugepageError, HugepagePlan};
use super::identity::{self, IdentityError};
use super::pinning::{self, CpuRequest, PinningError, PinningPlan};
use super::plan::{Accel, Ovmf, VmPlan};
use super::spec::{Cpus, VmSpec};
use crate::host::pci::device::PciError;
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::root::HostError;
use crate::host::snapshot::{HostSnapshot, NotGathered};

pub use super::host::{find_ovmf, VmHost};
use crate::host::usage::is_host_side_bridge;

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
    Topology(Arc<HostError>),
    /// The snapshot lacks a part resolving needs.
    #[error(transparent)]
    NotGathered(#[from] NotGathered),
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

/// The decisions a resolution makes beyond the devices: the vCPUs' pinning (or why
/// there is none), the hugepages, the firmware and what the host itself stands
/// against. [`resolve`] builds its [`Resolution`] from them, and `vm check` judges
/// the same ones, so it approves exactly the layout `vm run` and `vm define` use.
#[derive(Debug)]
pub struct Decisions {
    /// The pinning, near the NUMA node of the main device.
    pub pinning: Result<PinningPlan, ResolveError>,
    /// The hugepage plan, when the spec asks for hugepages.
    pub hugepages: Option<Result<HugepagePlan, HugepageError>>,
    /// The UEFI firmware, when the spec boots UEFI and the host has it.
    pub ovmf: Option<Ovmf>,
    /// More memory than the host has (see [`hostdisk::memory_blocker`]).
    pub memory_blocker: Option<String>,
    /// Disks that are none, or that the host uses (see [`hostdisk::disk_blockers`]).
    pub disk_blockers: Vec<String>,
    /// Whether the host's CPU is AMD's.
    pub amd: bool,
}

/// The decisions for `spec` on the host `snapshot` describes, with `main` its first
/// device as found there (its NUMA node is where the vCPUs go).
pub fn decide(
    snapshot: &HostSnapshot,
    spec: &VmSpec,
    main: Option<PciAddress>,
    allow_host_disks: bool,
) -> Result<Decisions, NotGathered> {
    let vm = snapshot.vm()?;
    let node = main
        .and_then(|a| snapshot.devices.iter().find(|d| d.address == a))
        .and_then(|d| d.numa_node)
        .and_then(|n| u32::try_from(n).ok());
    let pinning = (|| {
        let topology = vm
            .topology
            .as_ref()
            .map_err(|e| ResolveError::Topology(Arc::clone(e)))?;
        let request = match &spec.cpus {
            Cpus::Count(n) => CpuRequest::Count(*n),
            Cpus::Host(list) => CpuRequest::Host(
                crate::host::cpu::parse_cpu_list(list)
                    .map_err(|e| ResolveError::CpuList(e.to_string()))?,
            ),
        };
        Ok(pinning::plan(topology, &request, node)?)
    })();
    Ok(Decisions {
        pinning,
        hugepages: spec
            .hugepages
            .then(|| hugepages::plan(&vm.hugepages, spec.memory_mib())),
        ovmf: if spec.firmware.uefi {
            vm.ovmf.clone()
        } else {
            None
        },
        memory_blocker: hostdisk::memory_blocker_of(vm.mem_total_mib, spec),
        disk_blockers: hostdisk::blockers_of(&vm.disks, allow_host_disks),
        amd: vm.amd,
    })
}

/// Resolves `spec` on the host `snapshot` describes (gathered with
/// [`HostSnapshot::gather_for_vm`] for this spec), reading nothing.
pub fn resolve(
    snapshot: &HostSnapshot,
    spec: VmSpec,
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let devices = &snapshot.devices;
    let (found, passed, mut notes) = expand(&spec, devices)?;
    let mut roms = BTreeMap::new();
    for (want, at) in spec.devices.iter().zip(&found) {
        if let Some(rom) = &want.rom {
            roms.insert(*at, rom.clone());
        }
    }
    let d = decide(
        snapshot,
        &spec,
        found.first().copied(),
        options.allow_host_disks,
    )?;
    let pinning = d.pinning?;
    let hugepage_kib = match &d.hugepages {
        None => None,
        Some(Ok(p)) => {
            notes.push(p.reason.clone());
            Some(p.size_kib)
        }
        // Rendered with 2 MiB pages; `vm check` and `vm run` report the problem.
        Some(Err(_)) => Some(2048),
    };
    let host_blockers = d
        .memory_blocker
        .into_iter()
        .chain(d.disk_blockers)
        .collect();
    Ok(Resolution {
        host_blockers,
        plan: VmPlan {
            spec,
            pinning,
            devices: passed,
            roms,
            amd: d.amd,
            accel: options.accel,
            ovmf: d.ovmf,
            hugepage_kib,
            state_dir: options.state_dir.clone(),
            boot_iso_first: true,
        },
        hugepages: d.hugepages,
        notes,
        qemu_blockers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::snapshot::in_memory;

    fn spec(text: &str) -> VmSpec {
        VmSpec::parse(text).unwrap()
    }

    fn on_desktop(vm: VmHost) -> HostSnapshot {
        HostSnapshot {
            vm: Some(VmHost {
                topology: Ok(in_memory::two_nodes()),
                ..vm
            }),
            ..in_memory::desktop()
        }
    }

    #[test]
    fn a_snapshot_built_in_memory_resolves_near_the_device() {
        let ovmf = Ovmf {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars_template: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
        };
        let snapshot = on_desktop(VmHost {
            ovmf: Some(ovmf.clone()),
            mem_total_mib: Some(32_000),
            ..VmHost::default()
        });
        let s = spec("name = \"desk\"\nmemory = \"8G\"\ncpus = 2\ndevices = [\"01:00.0\"]\n");
        let r = resolve(&snapshot, s, &ResolveOptions::default()).unwrap();
        let devices: Vec<String> = r.plan.devices.iter().map(ToString::to_string).collect();
        assert_eq!(devices, ["0000:01:00.0", "0000:01:00.1"]);
        // The GPU is on node 1, which has the fewer free cores: its node wins.
        assert_eq!(r.plan.pinning.numa_node, Some(1));
        let pinned: Vec<u32> = r.plan.pinning.vcpus.iter().map(|(_, h)| *h).collect();
        assert_eq!(pinned, [5, 6]);
        assert_eq!(r.plan.ovmf, Some(ovmf));
        assert!(!r.plan.amd);
        assert!(r.blockers().is_empty(), "{:?}", r.blockers());
    }

    #[test]
    fn what_the_snapshot_lacks_blocks_the_vm() {
        let snapshot = on_desktop(VmHost {
            mem_total_mib: Some(4096),
            ..VmHost::default()
        });
        let s = spec("name = \"desk\"\nmemory = \"8G\"\ncpus = 2\n");
        let r = resolve(&snapshot, s.clone(), &ResolveOptions::default()).unwrap();
        let blockers = r.blockers().join("\n");
        assert!(blockers.contains("no UEFI firmware"), "{blockers}");
        assert!(blockers.contains("more than this host has"), "{blockers}");
        // The decisions `vm check` judges are the resolution's own.
        let d = decide(&snapshot, &s, None, false).unwrap();
        assert_eq!(d.pinning.unwrap(), r.plan.pinning);
        // Without the VM's part the snapshot cannot be resolved.
        let bare = in_memory::desktop();
        assert!(matches!(
            resolve(&bare, s, &ResolveOptions::default()),
            Err(ResolveError::NotGathered(_))
        ));
    }
}
