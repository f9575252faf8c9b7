//! Kernel checks: is the kernel built with what passthrough needs (`kernel.vfio`),
//! and are the VFIO modules there (`vfio.modules`)? Also the config fragment a
//! rebuilt kernel needs (`passthru check --kernel-config FILE`).

use serde::Serialize;

use super::{Finding, IommuKind, Provision, Status};
use crate::host::facts::HostFacts;
use crate::host::kernel::config::{ConfigValue, KernelConfig};
use crate::host::kernel::modules::{ModuleAvailability, ModuleIndex};

/// A kernel option passthrough depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequiredOption {
    /// `CONFIG_…`.
    pub name: &'static str,
    /// The value a rebuilt kernel should use when it is missing (`y` or `m`).
    pub wanted: &'static str,
    /// What it provides.
    pub why: &'static str,
}

const fn opt(name: &'static str, wanted: &'static str, why: &'static str) -> RequiredOption {
    RequiredOption { name, wanted, why }
}

const COMMON: &[RequiredOption] = &[
    opt("CONFIG_IOMMU_SUPPORT", "y", "IOMMU support"),
    opt(
        "CONFIG_IRQ_REMAP",
        "y",
        "interrupt remapping, so VFIO accepts devices safely",
    ),
    opt("CONFIG_VFIO", "m", "the VFIO framework"),
    opt(
        "CONFIG_VFIO_IOMMU_TYPE1",
        "m",
        "VFIO's IOMMU backend (vfio_iommu_type1)",
    ),
    opt(
        "CONFIG_VFIO_PCI",
        "m",
        "the vfio-pci driver that holds devices for VMs",
    ),
    opt("CONFIG_KVM", "m", "KVM, hardware-accelerated VMs"),
];
const INTEL_IOMMU: RequiredOption = opt("CONFIG_INTEL_IOMMU", "y", "the Intel VT-d driver");
const AMD_IOMMU: RequiredOption = opt("CONFIG_AMD_IOMMU", "y", "the AMD-Vi driver");
const KVM_INTEL: RequiredOption = opt("CONFIG_KVM_INTEL", "m", "KVM for Intel VT-x");
const KVM_AMD: RequiredOption = opt("CONFIG_KVM_AMD", "m", "KVM for AMD-V");

/// The options this host needs: the common ones plus the IOMMU driver for its
/// firmware table and the KVM module for its CPU (both vendors when unknown).
pub fn required_options(facts: &HostFacts) -> Vec<RequiredOption> {
    let mut out = COMMON.to_vec();
    match super::iommu::summary(facts).kind {
        Some(IommuKind::Intel) => out.push(INTEL_IOMMU),
        Some(IommuKind::Amd) => out.push(AMD_IOMMU),
        None => out.extend([INTEL_IOMMU, AMD_IOMMU]),
    }
    let cpu = facts.cpu.as_ref().ok();
    match (
        cpu.is_some_and(|c| c.has_flag("vmx")),
        cpu.is_some_and(|c| c.has_flag("svm")),
    ) {
        (true, false) => out.push(KVM_INTEL),
        (false, true) => out.push(KVM_AMD),
        _ => out.extend([KVM_INTEL, KVM_AMD]),
    }
    out
}

fn config(facts: &HostFacts) -> Option<&KernelConfig> {
    facts.config.as_ref().ok().and_then(Option::as_ref)
}

fn module_index(facts: &HostFacts) -> Option<&ModuleIndex> {
    facts.modules.as_ref().ok().and_then(Option::as_ref)
}

fn value_text(v: &ConfigValue) -> String {
    match v {
        ConfigValue::Builtin => "y".into(),
        ConfigValue::Module => "m".into(),
        ConfigValue::NotSet => "n".into(),
        ConfigValue::Value(s) => s.clone(),
    }
}

/// The config fragment for `scripts/kconfig/merge_config.sh`: every required option,
/// keeping the host's value where it is set and using the wanted value where not.
pub fn kernel_config_fragment(facts: &HostFacts) -> String {
    let release = facts.release.as_deref().unwrap_or("unknown release");
    let mut s = format!(
        "# Kernel options for PCI passthrough with passthru (host kernel: {release}).\n\
         # Merge into a kernel .config with:\n\
         #   scripts/kconfig/merge_config.sh -m .config THIS_FILE && make olddefconfig\n"
    );
    let cfg = config(facts);
    for o in required_options(facts) {
        let current = cfg.map(|c| c.get(o.name));
        let (value, note) = match current {
            Some(ConfigValue::Builtin) => ("y", ""),
            Some(ConfigValue::Module) => ("m", ""),
            Some(_) => (o.wanted, " (missing on this host)"),
            None => (o.wanted, " (host config unknown)"),
        };
        s.push_str(&format!("# {}{note}\n{}={value}\n", o.why, o.name));
    }
    s
}

/// How vfio-pci is provided: from `modules.builtin`/`modules.dep`, else the config.
pub fn vfio_pci_provision(facts: &HostFacts) -> Provision {
    if let Some(index) = module_index(facts) {
        return match index.availability("vfio_pci") {
            ModuleAvailability::Builtin => Provision::Builtin,
            ModuleAvailability::Module { .. } => Provision::Module,
            ModuleAvailability::Absent => Provision::Absent,
        };
    }
    match config(facts).map(|c| c.get("CONFIG_VFIO_PCI")) {
        Some(ConfigValue::Builtin) => Provision::Builtin,
        Some(ConfigValue::Module) => Provision::Module,
        Some(_) => Provision::Absent,
        None => Provision::Unknown,
    }
}

const BUILTIN_NOTE: &str = "vfio-pci is built into this kernel: early binding must use \
    `vfio-pci.ids=` on the kernel command line (options in /etc/modprobe.d are ignored)";

/// `kernel.vfio` and `vfio.modules`.
pub fn findings(facts: &HostFacts) -> Vec<Finding> {
    vec![kernel_vfio(facts), vfio_modules(facts)]
}

fn kernel_vfio(facts: &HostFacts) -> Finding {
    let id = "kernel.vfio";
    let Some(cfg) = config(facts) else {
        let why = match &facts.config {
            Err(e) => e.clone(),
            _ => format!(
                "neither /proc/config.gz nor /boot/config-{} exists",
                facts.release.as_deref().unwrap_or("<release>")
            ),
        };
        return Finding::new(
            id,
            Status::Unknown,
            "The kernel's build configuration is not available; judging by its modules instead (see vfio.modules)",
        )
        .evidence("/proc/config.gz", why);
    };
    let source = cfg.source.display().to_string();
    let required = required_options(facts);
    let missing: Vec<&RequiredOption> = required
        .iter()
        .filter(|o| matches!(cfg.get(o.name), ConfigValue::NotSet))
        .collect();
    let mut f = if missing.is_empty() {
        let mut summary =
            "The kernel has everything passthrough needs (VFIO, IOMMU, KVM, interrupt remapping)"
                .to_string();
        if cfg.get("CONFIG_VFIO_PCI") == ConfigValue::Builtin {
            summary = format!("{summary}; {BUILTIN_NOTE}");
        }
        Finding::new(id, Status::Ok, summary)
    } else {
        let names: Vec<&str> = missing.iter().map(|o| o.name).collect();
        Finding::new(
            id,
            Status::Fail,
            format!("The kernel is built without {}", names.join(", ")),
        )
        .remedy(
            "Install a kernel built with these options (most distribution kernels have them), or \
             rebuild yours: `passthru check --kernel-config passthru.config` writes the fragment \
             for scripts/kconfig/merge_config.sh.",
        )
    };
    for o in &required {
        let line = match cfg.get(o.name) {
            ConfigValue::NotSet => format!("# {} is not set", o.name),
            v => format!("{}={}", o.name, value_text(&v)),
        };
        f = f.evidence(source.clone(), line);
    }
    f
}

fn vfio_modules(facts: &HostFacts) -> Finding {
    let id = "vfio.modules";
    let Some(index) = module_index(facts) else {
        let why = match &facts.modules {
            Err(e) => e.clone(),
            _ => format!(
                "no lib/modules/{}/modules.dep or modules.builtin",
                facts.release.as_deref().unwrap_or("<release>")
            ),
        };
        return Finding::new(
            id,
            Status::Unknown,
            "Cannot see which modules this kernel has",
        )
        .evidence("/lib/modules", why);
    };
    let loaded = facts.loaded.as_ref().ok();
    let source = format!(
        "/lib/modules/{}/modules.dep",
        facts.release.as_deref().unwrap_or("<release>")
    );
    let mut missing = Vec::new();
    let mut describe = Vec::new();
    let mut f_evidence = Vec::new();
    for name in ["vfio_pci", "vfio_iommu_type1"] {
        let state = index.availability(name);
        let is_loaded = loaded.is_some_and(|l| l.contains(name));
        let text = match (&state, is_loaded) {
            (ModuleAvailability::Builtin, _) => "built in".to_string(),
            (ModuleAvailability::Module { .. }, true) => "module, loaded".to_string(),
            (ModuleAvailability::Module { .. }, false) => "module, not loaded".to_string(),
            (ModuleAvailability::Absent, _) => {
                missing.push(name);
                "missing".to_string()
            }
        };
        let path = match &state {
            ModuleAvailability::Module { path } => format!(" ({path})"),
            _ => String::new(),
        };
        describe.push(format!("{name}: {text}"));
        f_evidence.push(format!("{name}: {text}{path}"));
    }
    let mut f = if missing.is_empty() {
        let mut summary = format!("VFIO is available ({})", describe.join("; "));
        if index.availability("vfio_pci") == ModuleAvailability::Builtin {
            summary = format!("{summary}; {BUILTIN_NOTE}");
        }
        Finding::new(id, Status::Ok, summary)
    } else {
        Finding::new(
            id,
            Status::Fail,
            format!("This kernel has no {}", missing.join(" or ")),
        )
        .remedy("Install a kernel with VFIO (CONFIG_VFIO_PCI, CONFIG_VFIO_IOMMU_TYPE1); `passthru check --kernel-config FILE` writes the options a rebuild needs.")
    };
    for e in f_evidence {
        f = f.evidence(source.clone(), e);
    }
    f
}
