//! The host CPU: identity and flags from `/proc/cpuinfo`, and topology from
//! `/sys/devices/system/cpu`.
//!
//! Hardware virtualization shows as the `vmx` flag (Intel VT-x) or `svm` (AMD-V).
//! A guest of another hypervisor has the `hypervisor` flag; it only has vmx/svm when
//! its host offers nested virtualization. Topology matters for pinning a VM's vCPUs:
//! SMT siblings share a core, cores that share an L3 cache (an AMD CCD/CCX) should
//! stay together, and hybrid Intel parts mix performance and efficiency cores.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host::root::{HostError, HostRoot};

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
    ///
    /// The file is one block of `key\t: value` lines per logical CPU, blocks separated
    /// by a blank line. Every `processor` line counts one logical CPU; `vendor_id`,
    /// `model name` and `flags` are taken from their first occurrence (the first
    /// processor's block). Lines without a colon, empty values and fields of other
    /// architectures (arm64's `Features`, `CPU implementer`, …) are ignored, so text
    /// from any architecture parses, possibly to an empty result.
    pub fn parse(text: &str) -> Self {
        let mut info = CpuInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "processor" => info.logical_cpus += 1,
                "vendor_id" if info.vendor_id.is_none() && !value.is_empty() => {
                    info.vendor_id = Some(value.to_string());
                }
                "model name" if info.model_name.is_none() && !value.is_empty() => {
                    info.model_name = Some(value.to_string());
                }
                "flags" if info.flags_line.is_none() => {
                    info.flags = value.split_whitespace().map(str::to_string).collect();
                    info.flags_line = Some(line.to_string());
                }
                _ => {}
            }
        }
        info
    }

    /// Reads and parses `proc/cpuinfo` under `root`.
    pub fn read(root: &HostRoot) -> Result<Self, HostError> {
        Ok(Self::parse(&root.read_to_string("proc/cpuinfo")?))
    }

    /// The vendor, classified.
    pub fn vendor(&self) -> CpuVendor {
        match self.vendor_id.as_deref() {
            None => CpuVendor::Unknown,
            Some("GenuineIntel") => CpuVendor::Intel,
            // Hygon's Dhyana is a licensed Zen: AMD-V (svm) and AMD-Vi like AMD's own.
            Some("AuthenticAMD" | "HygonGenuine") => CpuVendor::Amd,
            Some(other) => CpuVendor::Other(other.to_string()),
        }
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
    ///
    /// Every `cpuN` directory (N numeric; `cpufreq`, `cpuidle` … are skipped) gives one
    /// [`LogicalCpu`]. A missing `sys/devices/system/cpu` gives an empty topology.
    /// An offline CPU has no `topology/` or `cache/` directory: it is kept, with
    /// `None` and empty fields. Files that are missing or hold odd values give `None`
    /// (or an empty list); only real I/O failures (other than "not found") are errors.
    ///
    /// The NUMA node comes from the `nodeN` link in the CPU's directory, else from the
    /// `sys/devices/system/node/nodeN/cpulist` that names the CPU. The hybrid core
    /// kind comes from the CPU lists of the `cpu_core` and `cpu_atom` PMUs
    /// (`sys/devices/cpu_core/cpus`, `sys/devices/cpu_atom/cpus`), which only hybrid
    /// Intel parts have.
    pub fn read(root: &HostRoot) -> Result<Self, HostError> {
        let base = "sys/devices/system/cpu";
        let mut numbers: Vec<u32> = root
            .list_dir_optional(base)?
            .iter()
            .filter_map(|name| numbered(name, "cpu"))
            .collect();
        numbers.sort_unstable();
        numbers.dedup();

        let node_of = node_cpulists(root)?;
        let performance = optional_cpu_set(root, "sys/devices/cpu_core/cpus")?;
        let efficiency = optional_cpu_set(root, "sys/devices/cpu_atom/cpus")?;

        let mut cpus = Vec::with_capacity(numbers.len());
        for cpu in numbers {
            let dir = format!("{base}/cpu{cpu}");
            // cpu0 often cannot be taken offline and then has no `online` file.
            let online = match root.read_optional(format!("{dir}/online"))? {
                Some(text) => text.trim() != "0",
                None => true,
            };
            let topo = format!("{dir}/topology");
            let numa_node = root
                .list_dir_optional(&dir)?
                .iter()
                .find_map(|name| numbered(name, "node"))
                .or_else(|| node_of.get(&cpu).copied());
            let core_kind = if performance.contains(&cpu) {
                Some(CoreKind::Performance)
            } else if efficiency.contains(&cpu) {
                Some(CoreKind::Efficiency)
            } else {
                None
            };
            cpus.push(LogicalCpu {
                cpu,
                online,
                package: optional_id(root, format!("{topo}/physical_package_id"))?,
                die: optional_id(root, format!("{topo}/die_id"))?,
                core: optional_id(root, format!("{topo}/core_id"))?,
                thread_siblings: optional_cpu_list(root, format!("{topo}/thread_siblings_list"))?,
                l3_shared_with: l3_shared_list(root, &format!("{dir}/cache"))?,
                numa_node,
                core_kind,
            });
        }
        Ok(Self { cpus })
    }

    /// Packages, cores, threads, L3 domains, NUMA nodes and hybrid core counts.
    ///
    /// Only online CPUs count (as in `/proc/cpuinfo`, which lists only those). A core
    /// is a distinct (package, die, core id); a CPU whose core id is unknown counts
    /// as a core of its own, so `threads >= cores` always holds and `cores` is at
    /// least 1 when any CPU is online. Hybrid counts are of cores, not threads: a
    /// hyper-threaded P-core counts once.
    pub fn summary(&self) -> TopologySummary {
        /// Identifies a physical core: (package, die, core id), or the CPU itself.
        type CoreKey = (Option<u32>, Option<u32>, Result<u32, u32>);
        let online = self.cpus.iter().filter(|c| c.online);
        let mut packages = BTreeSet::new();
        let mut cores: BTreeSet<CoreKey> = BTreeSet::new();
        let mut performance: BTreeSet<CoreKey> = BTreeSet::new();
        let mut efficiency: BTreeSet<CoreKey> = BTreeSet::new();
        let mut l3 = BTreeSet::new();
        let mut nodes: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut threads = 0;
        for cpu in online {
            threads += 1;
            if let Some(p) = cpu.package {
                packages.insert(p);
            }
            let key = (cpu.package, cpu.die, cpu.core.ok_or(cpu.cpu));
            cores.insert(key);
            match cpu.core_kind {
                Some(CoreKind::Performance) => {
                    performance.insert(key);
                }
                Some(CoreKind::Efficiency) => {
                    efficiency.insert(key);
                }
                None => {}
            }
            if !cpu.l3_shared_with.is_empty() {
                let mut list = cpu.l3_shared_with.clone();
                list.sort_unstable();
                list.dedup();
                l3.insert(list);
            }
            if let Some(node) = cpu.numa_node {
                nodes.entry(node).or_default().push(cpu.cpu);
            }
        }
        TopologySummary {
            packages: packages.len(),
            cores: cores.len(),
            threads,
            l3_domains: l3.into_iter().collect(),
            numa_nodes: nodes.into_iter().collect(),
            performance_cores: performance.len(),
            efficiency_cores: efficiency.len(),
        }
    }
}

/// The number in a name such as `cpu12` or `node0`, when `name` is `prefix` followed
/// by decimal digits only.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A non-negative id file such as `topology/core_id`. Missing, empty or odd content
/// (some platforms write `-1` for "unknown") gives `None`.
fn optional_id(root: &HostRoot, rel: String) -> Result<Option<u32>, HostError> {
    Ok(root
        .read_optional(rel)?
        .and_then(|text| text.trim().parse::<u32>().ok()))
}

/// A CPU list file; missing or unparsable gives an empty list.
fn optional_cpu_list(root: &HostRoot, rel: String) -> Result<Vec<u32>, HostError> {
    Ok(root
        .read_optional(rel)?
        .and_then(|text| parse_cpu_list(&text).ok())
        .unwrap_or_default())
}

/// A CPU list file as a set; missing or unparsable gives an empty set.
fn optional_cpu_set(root: &HostRoot, rel: &str) -> Result<BTreeSet<u32>, HostError> {
    Ok(optional_cpu_list(root, rel.to_string())?
        .into_iter()
        .collect())
}

/// The `shared_cpu_list` of the first `cache/index*/` whose `level` is 3.
fn l3_shared_list(root: &HostRoot, cache_dir: &str) -> Result<Vec<u32>, HostError> {
    for index in root.list_dir_optional(cache_dir)? {
        if numbered(&index, "index").is_none() {
            continue;
        }
        let level = root.read_optional(format!("{cache_dir}/{index}/level"))?;
        if level.as_deref().map(str::trim) == Some("3") {
            return optional_cpu_list(root, format!("{cache_dir}/{index}/shared_cpu_list"));
        }
    }
    Ok(Vec::new())
}

/// CPU → NUMA node, from `sys/devices/system/node/nodeN/cpulist` (empty when the
/// kernel has no NUMA support and the directory is missing).
fn node_cpulists(root: &HostRoot) -> Result<BTreeMap<u32, u32>, HostError> {
    let base = "sys/devices/system/node";
    let mut map = BTreeMap::new();
    for name in root.list_dir_optional(base)? {
        let Some(node) = numbered(&name, "node") else {
            continue;
        };
        for cpu in optional_cpu_list(root, format!("{base}/{name}/cpulist"))? {
            map.entry(cpu).or_insert(node);
        }
    }
    Ok(map)
}

/// Why a kernel CPU list (`0-3,8-11`) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a CPU list (expected e.g. 0-3,8,10-11)")]
pub struct CpuListError(pub String);

/// The most CPUs a list may name (the kernel's `NR_CPUS` tops out at 8192 today); a
/// longer list is taken as garbage rather than allocated.
pub const MAX_CPU_LIST_LEN: u64 = 65536;

/// Parses the kernel's CPU list format (`0-3,8,10-11`; empty means none).
///
/// This is the `%*pbl` format of sysfs files such as `thread_siblings_list`,
/// `shared_cpu_list` and `node*/cpulist`. Surrounding whitespace (the trailing
/// newline) is ignored. The result is sorted and free of duplicates. Reversed ranges
/// (`3-0`), anything but decimal numbers, and lists naming more than
/// [`MAX_CPU_LIST_LEN`] CPUs are errors.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, CpuListError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let err = || CpuListError(trimmed.to_string());
    let number = |s: &str| -> Result<u32, CpuListError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        s.parse().map_err(|_| err())
    };
    let mut ranges = Vec::new();
    let mut total: u64 = 0;
    for part in trimmed.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if last < first {
            return Err(err());
        }
        total += u64::from(last - first) + 1;
        if total > MAX_CPU_LIST_LEN {
            return Err(err());
        }
        ranges.push((first, last));
    }
    let mut cpus: Vec<u32> = ranges.into_iter().flat_map(|(a, b)| a..=b).collect();
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs in the kernel's list format (`0-3,8,10-11`), the inverse of
/// [`parse_cpu_list`]. The input need not be sorted.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_format_back() {
        assert_eq!(format_cpu_list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[]), "");
        for text in ["0-7,16-23", "5", "0,2,4"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(text).unwrap()), text);
        }
    }
    use std::os::unix::fs::symlink;
    use std::path::Path;

    // --- /proc/cpuinfo ---------------------------------------------------------

    /// A real Intel Core i7-5600U (Broadwell-U, VT-x) block, the last of four
    /// processors, as published in a French Linux course's `cat /proc/cpuinfo`
    /// answer. Processors 0–2 are reduced here to their first lines. Note the
    /// separate `vmx flags` line of newer kernels, which is not the `flags` line.
    const BROADWELL: &str = "processor\t: 0\n\
vendor_id\t: GenuineIntel\n\
\n\
processor\t: 1\n\
vendor_id\t: GenuineIntel\n\
\n\
processor\t: 2\n\
vendor_id\t: GenuineIntel\n\
\n\
processor\t: 3\n\
vendor_id\t: GenuineIntel\n\
cpu family\t: 6\n\
model\t\t: 61\n\
model name\t: Intel(R) Core(TM) i7-5600U CPU @ 2.60GHz\n\
stepping\t: 4\n\
microcode\t: 0x2d\n\
cpu MHz\t\t: 1642.679\n\
cache size\t: 4096 KB\n\
physical id\t: 0\n\
siblings\t: 4\n\
core id\t\t: 1\n\
cpu cores\t: 2\n\
apicid\t\t: 3\n\
initial apicid\t: 3\n\
fpu\t\t: yes\n\
fpu_exception\t: yes\n\
cpuid level\t: 20\n\
wp\t\t: yes\n\
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb invpcid_single pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm rdseed adx smap intel_pt xsaveopt dtherm ida arat pln pts md_clear flush_l1d\n\
vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb flexpriority tsc_offset vtpr mtf vapic ept vpid unrestricted_guest ple shadow_vmcs\n\
bugs\t\t: cpu_meltdown spectre_v1 spectre_v2 spec_store_bypass l1tf mds swapgs taa itlb_multihit srbds\n\
bogomips\t: 5189.92\n\
clflush size\t: 64\n\
cache_alignment\t: 64\n\
address sizes\t: 39 bits physical, 48 bits virtual\n\
power management:\n\
\n";

    /// This development machine's own `/proc/cpuinfo` (a KVM guest reporting
    /// "AMD EPYC": `hypervisor`, `topoext`, no `svm` because the host offers no
    /// nested virtualization), the second processor trimmed.
    const EPYC_GUEST: &str = "processor\t: 0\n\
vendor_id\t: AuthenticAMD\n\
cpu family\t: 26\n\
model\t\t: 2\n\
model name\t: AMD EPYC\n\
stepping\t: 1\n\
microcode\t: 0x1000065\n\
cpu MHz\t\t: 2596.126\n\
cache size\t: 1024 KB\n\
physical id\t: 0\n\
siblings\t: 2\n\
core id\t\t: 0\n\
cpu cores\t: 2\n\
apicid\t\t: 0\n\
initial apicid\t: 0\n\
fpu\t\t: yes\n\
fpu_exception\t: yes\n\
cpuid level\t: 28\n\
wp\t\t: yes\n\
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm avx512_vp2intersect\n\
bugs\t\t: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso spectre_v2_user\n\
bogomips\t: 5192.25\n\
TLB size\t: 192 4K pages\n\
clflush size\t: 64\n\
cache_alignment\t: 64\n\
address sizes\t: 48 bits physical, 48 bits virtual\n\
power management:\n\
\n\
processor\t: 1\n\
vendor_id\t: AuthenticAMD\n\
model name\t: AMD EPYC\n\
core id\t\t: 1\n\
power management:\n\
\n";

    /// A real AMD Ryzen 9 5950X (Zen 3, AMD-V): the header lines as shown by
    /// `head -n 26 /proc/cpuinfo` in a public write-up on procfs, the `flags` line
    /// from the 5950X cpuinfo kept in the Elixir Explorer project's tests.
    const RYZEN_5950X: &str = "processor\t: 0\n\
vendor_id\t: AuthenticAMD\n\
cpu family\t: 25\n\
model\t\t: 33\n\
model name\t: AMD Ryzen 9 5950X 16-Core Processor\n\
stepping\t: 0\n\
microcode\t: 0xa201016\n\
cpu MHz\t\t: 3400.000\n\
cache size\t: 512 KB\n\
physical id\t: 0\n\
siblings\t: 32\n\
core id\t\t: 0\n\
cpu cores\t: 16\n\
apicid\t\t: 0\n\
initial apicid\t: 0\n\
fpu\t\t: yes\n\
fpu_exception\t: yes\n\
cpuid level\t: 16\n\
wp\t\t: yes\n\
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif v_spec_ctrl umip pku ospke vaes vpclmulqdq rdpid overflow_recov succor smca fsrm\n\
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso\n\
bogomips\t: 6799.82\n\
TLB size\t: 2560 4K pages\n\
clflush size\t: 64\n\
cache_alignment\t: 64\n\
address sizes\t: 48 bits physical, 48 bits virtual\n";

    /// arm64: the first two processors of a Raspberry Pi 4 (Cortex-A72, part 0xd08)
    /// from a published `cat /proc/cpuinfo` transcript. No vendor, model name or
    /// `flags` line; arm64 prints `Features` (arch/arm64/kernel/cpuinfo.c).
    const ARM64: &str = "processor\t: 0\n\
BogoMIPS\t: 108.00\n\
Features\t: fp asimd evtstrm crc32 cpuid\n\
CPU implementer\t: 0x41\n\
CPU architecture: 8\n\
CPU variant\t: 0x0\n\
CPU part\t: 0xd08\n\
CPU revision\t: 3\n\
\n\
processor\t: 1\n\
BogoMIPS\t: 108.00\n\
Features\t: fp asimd evtstrm crc32 cpuid\n\
CPU implementer\t: 0x41\n\
CPU architecture: 8\n\
CPU variant\t: 0x0\n\
CPU part\t: 0xd08\n\
CPU revision\t: 3\n";

    #[test]
    fn parses_intel_broadwell_with_vmx() {
        let info = CpuInfo::parse(BROADWELL);
        assert_eq!(info.logical_cpus, 4);
        assert_eq!(info.vendor(), CpuVendor::Intel);
        assert_eq!(
            info.model_name.as_deref(),
            Some("Intel(R) Core(TM) i7-5600U CPU @ 2.60GHz")
        );
        assert!(info.has_flag("vmx"));
        assert!(!info.has_flag("svm"));
        assert!(!info.has_flag("hypervisor"));
        assert!(info.has_flag("flush_l1d"), "last flag kept");
        assert!(info.has_flag("fpu"), "first flag kept");
        // `vmx flags` is its own line, not part of the feature flags.
        assert!(!info.has_flag("preemption_timer"));
        assert_eq!(
            info.flags.len(),
            109,
            "every word of the line, counted with wc -w"
        );
        let line = info.flags_line.as_deref().unwrap_or_default();
        assert!(line.starts_with("flags\t\t: fpu vme"), "{line}");
        assert!(line.ends_with("md_clear flush_l1d"), "{line}");
    }

    #[test]
    fn parses_this_machines_kvm_guest() {
        let info = CpuInfo::parse(EPYC_GUEST);
        assert_eq!(info.logical_cpus, 2);
        assert_eq!(info.vendor(), CpuVendor::Amd);
        assert_eq!(info.model_name.as_deref(), Some("AMD EPYC"));
        assert!(info.has_flag("hypervisor"));
        assert!(info.has_flag("topoext"));
        assert!(!info.has_flag("svm"));
        assert!(!info.has_flag("vmx"));
    }

    #[test]
    fn parses_ryzen_with_svm() {
        let info = CpuInfo::parse(RYZEN_5950X);
        assert_eq!(info.logical_cpus, 1);
        assert_eq!(info.vendor_id.as_deref(), Some("AuthenticAMD"));
        assert_eq!(info.vendor(), CpuVendor::Amd);
        assert_eq!(
            info.model_name.as_deref(),
            Some("AMD Ryzen 9 5950X 16-Core Processor")
        );
        assert!(info.has_flag("svm"));
        assert!(info.has_flag("topoext"));
        assert!(info.has_flag("npt"));
        assert!(!info.has_flag("hypervisor"));
        assert!(!info.has_flag("vmx"));
    }

    #[test]
    fn other_architectures_and_empty_text_parse_to_little() {
        let arm = CpuInfo::parse(ARM64);
        assert_eq!(arm.logical_cpus, 2);
        assert_eq!(arm.vendor(), CpuVendor::Unknown);
        assert!(arm.flags.is_empty());
        assert_eq!(arm.flags_line, None);
        assert_eq!(CpuInfo::parse(""), CpuInfo::default());
        assert_eq!(CpuInfo::parse("garbage\n\n:::\n"), CpuInfo::default());
    }

    #[test]
    fn classifies_vendors() {
        let with = |v: &str| CpuInfo {
            vendor_id: Some(v.to_string()),
            ..CpuInfo::default()
        };
        assert_eq!(with("GenuineIntel").vendor(), CpuVendor::Intel);
        assert_eq!(with("AuthenticAMD").vendor(), CpuVendor::Amd);
        assert_eq!(with("HygonGenuine").vendor(), CpuVendor::Amd);
        assert_eq!(
            with("CentaurHauls").vendor(),
            CpuVendor::Other("CentaurHauls".to_string())
        );
        assert_eq!(CpuInfo::default().vendor(), CpuVendor::Unknown);
    }

    // --- CPU lists -------------------------------------------------------------

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("  5 \n"), Ok(vec![5]));
        assert_eq!(parse_cpu_list("\n"), Ok(vec![]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        // the 5950X's first CCD with its SMT siblings
        assert_eq!(parse_cpu_list("0-7,16-23").map(|v| v.len()), Ok(16));
        assert_eq!(parse_cpu_list("4,0"), Ok(vec![0, 4]));
        assert_eq!(parse_cpu_list("0-65535").map(|v| v.len()), Ok(65536));
    }

    #[test]
    fn rejects_bad_cpu_lists() {
        for bad in [
            "x",
            "0-",
            "-3",
            "3-0",
            "1,,2",
            "0-3,",
            "+1",
            "1 2",
            "0-4294967295",
            "4294967296",
            "0-65536",
            "0-40000,0-40000",
            "0-3:2/4",
        ] {
            let err = parse_cpu_list(bad).expect_err(bad);
            assert!(err.to_string().contains("is not a CPU list"), "{err}");
        }
    }

    // --- sysfs topology ----------------------------------------------------------

    /// Writes `content` at `rel` under `dir`, creating parents.
    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        crate::testing::mkdir(path.parent().expect("has a parent"));
        crate::testing::write(path, content);
    }

    /// One online CPU's sysfs directory as the kernel lays it out: `topology/`,
    /// `cache/index0..3` (L1d, L1i, L2, L3), and a `nodeN` link when `node` is given.
    struct Cpu<'a> {
        cpu: u32,
        package: u32,
        core: u32,
        siblings: &'a str,
        l3: &'a str,
        node: Option<u32>,
    }

    fn add_cpu(dir: &Path, c: &Cpu<'_>) {
        let base = format!("sys/devices/system/cpu/cpu{}", c.cpu);
        let t = format!("{base}/topology");
        write(
            dir,
            &format!("{t}/physical_package_id"),
            &format!("{}\n", c.package),
        );
        write(dir, &format!("{t}/die_id"), "0\n");
        write(dir, &format!("{t}/core_id"), &format!("{}\n", c.core));
        write(
            dir,
            &format!("{t}/thread_siblings_list"),
            &format!("{}\n", c.siblings),
        );
        let caches = [(1, c.siblings), (1, c.siblings), (2, c.siblings), (3, c.l3)];
        for (i, (level, shared)) in caches.iter().enumerate() {
            let idx = format!("{base}/cache/index{i}");
            write(dir, &format!("{idx}/level"), &format!("{level}\n"));
            write(
                dir,
                &format!("{idx}/shared_cpu_list"),
                &format!("{shared}\n"),
            );
        }
        if c.cpu != 0 {
            write(dir, &format!("{base}/online"), "1\n");
        }
        if let Some(n) = c.node {
            crate::testing::mkdir(dir.join(format!("sys/devices/system/node/node{n}")));
            symlink(
                format!("../../node/node{n}"),
                dir.join(format!("{base}/node{n}")),
            )
            .expect("symlink");
        }
    }

    /// The directories beside the `cpuN` ones, which must not be taken for CPUs.
    fn add_cpu_dir_noise(dir: &Path) {
        write(dir, "sys/devices/system/cpu/online", "0-3\n");
        write(dir, "sys/devices/system/cpu/possible", "0-3\n");
        crate::testing::mkdir(dir.join("sys/devices/system/cpu/cpufreq"));
        crate::testing::mkdir(dir.join("sys/devices/system/cpu/cpuidle"));
    }

    #[test]
    fn intel_four_cores_eight_threads_one_l3() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        add_cpu_dir_noise(dir);
        // Intel numbers SMT siblings N and N+4: cpu0 and cpu4 share core 0.
        for cpu in 0..8 {
            let core = cpu % 4;
            let siblings = format!("{},{}", core, core + 4);
            add_cpu(
                dir,
                &Cpu {
                    cpu,
                    package: 0,
                    core,
                    siblings: &siblings,
                    l3: "0-7",
                    node: None,
                },
            );
        }
        // NUMA from the node directory rather than per-CPU links.
        write(dir, "sys/devices/system/node/node0/cpulist", "0-7\n");
        let topo = CpuTopology::read(&HostRoot::new(dir)).expect("read");
        let numbers: Vec<u32> = topo.cpus.iter().map(|c| c.cpu).collect();
        assert_eq!(numbers, (0..8).collect::<Vec<_>>());
        assert_eq!(topo.cpus[5].thread_siblings, vec![1, 5]);
        assert_eq!(topo.cpus[5].core, Some(1));
        assert_eq!(topo.cpus[5].numa_node, Some(0));
        assert_eq!(topo.cpus[5].core_kind, None);
        assert!(topo.cpus.iter().all(|c| c.online));
        let s = topo.summary();
        assert_eq!(
            s,
            TopologySummary {
                packages: 1,
                cores: 4,
                threads: 8,
                l3_domains: vec![(0..8).collect()],
                numa_nodes: vec![(0, (0..8).collect())],
                performance_cores: 0,
                efficiency_cores: 0,
            }
        );
    }

    #[test]
    fn ryzen_5950x_two_l3_domains() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        add_cpu_dir_noise(dir);
        // 16 cores on two CCDs; SMT siblings are N and N+16.
        for cpu in 0..32 {
            let core = cpu % 16;
            let siblings = format!("{},{}", core, core + 16);
            let l3 = if core < 8 { "0-7,16-23" } else { "8-15,24-31" };
            add_cpu(
                dir,
                &Cpu {
                    cpu,
                    package: 0,
                    core,
                    siblings: &siblings,
                    l3,
                    node: Some(0),
                },
            );
        }
        let topo = CpuTopology::read(&HostRoot::new(dir)).expect("read");
        assert_eq!(topo.cpus.len(), 32);
        // sorted numerically, not as names (cpu10 after cpu9)
        assert_eq!(topo.cpus[10].cpu, 10);
        assert_eq!(
            topo.cpus[20].l3_shared_with,
            parse_cpu_list("0-7,16-23").expect("list")
        );
        let s = topo.summary();
        assert_eq!(s.packages, 1);
        assert_eq!(s.cores, 16);
        assert_eq!(s.threads, 32);
        assert_eq!(
            s.l3_domains,
            vec![
                parse_cpu_list("0-7,16-23").expect("list"),
                parse_cpu_list("8-15,24-31").expect("list"),
            ]
        );
        assert_eq!(s.numa_nodes, vec![(0, (0..32).collect())]);
        assert_eq!((s.performance_cores, s.efficiency_cores), (0, 0));
    }

    #[test]
    fn hybrid_i7_12700_counts_core_kinds_by_core() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        // 8 P-cores with HT (cpu0-15, siblings 2k and 2k+1, core ids 0,4,…,28)
        // and 4 E-cores without (cpu16-19, core ids 32-35); one L3 for all.
        for cpu in 0..16 {
            let pair = cpu / 2 * 2;
            let siblings = format!("{}-{}", pair, pair + 1);
            add_cpu(
                dir,
                &Cpu {
                    cpu,
                    package: 0,
                    core: pair * 2,
                    siblings: &siblings,
                    l3: "0-19",
                    node: Some(0),
                },
            );
        }
        for cpu in 16..20 {
            let siblings = cpu.to_string();
            add_cpu(
                dir,
                &Cpu {
                    cpu,
                    package: 0,
                    core: cpu + 16,
                    siblings: &siblings,
                    l3: "0-19",
                    node: Some(0),
                },
            );
        }
        write(dir, "sys/devices/cpu_core/cpus", "0-15\n");
        write(dir, "sys/devices/cpu_atom/cpus", "16-19\n");
        let topo = CpuTopology::read(&HostRoot::new(dir)).expect("read");
        assert_eq!(topo.cpus[3].core_kind, Some(CoreKind::Performance));
        assert_eq!(topo.cpus[17].core_kind, Some(CoreKind::Efficiency));
        let s = topo.summary();
        assert_eq!(s.threads, 20);
        assert_eq!(s.cores, 12);
        assert_eq!(s.performance_cores, 8);
        assert_eq!(s.efficiency_cores, 4);
        assert_eq!(s.l3_domains, vec![(0..20).collect::<Vec<u32>>()]);
    }

    #[test]
    fn offline_cpu_is_kept_without_topology() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        for cpu in 0..3 {
            let siblings = cpu.to_string();
            add_cpu(
                dir,
                &Cpu {
                    cpu,
                    package: 0,
                    core: cpu,
                    siblings: &siblings,
                    l3: "0-2",
                    node: None,
                },
            );
        }
        // An offline CPU keeps only its `online` file (and would keep its node link).
        write(dir, "sys/devices/system/cpu/cpu3/online", "0\n");
        let topo = CpuTopology::read(&HostRoot::new(dir)).expect("read");
        assert_eq!(topo.cpus.len(), 4);
        assert!(topo.cpus[0].online, "cpu0 without an online file is online");
        let off = &topo.cpus[3];
        assert_eq!(
            off,
            &LogicalCpu {
                cpu: 3,
                online: false,
                package: None,
                die: None,
                core: None,
                thread_siblings: vec![],
                l3_shared_with: vec![],
                numa_node: None,
                core_kind: None,
            }
        );
        let s = topo.summary();
        assert_eq!((s.threads, s.cores, s.packages), (3, 3, 1));
        assert_eq!(s.l3_domains, vec![vec![0, 1, 2]]);
        assert!(s.numa_nodes.is_empty());
    }

    #[test]
    fn odd_values_and_missing_tree_are_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let root = HostRoot::new(dir);
        assert_eq!(
            CpuTopology::read(&root).expect("read"),
            CpuTopology::default()
        );
        assert_eq!(CpuTopology::default().summary(), TopologySummary::default());
        write(
            dir,
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "-1\n",
        );
        write(
            dir,
            "sys/devices/system/cpu/cpu0/topology/core_id",
            "zero\n",
        );
        write(
            dir,
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
            "0-x\n",
        );
        let topo = CpuTopology::read(&root).expect("read");
        assert_eq!(topo.cpus.len(), 1);
        assert_eq!(topo.cpus[0].package, None);
        assert_eq!(topo.cpus[0].core, None);
        assert!(topo.cpus[0].thread_siblings.is_empty());
        // a CPU with an unknown core still counts as one core
        let s = topo.summary();
        assert_eq!((s.threads, s.cores, s.packages), (1, 1, 0));
    }

    #[test]
    fn reads_this_machine() {
        let root = HostRoot::system();
        let topo = CpuTopology::read(&root).expect("read /sys");
        if !root.exists("sys/devices/system/cpu") {
            return;
        }
        let s = topo.summary();
        assert!(s.cores >= 1, "{s:?}");
        assert!(s.threads >= s.cores, "{s:?}");
        assert!(s.packages <= s.cores, "{s:?}");
        let numbers: Vec<u32> = topo.cpus.iter().map(|c| c.cpu).collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, sorted);
        for cpu in topo
            .cpus
            .iter()
            .filter(|c| c.online && !c.thread_siblings.is_empty())
        {
            assert!(cpu.thread_siblings.contains(&cpu.cpu), "{cpu:?}");
        }
    }
}
