//! CPU pinning: which host CPUs a VM's vCPUs run on, and where QEMU's own threads go.
//!
//! A vCPU pinned to a host CPU keeps its caches warm and never fights another vCPU
//! for a core. The rules, from the project's issue:
//!
//! - The guest gets **whole cores**: both SMT siblings of a host core, so the guest's
//!   own scheduler sees real thread pairs (vCPU `2k` and `2k+1` share a host core,
//!   which is what QEMU's `-smp …,threads=2` tells the guest).
//! - The cores come from **one L3 domain** (an AMD CCX/CCD) when the request fits:
//!   crossing domains costs cache misses and inter-CCD latency. The domain on the NUMA
//!   node of the main passed-through device is preferred (its DMA and interrupts stay
//!   local), else the domain with the most free cores.
//! - The core holding cpu0 always stays with the host: the kernel's housekeeping,
//!   interrupts that cannot move, and QEMU's emulator and I/O threads run there.
//! - On hybrid Intel parts, performance cores first; efficiency cores only when needed.
//!
//! [`plan`] is pure: it takes a [`CpuTopology`] already read from the host.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host::cpu::{format_cpu_list, CoreKind, CpuTopology};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuRequest {
    /// This many vCPUs, placed by the planner; must be even when the host has SMT.
    Count(u32),
    /// Exactly these host CPUs, one vCPU each, in the order of their cores.
    Host(Vec<u32>),
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinningPlan {
    /// vCPU number → host CPU.
    pub vcpus: Vec<(u32, u32)>,
    /// Host CPUs for QEMU's emulator and I/O threads (none of them run a vCPU).
    pub emulator: Vec<u32>,
    /// Online CPUs left to the host (the emulator CPUs are among them).
    pub host_keeps: Vec<u32>,
    /// Guest sockets (always 1).
    pub sockets: u32,
    /// Guest cores per socket.
    pub cores: u32,
    /// Guest threads per core (the SMT width, 1 without SMT).
    pub threads: u32,
    /// The NUMA node all vCPUs are on, if they share one.
    pub numa_node: Option<u32>,
    /// Every choice, in words, for `passthru vm plan`.
    pub reasons: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinningError {
    /// No online CPU in the topology.
    #[error("the CPU topology is empty: no online CPU was found")]
    EmptyTopology,
    /// `Count(0)` or `Host([])`.
    #[error("a VM needs at least one vCPU")]
    NoVcpus,
    /// An odd count when cores have several threads.
    #[error(
        "{requested} vCPUs is an odd count, but this host's cores have {width} threads (SMT): \
         ask for a multiple of {width} so that every vCPU pair owns a whole core"
    )]
    OddWithSmt {
        /// The vCPUs asked for.
        requested: u32,
        /// Threads per core.
        width: u32,
    },
    /// More vCPUs than CPUs outside the host's core.
    #[error(
        "{requested} vCPUs is more than this host can give: {available} CPUs are free \
         while the core of cpu0 (CPUs {host_core}) stays with the host"
    )]
    TooManyVcpus {
        /// The vCPUs asked for.
        requested: u32,
        /// Online CPUs outside the host's core.
        available: u32,
        /// The host core's CPUs, as a list.
        host_core: String,
    },
    /// A CPU in `Host(..)` that the topology does not have.
    #[error("CPU {cpu} does not exist on this host (its CPUs are {known})")]
    UnknownCpu {
        /// The CPU asked for.
        cpu: u32,
        /// The host's CPUs, as a list.
        known: String,
    },
    /// A CPU in `Host(..)` that is offline.
    #[error("CPU {0} is offline: bring it online or choose another CPU")]
    OfflineCpu(u32),
    /// A CPU named twice in `Host(..)`.
    #[error("CPU {0} is named twice: each vCPU needs its own host CPU")]
    DuplicateCpu(u32),
    /// `Host(..)` names every online CPU.
    #[error("CPUs {0} are all the online CPUs: at least one must stay with the host")]
    NothingLeftForHost(String),
}

/// One physical core: its online threads, L3 domain, node and kind.
#[derive(Debug, Clone)]
struct Core {
    threads: Vec<u32>,
    l3: Vec<u32>,
    node: Option<u32>,
    efficiency: bool,
}

impl Core {
    fn width(&self) -> u32 {
        u32::try_from(self.threads.len()).unwrap_or(u32::MAX)
    }
}

/// Groups the online CPUs into cores (by `thread_siblings`; a CPU without that list is
/// a core of its own), sorted by their first CPU. Cores whose L3 list is unknown
/// (empty) end up in one shared "unknown" domain.
fn cores_of(topology: &CpuTopology) -> Vec<Core> {
    let online: BTreeSet<u32> = topology
        .cpus
        .iter()
        .filter(|c| c.online)
        .map(|c| c.cpu)
        .collect();
    let mut by_threads: BTreeMap<Vec<u32>, Core> = BTreeMap::new();
    for cpu in topology.cpus.iter().filter(|c| c.online) {
        let mut threads: Vec<u32> = cpu
            .thread_siblings
            .iter()
            .copied()
            .filter(|t| online.contains(t))
            .collect();
        if !threads.contains(&cpu.cpu) {
            threads = vec![cpu.cpu];
        }
        threads.sort_unstable();
        threads.dedup();
        let mut l3 = cpu.l3_shared_with.clone();
        l3.sort_unstable();
        l3.dedup();
        by_threads.entry(threads.clone()).or_insert(Core {
            threads,
            l3,
            node: cpu.numa_node,
            efficiency: cpu.core_kind == Some(CoreKind::Efficiency),
        });
    }
    let mut cores: Vec<Core> = by_threads.into_values().collect();
    cores.sort_by_key(|c| c.threads[0]);
    cores
}

/// Plans where `request`'s vCPUs run on `topology`; `device_node` is the NUMA node of
/// the main passed-through device, when known.
pub fn plan(
    topology: &CpuTopology,
    request: &CpuRequest,
    device_node: Option<u32>,
) -> Result<PinningPlan, PinningError> {
    let cores = cores_of(topology);
    // The host's core: the one holding cpu0, else the lowest online CPU.
    let Some(host_index) = cores
        .iter()
        .position(|c| c.threads.contains(&0))
        .or_else(|| (!cores.is_empty()).then_some(0))
    else {
        return Err(PinningError::EmptyTopology);
    };
    match request {
        CpuRequest::Count(n) => plan_count(&cores, host_index, *n, device_node),
        CpuRequest::Host(list) => plan_host(topology, &cores, host_index, list),
    }
}

/// Places `n` vCPUs on whole cores, as the module documentation describes.
fn plan_count(
    cores: &[Core],
    host_index: usize,
    n: u32,
    device_node: Option<u32>,
) -> Result<PinningPlan, PinningError> {
    if n == 0 {
        return Err(PinningError::NoVcpus);
    }
    let host = &cores[host_index];
    let free: Vec<&Core> = cores
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != host_index)
        .map(|(_, c)| c)
        .collect();
    let width = free.iter().map(|c| c.width()).max().unwrap_or(1);
    if width > 1 && n % width != 0 {
        return Err(PinningError::OddWithSmt {
            requested: n,
            width,
        });
    }
    let available: u32 = free.iter().map(|c| c.width()).sum();
    if n > available {
        return Err(PinningError::TooManyVcpus {
            requested: n,
            available,
            host_core: format_cpu_list(&host.threads),
        });
    }
    let mut reasons = vec![format!(
        "CPUs {} (the core of cpu{}) stay with the host",
        format_cpu_list(&host.threads),
        host.threads[0]
    )];

    // L3 domains with their free cores, ranked: fits the request, on the device's
    // node, most free cores, lowest CPU.
    let mut domains: BTreeMap<&[u32], Vec<&Core>> = BTreeMap::new();
    for core in &free {
        domains.entry(core.l3.as_slice()).or_default().push(core);
    }
    let on_device_node = |cs: &[&Core]| device_node.is_some() && cs[0].node == device_node;
    if let Some(node) = device_node {
        if !domains.values().any(|cs| on_device_node(cs)) {
            reasons.push(format!(
                "the device's NUMA node {node} has no free CPU: its node cannot be preferred"
            ));
        }
    }
    let mut ranked: Vec<(&[u32], Vec<&Core>)> = domains.into_iter().collect();
    let capacity = |cs: &[&Core]| cs.iter().map(|c| c.width()).sum::<u32>();
    ranked.sort_by_key(|(_, cs)| {
        (
            capacity(cs) < n,
            !on_device_node(cs),
            std::cmp::Reverse(cs.len()),
            cs[0].threads[0],
        )
    });
    let fits = capacity(&ranked[0].1) >= n;
    let first = &ranked[0].1;
    if fits {
        let why = if on_device_node(first) {
            format!(": on the device's NUMA node {}", first[0].node.unwrap_or(0))
        } else if ranked.len() > 1 {
            format!(": the one with the most free cores ({})", first.len())
        } else {
            String::new()
        };
        let shared = if ranked[0].0.is_empty() {
            "an L3 cache of unknown extent".to_string()
        } else {
            format!("one L3 cache (CPUs {})", format_cpu_list(ranked[0].0))
        };
        reasons.push(format!("all vCPUs share {shared}{why}"));
    } else {
        reasons.push(format!(
            "{n} vCPUs do not fit in one L3 domain: they spill over {} L3 domains, so \
             latency between vCPUs suffers",
            ranked.len()
        ));
    }

    // Candidate cores: the chosen domain, or all domains in rank order; P-cores first.
    let domain_count = if fits { 1 } else { ranked.len() };
    let mut candidates: Vec<(bool, usize, &Core)> = ranked[..domain_count]
        .iter()
        .enumerate()
        .flat_map(|(rank, (_, cs))| cs.iter().map(move |c| (c.efficiency, rank, *c)))
        .collect();
    candidates.sort_by_key(|(eff, rank, c)| (*eff, *rank, c.threads[0]));
    let mut chosen: Vec<&Core> = Vec::new();
    let mut vcpus = Vec::new();
    for (_, _, core) in candidates {
        if vcpus.len() as u32 >= n {
            break;
        }
        for &t in &core.threads {
            if (vcpus.len() as u32) < n {
                vcpus.push((vcpus.len() as u32, t));
            }
        }
        chosen.push(core);
    }
    let e_cores: Vec<u32> = chosen
        .iter()
        .filter(|c| c.efficiency)
        .flat_map(|c| c.threads.clone())
        .collect();
    if !e_cores.is_empty() {
        reasons.push(format!(
            "the performance cores are not enough: efficiency cores (CPUs {}) run vCPUs too",
            format_cpu_list(&e_cores)
        ));
    }
    let guest_cpus: Vec<u32> = vcpus.iter().map(|&(_, h)| h).collect();
    let uniform = chosen.iter().all(|c| c.width() == chosen[0].width());
    let (cores_n, threads) = if uniform {
        (chosen.len() as u32, chosen[0].width())
    } else {
        reasons.push(
            "the cores used have different thread counts: the guest sees single-thread cores"
                .to_string(),
        );
        (n, 1)
    };
    Ok(finish(
        cores, host, guest_cpus, vcpus, cores_n, threads, reasons,
    ))
}

/// Pins vCPUs to exactly the CPUs the user listed, warning about poor choices.
fn plan_host(
    topology: &CpuTopology,
    cores: &[Core],
    host_index: usize,
    list: &[u32],
) -> Result<PinningPlan, PinningError> {
    if list.is_empty() {
        return Err(PinningError::NoVcpus);
    }
    let mut seen = BTreeSet::new();
    for &cpu in list {
        let Some(logical) = topology.cpus.iter().find(|c| c.cpu == cpu) else {
            let known: Vec<u32> = topology.cpus.iter().map(|c| c.cpu).collect();
            return Err(PinningError::UnknownCpu {
                cpu,
                known: format_cpu_list(&known),
            });
        };
        if !logical.online {
            return Err(PinningError::OfflineCpu(cpu));
        }
        if !seen.insert(cpu) {
            return Err(PinningError::DuplicateCpu(cpu));
        }
    }
    let online_count: usize = cores.iter().map(|c| c.threads.len()).sum();
    if seen.len() >= online_count {
        return Err(PinningError::NothingLeftForHost(format_cpu_list(list)));
    }
    let host = &cores[host_index];
    let mut reasons = vec![format!(
        "CPUs {} were chosen by hand",
        format_cpu_list(list)
    )];
    // Cores touched, in order of their first CPU; each core's chosen threads in order.
    let touched: Vec<(&Core, Vec<u32>)> = cores
        .iter()
        .filter_map(|c| {
            let mine: Vec<u32> = c
                .threads
                .iter()
                .copied()
                .filter(|t| seen.contains(t))
                .collect();
            (!mine.is_empty()).then_some((c, mine))
        })
        .collect();
    let mut vcpus = Vec::new();
    let mut split = Vec::new();
    for (core, mine) in &touched {
        if mine.len() < core.threads.len() {
            split.push(format_cpu_list(&core.threads));
        }
        for &t in mine {
            vcpus.push((vcpus.len() as u32, t));
        }
    }
    if !split.is_empty() {
        reasons.push(format!(
            "warning: the guest gets only part of the core(s) {}: their other threads \
             run host work beside the vCPUs, and the guest sees single-thread cores",
            split.join(" and ")
        ));
    }
    if seen.iter().any(|t| host.threads.contains(t)) {
        reasons.push(format!(
            "warning: the host's core (CPUs {}) runs vCPUs; the host and QEMU's threads \
             compete with them",
            format_cpu_list(&host.threads)
        ));
    }
    let domains: BTreeSet<&[u32]> = touched.iter().map(|(c, _)| c.l3.as_slice()).collect();
    if domains.len() > 1 {
        reasons.push(format!(
            "warning: the CPUs span {} L3 domains, so latency between vCPUs suffers",
            domains.len()
        ));
    }
    let width = touched[0].0.width();
    let whole = split.is_empty() && touched.iter().all(|(c, _)| c.width() == width);
    let (cores_n, threads) = if whole {
        (touched.len() as u32, width)
    } else {
        (vcpus.len() as u32, 1)
    };
    let guest_cpus: Vec<u32> = seen.into_iter().collect();
    Ok(finish(
        cores, host, guest_cpus, vcpus, cores_n, threads, reasons,
    ))
}

/// Emulator CPUs, the host's share, the node, and the topology reason.
fn finish(
    cores: &[Core],
    host: &Core,
    guest_cpus: Vec<u32>,
    vcpus: Vec<(u32, u32)>,
    cores_n: u32,
    threads: u32,
    mut reasons: Vec<String>,
) -> PinningPlan {
    let guest: BTreeSet<u32> = guest_cpus.into_iter().collect();
    let host_keeps: Vec<u32> = cores
        .iter()
        .flat_map(|c| c.threads.iter().copied())
        .filter(|t| !guest.contains(t))
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let host_free: Vec<u32> = host
        .threads
        .iter()
        .copied()
        .filter(|t| !guest.contains(t))
        .collect();
    let emulator = if host_free.is_empty() {
        // The host's core went to the guest (a hand-made list): use what is left.
        host_keeps.clone()
    } else {
        host_free
    };
    reasons.push(format!(
        "QEMU's emulator and I/O threads run on CPUs {}, which run no vCPU",
        format_cpu_list(&emulator)
    ));
    let nodes: BTreeSet<Option<u32>> = cores
        .iter()
        .filter(|c| c.threads.iter().any(|t| guest.contains(t)))
        .map(|c| c.node)
        .collect();
    let numa_node = match nodes.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(node)] => Some(*node),
        _ => None,
    };
    reasons.push(format!(
        "the guest sees 1 socket, {cores_n} core(s), {threads} thread(s) per core{}",
        if threads > 1 {
            format!(
                ": each {threads} vCPUs in a row share one host core, as they share a guest core"
            )
        } else {
            String::new()
        }
    ));
    PinningPlan {
        vcpus,
        emulator,
        host_keeps,
        sockets: 1,
        cores: cores_n,
        threads,
        numa_node,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cpu::LogicalCpu;

    /// One online logical CPU, as `CpuTopology::read` would build it from sysfs.
    fn cpu(n: u32, siblings: &[u32], l3: &[u32], node: u32, kind: Option<CoreKind>) -> LogicalCpu {
        LogicalCpu {
            cpu: n,
            online: true,
            package: Some(0),
            die: Some(0),
            core: Some(siblings[0]),
            thread_siblings: siblings.to_vec(),
            l3_shared_with: l3.to_vec(),
            numa_node: Some(node),
            core_kind: kind,
        }
    }

    fn range(a: u32, b: u32) -> Vec<u32> {
        (a..=b).collect()
    }

    /// Intel 8 cores / 16 threads, siblings n and n+8, one L3.
    fn intel_8c() -> CpuTopology {
        let l3 = range(0, 15);
        CpuTopology {
            cpus: (0..16)
                .map(|n| cpu(n, &[n % 8, n % 8 + 8], &l3, 0, None))
                .collect(),
        }
    }

    /// Ryzen 9 5950X: 16 cores / 32 threads, siblings n and n+16, two CCDs
    /// (L3 0-7,16-23 and 8-15,24-31), as in the cpu module's sysfs test.
    fn ryzen_5950x() -> CpuTopology {
        let ccd0 = [range(0, 7), range(16, 23)].concat();
        let ccd1 = [range(8, 15), range(24, 31)].concat();
        CpuTopology {
            cpus: (0..32)
                .map(|n| {
                    let core = n % 16;
                    let l3 = if core < 8 { &ccd0 } else { &ccd1 };
                    cpu(n, &[core, core + 16], l3, 0, None)
                })
                .collect(),
        }
    }

    /// i7-12700: 8 P-cores with HT (cpu 2k and 2k+1), 4 E-cores (cpu 16-19), one L3.
    fn i7_12700() -> CpuTopology {
        let l3 = range(0, 19);
        let p = Some(CoreKind::Performance);
        let e = Some(CoreKind::Efficiency);
        let mut cpus: Vec<LogicalCpu> = (0..16)
            .map(|n| cpu(n, &[n / 2 * 2, n / 2 * 2 + 1], &l3, 0, p))
            .collect();
        cpus.extend((16..20).map(|n| cpu(n, &[n], &l3, 0, e)));
        CpuTopology { cpus }
    }

    /// Two sockets, 4 cores / 8 threads each: node 0 is cpus 0-3,8-11, node 1 is
    /// cpus 4-7,12-15 (siblings n and n+8), one L3 per socket.
    fn two_nodes() -> CpuTopology {
        let l3_0 = [range(0, 3), range(8, 11)].concat();
        let l3_1 = [range(4, 7), range(12, 15)].concat();
        CpuTopology {
            cpus: (0..16)
                .map(|n| {
                    let core = n % 8;
                    let (l3, node) = if core < 4 { (&l3_0, 0) } else { (&l3_1, 1) };
                    let mut c = cpu(n, &[core, core + 8], l3, node, None);
                    c.package = Some(node);
                    c
                })
                .collect(),
        }
    }

    fn hosts(plan: &PinningPlan) -> Vec<u32> {
        plan.vcpus.iter().map(|&(_, h)| h).collect()
    }

    fn mentions(plan: &PinningPlan, words: &str) -> bool {
        plan.reasons.iter().any(|r| r.contains(words))
    }

    #[test]
    fn intel_whole_cores_skip_core_zero() {
        let p = plan(&intel_8c(), &CpuRequest::Count(6), None).expect("plan");
        assert_eq!(
            p.vcpus,
            vec![(0, 1), (1, 9), (2, 2), (3, 10), (4, 3), (5, 11)]
        );
        assert_eq!(p.emulator, vec![0, 8]);
        assert_eq!(p.host_keeps, vec![0, 4, 5, 6, 7, 8, 12, 13, 14, 15]);
        assert_eq!((p.sockets, p.cores, p.threads), (1, 3, 2));
        assert_eq!(p.numa_node, Some(0));
        assert!(mentions(
            &p,
            "CPUs 0,8 (the core of cpu0) stay with the host"
        ));
        // the whole host but core 0: 14 vCPUs
        let all = plan(&intel_8c(), &CpuRequest::Count(14), None).expect("plan");
        assert_eq!(all.host_keeps, vec![0, 8]);
        assert_eq!(all.cores, 7);
    }

    #[test]
    fn ryzen_eight_vcpus_on_the_ccd_without_core_zero() {
        let p = plan(&ryzen_5950x(), &CpuRequest::Count(8), None).expect("plan");
        assert_eq!(hosts(&p), vec![8, 24, 9, 25, 10, 26, 11, 27]);
        assert_eq!((p.cores, p.threads), (4, 2));
        assert_eq!(p.emulator, vec![0, 16]);
        assert!(
            mentions(&p, "one L3 cache (CPUs 8-15,24-31)"),
            "{:?}",
            p.reasons
        );
        assert!(!mentions(&p, "latency"));
    }

    #[test]
    fn ryzen_sixteen_vcpus_fill_the_second_ccd_exactly() {
        let p = plan(&ryzen_5950x(), &CpuRequest::Count(16), None).expect("plan");
        let mut got = hosts(&p);
        got.sort_unstable();
        assert_eq!(got, [range(8, 15), range(24, 31)].concat());
        assert_eq!(p.cores, 8);
        assert!(!mentions(&p, "latency"));
    }

    #[test]
    fn ryzen_spills_over_both_ccds_with_a_reason() {
        let p = plan(&ryzen_5950x(), &CpuRequest::Count(20), None).expect("plan");
        // the larger CCD first (8 free cores), then CCD 0 without its core 0
        let expected: Vec<u32> = (8..16).chain(1..3).flat_map(|c| [c, c + 16]).collect();
        assert_eq!(hosts(&p), expected);
        assert_eq!((p.cores, p.threads), (10, 2));
        assert!(
            mentions(&p, "spill over 2 L3 domains, so latency"),
            "{:?}",
            p.reasons
        );
        assert_eq!(p.emulator, vec![0, 16]);
    }

    #[test]
    fn hybrid_uses_p_cores_first_then_says_so_for_e_cores() {
        let p = plan(&i7_12700(), &CpuRequest::Count(8), None).expect("plan");
        assert_eq!(hosts(&p), range(2, 9));
        assert_eq!(p.emulator, vec![0, 1]);
        assert_eq!((p.cores, p.threads), (4, 2));
        assert!(!mentions(&p, "efficiency"));
        // 7 free P-cores give 14; 16 needs two E-cores
        let p = plan(&i7_12700(), &CpuRequest::Count(16), None).expect("plan");
        assert_eq!(hosts(&p), [range(2, 15), vec![16, 17]].concat());
        assert!(
            mentions(&p, "efficiency cores (CPUs 16-17)"),
            "{:?}",
            p.reasons
        );
        assert_eq!((p.cores, p.threads), (16, 1));
    }

    #[test]
    fn device_node_is_preferred() {
        let p = plan(&two_nodes(), &CpuRequest::Count(4), Some(1)).expect("plan");
        assert_eq!(hosts(&p), vec![4, 12, 5, 13]);
        assert_eq!(p.numa_node, Some(1));
        assert!(mentions(&p, "device's NUMA node 1"), "{:?}", p.reasons);
        // node 0 has fewer free cores, but the device is there
        let p = plan(&two_nodes(), &CpuRequest::Count(4), Some(0)).expect("plan");
        assert_eq!(hosts(&p), vec![1, 9, 2, 10]);
        assert_eq!(p.numa_node, Some(0));
        // no device: the node with the most free cores
        let p = plan(&two_nodes(), &CpuRequest::Count(4), None).expect("plan");
        assert_eq!(hosts(&p), vec![4, 12, 5, 13]);
        // a node without CPUs is said, not fatal
        let p = plan(&two_nodes(), &CpuRequest::Count(2), Some(7)).expect("plan");
        assert!(mentions(&p, "node 7 has no free CPU"));
    }

    #[test]
    fn errors_are_clear() {
        let err = plan(&intel_8c(), &CpuRequest::Count(16), None).expect_err("too many");
        assert_eq!(
            err.to_string(),
            "16 vCPUs is more than this host can give: 14 CPUs are free while the core \
             of cpu0 (CPUs 0,8) stays with the host"
        );
        let err = plan(&intel_8c(), &CpuRequest::Count(5), None).expect_err("odd");
        assert_eq!(
            err,
            PinningError::OddWithSmt {
                requested: 5,
                width: 2
            }
        );
        let err = plan(&intel_8c(), &CpuRequest::Host(vec![3, 40]), None).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "CPU 40 does not exist on this host (its CPUs are 0-15)"
        );
        assert_eq!(
            plan(&intel_8c(), &CpuRequest::Count(0), None),
            Err(PinningError::NoVcpus)
        );
        assert_eq!(
            plan(&CpuTopology::default(), &CpuRequest::Count(2), None),
            Err(PinningError::EmptyTopology)
        );
        let mut topo = intel_8c();
        topo.cpus[5].online = false;
        assert_eq!(
            plan(&topo, &CpuRequest::Host(vec![5]), None),
            Err(PinningError::OfflineCpu(5))
        );
        assert_eq!(
            plan(&topo, &CpuRequest::Host(vec![2, 2]), None),
            Err(PinningError::DuplicateCpu(2))
        );
        let all: Vec<u32> = (0..16).filter(|&c| c != 5).collect();
        assert!(matches!(
            plan(&topo, &CpuRequest::Host(all), None),
            Err(PinningError::NothingLeftForHost(_))
        ));
    }

    #[test]
    fn host_list_of_whole_cores() {
        let p = plan(&intel_8c(), &CpuRequest::Host(vec![11, 3, 2, 10]), None).expect("plan");
        assert_eq!(p.vcpus, vec![(0, 2), (1, 10), (2, 3), (3, 11)]);
        assert_eq!((p.cores, p.threads), (2, 2));
        assert_eq!(p.emulator, vec![0, 8]);
        assert!(!mentions(&p, "warning"));
    }

    #[test]
    fn host_list_warns_on_split_cores_and_crossed_domains() {
        let p = plan(&ryzen_5950x(), &CpuRequest::Host(vec![7, 8, 24]), None).expect("plan");
        assert_eq!(p.vcpus, vec![(0, 7), (1, 8), (2, 24)]);
        assert_eq!((p.cores, p.threads), (3, 1));
        assert!(
            mentions(&p, "only part of the core(s) 7,23"),
            "{:?}",
            p.reasons
        );
        assert!(mentions(&p, "span 2 L3 domains"), "{:?}", p.reasons);
        // the host's own core: warned, and the emulator keeps its free sibling
        let p = plan(&intel_8c(), &CpuRequest::Host(vec![0, 1, 9]), None).expect("plan");
        assert!(mentions(
            &p,
            "warning: the host's core (CPUs 0,8) runs vCPUs"
        ));
        assert_eq!(p.emulator, vec![8]);
    }
}
