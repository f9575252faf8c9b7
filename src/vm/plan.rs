//! The plan of a VM: its spec resolved against one host ([`super::resolve`]) — where
//! its vCPUs run, which devices (whole IOMMU groups) it gets, its firmware and
//! hugepages, where its own files live. The renderers ([`super::render`]) turn it
//! into libvirt XML or a QEMU command line; `vm run`, `vm define` and `vm check`
//! take the same plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pinning::PinningPlan;
use super::spec::VmSpec;
use crate::host::pci::PciAddress;

/// UEFI firmware images for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ovmf {
    /// The read-only code image (`OVMF_CODE*.fd`; the `.secboot` build for Secure Boot).
    pub code: PathBuf,
    /// The template of the per-VM variable store (`OVMF_VARS*.fd`).
    pub vars_template: PathBuf,
}

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM: the CPU's own virtualization (VT-x / AMD-V), near-native speed.
    #[default]
    Kvm,
    /// QEMU's TCG: software emulation, for hosts without usable KVM (tests, nested
    /// setups). Slow; `host-passthrough` and Hyper-V enlightenments are dropped.
    Tcg,
}

/// Everything a renderer needs: a spec resolved against one host.
#[derive(Debug, Clone, Serialize)]
pub struct VmPlan {
    /// The spec.
    pub spec: VmSpec,
    /// Where the vCPUs run.
    pub pinning: PinningPlan,
    /// Every passed-through device (whole groups, bridges excluded), sorted.
    pub devices: Vec<PciAddress>,
    /// ROM images for some of the devices.
    pub roms: BTreeMap<PciAddress, PathBuf>,
    /// The host CPU is AMD (`topoext` exposes SMT to the guest).
    pub amd: bool,
    /// KVM or TCG.
    pub accel: Accel,
    /// UEFI firmware, when the spec asks for UEFI.
    pub ovmf: Option<Ovmf>,
    /// The hugepage size backing the memory, in KiB (2048 or 1048576), when the spec
    /// asks for hugepages.
    pub hugepage_kib: Option<u64>,
    /// Where the VM's own files live (NVRAM, QMP socket, TPM state, console log).
    pub state_dir: PathBuf,
    /// The first installer ISO boots before the disks (true until the OS is
    /// installed: `vm define` and `vm start` set it from the disks' contents, see
    /// [`super::disk::boot_iso_first`]); false puts the disks first while the
    /// ISOs stay attached (e.g. a driver ISO).
    pub boot_iso_first: bool,
}

impl VmPlan {
    /// The per-VM UEFI variable store.
    pub fn nvram_path(&self) -> PathBuf {
        self.state_dir.join(format!("{}_VARS.fd", self.spec.name))
    }

    /// QEMU's QMP socket (`vm run`).
    pub fn qmp_path(&self) -> PathBuf {
        self.state_dir.join("qmp.sock")
    }

    /// The serial console's socket (`vm run`; `vm console` attaches to it).
    pub fn console_path(&self) -> PathBuf {
        self.state_dir.join("console.sock")
    }

    /// Everything the guest printed on its serial console (`vm run`).
    pub fn console_log_path(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }

    /// swtpm's control socket (`vm run` with a TPM).
    pub fn swtpm_path(&self) -> PathBuf {
        self.state_dir.join("swtpm.sock")
    }

    /// Where swtpm keeps the TPM's state.
    pub fn tpm_state_dir(&self) -> PathBuf {
        self.state_dir.join("tpm")
    }
}

/// What `vm start` does with a VM in libvirt.
///
/// The spec is the source of truth: when it exists, the domain is defined again from
/// it before it starts (missing disks are created, and the boot order follows the
/// disks: the installer ISO first while every disk is blank). Without a spec the
/// domain starts as libvirt has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    /// The domain runs already: nothing is done.
    AlreadyRunning,
    /// Start the domain, after defining it again from its spec when `redefine`.
    Start {
        /// Define the domain from its spec first.
        redefine: bool,
    },
    /// libvirt has no such domain, and there is no spec to define it from.
    UnknownDomain,
}

/// Decides [`StartStep`] from what libvirt says of the domain (`None`: not defined;
/// `Some(active)`) and whether the VM's spec exists.
pub fn start_step(domain_active: Option<bool>, has_spec: bool) -> StartStep {
    match (domain_active, has_spec) {
        (Some(true), _) => StartStep::AlreadyRunning,
        (_, true) => StartStep::Start { redefine: true },
        (Some(false), false) => StartStep::Start { redefine: false },
        (None, false) => StartStep::UnknownDomain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_redefines_from_the_spec_unless_the_domain_runs() {
        assert_eq!(start_step(Some(true), true), StartStep::AlreadyRunning);
        assert_eq!(start_step(Some(true), false), StartStep::AlreadyRunning);
        assert_eq!(
            start_step(Some(false), true),
            StartStep::Start { redefine: true }
        );
        // A spec of a VM never defined: defined from it, then started.
        assert_eq!(start_step(None, true), StartStep::Start { redefine: true });
        assert_eq!(
            start_step(Some(false), false),
            StartStep::Start { redefine: false }
        );
        assert_eq!(start_step(None, false), StartStep::UnknownDomain);
    }
}
