//! The host CPU: identity and flags from `/proc/cpuinfo`, and topology from
//! `/sys/devices/system/cpu`.
//!
//! Hardware virtualization shows as the `vmx` flag (Intel VT-x) or `svm` (AMD-V).
//! A guest of another hypervisor has the `hypervisor` flag; it only has vmx/svm when
//! its host offers nested virtualization. Topology matters for pinning a VM's vCPUs:
//! SMT siblings share a core, cores that share an L3 cache (an AMD CCD/CCX) should
//! stay together, and hybrid Intel parts mix performance and efficiency cores.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};

/// The CPU maker, from the `vendor_id` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuVendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` (also `HygonGenuine`, which uses AMD-V and AMD-Vi).
    Amd,
    /// Any other vendor string.
    Other(String),
    /// cpuinfo had no vendor line.
    Unknown,
}

/// What `/proc/cpuinfo` says about the first processor (all are alike for our needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// `vendor_id`, e.g. `GenuineIntel`.
    pub vendor_id: Option<String>,
    /// `model name`.
    pub model_name: Option<String>,
    /// The feature flags (`flags` line).
    pub flags: BTreeSet<String>,
    /// How many `processor` entries there are.
    pub logical_cpus: usize,
    /// The `flags` line as read, for evidence.
    #[serde(skip)]
    pub flags_line: Option<String>,
}

impl CpuInfo {
    /// Parses the text of `/proc/cpuinfo`.
    pub fn parse(_text: &str) -> Self {
        unimplemented!()
    }

    /// Reads and parses `proc/cpuinfo` under `root`.
    pub fn read(root: &HostRoot) -> Result<Self, HostError> {
        Ok(Self::parse(&root.read_to_string("proc/cpuinfo")?))
    }

    /// The vendor, classified.
    pub fn vendor(&self) -> CpuVendor {
        unimplemented!()
    }

    /// Whether a flag is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }
}

/// A hybrid CPU's core type (Intel Alder Lake and later), from
/// `/sys/devices/cpu_core/cpus` and `/sys/devices/cpu_atom/cpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreKind {
    /// A performance core.
    Performance,
    /// An efficiency core.
    Efficiency,
}

/// One logical CPU (hardware thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogicalCpu {
    /// The CPU number (`cpuN`).
    pub cpu: u32,
    /// Whether it is online (`online` file; cpu0 often has none and is online).
    pub online: bool,
    /// `topology/physical_package_id`.
    pub package: Option<u32>,
    /// `topology/die_id`.
    pub die: Option<u32>,
    /// `topology/core_id`.
    pub core: Option<u32>,
    /// `topology/thread_siblings_list`: the threads of its core, itself included.
    pub thread_siblings: Vec<u32>,
    /// The CPUs sharing its last-level (L3) cache, from `cache/index*/` with
    /// `level` 3 and `shared_cpu_list`.
    pub l3_shared_with: Vec<u32>,
    /// Its NUMA node (`nodeN` link in the CPU's directory).
    pub numa_node: Option<u32>,
    /// Performance or efficiency core on hybrid parts.
    pub core_kind: Option<CoreKind>,
}

/// All logical CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuTopology {
    /// Sorted by CPU number.
    pub cpus: Vec<LogicalCpu>,
}

/// Counts derived from a [`CpuTopology`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopologySummary {
    /// Physical packages (sockets).
    pub packages: usize,
    /// Physical cores.
    pub cores: usize,
    /// Logical CPUs (threads).
    pub threads: usize,
    /// Groups of CPUs sharing one L3 cache (one per AMD CCX/CCD, usually one on Intel).
    pub l3_domains: Vec<Vec<u32>>,
    /// NUMA nodes with their CPUs.
    pub numa_nodes: Vec<(u32, Vec<u32>)>,
    /// Performance cores (hybrid parts only).
    pub performance_cores: usize,
    /// Efficiency cores (hybrid parts only).
    pub efficiency_cores: usize,
}

impl CpuTopology {
    /// Reads `sys/devices/system/cpu/cpu*/` under `root`.
    pub fn read(_root: &HostRoot) -> Result<Self, HostError> {
        unimplemented!()
    }

    /// Packages, cores, threads, L3 domains, NUMA nodes and hybrid core counts.
    pub fn summary(&self) -> TopologySummary {
        unimplemented!()
    }
}

/// Why a kernel CPU list (`0-3,8-11`) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a CPU list (expected e.g. 0-3,8,10-11)")]
pub struct CpuListError(pub String);

/// Parses the kernel's CPU list format (`0-3,8,10-11`; empty means none).
pub fn parse_cpu_list(_text: &str) -> Result<Vec<u32>, CpuListError> {
    unimplemented!()
}
