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

use crate::host::kernel::log::{KernelLog, LogLine};
use crate::host::pci::address::PciAddress;
use crate::host::root::{HostError, HostRoot};

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

// The wordings below are the kernel's own format strings (the prefix comes from the
// file's `pr_fmt`): drivers/iommu/intel/iommu.c ("DMAR: "), drivers/iommu/intel/
// irq_remapping.c ("DMAR-IR: "), drivers/iommu/amd/init.c ("AMD-Vi: "),
// drivers/iommu/iommu.c ("iommu: "), arch/x86/kernel/apic/apic.c, and older
// kernels' drivers/pci/intel-iommu.c ("Intel-IOMMU: "). Matching is on substrings,
// case-sensitive, so journal lines (`Nov 09 03:24:52 pve kernel: DMAR: …`) match too.

/// The ACPI table list the kernel prints at boot: `ACPI: DMAR 0x00000000AC9D3420 …`
/// (older kernels omit the `0x`), and newer kernels' `ACPI: Reserving DMAR table
/// memory at …`.
const DMAR_TABLE: &[&str] = &["ACPI: DMAR ", "ACPI: Reserving DMAR table memory"];
const IVRS_TABLE: &[&str] = &["ACPI: IVRS ", "ACPI: Reserving IVRS table memory"];

/// `intel_iommu=on` as parsed (`DMAR: IOMMU enabled`, before 4.x `Intel-IOMMU:
/// enabled`), and the forced cases (platform opt-in in the DMAR table, tboot).
const INTEL_ENABLED: &[&str] = &[
    "DMAR: IOMMU enabled",
    "Intel-IOMMU: enabled",
    "Intel-IOMMU force enabled",
    "Forcing Intel-IOMMU to enabled",
];
/// Printed by `intel_iommu_init()` only once DMA remapping is really set up; on a
/// kernel with `CONFIG_INTEL_IOMMU_DEFAULT_ON` it is the only sign, because
/// `IOMMU enabled` is printed by the command-line parser alone.
const INTEL_BANNER: &[&str] = &["Intel(R) Virtualization Technology for Directed I/O"];
/// `intel_iommu=off` as parsed. (`DMAR: Disable GFX device mapping`, `Disable
/// batched IOTLB flush`, `Disable supported super page` are options of a working
/// IOMMU, not verdicts, and do not match.)
const INTEL_DISABLED: &[&str] = &["DMAR: IOMMU disabled", "Intel-IOMMU: disabled"];

/// An AMD IOMMU found and set up: `AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40`
/// (before 5.x) and `pci 0000:00:00.2: AMD-Vi: Found IOMMU cap 0x40` (newer).
const AMD_FOUND: &[&str] = &["AMD-Vi: Found IOMMU"];
/// Later evidence, from the iommu_v2 module and the passthrough setup.
const AMD_LATER: &[&str] = &[
    "AMD-Vi: AMD IOMMUv2 loaded and initialized",
    "AMD-Vi: Initialized for Passthrough Mode",
];
/// `amd_iommu=off` (`AMD IOMMU disabled on kernel command-line`, since 5.2 `AMD
/// IOMMU disabled`), and initialisation refused or failed.
const AMD_DISABLED: &[&str] = &[
    "AMD-Vi: AMD IOMMU disabled",
    "AMD-Vi: IOMMU not currently supported when SME is active",
];

/// Interrupt remapping on: irq_remapping.c's `Enabled IRQ remapping in %s mode`
/// (`DMAR-IR: ` since 4.x, no prefix before), and AMD's message.
const IRQ_REMAP_ENABLED: &[&str] = &[
    "Enabled IRQ remapping in x2apic mode",
    "Enabled IRQ remapping in xapic mode",
    "AMD-Vi: Interrupt remapping enabled",
];
/// Interrupt remapping failed or was refused: irq_remapping.c's cleanup and
/// preparation failures, the chipset erratum (`This system BIOS has enabled
/// interrupt remapping` + `on a chipset that contains an erratum…`, whose first
/// line is all a dmesg line holds), an IO-APIC missing from the DMAR table, and
/// AMD giving up on it after an IVRS problem.
const IRQ_REMAP_FAILED: &[&str] = &[
    "Failed to enable irq remapping",
    "Not enabling interrupt remapping",
    "Failed to setup irq remapping",
    // Kept for safety, though not found in the kernel sources searched.
    "IRQ remapping disabled",
    "interrupt remapping will be disabled",
    "This system BIOS has enabled interrupt remapping",
    "AMD-Vi: Disabling interrupt remapping",
    "x2apic: Not enabling x2apic, Intr-remapping init failed",
];
/// arch/x86/kernel/apic/apic.c: x2APIC stays off because interrupt remapping does
/// not run in x2APIC mode. It also follows a *successful* remapping in xAPIC mode
/// (`DMAR-IR: Enabled IRQ remapping in xapic mode` then this line, as on many
/// desktops whose BIOS sets the x2APIC opt-out bit), so it counts as a failure only
/// when no line says remapping was enabled.
const IRQ_REMAP_NO_X2APIC: &[&str] = &["IRQ remapping doesn't support X2APIC mode"];

const ACS_OVERRIDE: &[&str] = &["PCIe ACS overrides enabled"];
/// iommu.c: `iommu: Default domain type: Translated`, `… Passthrough (set via
/// kernel command line)`.
const DEFAULT_DOMAIN: &[&str] = &["Default domain type:"];

/// dmar.c's `Your BIOS is broken; DMAR reported at address …`, AMD's `IOAPIC[9] not
/// in IVRS table`, and the RMRR refusal that blocks assigning a device on some HP and
/// Dell servers.
const FIRMWARE_BUG: &[&str] = &[
    "Your BIOS is broken",
    "not in IVRS table",
    "ineligible for IOMMU domain attach due to platform RMRR requirement",
];

/// `[Firmware Bug]` lines (`FW_BUG`) count only when they concern the IOMMU: the
/// kernel prints the same tag for unrelated problems (`[Firmware Bug]: TSC doesn't
/// count with P0 frequency!` on AMD hosts).
const FW_BUG_TAG: &str = "[Firmware Bug]";
const IOMMU_WORDS: &[&str] = &[
    "DMAR", "AMD-Vi", "IVRS", "IOMMU", "iommu", "RMRR", "DRHD", "ATSR",
];

fn is_firmware_bug(text: &str) -> bool {
    matches(text, FIRMWARE_BUG) || (contains(text, FW_BUG_TAG) && matches(text, IOMMU_WORDS))
}

/// A device joining a group: `pci 0000:00:02.0: Adding to iommu group 0` (4.19+),
/// `iommu: Adding device 0000:00:02.0 to group 0` (older).
fn is_group_addition(text: &str) -> bool {
    contains(text, "Adding to iommu group")
        || (contains(text, "iommu: Adding device ") && contains(text, " to group "))
}

fn matches(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| contains(text, n))
}

/// Whether `text` contains `needle`, as `str::contains`, by looking for the needle's
/// first byte and comparing there. A log line is about a hundred bytes and each is
/// tested against some forty needles: `str::contains` prepares a two-way searcher
/// for every call, which here costs more than the search.
fn contains(text: &str, needle: &str) -> bool {
    let (text, needle) = (text.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = text.len().checked_sub(needle.len()) else {
        return false;
    };
    text[..=last_start]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && text[i + 1..].starts_with(rest))
}

/// Keeps the first line that matches.
fn first(slot: &mut Option<LogLine>, line: &LogLine, needles: &[&str]) {
    if slot.is_none() && matches(&line.text, needles) {
        *slot = Some(line.clone());
    }
}

impl IommuLog {
    /// Scans the log for every IOMMU verdict, in older and newer wordings.
    ///
    /// Each field holds the first line that says it. A line can count for several
    /// fields (an IO-APIC missing from the table is both a firmware bug and the
    /// reason interrupt remapping is off). Lines that are only indirect evidence
    /// (the VT-d banner, AMD's IOMMUv2 module, x2APIC refused) are used when no
    /// direct line exists.
    pub fn analyse(log: &KernelLog) -> Self {
        let mut out = Self::default();
        let mut intel_banner = None;
        let mut amd_later = None;
        let mut no_x2apic = None;
        for line in &log.lines {
            let text = line.text.as_str();
            first(&mut out.dmar_table, line, DMAR_TABLE);
            first(&mut out.ivrs_table, line, IVRS_TABLE);
            first(&mut out.intel_enabled, line, INTEL_ENABLED);
            first(&mut intel_banner, line, INTEL_BANNER);
            first(&mut out.intel_disabled, line, INTEL_DISABLED);
            first(&mut out.amd_enabled, line, AMD_FOUND);
            first(&mut amd_later, line, AMD_LATER);
            first(&mut out.amd_disabled, line, AMD_DISABLED);
            first(&mut out.irq_remap_enabled, line, IRQ_REMAP_ENABLED);
            first(&mut out.irq_remap_failed, line, IRQ_REMAP_FAILED);
            first(&mut no_x2apic, line, IRQ_REMAP_NO_X2APIC);
            first(&mut out.acs_override, line, ACS_OVERRIDE);
            first(&mut out.default_domain, line, DEFAULT_DOMAIN);
            if is_firmware_bug(text) {
                out.firmware_bugs.push(line.clone());
            }
            if is_group_addition(text) {
                out.group_additions += 1;
            }
        }
        if out.intel_enabled.is_none() {
            out.intel_enabled = intel_banner;
        }
        if out.amd_enabled.is_none() {
            out.amd_enabled = amd_later;
        }
        if out.irq_remap_failed.is_none() && out.irq_remap_enabled.is_none() {
            out.irq_remap_failed = no_x2apic;
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn contains_answers_as_str_contains() {
        let text = "DMAR-IR: Enabled IRQ remapping in x2apic mode";
        for needle in [
            "",
            "D",
            "DMAR",
            "DMAR-IR: Enabled",
            "x2apic mode",
            "e",
            "mode!",
            "DMAR-IR:  ",
            "IRQ remapping in x2apic mode and more",
            "AMD-Vi",
            "x2apic mode\n",
        ] {
            assert_eq!(contains(text, needle), text.contains(needle), "{needle:?}");
        }
        assert!(contains("ééa", "éa"));
        assert!(!contains("", "a"));
        assert!(contains("", ""));
    }

    fn analyse(text: &str) -> IommuLog {
        IommuLog::analyse(&KernelLog::parse(text))
    }

    fn text(line: &Option<LogLine>) -> Option<&str> {
        line.as_ref().map(|l| l.text.as_str())
    }

    #[test]
    fn intel_broadwell_with_acs_override() {
        // A real Intel Broadwell boot (ACS override patch on), dmesg format.
        let log = analyse(
            "\
[    0.000000] Warning: PCIe ACS overrides enabled; This may allow non-IOMMU protected peer-to-peer DMA
[    0.015053] ACPI: DMAR 0x00000000AC9D3420 0000B8 (v01 INTEL  BDW      00000001 INTL 00000001)
[    0.081810] DMAR: IOMMU enabled
[    0.108669] DMAR-IR: x2apic is disabled because BIOS sets x2apic opt out bit.
[    0.108976] DMAR-IR: Enabled IRQ remapping in xapic mode
[    0.861114] DMAR: Intel(R) Virtualization Technology for Directed I/O
",
        );
        assert_eq!(log.acs_override.as_ref().map(|l| l.time), Some(Some(0.0)));
        assert!(text(&log.dmar_table).is_some_and(|t| t.contains("INTEL  BDW")));
        assert_eq!(log.ivrs_table, None);
        assert_eq!(text(&log.intel_enabled), Some("DMAR: IOMMU enabled"));
        assert_eq!(
            log.intel_enabled.as_ref().map(LogLine::display).as_deref(),
            Some("[    0.081810] DMAR: IOMMU enabled")
        );
        assert_eq!(log.intel_disabled, None);
        assert_eq!(log.amd_enabled, None);
        assert_eq!(log.amd_disabled, None);
        assert_eq!(
            text(&log.irq_remap_enabled),
            Some("DMAR-IR: Enabled IRQ remapping in xapic mode")
        );
        // The x2apic opt-out is not a remapping failure.
        assert_eq!(log.irq_remap_failed, None);
        assert_eq!(log.default_domain, None);
        assert!(log.firmware_bugs.is_empty());
        assert_eq!(log.group_additions, 0);
    }

    #[test]
    fn x2apic_refused_after_xapic_remapping_is_no_failure() {
        // A Proxmox VE host's journal (Intel, BIOS sets the x2APIC opt-out bit),
        // posted publicly; journal form, so no kmsg/dmesg time.
        let log = analyse(
            "\
Nov 09 03:24:52 pve kernel: DMAR-IR: x2apic is disabled because BIOS sets x2apic opt out bit.
Nov 09 03:24:52 pve kernel: DMAR-IR: Use 'intremap=no_x2apic_optout' to override the BIOS setting.
Nov 09 03:24:52 pve kernel: DMAR-IR: Enabled IRQ remapping in xapic mode
Nov 09 03:24:52 pve kernel: x2apic: IRQ remapping doesn't support X2APIC mode
",
        );
        assert!(text(&log.irq_remap_enabled).is_some_and(|t| t.ends_with("in xapic mode")));
        assert_eq!(log.irq_remap_failed, None);
        assert_eq!(log.irq_remap_enabled.as_ref().and_then(|l| l.time), None);
    }

    #[test]
    fn vt_d_banner_alone_means_enabled() {
        // Constructed from intel_iommu_init()'s pr_info: on a kernel built with
        // CONFIG_INTEL_IOMMU_DEFAULT_ON and booted without intel_iommu=on, "DMAR:
        // IOMMU enabled" (printed by the command-line parser) never appears, and
        // this banner is the evidence. The time is illustrative.
        let log =
            analyse("[    0.861114] DMAR: Intel(R) Virtualization Technology for Directed I/O\n");
        assert_eq!(
            text(&log.intel_enabled),
            Some("DMAR: Intel(R) Virtualization Technology for Directed I/O")
        );
        // With the direct line present, that one is the evidence.
        let both = analyse(
            "[    0.081810] DMAR: IOMMU enabled\n[    0.861114] DMAR: Intel(R) Virtualization Technology for Directed I/O\n",
        );
        assert_eq!(text(&both.intel_enabled), Some("DMAR: IOMMU enabled"));
    }

    #[test]
    fn default_domain_and_groups() {
        // Proxmox VE 5.15.102-1-pve booted with `intel_iommu=on iommu=pt`
        // (`dmesg | grep iommu`, posted publicly).
        let log = analyse(
            "\
[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-5.15.102-1-pve root=/dev/mapper/pve-root ro quiet intel_iommu=on iommu=pt
[    1.294747] iommu: Default domain type: Passthrough (set via kernel command line)
[    1.334536] pci 0000:00:00.0: Adding to iommu group 0
[    1.334567] pci 0000:00:01.0: Adding to iommu group 1
[    1.334597] pci 0000:00:02.0: Adding to iommu group 2
[    1.334630] pci 0000:00:03.0: Adding to iommu group 3
[    1.334662] pci 0000:00:05.0: Adding to iommu group 4
",
        );
        assert_eq!(
            text(&log.default_domain),
            Some("iommu: Default domain type: Passthrough (set via kernel command line)")
        );
        assert_eq!(log.group_additions, 5);
        // The command line mentions intel_iommu=on but is not a verdict.
        assert_eq!(log.intel_enabled, None);
        // `amd_iommu=off` on a NixOS host: the default is translated.
        let translated = analyse("[    0.495931] iommu: Default domain type: Translated\n");
        assert!(text(&translated.default_domain).is_some_and(|t| t.ends_with("Translated")));
    }

    #[test]
    fn intel_iommu_off_table_present() {
        // Lenovo ThinkPad, Fedora 5.6.11-300.fc32, VT-d on in firmware but the kernel
        // did not enable DMA remapping: the DMAR table and its units are listed,
        // "IOMMU enabled" never appears. From fwupd/fwupd pull request #2093
        // (https://github.com/fwupd/fwupd/pull/2093), `dmesg | grep -i dmar`.
        let log = analyse(
            "\
[    0.017590] ACPI: DMAR 0x000000004FFCB000 0000A8 (v01 LENOVO TP-N1E   00001590 PTEC 00000002)
[    0.248920] DMAR: Host address width 39
[    0.248921] DMAR: DRHD base: 0x000000fed90000 flags: 0x0
[    0.248925] DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap 1c0000c40660462 ecap 7e3ff0505e
[    0.248926] DMAR: DRHD base: 0x000000fed91000 flags: 0x1
",
        );
        assert_eq!(log.dmar_table.as_ref().and_then(|l| l.time), Some(0.01759));
        assert_eq!(log.intel_enabled, None);
        assert_eq!(log.intel_disabled, None);
        assert_eq!(log.irq_remap_enabled, None);
        assert_eq!(log.irq_remap_failed, None);
        assert_eq!(log.group_additions, 0);
    }

    #[test]
    fn intel_iommu_off_on_the_command_line_old_kernel() {
        // Ubuntu 3.16.0-30 booted with intel_iommu=off (from a DPDK hugepages
        // guide): the pre-4.x wording "Intel-IOMMU: disabled".
        let log = analyse(
            "\
[    0.000000] Kernel command line: BOOT_IMAGE=/boot/vmlinuz-3.16.0-30-generic root=UUID=b1d14c48-a78c-467d-b04d-f5357bb6366a ro hugepages=12288 intel_iommu=off isolcpus=0-1
[    0.000000] Intel-IOMMU: disabled
",
        );
        assert_eq!(text(&log.intel_disabled), Some("Intel-IOMMU: disabled"));
        assert_eq!(log.intel_enabled, None);
    }

    #[test]
    fn intel_wordings_old_and_new() {
        // Format strings of intel_iommu_setup() (drivers/iommu/intel/iommu.c, and
        // drivers/pci/intel-iommu.c before 4.x) and of the x86 irq_remapping code;
        // the times are illustrative.
        let log = analyse(
            "\
[    0.000000] Intel-IOMMU: enabled
[    0.000000] Intel-IOMMU: disable GFX device mapping
[    0.000000] DMAR: Disable batched IOTLB flush
[    0.100000] Enabled IRQ remapping in x2apic mode
",
        );
        assert_eq!(text(&log.intel_enabled), Some("Intel-IOMMU: enabled"));
        assert_eq!(log.intel_disabled, None, "option lines are not verdicts");
        assert_eq!(
            text(&log.irq_remap_enabled),
            Some("Enabled IRQ remapping in x2apic mode")
        );
        let off = analyse("[    0.000000] DMAR: IOMMU disabled\n");
        assert_eq!(text(&off.intel_disabled), Some("DMAR: IOMMU disabled"));
        assert_eq!(off.intel_enabled, None);
        // Tiger Lake laptop with the DMAR platform opt-in bit
        // (thesofproject/sof-test issue #744).
        let opt_in = analyse(
            "Jul 19 23:11:56 sh-tglh-0a70-hda-01 kernel: DMAR: Intel-IOMMU force enabled due to platform opt in\n",
        );
        assert!(opt_in.intel_enabled.is_some());
    }

    #[test]
    fn amd_epyc_newer_wording() {
        // AMD EPYC host, Linux 5.x: "pci …: AMD-Vi: Found IOMMU cap 0x40" per IOMMU,
        // then remapping. From AMDESE/AMDSEV issue #62
        // (https://github.com/AMDESE/AMDSEV/issues/62).
        let log = analyse(
            "\
[    2.602625] pci 0000:02:00.2: Adding to iommu group 72
[    2.602641] pci 0000:02:00.3: Adding to iommu group 73
[    2.616825] pci 0000:c0:00.2: AMD-Vi: Found IOMMU cap 0x40
[    2.616832] pci 0000:c0:00.2: AMD-Vi: Extended features (0x58f77ef22294ade):
[    2.616834]  PPR X2APIC NX GT IA GA PC GA_vAPIC
[    2.616839] pci 0000:80:00.2: AMD-Vi: Found IOMMU cap 0x40
[    2.616841] pci 0000:80:00.2: AMD-Vi: Extended features (0x58f77ef22294ade):
[    2.616842]  PPR X2APIC NX GT IA GA PC GA_vAPIC
[    2.616858] AMD-Vi: Interrupt remapping enabled
[    2.616859] AMD-Vi: Virtual APIC enabled
[    2.616860] AMD-Vi: X2APIC enabled
[    2.617151] AMD-Vi: Lazy IO/TLB flushing enabled
",
        );
        assert_eq!(
            text(&log.amd_enabled),
            Some("pci 0000:c0:00.2: AMD-Vi: Found IOMMU cap 0x40")
        );
        assert_eq!(log.amd_disabled, None);
        assert_eq!(
            text(&log.irq_remap_enabled),
            Some("AMD-Vi: Interrupt remapping enabled")
        );
        assert_eq!(log.irq_remap_failed, None);
        assert_eq!(log.group_additions, 2);
        assert_eq!(log.intel_enabled, None);
        assert_eq!(log.dmar_table, None);
    }

    #[test]
    fn amd_ryzen_older_wording() {
        // AMD Ryzen desktop, Fedora 4.18.0-0.rc8.git1.1.fc29 (a boot log quoted in
        // a public bug report): the IVRS table, the pre-4.19 group wording, and
        // "AMD-Vi: Found IOMMU at …".
        let log = analyse(
            "\
[    0.000000] ACPI: IVRS 0x00000000DB82A758 0000D0 (v02 AMD    AMD IVRS 00000001 AMD  00000000)
[    0.623502] iommu: Adding device 0000:0b:00.0 to group 17
[    0.623658] iommu: Using direct mapping for device 0000:0b:00.0
[    0.623768] iommu: Adding device 0000:0b:00.1 to group 18
[    0.623928] iommu: Adding device 0000:0c:00.0 to group 19
[    0.624915] AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40
[    0.624916] AMD-Vi: Extended features (0xf77ef22294ada):
[    0.624917]  PPR NX GT IA GA PC GA_vAPIC
[    0.624924] AMD-Vi: Interrupt remapping enabled
[    0.624925] AMD-Vi: virtual APIC enabled
[    0.631611] perf/amd_iommu: Detected AMD IOMMU #0 (2 banks, 4 counters/bank).
",
        );
        assert!(text(&log.ivrs_table).is_some_and(|t| t.contains("AMD IVRS")));
        assert_eq!(
            text(&log.amd_enabled),
            Some("AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40")
        );
        assert!(log.irq_remap_enabled.is_some());
        assert_eq!(log.group_additions, 3);
    }

    #[test]
    fn amd_firmware_bugs_turn_remapping_off() {
        // An AMD desktop whose IVRS table misses the IO-APICs (kallisti5's guide
        // to passing a GPU to a Haiku guest, `dmesg | grep AMD-Vi`).
        let log = analyse(
            "\
[    0.119400] [Firmware Bug]: AMD-Vi: IOAPIC[9] not in IVRS table
[    0.119406] [Firmware Bug]: AMD-Vi: IOAPIC[10] not in IVRS table
[    0.119409] [Firmware Bug]: AMD-Vi: No southbridge IOAPIC found
[    0.119412] AMD-Vi: Disabling interrupt remapping
[    1.823122] AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40
[    1.823253] AMD-Vi: Initialized for Passthrough Mode
",
        );
        assert_eq!(log.firmware_bugs.len(), 3);
        assert_eq!(
            log.firmware_bugs[2].text,
            "[Firmware Bug]: AMD-Vi: No southbridge IOAPIC found"
        );
        assert_eq!(
            text(&log.irq_remap_failed),
            Some("AMD-Vi: Disabling interrupt remapping")
        );
        assert_eq!(log.irq_remap_enabled, None);
        assert_eq!(
            text(&log.amd_enabled),
            Some("AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40")
        );
    }

    #[test]
    fn amd_later_evidence_and_disabled() {
        // "AMD IOMMUv2 loaded and initialized" alone (as many guides grep for it;
        // line from a Ryzen dmesg in a public forum post), then amd_iommu=off on a
        // Gigabyte EPYC board, Fedora 5.0.16 (a linux-kernel mailing list report).
        let log = analyse("[   20.235398] AMD-Vi: AMD IOMMUv2 loaded and initialized\n");
        assert!(text(&log.amd_enabled).is_some_and(|t| t.contains("IOMMUv2")));
        let off = analyse("[    1.751782] AMD-Vi: AMD IOMMU disabled on kernel command-line\n");
        assert!(off.amd_disabled.is_some());
        assert_eq!(off.amd_enabled, None);
        // The 5.2+ wording from drivers/iommu/amd/init.c.
        assert!(analyse("AMD-Vi: AMD IOMMU disabled\n")
            .amd_disabled
            .is_some());
    }

    #[test]
    fn remapping_failures() {
        // Format strings of drivers/iommu/intel/irq_remapping.c (prefix from its
        // pr_fmt); the erratum warning is one printk of several lines, of which
        // dmesg shows the first with the prefix. "IRQ remapping disabled" is a
        // wording this module accepts without having found it in the sources.
        for line in [
            "DMAR-IR: Failed to enable irq remapping. You are vulnerable to irq-injection attacks.",
            "DMAR-IR: Not enabling interrupt remapping",
            "DMAR-IR: This system BIOS has enabled interrupt remapping",
            "DMAR-IR: Failed to setup irq remapping for dmar0",
            "IRQ remapping disabled",
        ] {
            let log = analyse(line);
            assert_eq!(text(&log.irq_remap_failed), Some(line), "{line}");
            assert_eq!(log.irq_remap_enabled, None, "{line}");
        }
        // FW_BUG prefix: both a firmware bug and the reason remapping is off.
        let log = analyse(
            "DMAR-IR: [Firmware Bug]: ioapic 2 has no mapping iommu, interrupt remapping will be disabled\n",
        );
        assert!(log.irq_remap_failed.is_some());
        assert_eq!(log.firmware_bugs.len(), 1);
        // A guest without remapping: x2APIC refused and nothing enabled (Linux 5.x
        // under VirtualBox, from a public boot log).
        let vm = analyse("[    0.696609] x2apic: IRQ remapping doesn't support X2APIC mode\n");
        assert!(text(&vm.irq_remap_failed).is_some_and(|t| t.contains("X2APIC mode")));
    }

    #[test]
    fn unrelated_firmware_bugs_are_not_iommu_bugs() {
        // Seen on this project's development VM (AMD EPYC guest, kernel 6.18).
        let log = analyse("[    0.000000] [Firmware Bug]: TSC doesn't count with P0 frequency!\n");
        assert!(log.firmware_bugs.is_empty());
    }

    #[test]
    fn firmware_bugs_and_rmrr() {
        // dmar.c's warning on a Dell R630 booted by coreboot/heads (linuxboot/heads
        // issue #286, https://github.com/linuxboot/heads/issues/286); the RMRR
        // refusal from intel/iommu.c as a user hit it starting a VM (forum post);
        // arch_rmrr_sanity_check()'s FW_BUG line from an Ubuntu 21.10 / Debian 11
        // laptop (forum post, no time: `journalctl` text).
        let log = analyse(
            "\
[    0.000000] Your BIOS is broken; DMAR reported at address fbffc000 returns all ones!
[    0.000000] BIOS vendor: (null); Ver: (null); Product Version: (null)
[  116.814073] vfio-pci 0000:0b:00.0: Device is ineligible for IOMMU domain attach due to platform RMRR requirement.  Contact your platform vendor.
DMAR: [Firmware Bug]: No firmware reserved region can cover this RMRR [0x0000000079800000-0x000000007bffffff], contact BIOS vendor for fixes
",
        );
        assert_eq!(log.firmware_bugs.len(), 3);
        assert!(log.firmware_bugs[0].text.starts_with("Your BIOS is broken"));
        assert_eq!(log.firmware_bugs[1].time, Some(116.814073));
        assert!(log.firmware_bugs[1].text.contains("RMRR requirement"));
        assert_eq!(log.firmware_bugs[2].time, None);
        assert_eq!(log.intel_enabled, None);
        assert_eq!(log.irq_remap_failed, None);
    }

    #[test]
    fn empty_log_gives_nothing() {
        assert_eq!(
            IommuLog::analyse(&KernelLog::default()),
            IommuLog::default()
        );
    }
}
