//! The IOMMU: what the firmware announces, what the kernel made of it, and the
//! groups it formed.
//!
//! The firmware describes the IOMMU in an ACPI table: `DMAR` for Intel VT-d, `IVRS`
//! for AMD-Vi. The kernel then turns it on (Intel only with `intel_iommu=on` unless
//! built with `CONFIG_INTEL_IOMMU_DEFAULT_ON`; AMD by default), logs its verdicts, and
//! sorts PCI devices into *IOMMU groups*: the smallest sets of devices it can isolate
//! from each other. A group is the unit of assignment: a VM gets a whole group or
//! nothing. Interrupt remapping keeps a device from forging interrupts; without it
//! VFIO refuses devices unless `allow_unsafe_interrupts` is set.
//!
//! Verdicts are taken from the tables and the kernel, never guessed from the CPU
//! vendor: a guest can report an AMD CPU on a machine with Intel's DMAR table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};
use crate::kernel::log::{KernelLog, LogLine};
use crate::pci::address::PciAddress;

/// Which IOMMU tables the ACPI firmware provides (`sys/firmware/acpi/tables/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AcpiTables {
    /// Intel VT-d's DMA Remapping table.
    pub dmar: bool,
    /// AMD-Vi's I/O Virtualization Reporting Structure.
    pub ivrs: bool,
}

impl AcpiTables {
    /// Looks for `sys/firmware/acpi/tables/DMAR` and `IVRS`.
    pub fn read(root: &HostRoot) -> Self {
        Self {
            dmar: root.exists("sys/firmware/acpi/tables/DMAR"),
            ivrs: root.exists("sys/firmware/acpi/tables/IVRS"),
        }
    }
}

/// The IOMMU groups: group number → member devices (sorted).
pub type IommuGroups = BTreeMap<u32, Vec<PciAddress>>;

/// Reads `sys/kernel/iommu_groups/*/devices/*`. Entries that are not PCI addresses
/// (other buses) are skipped.
pub fn read_groups(root: &HostRoot) -> Result<IommuGroups, HostError> {
    let mut groups = IommuGroups::new();
    for name in root.list_dir_optional("sys/kernel/iommu_groups")? {
        let Ok(n) = name.parse::<u32>() else { continue };
        let mut members: Vec<PciAddress> = root
            .list_dir_optional(format!("sys/kernel/iommu_groups/{name}/devices"))?
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        members.sort();
        groups.insert(n, members);
    }
    Ok(groups)
}

/// The IOMMU units the kernel registered (`sys/class/iommu`: `dmar0`, `ivhd0`, …).
pub fn read_units(root: &HostRoot) -> Result<Vec<String>, HostError> {
    root.list_dir_optional("sys/class/iommu")
}

/// What the kernel log says about the IOMMU. Each field keeps the line it came from,
/// so a finding can show it as evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IommuLog {
    /// The ACPI table line for DMAR (`ACPI: DMAR 0x...`).
    pub dmar_table: Option<LogLine>,
    /// The ACPI table line for IVRS.
    pub ivrs_table: Option<LogLine>,
    /// Intel VT-d turned on (`DMAR: IOMMU enabled`, older `Intel-IOMMU: enabled`).
    pub intel_enabled: Option<LogLine>,
    /// Intel VT-d turned off (`DMAR: IOMMU disabled`, …).
    pub intel_disabled: Option<LogLine>,
    /// AMD-Vi found and initialised (`AMD-Vi: Found IOMMU …`, `… AMD-Vi: Found IOMMU cap …`).
    pub amd_enabled: Option<LogLine>,
    /// AMD-Vi turned off or failed (`AMD-Vi: AMD IOMMU disabled`, …).
    pub amd_disabled: Option<LogLine>,
    /// Interrupt remapping on (`DMAR-IR: Enabled IRQ remapping in … mode`,
    /// `AMD-Vi: Interrupt remapping enabled`).
    pub irq_remap_enabled: Option<LogLine>,
    /// Interrupt remapping failed or was refused.
    pub irq_remap_failed: Option<LogLine>,
    /// `PCIe ACS overrides enabled`.
    pub acs_override: Option<LogLine>,
    /// The default DMA domain type (`iommu: Default domain type: Passthrough …`).
    pub default_domain: Option<LogLine>,
    /// Firmware bugs: `Your BIOS is broken`, `[Firmware Bug]`, `not in IVRS table`,
    /// RMRR problems.
    pub firmware_bugs: Vec<LogLine>,
    /// How many "Adding to iommu group" lines there are.
    pub group_additions: usize,
}

impl IommuLog {
    /// Scans the log for every IOMMU verdict, in older and newer wordings.
    pub fn analyse(_log: &KernelLog) -> Self {
        unimplemented!()
    }
}
