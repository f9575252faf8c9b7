//! Whether a disk of a spec is something the host itself uses.
//!
//! A VM's disk may be a block device (a whole NVMe drive given to Windows is common).
//! Given a device the host has mounted — the disk of the root filesystem, a partition
//! of it, a swap area, or a device that device mapper, RAID or LVM builds on — the
//! guest would write under the host's own file systems and destroy them. Such a disk
//! is refused unless the user says it is meant (`--allow-disk-in-use`). A path that is
//! neither an image file nor a block device (a directory such as `/`, or a character
//! device such as `/dev/mem`) is never a disk.
//!
//! The host's use is read through the [`HostRoot`]: `proc/self/mountinfo` (each
//! mount's device number and source), `proc/swaps`, and `sys/dev/block/MAJ:MIN/`
//! (the device's `holders/`, and its partitions: subdirectories with a `partition`
//! file and their own `dev`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::spec::VmSpec;
use crate::host::mounts::{parse_mountinfo, parse_swaps, Mount};
use crate::host::root::HostRoot;

/// A block device number.
type DevNo = (u32, u32);

fn dev_no(rdev: u64) -> DevNo {
    crate::apply::sys::major_minor(rdev)
}

/// Parses `MAJ:MIN`.
fn parse_dev_no(text: &str) -> Option<DevNo> {
    let (maj, min) = text.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// What the host does with the block devices and files a disk could be.
struct HostUse {
    mounts: Vec<Mount>,
    /// The swap areas' paths (block devices and files).
    swaps: Vec<String>,
}

impl HostUse {
    fn read(root: &HostRoot) -> Self {
        let read = |rel: &str| root.read_optional(rel).ok().flatten().unwrap_or_default();
        Self {
            mounts: parse_mountinfo(&read("proc/self/mountinfo")),
            swaps: parse_swaps(&read("proc/swaps"))
                .into_iter()
                .map(|s| s.filename)
                .collect(),
        }
    }

    /// How the host uses block device `dev` itself (not its partitions).
    fn of_device(&self, root: &HostRoot, dev: DevNo) -> Vec<String> {
        let rdev_of = |p: &str| {
            std::fs::metadata(root.path(p.trim_start_matches('/')))
                .ok()
                .filter(|m| m.file_type().is_block_device())
                .map(|m| dev_no(m.rdev()))
        };
        let mut out = Vec::new();
        for m in &self.mounts {
            let by_source = m.source.starts_with('/') && rdev_of(&m.source) == Some(dev);
            if (m.major, m.minor) == dev || by_source {
                out.push(if m.mount_point == "/" {
                    "holds the root filesystem".to_string()
                } else {
                    format!("is mounted on {}", m.mount_point)
                });
            }
        }
        if self.swaps.iter().any(|s| rdev_of(s) == Some(dev)) {
            out.push("is a swap area".into());
        }
        let holders = root
            .list_dir_optional(format!("sys/dev/block/{}:{}/holders", dev.0, dev.1))
            .unwrap_or_default();
        if !holders.is_empty() {
            out.push(format!(
                "is held by {} (device mapper, RAID or LVM)",
                holders.join(", ")
            ));
        }
        out.sort();
        out.dedup();
        out
    }

    /// How the host uses block device `dev` or any of its partitions.
    fn of_disk(&self, root: &HostRoot, dev: DevNo) -> Vec<String> {
        let mut out = self.of_device(root, dev);
        let dir = format!("sys/dev/block/{}:{}", dev.0, dev.1);
        for part in root.list_dir_optional(&dir).unwrap_or_default() {
            if !root.exists(format!("{dir}/{part}/partition")) {
                continue;
            }
            let Some(pdev) = root
                .read_optional(format!("{dir}/{part}/dev"))
                .ok()
                .flatten()
                .and_then(|t| parse_dev_no(&t))
            else {
                continue;
            };
            out.extend(
                self.of_device(root, pdev)
                    .into_iter()
                    .map(|u| format!("its partition {part} {u}")),
            );
        }
        out
    }
}

/// Why one disk of a spec cannot be given to the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskProblem {
    /// What is wrong, and what to do.
    pub text: String,
    /// The disk is something the host uses (`--allow-disk-in-use` accepts it);
    /// otherwise it is no disk at all.
    pub host_use: bool,
}

/// Why the disks of `spec` cannot be given to the VM, each with what to do: paths that
/// are no disk at all, and — unless `allow_host_disks` — block devices (or swap
/// files) the host uses. Disks that do not exist yet are fine (they are created).
pub fn disk_blockers(root: &HostRoot, spec: &VmSpec, allow_host_disks: bool) -> Vec<String> {
    blockers_of(&disk_problems(root, spec), allow_host_disks)
}

/// The texts of `problems`, without those `allow_host_disks` accepts.
pub fn blockers_of(problems: &[DiskProblem], allow_host_disks: bool) -> Vec<String> {
    problems
        .iter()
        .filter(|p| !(allow_host_disks && p.host_use))
        .map(|p| p.text.clone())
        .collect()
}

/// Every problem of the disks of `spec` (see [`disk_blockers`]).
pub fn disk_problems(root: &HostRoot, spec: &VmSpec) -> Vec<DiskProblem> {
    let use_ = HostUse::read(root);
    let mut out = Vec::new();
    let no_disk = |text: String| DiskProblem {
        text,
        host_use: false,
    };
    for d in &spec.disks {
        let shown = d.path.display();
        let rel = d.path.strip_prefix("/").unwrap_or(&d.path);
        let Ok(meta) = std::fs::metadata(root.path(rel)) else {
            continue;
        };
        let t = meta.file_type();
        if t.is_dir() {
            out.push(no_disk(format!(
                "disk {shown} is a directory: a disk is an image file or a block device"
            )));
            continue;
        }
        if t.is_char_device() || t.is_fifo() || t.is_socket() {
            out.push(no_disk(format!(
                "disk {shown} is not an image file or a block device (it is a {})",
                if t.is_char_device() {
                    "character device"
                } else {
                    "pipe or socket"
                }
            )));
            continue;
        }
        let uses = if t.is_block_device() {
            use_.of_disk(root, dev_no(meta.rdev()))
        } else if is_swap_file(root, &use_.swaps, &meta) {
            vec!["is a swap file".to_string()]
        } else {
            Vec::new()
        };
        if !uses.is_empty() {
            out.push(DiskProblem {
                text: format!(
                    "disk {shown} {}: the guest would overwrite the host's own data \
                     (pass --allow-disk-in-use if this is really meant)",
                    uses.join(", ")
                ),
                host_use: true,
            });
        }
    }
    out
}

fn is_swap_file(root: &HostRoot, swaps: &[String], meta: &std::fs::Metadata) -> bool {
    swaps.iter().any(|s| {
        std::fs::metadata(root.path(Path::new(s.trim_start_matches('/'))))
            .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    })
}

/// The host's memory from `proc/meminfo` (`MemTotal`), in MiB.
pub fn mem_total_mib(root: &HostRoot) -> Option<u64> {
    let text = root.read_optional("proc/meminfo").ok().flatten()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Why the VM's memory cannot be had on this host: more than the host has in all.
pub fn memory_blocker(root: &HostRoot, spec: &VmSpec) -> Option<String> {
    memory_blocker_of(mem_total_mib(root), spec)
}

/// [`memory_blocker`] for a host with `total` MiB (`None`: unknown, no blocker).
pub fn memory_blocker_of(total: Option<u64>, spec: &VmSpec) -> Option<String> {
    let total = total?;
    (spec.memory_mib() > total).then(|| {
        format!(
            "memory: {} is more than this host has ({total} MiB in all, MemTotal in \
             /proc/meminfo)",
            spec.memory.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_disk(path: &str) -> VmSpec {
        VmSpec::parse(&format!(
            "name = \"t\"\nmemory = \"1G\"\ncpus = 1\n[[disks]]\npath = {path:?}\nformat = \"raw\"\n"
        ))
        .unwrap()
    }

    /// A host tree with real block device nodes (made with mknod, as root): sda (8:0)
    /// whose partition sda1 (8:1) is mounted on `/`, sdb (8:16) held by device mapper,
    /// sdc (8:32) unused, and a swap file.
    #[test]
    fn host_disks_are_refused_unless_allowed() {
        if !crate::apply::sys::is_root() {
            eprintln!("SKIPPED host_disks_are_refused_unless_allowed: needs root (mknod)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let write = |rel: &str, text: &str| {
            let p = r.join(rel);
            crate::testing::mkdir(p.parent().unwrap());
            crate::testing::write(p, text);
        };
        crate::testing::mkdir(r.join("dev"));
        for (name, maj, min) in [
            ("sda", 8, 0),
            ("sda1", 8, 1),
            ("sdb", 8, 16),
            ("sdc", 8, 32),
        ] {
            crate::testing::block_device(r.join("dev").join(name), maj, min);
        }
        write(
            "proc/self/mountinfo",
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
        );
        write(
            "proc/swaps",
            "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n",
        );
        write("swapfile", "");
        write("vm/image.raw", "");
        write("sys/dev/block/8:0/sda1/partition", "1\n");
        write("sys/dev/block/8:0/sda1/dev", "8:1\n");
        crate::testing::mkdir(r.join("sys/dev/block/8:16/holders/dm-0"));
        crate::testing::mkdir(r.join("sys/dev/block/8:32/holders"));
        crate::testing::mkdir(r.join("srv"));
        let root = HostRoot::new(r);
        let blockers = |p: &str, allow: bool| disk_blockers(&root, &spec_with_disk(p), allow);
        let b = blockers("/dev/sda", false);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].starts_with("disk /dev/sda its partition sda1 holds the root filesystem: the guest would overwrite"),
            "{b:?}"
        );
        assert!(b[0].contains("--allow-disk-in-use"), "{b:?}");
        assert!(blockers("/dev/sda1", false)[0].contains("/dev/sda1 holds the root filesystem"));
        assert!(blockers("/dev/sdb", false)[0].contains("is held by dm-0"));
        assert!(blockers("/swapfile", false)[0].contains("is a swap file"));
        assert!(blockers("/dev/sdc", false).is_empty());
        assert!(blockers("/vm/image.raw", false).is_empty());
        assert!(blockers("/vm/new.qcow2", false).is_empty(), "created later");
        // The flag allows the host's disks, never a directory.
        assert!(blockers("/dev/sda", true).is_empty());
        for dir in ["/", "/srv"] {
            let b = blockers(dir, true);
            assert!(
                b[0].ends_with("is a directory: a disk is an image file or a block device"),
                "{b:?}"
            );
        }
    }

    /// On this machine: `/` and `/dev/null` are never disks, and the device of the
    /// root filesystem, when it is a block device, is refused.
    #[test]
    fn this_hosts_root_device_is_refused() {
        let root = HostRoot::system();
        let b = disk_blockers(&root, &spec_with_disk("/"), true);
        assert!(b[0].contains("is a directory"), "{b:?}");
        let b = disk_blockers(&root, &spec_with_disk("/dev/null"), true);
        assert!(b[0].contains("character device"), "{b:?}");
        let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let Some(dev) = mounts
            .iter()
            .find(|m| m.mount_point == "/" && m.source.starts_with("/dev/"))
            .filter(|m| Path::new(&m.source).exists())
        else {
            eprintln!("SKIPPED this_hosts_root_device_is_refused: / is not on a block device here");
            return;
        };
        let b = disk_blockers(&root, &spec_with_disk(&dev.source), false);
        assert!(b[0].contains("holds the root filesystem"), "{b:?}");
    }

    #[test]
    fn memory_is_bounded_by_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("proc"));
        crate::testing::write(
            dir.path().join("proc/meminfo"),
            "MemTotal:       32779276 kB\nMemFree:         1000000 kB\n",
        );
        let root = HostRoot::new(dir.path());
        assert_eq!(mem_total_mib(&root), Some(32011));
        let mut spec = spec_with_disk("/vm/a.img");
        assert_eq!(memory_blocker(&root, &spec), None);
        spec.memory = "99999999T".into();
        assert_eq!(
            memory_blocker(&root, &spec).unwrap(),
            "memory: 99999999T is more than this host has (32011 MiB in all, MemTotal in /proc/meminfo)"
        );
        // Without meminfo (a partial tree) nothing is claimed.
        assert_eq!(memory_blocker(&HostRoot::new("/nonexistent"), &spec), None);
    }
}
