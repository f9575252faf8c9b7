//! Hugepages for a VM's memory.
//!
//! Guest memory backed by hugepages needs far fewer TLB entries and page-table walks
//! than 4 KiB pages: a measurable gain for games and other memory-heavy guests. x86
//! has 2 MiB pages and, where the CPU has `pdpe1gb`, 1 GiB pages. The kernel keeps a
//! pool per size under `/sys/kernel/mm/hugepages/hugepages-<size>kB/`
//! (`nr_hugepages`: reserved, `free_hugepages`: not in use). Pages are reserved by
//! writing `nr_hugepages`; that only succeeds for as much contiguous free memory as
//! the kernel finds, which for 1 GiB pages on a long-running host is often little —
//! the reliable way is the kernel command line (`hugepagesz=1G hugepages=16`).
//!
//! [`plan`] picks the size: 1 GiB pages when the host has them, the memory is a whole
//! number of GiB, and enough are free or could be reserved from available memory;
//! else 2 MiB pages; else it says why not and what to do.

use serde::Serialize;

use crate::host::root::HostRoot;

/// One hugepage pool of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// The page size in KiB (2048, 1048576).
    pub size_kib: u64,
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Reserved pages not in use (`free_hugepages`).
    pub free: u64,
}

/// What the host has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HugepageFacts {
    /// Every pool the kernel offers.
    pub pools: Vec<Pool>,
    /// `MemAvailable` from `/proc/meminfo`, in KiB.
    pub mem_available_kib: Option<u64>,
}

/// The pool directory of a page size.
pub fn pool_dir(size_kib: u64) -> String {
    format!("sys/kernel/mm/hugepages/hugepages-{size_kib}kB")
}

impl HugepageFacts {
    /// Reads the pools and `MemAvailable`.
    pub fn read(root: &HostRoot) -> Self {
        let mut pools = Vec::new();
        for name in root
            .list_dir_optional("sys/kernel/mm/hugepages")
            .unwrap_or_default()
        {
            let Some(size_kib) = name
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            let num = |file: &str| {
                root.read_to_string(format!("{}/{file}", pool_dir(size_kib)))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            };
            pools.push(Pool {
                size_kib,
                total: num("nr_hugepages"),
                free: num("free_hugepages"),
            });
        }
        pools.sort_by_key(|p| p.size_kib);
        let mem_available_kib = root
            .read_to_string("proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t, "MemAvailable"));
        Self {
            pools,
            mem_available_kib,
        }
    }
}

/// A `/proc/meminfo` field in KiB (`MemAvailable:   12345678 kB`).
pub fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == field)
            .then(|| rest.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// The hugepages a VM gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepagePlan {
    /// The page size in KiB.
    pub size_kib: u64,
    /// Pages the VM needs.
    pub pages: u64,
    /// Pages to add to the pool before start (0 when enough are free).
    pub to_reserve: u64,
    /// The choice in words.
    pub reason: String,
}

/// Why hugepages cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HugepageError {
    /// The kernel has no hugepage pools (no `CONFIG_HUGETLBFS`).
    #[error("this kernel offers no hugepages (/sys/kernel/mm/hugepages is missing); set hugepages = false")]
    NoPools,
    /// Not enough free pages and not enough memory to reserve more.
    #[error("{need_mib} MiB of hugepages are needed but only {free_mib} MiB are free in the {size} pool and {available_mib} MiB of memory is available to reserve more; close programs, lower the VM's memory, or reserve them at boot with `{boot_args}` on the kernel command line")]
    NotEnough {
        /// The VM's memory.
        need_mib: u64,
        /// Free hugepage memory of the best pool.
        free_mib: u64,
        /// The best pool's size in words.
        size: String,
        /// `MemAvailable`.
        available_mib: u64,
        /// Kernel arguments that reserve them at boot.
        boot_args: String,
    },
}

/// Memory the host keeps for itself when pages are reserved from `MemAvailable`.
const HOST_MARGIN_KIB: u64 = 1024 * 1024;

fn size_words(kib: u64) -> String {
    if kib >= 1024 * 1024 {
        format!("{} GiB", kib / (1024 * 1024))
    } else {
        format!("{} MiB", kib / 1024)
    }
}

/// Plans hugepages for `memory_mib` of guest memory.
pub fn plan(facts: &HugepageFacts, memory_mib: u64) -> Result<HugepagePlan, HugepageError> {
    if facts.pools.is_empty() {
        return Err(HugepageError::NoPools);
    }
    let need_kib = memory_mib * 1024;
    let available = facts
        .mem_available_kib
        .unwrap_or(0)
        .saturating_sub(HOST_MARGIN_KIB);
    // Largest pages first.
    let mut fallback_reason = String::new();
    for pool in facts.pools.iter().rev() {
        if need_kib % pool.size_kib != 0 {
            fallback_reason = format!(
                "{} pages do not divide {memory_mib} MiB; ",
                size_words(pool.size_kib)
            );
            continue;
        }
        let pages = need_kib / pool.size_kib;
        let to_reserve = pages.saturating_sub(pool.free);
        if to_reserve * pool.size_kib <= available {
            let how = if to_reserve == 0 {
                format!("{} are free", pool.free)
            } else {
                format!(
                    "{} are free, {to_reserve} more will be reserved from available memory",
                    pool.free
                )
            };
            return Ok(HugepagePlan {
                size_kib: pool.size_kib,
                pages,
                to_reserve,
                reason: format!(
                    "{fallback_reason}memory is backed by {pages} × {} hugepages ({how})",
                    size_words(pool.size_kib)
                ),
            });
        }
        fallback_reason = format!(
            "{} pages: only {} free and not enough memory to reserve {to_reserve} more; ",
            size_words(pool.size_kib),
            pool.free
        );
    }
    let best = facts.pools.last().map_or(2048, |p| p.size_kib);
    let pool = facts
        .pools
        .iter()
        .rev()
        .find(|p| need_kib % p.size_kib == 0)
        .unwrap_or(&facts.pools[0]);
    let boot_pages = need_kib.div_ceil(best);
    Err(HugepageError::NotEnough {
        need_mib: memory_mib,
        free_mib: pool.free * pool.size_kib / 1024,
        size: size_words(pool.size_kib),
        available_mib: available / 1024,
        boot_args: if best >= 1024 * 1024 {
            format!("default_hugepagesz=1G hugepagesz=1G hugepages={boot_pages}")
        } else {
            format!("hugepages={boot_pages}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a desktop's /proc/meminfo (Linux 6.x field layout).
    const MEMINFO: &str = "MemTotal:       32768000 kB\nMemFree:         1200000 kB\nMemAvailable:   24000000 kB\nBuffers:          123456 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

    fn facts(free_2m: u64, free_1g: u64, available_kib: u64) -> HugepageFacts {
        HugepageFacts {
            pools: vec![
                Pool {
                    size_kib: 2048,
                    total: free_2m,
                    free: free_2m,
                },
                Pool {
                    size_kib: 1048576,
                    total: free_1g,
                    free: free_1g,
                },
            ],
            mem_available_kib: Some(available_kib),
        }
    }

    #[test]
    fn meminfo() {
        assert_eq!(parse_meminfo(MEMINFO, "MemAvailable"), Some(24_000_000));
        assert_eq!(parse_meminfo(MEMINFO, "HugePages_Total"), Some(0));
        assert_eq!(parse_meminfo(MEMINFO, "Nope"), None);
    }

    #[test]
    fn one_gib_pages_when_reserved_at_boot() {
        let p = plan(&facts(0, 16, 2_000_000), 16384).unwrap();
        assert_eq!((p.size_kib, p.pages, p.to_reserve), (1048576, 16, 0));
    }

    #[test]
    fn one_gib_pages_reserved_from_available_memory() {
        let p = plan(&facts(0, 0, 24_000_000), 16384).unwrap();
        assert_eq!((p.size_kib, p.pages, p.to_reserve), (1048576, 16, 16));
        assert!(
            p.reason.contains("16 more will be reserved"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn two_mib_pages_when_memory_is_not_whole_gib() {
        let p = plan(&facts(0, 0, 24_000_000), 1536).unwrap();
        assert_eq!((p.size_kib, p.pages), (2048, 768));
        assert!(
            p.reason.starts_with("1 GiB pages do not divide"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn not_enough_says_what_to_do() {
        let err = plan(&facts(100, 0, 4_000_000), 16384)
            .unwrap_err()
            .to_string();
        assert!(err.contains("16384 MiB of hugepages are needed"), "{err}");
        assert!(
            err.contains("default_hugepagesz=1G hugepagesz=1G hugepages=16"),
            "{err}"
        );
        assert_eq!(
            plan(&HugepageFacts::default(), 1024).unwrap_err(),
            HugepageError::NoPools
        );
    }

    #[test]
    fn reads_a_host_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pools = dir.path().join("sys/kernel/mm/hugepages");
        for (size, nr, free) in [("2048", "512", "500"), ("1048576", "4", "4")] {
            let d = pools.join(format!("hugepages-{size}kB"));
            crate::testing::mkdir(&d);
            crate::testing::write(d.join("nr_hugepages"), format!("{nr}\n"));
            crate::testing::write(d.join("free_hugepages"), format!("{free}\n"));
        }
        crate::testing::mkdir(dir.path().join("proc"));
        crate::testing::write(dir.path().join("proc/meminfo"), MEMINFO);
        let f = HugepageFacts::read(&HostRoot::new(dir.path()));
        assert_eq!(f.pools.len(), 2);
        assert_eq!(
            f.pools[0],
            Pool {
                size_kib: 2048,
                total: 512,
                free: 500
            }
        );
        assert_eq!(f.pools[1].free, 4);
        assert_eq!(f.mem_available_kib, Some(24_000_000));
    }
}
