//! IOMMU checks: firmware table, kernel state, kernel arguments, interrupt
//! remapping, ACS override, firmware bugs.
//!
//! The IOMMU's kind comes from the ACPI table (DMAR = Intel VT-d, IVRS = AMD-Vi) and
//! its state from the kernel (IOMMU groups, log lines) — never from the CPU vendor.

use super::{Finding, IommuKind, IommuState, IommuSummary, Status, Switch};
use crate::host::facts::HostFacts;
use crate::host::kernel::config::ConfigValue;
use crate::host::kernel::log::LogLine;

const CMDLINE: &str = "/proc/cmdline";
const TABLES: &str = "/sys/firmware/acpi/tables";
const GROUPS: &str = "/sys/kernel/iommu_groups";
const LOG: &str = "kernel log";

/// Kind and state of the IOMMU.
pub fn summary(facts: &HostFacts) -> IommuSummary {
    let log = &facts.iommu_log;
    let kind = if facts.acpi.dmar && !facts.acpi.ivrs {
        Some(IommuKind::Intel)
    } else if facts.acpi.ivrs && !facts.acpi.dmar {
        Some(IommuKind::Amd)
    } else if log.intel_enabled.is_some() || log.dmar_table.is_some() {
        Some(IommuKind::Intel)
    } else if log.amd_enabled.is_some() || log.ivrs_table.is_some() {
        Some(IommuKind::Amd)
    } else {
        None
    };
    let groups = facts.groups.as_ref().map(std::collections::BTreeMap::len);
    let state = match groups {
        Ok(n) if n > 0 => IommuState::On,
        Err(_) => IommuState::Unknown,
        Ok(_) if kind.is_some() => IommuState::Off,
        Ok(_) if facts.acpi_visible => IommuState::Absent,
        Ok(_) => IommuState::Unknown,
    };
    IommuSummary {
        state,
        kind,
        groups: groups.unwrap_or(0),
    }
}

fn log_known(facts: &HostFacts) -> bool {
    matches!(facts.log, Ok(Some(_)))
}

fn log_unknown_reason(facts: &HostFacts) -> String {
    match &facts.log {
        Err(why) => why.clone(),
        Ok(None) => "no kernel log (dev/kmsg) in this root".into(),
        Ok(Some(_)) => String::new(),
    }
}

fn with_line(f: Finding, line: Option<&LogLine>) -> Finding {
    match line {
        Some(l) => f.evidence(LOG, l.display()),
        None => f,
    }
}

/// Interrupt remapping as a switch.
pub fn interrupt_remapping(facts: &HostFacts, iommu: &IommuSummary) -> Switch {
    let log = &facts.iommu_log;
    if log.irq_remap_enabled.is_some() {
        Switch::On
    } else if log.irq_remap_failed.is_some() || (iommu.state == IommuState::On && log_known(facts))
    {
        Switch::Off
    } else {
        Switch::Unknown
    }
}

/// All IOMMU findings.
pub fn findings(facts: &HostFacts, iommu: &IommuSummary) -> Vec<Finding> {
    vec![
        firmware(facts, iommu),
        kernel_state(facts, iommu),
        cmdline(facts, iommu),
        passthrough_mode(facts, iommu),
        remapping(facts, iommu),
        acs_override(facts),
        firmware_bugs(facts),
    ]
}

fn firmware(facts: &HostFacts, iommu: &IommuSummary) -> Finding {
    let id = "iommu.firmware";
    let log = &facts.iommu_log;
    match iommu.kind {
        Some(IommuKind::Intel) if facts.acpi.dmar => with_line(
            Finding::new(id, Status::Ok, "The firmware describes an Intel VT-d IOMMU (ACPI DMAR table)")
                .evidence(format!("{TABLES}/DMAR"), "present"),
            log.dmar_table.as_ref(),
        ),
        Some(IommuKind::Amd) if facts.acpi.ivrs => with_line(
            Finding::new(id, Status::Ok, "The firmware describes an AMD-Vi IOMMU (ACPI IVRS table)")
                .evidence(format!("{TABLES}/IVRS"), "present"),
            log.ivrs_table.as_ref(),
        ),
        Some(kind) => {
            let table = if kind == IommuKind::Intel { "DMAR" } else { "IVRS" };
            with_line(
                Finding::new(id, Status::Ok, format!("The kernel log shows an ACPI {table} table")),
                log.dmar_table.as_ref().or(log.ivrs_table.as_ref()),
            )
        }
        None if facts.acpi_visible => Finding::new(
            id,
            Status::Fail,
            "The firmware describes no IOMMU (no ACPI DMAR or IVRS table)",
        )
        .evidence(TABLES, "no DMAR, no IVRS")
        .remedy(
            "Enable the IOMMU in the firmware setup: \"VT-d\" / \"Intel Virtualization Technology \
             for Directed I/O\" on Intel boards, \"IOMMU\" or \"AMD-Vi\" on AMD boards (save, power \
             off, power on). Without an IOMMU nothing can be passed through. In a virtual \
             machine, give it a virtual IOMMU (QEMU: -device intel-iommu or amd-iommu).",
        ),
        None => Finding::new(id, Status::Unknown, "Cannot see the ACPI tables")
            .evidence(TABLES, "missing"),
    }
}

fn kernel_state(facts: &HostFacts, iommu: &IommuSummary) -> Finding {
    let id = "iommu.kernel";
    let log = &facts.iommu_log;
    let enabled_line = log.intel_enabled.as_ref().or(log.amd_enabled.as_ref());
    match iommu.state {
        IommuState::On => {
            let mut f = Finding::new(
                id,
                Status::Ok,
                format!("The kernel uses the IOMMU: {} IOMMU groups", iommu.groups),
            )
            .evidence(GROUPS, format!("{} groups", iommu.groups));
            if !facts.iommu_units.is_empty() {
                f = f.evidence("/sys/class/iommu", facts.iommu_units.join(" "));
            }
            with_line(f, enabled_line)
        }
        IommuState::Off => {
            let disabled = log.intel_disabled.as_ref().or(log.amd_disabled.as_ref());
            let f = Finding::new(
                id,
                Status::Fail,
                "The firmware has an IOMMU but the kernel does not use it: there are no IOMMU groups",
            )
            .evidence(GROUPS, "empty")
            .remedy("See iommu.cmdline for the kernel argument to change; `passthru enable` sets it up and can undo it.");
            with_line(f, disabled)
        }
        IommuState::Absent => Finding::new(
            id,
            Status::Fail,
            "No IOMMU: devices cannot be isolated, so none can be passed through",
        )
        .evidence(GROUPS, "empty")
        .remedy("See iommu.firmware."),
        IommuState::Unknown => {
            let why = match &facts.groups {
                Err(e) => e.clone(),
                Ok(_) => "no IOMMU groups and no ACPI tables to judge by".into(),
            };
            Finding::new(
                id,
                Status::Unknown,
                "Cannot tell whether the kernel uses an IOMMU",
            )
            .evidence(GROUPS, why)
        }
    }
}

/// Whether `value` (a comma list such as `on,igfx_off`) contains `word`.
fn has_word(value: Option<&str>, word: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|w| w.trim() == word))
}

fn cmdline(facts: &HostFacts, iommu: &IommuSummary) -> Finding {
    let id = "iommu.cmdline";
    let cmd = match &facts.cmdline {
        Ok(c) => c,
        Err(why) => {
            return Finding::new(id, Status::Unknown, "Cannot read the kernel command line")
                .evidence(CMDLINE, why.clone())
        }
    };
    let raw = cmd.raw.clone();
    let intel = cmd.last("intel_iommu").flatten();
    let amd = cmd.last("amd_iommu").flatten();
    let generic = cmd.last("iommu").flatten();
    let off_arg = match iommu.kind {
        Some(IommuKind::Intel) if has_word(intel, "off") => Some("intel_iommu=off"),
        Some(IommuKind::Amd) if has_word(amd, "off") => Some("amd_iommu=off"),
        _ if generic == Some("off") => Some("iommu=off"),
        _ => None,
    };
    if let Some(arg) = off_arg {
        let replacement = if iommu.kind == Some(IommuKind::Intel) {
            " and add intel_iommu=on"
        } else {
            ""
        };
        return Finding::new(
            id,
            Status::Fail,
            format!("`{arg}` on the kernel command line turns the IOMMU off"),
        )
        .evidence(CMDLINE, raw)
        .remedy(format!(
            "Remove `{arg}`{replacement} in the bootloader configuration (`passthru enable` does \
             this, previews it and can undo it), then reboot."
        ));
    }
    match iommu.kind {
        Some(IommuKind::Intel) => {
            let default_on = facts
                .config
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(|c| c.get("CONFIG_INTEL_IOMMU_DEFAULT_ON"));
            if has_word(intel, "on") {
                Finding::new(id, Status::Ok, "intel_iommu=on is set").evidence(CMDLINE, raw)
            } else if default_on == Some(ConfigValue::Builtin) {
                Finding::new(
                    id,
                    Status::Ok,
                    "This kernel turns VT-d on by default (CONFIG_INTEL_IOMMU_DEFAULT_ON=y): no argument needed",
                )
                .evidence(CMDLINE, raw)
            } else if iommu.state == IommuState::On {
                Finding::new(
                    id,
                    Status::Ok,
                    "The IOMMU is on without intel_iommu=on (this kernel enables VT-d by default)",
                )
                .evidence(CMDLINE, raw)
            } else {
                let why = match default_on {
                    Some(_) => "this kernel leaves VT-d off by default (CONFIG_INTEL_IOMMU_DEFAULT_ON is not set)",
                    None => "this kernel leaves VT-d off unless it was built with CONFIG_INTEL_IOMMU_DEFAULT_ON=y",
                };
                Finding::new(id, Status::Fail, format!("intel_iommu=on is missing: {why}"))
                    .evidence(CMDLINE, raw)
                    .remedy("Add `intel_iommu=on iommu=pt` to the kernel command line (`passthru enable` does this, previews it and can undo it), then reboot.")
            }
        }
        Some(IommuKind::Amd) => Finding::new(
            id,
            Status::Ok,
            "AMD-Vi is on by default: no kernel argument is needed",
        )
        .evidence(CMDLINE, raw),
        None => Finding::new(
            id,
            Status::Unknown,
            "No IOMMU in the firmware: no kernel argument can turn one on",
        )
        .evidence(CMDLINE, raw),
    }
}

fn passthrough_mode(facts: &HostFacts, iommu: &IommuSummary) -> Finding {
    let id = "iommu.passthrough_mode";
    let pt_arg = facts
        .cmdline
        .as_ref()
        .ok()
        .is_some_and(|c| has_word(c.last("iommu").flatten(), "pt"));
    let domain = facts.iommu_log.default_domain.as_ref();
    let raw = facts
        .cmdline
        .as_ref()
        .map(|c| c.raw.clone())
        .unwrap_or_default();
    if pt_arg {
        return with_line(
            Finding::new(
                id,
                Status::Ok,
                "iommu=pt is set: the host's own devices skip DMA translation",
            )
            .evidence(CMDLINE, raw),
            domain,
        );
    }
    if domain.is_some_and(|l| l.text.contains("Passthrough")) {
        return with_line(
            Finding::new(id, Status::Ok, "The IOMMU's default domain is passthrough"),
            domain,
        );
    }
    if iommu.kind.is_none() {
        return Finding::new(id, Status::Unknown, "No IOMMU: the DMA mode does not apply");
    }
    with_line(
        Finding::new(
            id,
            Status::Warn,
            "iommu=pt is not set: the host's own devices pay for DMA translation they do not need",
        )
        .evidence(CMDLINE, raw)
        .remedy("Add `iommu=pt` to the kernel command line (`passthru enable` does this)."),
        domain,
    )
}

fn remapping(facts: &HostFacts, iommu: &IommuSummary) -> Finding {
    let id = "iommu.interrupt_remapping";
    let log = &facts.iommu_log;
    let unsafe_note = if facts.unsafe_interrupts_allowed {
        " (vfio_iommu_type1 allow_unsafe_interrupts=Y is set)"
    } else {
        ""
    };
    let config_off = facts
        .config
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .is_some_and(|c| c.get("CONFIG_IRQ_REMAP") == ConfigValue::NotSet);
    let remedy_off = "Without interrupt remapping, a passed-through device could inject \
        interrupts into the host: VFIO refuses to assign devices unless \
        `vfio_iommu_type1.allow_unsafe_interrupts=1` is set, which gives up that protection. \
        Enable \"Interrupt Remapping\" / x2APIC in the firmware setup if it exists, and update \
        the firmware.";
    match interrupt_remapping(facts, iommu) {
        Switch::On => with_line(
            Finding::new(id, Status::Ok, "Interrupt remapping is on"),
            log.irq_remap_enabled.as_ref(),
        ),
        Switch::Off => {
            let summary = if config_off {
                "Interrupt remapping is off: this kernel is built without CONFIG_IRQ_REMAP"
            } else if log.irq_remap_failed.is_some() {
                "Interrupt remapping is off: the kernel could not enable it"
            } else {
                "Interrupt remapping is off: the kernel log never shows it enabled"
            };
            let mut f = with_line(
                Finding::new(id, Status::Warn, format!("{summary}{unsafe_note}")).remedy(remedy_off),
                log.irq_remap_failed.as_ref(),
            );
            if log.irq_remap_failed.is_none() {
                f = f.evidence(LOG, "no \"Enabled IRQ remapping\" or \"Interrupt remapping enabled\" line");
            }
            f
        }
        Switch::Unknown if iommu.state != IommuState::On => Finding::new(
            id,
            Status::Unknown,
            "The IOMMU is not on, so interrupt remapping cannot be judged",
        ),
        Switch::Unknown => Finding::new(id, Status::Unknown, "Cannot read the kernel log to tell")
            .evidence(LOG, log_unknown_reason(facts))
            .remedy("Run `passthru check` as root (the kernel log is restricted by kernel.dmesg_restrict)."),
    }
}

fn acs_override(facts: &HostFacts) -> Finding {
    let id = "iommu.acs_override";
    let arg = facts.cmdline.as_ref().ok().and_then(|c| {
        c.args
            .iter()
            .find(|a| a.key.replace('-', "_") == "pcie_acs_override")
            .map(|a| format!("{}={}", a.key, a.value.clone().unwrap_or_default()))
    });
    let line = facts.iommu_log.acs_override.as_ref();
    if line.is_none() && arg.is_none() {
        return Finding::new(
            id,
            Status::Ok,
            "No ACS override: IOMMU groups reflect the hardware's isolation",
        );
    }
    let mut f = Finding::new(
        id,
        Status::Warn,
        "The ACS override patch is in use: IOMMU groups are split by the kernel, not by the \
         hardware, and devices in different groups may still reach each other by peer-to-peer DMA",
    )
    .remedy(
        "Treat the groups as a convenience, not a security boundary. To drop the override, \
         remove `pcie_acs_override=` from the kernel command line and use slots whose root \
         ports isolate their devices (see `passthru list`).",
    );
    if let Some(a) = arg {
        f = f.evidence(CMDLINE, a);
    }
    with_line(f, line)
}

fn firmware_bugs(facts: &HostFacts) -> Finding {
    let id = "iommu.firmware_bugs";
    if !log_known(facts) {
        return Finding::new(id, Status::Unknown, "Cannot read the kernel log")
            .evidence(LOG, log_unknown_reason(facts));
    }
    let bugs = &facts.iommu_log.firmware_bugs;
    if bugs.is_empty() {
        return Finding::new(
            id,
            Status::Ok,
            "The kernel log reports no IOMMU firmware bugs",
        );
    }
    let mut f = Finding::new(
        id,
        Status::Warn,
        format!(
            "The kernel log reports {} IOMMU firmware problem(s)",
            bugs.len()
        ),
    )
    .remedy(
        "Update the firmware (BIOS/UEFI). RMRR problems keep the affected device from being \
         assigned; IVRS/IOAPIC problems can break interrupt remapping (AMD: `ivrs_ioapic[ID]=BDF` \
         on the kernel command line works around a missing entry).",
    );
    for b in bugs {
        f = f.evidence(LOG, b.display());
    }
    f
}
