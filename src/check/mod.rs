//! `passthru check`: every readiness check for PCI passthrough, each a [`Finding`]
//! with a status, the evidence it read and a remedy.
//!
//! Checks are pure functions of [`HostFacts`]: they read nothing themselves, so they
//! are tested on facts built from real text, and the same verdicts come out of a live
//! host and of a report of it.

mod iommu;
mod kernel;
pub mod platform;

use std::borrow::Cow;

use serde::Serialize;

use crate::host::facts::HostFacts;

pub use kernel::{kernel_config_fragment, RequiredOption};

/// The JSON schema version of [`CheckReport`]; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something is risky or not recommended.
    Warn,
    /// Passthrough cannot work until this is fixed.
    Fail,
    /// The host data needed to decide is missing.
    Unknown,
}

impl Status {
    /// A short label for terminal output.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
            Self::Unknown => "?",
        }
    }
}

/// What a finding is based on: a file (or command) and the line read there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Where it was read, e.g. `/proc/cmdline`, `kernel log`.
    pub source: String,
    /// The line or value read.
    pub text: String,
}

impl Evidence {
    /// Evidence from `source` with `text`.
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            text: text.into(),
        }
    }
}

/// The result of one check: the one finding type of passthru, used by `check` (where
/// the id is a stable name such as `iommu.kernel`), by `vm check` (the id names the
/// check: `devices`, `hugepages`, …; see [`crate::vm::check`]) and by `verify` (the id
/// says what was verified, the summary what was found there, the remedy the likely
/// cause when it did not hold; see [`crate::plan::verify`]). Each command prints it in
/// its own documented JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked: a stable identifier (`iommu.kernel`), a check's name, or a
    /// sentence.
    pub id: Cow<'static, str>,
    /// The verdict.
    pub status: Status,
    /// One line saying what was found.
    pub summary: String,
    /// What the verdict rests on.
    pub evidence: Vec<Evidence>,
    /// What the user can do, when something is to be done.
    pub remedy: Option<String>,
}

impl Finding {
    /// A finding without evidence or remedy.
    pub fn new(
        id: impl Into<Cow<'static, str>>,
        status: Status,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status,
            summary: summary.into(),
            evidence: Vec::new(),
            remedy: None,
        }
    }

    /// Adds what the verdict rests on.
    pub fn evidence(mut self, source: impl Into<String>, text: impl Into<String>) -> Self {
        self.evidence.push(Evidence::new(source, text));
        self
    }

    /// Sets the remedy.
    pub fn remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}

/// The IOMMU's state as `check` concludes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuState {
    /// The kernel uses it: groups exist.
    On,
    /// The firmware has one but the kernel does not use it.
    Off,
    /// No IOMMU table in the firmware.
    Absent,
    /// Cannot tell.
    Unknown,
}

/// Which IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuKind {
    /// Intel VT-d (ACPI DMAR).
    Intel,
    /// AMD-Vi (ACPI IVRS).
    Amd,
}

/// The IOMMU summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IommuSummary {
    /// On, off, absent or unknown.
    pub state: IommuState,
    /// Intel or AMD, from the ACPI tables (never from the CPU vendor).
    pub kind: Option<IommuKind>,
    /// Number of IOMMU groups.
    pub groups: usize,
}

/// On / off / unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
    /// Cannot tell.
    Unknown,
}

/// How the kernel provides a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provision {
    /// Built into the kernel image: configure it on the kernel command line.
    Builtin,
    /// A loadable module: configure it in modprobe.d.
    Module,
    /// Not available.
    Absent,
    /// Cannot tell.
    Unknown,
}

/// The state of `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmState {
    /// Present and openable (or present in a captured tree).
    Usable,
    /// Present but not openable by this user.
    NoAccess,
    /// Missing.
    NoDevice,
}

/// The host in a few words, for scripts and for later commands (`enable` needs to
/// know whether vfio-pci is built in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    /// `intel`, `amd`, `other` or `unknown` (from cpuinfo).
    pub cpu_vendor: &'static str,
    /// The IOMMU.
    pub iommu: IommuSummary,
    /// Interrupt remapping.
    pub interrupt_remapping: Switch,
    /// How vfio-pci is provided.
    pub vfio_pci: Provision,
    /// `/dev/kvm`.
    pub kvm: KvmState,
}

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Ok findings.
    pub ok: usize,
    /// Warnings.
    pub warn: usize,
    /// Failures.
    pub fail: usize,
    /// Unknowns.
    pub unknown: usize,
}

/// Everything `check` reports (the `--json` document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The host root that was read.
    pub root: String,
    /// The kernel release, when known.
    pub kernel: Option<String>,
    /// The worst status: `fail`, `warn`, or `ok` (unknowns do not fail a check).
    pub status: Status,
    /// Counts per status.
    pub counts: Counts,
    /// The host in a few words.
    pub host: HostSummary,
    /// Every finding, in a stable order.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Whether any finding failed.
    pub fn failed(&self) -> bool {
        self.counts.fail > 0
    }
}

/// Runs every check on `facts`.
pub fn run(facts: &HostFacts) -> CheckReport {
    let iommu_summary = iommu::summary(facts);
    let mut findings = Vec::new();
    findings.extend(platform::cpu_virtualization(facts));
    findings.push(platform::kvm(facts));
    findings.extend(iommu::findings(facts, &iommu_summary));
    findings.extend(kernel::findings(facts));
    findings.extend(platform::tools(facts));
    findings.push(platform::hugepages(facts));
    findings.extend(platform::topology(facts));

    let mut counts = Counts::default();
    for f in &findings {
        match f.status {
            Status::Ok => counts.ok += 1,
            Status::Warn => counts.warn += 1,
            Status::Fail => counts.fail += 1,
            Status::Unknown => counts.unknown += 1,
        }
    }
    let status = if counts.fail > 0 {
        Status::Fail
    } else if counts.warn > 0 {
        Status::Warn
    } else {
        Status::Ok
    };
    CheckReport {
        schema_version: SCHEMA_VERSION,
        root: facts.root.dir().display().to_string(),
        kernel: facts.release.clone(),
        status,
        counts,
        host: HostSummary {
            cpu_vendor: platform::vendor_word(facts),
            interrupt_remapping: iommu::interrupt_remapping(facts, &iommu_summary),
            iommu: iommu_summary,
            vfio_pci: kernel::vfio_pci_provision(facts),
            kvm: platform::kvm_state(facts),
        },
        findings,
    }
}
