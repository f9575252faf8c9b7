//! Devices the host itself depends on: the controller of the disk that holds `/`,
//! the controllers of the other disks it uses, and the network card carrying the
//! default route. Giving one to a VM takes it away from the host, so `list` marks
//! them and `bind`, `enable` and the VM commands refuse them.
//!
//! A disk is in use when a filesystem on it is mounted, it holds swap, another block
//! device is built on it (the kernel links every holder under `holders/`: an LVM
//! logical volume, a dm-crypt mapping, an md array), or a process holds its node open.
//! Stacked devices are followed down through `slaves/` to the whole disks, and a disk
//! up to its PCI controller ([`storage_in_use`]). Unbinding `nvme` or `ahci` from a
//! disk in use does not wait for it: the block device vanishes, every read and write
//! fails, and what was not yet written is lost.
//!
//! The root filesystem is found in `proc/self/mountinfo` (the mount at `/`), its
//! block device through `sys/dev/block/<major>:<minor>` (or by name under
//! `sys/class/block` for filesystems such as btrfs that report an anonymous device
//! number), stacked devices (dm-crypt, LVM, md RAID) through their `slaves/`, and the
//! PCI controller from the real sysfs path of the underlying disk. The default route
//! comes from `proc/net/route` (destination 0.0.0.0/0) and `proc/net/ipv6_route`
//! (::/0), and the interface's `device` link names the NIC.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::host::pci::address::PciAddress;
use crate::host::records::BindRecord;
use crate::host::root::{HostError, HostRoot};

/// A PCI controller that the root filesystem lives on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootDiskController {
    /// The controller.
    pub address: PciAddress,
    /// The block device on it that holds `/` (or a part of it), e.g. `nvme0n1`.
    pub block_device: String,
    /// The mountinfo line for `/`, for evidence.
    pub evidence: String,
    /// The file it was read from (root-relative).
    pub source: PathBuf,
}

/// A network card carrying a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteNic {
    /// The NIC.
    pub address: PciAddress,
    /// The interface name, e.g. `enp5s0`.
    pub interface: String,
    /// The route line, for evidence.
    pub evidence: String,
    /// The file it was read from (root-relative).
    pub source: PathBuf,
}

/// Where the mount table is read.
pub const MOUNTINFO: &str = "proc/self/mountinfo";
/// The IPv4 routing table.
pub const ROUTE_V4: &str = "proc/net/route";
/// The IPv6 routing table.
pub const ROUTE_V6: &str = "proc/net/ipv6_route";

/// Filesystems whose root lives on no local PCI disk (network and memory
/// filesystems): their root gives no controller.
const DISKLESS_FS: &[&str] = &[
    "9p",
    "virtiofs",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "ceph",
    "glusterfs",
    "tmpfs",
    "ramfs",
    "rootfs",
];

/// How deep stacked block devices and network interfaces are followed (guards
/// against loops in odd captures).
const MAX_DEPTH: usize = 16;

/// The mount at `/` as a mountinfo line describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootMount<'a> {
    /// Major device number (field 3): 0 for anonymous devices (btrfs, overlay, 9p …).
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Filesystem type (first field after `-`).
    pub fs_type: &'a str,
    /// Mount source (second field after `-`), e.g. `/dev/nvme0n1p2`.
    pub source: &'a str,
    /// The whole line.
    pub line: &'a str,
}

/// Finds the mount at `/` in `proc/self/mountinfo` text. Lines look like
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// id, parent, major:minor, root within the filesystem, mount point, options, optional
/// fields up to `-`, then type, source and superblock options. When `/` is mounted
/// more than once the last one is the visible one.
pub fn parse_root_mount(text: &str) -> Option<RootMount<'_>> {
    text.lines()
        .rev()
        .filter_map(parse_mount_line)
        .find(|m| m.1)
        .map(|m| m.0)
}

/// One mountinfo line, and whether its mount point is `/`.
fn parse_mount_line(line: &str) -> Option<(RootMount<'_>, bool)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (maj, min) = fields.get(2)?.split_once(':')?;
    let mount_point = *fields.get(4)?;
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some((
        RootMount {
            major: maj.parse().ok()?,
            minor: min.parse().ok()?,
            fs_type: fields.get(dash + 1)?,
            source: fields.get(dash + 2)?,
            line,
        },
        mount_point == "/",
    ))
}

/// A default route as a routing table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute<'a> {
    /// The interface.
    pub interface: &'a str,
    /// The whole line.
    pub line: &'a str,
}

/// The default routes (destination 0.0.0.0 with mask 0.0.0.0) in `proc/net/route`
/// text. Its header names the columns (`Iface Destination Gateway Flags … Mask …`);
/// addresses are hexadecimal in the kernel's byte order.
pub fn parse_default_routes_v4(text: &str) -> Vec<DefaultRoute<'_>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .map(|h| h.split_whitespace().collect())
        .unwrap_or_default();
    let col =
        |name: &str, fallback: usize| header.iter().position(|h| *h == name).unwrap_or(fallback);
    let (iface, dest, mask) = (col("Iface", 0), col("Destination", 1), col("Mask", 7));
    lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let zero = |i: usize| {
                f.get(i)
                    .is_some_and(|v| u32::from_str_radix(v, 16) == Ok(0))
            };
            (zero(dest) && zero(mask)).then_some(DefaultRoute {
                interface: f.get(iface)?,
                line,
            })
        })
        .collect()
}

/// The default routes (::/0) in `proc/net/ipv6_route` text. Each line is
/// `dest dest_len src src_len next_hop metric refcnt use flags iface` with addresses
/// as 32 hex digits. The kernel's own `unreachable` defaults on `lo` are skipped.
pub fn parse_default_routes_v6(text: &str) -> Vec<DefaultRoute<'_>> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let dest_zero = f[0].len() == 32 && f[0].bytes().all(|b| b == b'0');
            let interface = f[9];
            (dest_zero && f[1] == "00" && interface != "lo")
                .then_some(DefaultRoute { interface, line })
        })
        .collect()
}

/// Resolves `rel` in the root; `Ok(None)` when some part of it does not exist.
fn resolve_opt(root: &HostRoot, rel: impl AsRef<Path>) -> Result<Option<PathBuf>, HostError> {
    match root.resolve(rel) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last component of a path that is a PCI address: the device nearest to the
/// leaf (`/sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0/nvme/nvme0/nvme0n1` →
/// `0000:02:00.0`).
pub fn last_pci_address(path: &Path) -> Option<PciAddress> {
    path.components().rev().find_map(|c| match c {
        Component::Normal(n) => n.to_str()?.parse().ok(),
        _ => None,
    })
}

/// A single safe path component (interface and device names come from host files).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// The sysfs directory of the block device a root mount sits on, root-relative.
fn root_block_device(root: &HostRoot, mount: &RootMount<'_>) -> Result<Option<PathBuf>, HostError> {
    block_device_dir(root, mount.major, mount.minor, mount.source)
}

/// The sysfs directory of a block device, root-relative: by its device number
/// through `sys/dev/block/<major>:<minor>`, else (major 0: an anonymous device such
/// as btrfs reports) by the name of `source` (`/dev/nvme0n1p6`, `/dev/mapper/vg-root`)
/// under `sys/class/block`.
fn block_device_dir(
    root: &HostRoot,
    major: u32,
    minor: u32,
    source: &str,
) -> Result<Option<PathBuf>, HostError> {
    if major != 0 {
        let by_number = format!("sys/dev/block/{major}:{minor}");
        if let Some(p) = resolve_opt(root, by_number)? {
            return Ok(Some(p));
        }
    }
    // Anonymous device number (btrfs, …): go by the source's name.
    let Some(rel) = source.strip_prefix("/dev/") else {
        return Ok(None);
    };
    let name = if rel.contains('/') {
        // `/dev/mapper/root`, `/dev/disk/by-uuid/…`: links to `../dm-0` and the like.
        match resolve_opt(root, Path::new("dev").join(rel))? {
            Some(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            None => None,
        }
    } else {
        Some(rel.to_string())
    };
    match name {
        Some(n) if is_plain_name(&n) => resolve_opt(root, Path::new("sys/class/block").join(n)),
        _ => Ok(None),
    }
}

/// The whole disks under a block device: a partition's disk, and through `slaves/`
/// the disks under device-mapper (LVM, dm-crypt) and md RAID devices.
fn underlying_disks(
    root: &HostRoot,
    dev: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), HostError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut dev = dev.to_path_buf();
    if root
        .metadata(dev.join("partition"))
        .is_ok_and(|m| m.is_file())
    {
        if let Some(parent) = dev.parent() {
            dev = parent.to_path_buf();
        }
    }
    let slaves = root.list_dir_optional(dev.join("slaves"))?;
    if slaves.is_empty() {
        if !out.contains(&dev) {
            out.push(dev);
        }
        return Ok(());
    }
    for slave in slaves {
        if let Some(p) = resolve_opt(root, dev.join("slaves").join(slave))? {
            underlying_disks(root, &p, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The PCI controllers of a whole disk. Usually the last PCI address in its sysfs
/// path; an NVMe namespace under native multipath
/// (`/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1`) is reached through
/// its `multipath/` paths (kernel 6.15+) or its subsystem's controller links
/// (`nvme-subsys0/nvme0` → `…/0000:02:00.0/nvme/nvme0`).
fn disk_controllers(root: &HostRoot, disk: &Path) -> Result<Vec<PciAddress>, HostError> {
    if let Some(a) = last_pci_address(disk) {
        return Ok(vec![a]);
    }
    let mut out = Vec::new();
    let mut add = |p: Option<PathBuf>| {
        if let Some(a) = p.as_deref().and_then(last_pci_address) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    };
    for path in root.list_dir_optional(disk.join("multipath"))? {
        add(resolve_opt(root, disk.join("multipath").join(path))?);
    }
    let in_subsystem = disk.components().any(|c| c.as_os_str() == "nvme-subsystem");
    if let (true, Some(subsys)) = (in_subsystem, disk.parent()) {
        for name in root.list_dir_optional(subsys)? {
            let is_ctrl = name
                .strip_prefix("nvme")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_ctrl {
                add(resolve_opt(root, subsys.join(&name))?);
            }
        }
    }
    Ok(out)
}

/// The PCI controllers holding the root filesystem (several for RAID / LVM over
/// several disks; none for a network or virtual root such as 9p).
pub fn root_disk_controllers(root: &HostRoot) -> Result<Vec<RootDiskController>, HostError> {
    let Some(text) = root.read_optional(MOUNTINFO)? else {
        return Ok(Vec::new());
    };
    let Some(mount) = parse_root_mount(&text) else {
        return Ok(Vec::new());
    };
    if DISKLESS_FS.contains(&mount.fs_type) {
        return Ok(Vec::new());
    }
    let Some(dev) = root_block_device(root, &mount)? else {
        return Ok(Vec::new());
    };
    let mut disks = Vec::new();
    underlying_disks(root, &dev, 0, &mut disks)?;
    let mut out: Vec<RootDiskController> = Vec::new();
    for disk in disks {
        let block_device = disk
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for address in disk_controllers(root, &disk)? {
            if !out
                .iter()
                .any(|c| c.address == address && c.block_device == block_device)
            {
                out.push(RootDiskController {
                    address,
                    block_device: block_device.clone(),
                    evidence: mount.line.to_string(),
                    source: PathBuf::from(MOUNTINFO),
                });
            }
        }
    }
    Ok(out)
}

/// Where active swap areas are listed.
pub const SWAPS: &str = "proc/swaps";
/// The whole disks (and stacked devices) of the host, each a link into `sys/devices`.
pub const SYS_BLOCK: &str = "sys/block";

/// How the host uses a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageUseKind {
    /// A filesystem on it is mounted.
    Mount,
    /// It is an active swap area.
    Swap,
    /// Another block device is built on it: an LVM physical volume, a dm-crypt
    /// container, an md RAID member, a multipath leg (`holders/`).
    Holder,
    /// A process holds its device node open (a VM using it as a raw disk, a running
    /// `mkfs`, `dd` or backup).
    Open,
}

/// A disk the host uses, on a PCI controller: giving the controller to `vfio-pci`
/// takes the disk away under the host's feet (every read and write fails, unwritten
/// data is lost, a mount named in `/etc/fstab` fails the next boot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StorageUse {
    /// The controller.
    pub address: PciAddress,
    /// The whole disk on it, e.g. `nvme0n1`.
    pub disk: String,
    /// The block device that is used: the disk, one of its partitions or a device
    /// stacked on it (`nvme0n1p2`, `dm-0`, `md127`).
    pub device: String,
    /// How it is used.
    pub kind: StorageUseKind,
    /// What uses it: the mount point (`/home`), the swap area's name, the holding
    /// device (`dm-0 (LVM vg0-home)`) or the process (`qemu-system-x86 (pid 4242)`).
    pub user: String,
    /// The line or link it was read from, for evidence.
    pub evidence: String,
    /// The file it was read from (root-relative).
    pub source: PathBuf,
}

impl StorageUse {
    /// `nvme0n1p1 is mounted at /home`, `nvme0n1p2 is swap`, ….
    pub fn describe(&self) -> String {
        let dev = if self.device == self.disk {
            self.device.clone()
        } else {
            format!("{} (on {})", self.device, self.disk)
        };
        match self.kind {
            StorageUseKind::Mount => format!("{dev} is mounted at {}", self.user),
            StorageUseKind::Swap => format!("{dev} is swap ({})", self.user),
            StorageUseKind::Holder => format!("{dev} is held by {}", self.user),
            StorageUseKind::Open => format!("{dev} is open in {}", self.user),
        }
    }
}

/// A short name for a stacked block device: `dm-0 (LVM vg0-home)`,
/// `dm-1 (dm-crypt luks-…)`, `md127 (md RAID)`. The kernel names device-mapper
/// devices in `dm/name`, and their `dm/uuid` starts with the subsystem that made
/// them (`LVM-`, `CRYPT-`, `mpath-`).
fn holder_name(root: &HostRoot, name: &str) -> String {
    let read = |f: &str| {
        root.read_optional(Path::new("sys/class/block").join(name).join(f))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(dm) = read("dm/name") {
        let uuid = read("dm/uuid").unwrap_or_default();
        let kind = match uuid.split_once('-').map(|(k, _)| k) {
            Some("LVM") => "LVM ",
            Some("CRYPT") => "dm-crypt ",
            Some("mpath") => "multipath ",
            _ => "device-mapper ",
        };
        return format!("{name} ({kind}{dm})");
    }
    if root.exists(Path::new("sys/class/block").join(name).join("md")) || name.starts_with("md") {
        return format!("{name} (md RAID)");
    }
    name.to_string()
}

/// The name of the block device `/dev/<name>` stands for (`/dev/mapper/vg-home` →
/// `dm-0`), when it is one.
fn block_name_of_node(root: &HostRoot, node: &str) -> Result<Option<String>, HostError> {
    Ok(match block_device_dir(root, 0, 0, node)? {
        Some(dir) => dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        None => None,
    })
}

/// Every disk under `dev` on a PCI controller, with the use, into `out`.
#[allow(clippy::too_many_arguments)] // one record's fields, gathered here
fn add_use(
    root: &HostRoot,
    dev: &Path,
    kind: StorageUseKind,
    user: &str,
    evidence: &str,
    source: &str,
    out: &mut Vec<StorageUse>,
) -> Result<(), HostError> {
    let device = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut disks = Vec::new();
    underlying_disks(root, dev, 0, &mut disks)?;
    for disk_dir in disks {
        let disk = disk_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for address in disk_controllers(root, &disk_dir)? {
            let u = StorageUse {
                address,
                disk: disk.clone(),
                device: device.clone(),
                kind,
                user: user.to_string(),
                evidence: evidence.to_string(),
                source: PathBuf::from(source),
            };
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    Ok(())
}

/// The names of a block device and of every device under it (through `slaves/`).
fn stack_names(
    root: &HostRoot,
    dev: &Path,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<(), HostError> {
    let Some(name) = dev.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    if depth > MAX_DEPTH || out.contains(&name) {
        return Ok(());
    }
    out.push(name);
    for slave in root.list_dir_optional(dev.join("slaves"))? {
        if let Some(p) = resolve_opt(root, dev.join("slaves").join(slave))? {
            stack_names(root, &p, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Where btrfs lists the devices of each filesystem it knows.
pub const SYS_FS_BTRFS: &str = "sys/fs/btrfs";

/// The other devices of mounted btrfs filesystems that span several (RAID 1, a
/// second disk added with `btrfs device add`): mountinfo names only one of them, and
/// btrfs holds no `holders/` link, but every device is a link in
/// `sys/fs/btrfs/<fsid>/devices/`. Each is a use as a mount at the filesystem's mount
/// point (`/` too: the root disk check knows only the device mountinfo names).
fn btrfs_members(
    root: &HostRoot,
    mounts: &[crate::host::mounts::Mount],
    out: &mut Vec<StorageUse>,
) -> Result<(), HostError> {
    let mut named: Vec<(String, &crate::host::mounts::Mount)> = Vec::new();
    for m in mounts.iter().filter(|m| m.fs_type == "btrfs") {
        if let Some(dev) = block_device_dir(root, m.major, m.minor, &m.source)? {
            if let Some(n) = dev.file_name() {
                named.push((n.to_string_lossy().into_owned(), m));
            }
        }
    }
    if named.is_empty() {
        return Ok(());
    }
    for fsid in root.list_dir_optional(SYS_FS_BTRFS)? {
        let devices = Path::new(SYS_FS_BTRFS).join(&fsid).join("devices");
        let members = root.list_dir_optional(&devices)?;
        // The mount at `/`, if it is one of them, else the first.
        let Some((shown, m)) = named
            .iter()
            .filter(|(n, _)| members.contains(n))
            .min_by_key(|(_, m)| m.mount_point != "/")
        else {
            continue;
        };
        for member in members.iter().filter(|n| *n != shown && is_plain_name(n)) {
            let link = devices.join(member);
            let Some(dev) = resolve_opt(root, &link)? else {
                continue;
            };
            let evidence = format!(
                "{}: a device of the btrfs filesystem on {shown} ({})",
                link.display(),
                m.line
            );
            let source = link.to_string_lossy().into_owned();
            let kind = StorageUseKind::Mount;
            add_use(root, &dev, kind, &m.mount_point, &evidence, &source, out)?;
        }
    }
    Ok(())
}

/// The disks the host uses besides the one holding `/` (which
/// [`root_disk_controllers`] reports): every mounted filesystem on a block device
/// (`proc/self/mountinfo`; for btrfs over several devices, each of them), every swap
/// partition (`proc/swaps`), every disk or
/// partition with holders (`sys/block/*/holders`, `sys/block/*/<partition>/holders`:
/// LVM, dm-crypt, md RAID), followed down through stacked devices to the disks and
/// up to their PCI controllers. With `processes` (the live system only: a captured
/// root has no processes) also every block device a process holds open
/// (`proc/<pid>/fd/*` → `/dev/<name>`).
///
/// Mounts of the root filesystem's own device (`/`, and bind mounts of it) are left
/// to the root-disk check; swap files live on a mounted filesystem and count there.
pub fn storage_in_use(root: &HostRoot, processes: bool) -> Result<Vec<StorageUse>, HostError> {
    let mut out = Vec::new();
    let text = root.read_optional(MOUNTINFO)?.unwrap_or_default();
    let root_mount = parse_root_mount(&text);
    // The devices `/` is built of (its LV, the dm-crypt below, the partition): their
    // links to one another are the root disk's, reported by the root-disk check.
    let mut root_stack = Vec::new();
    if let Some(r) = root_mount.filter(|r| !DISKLESS_FS.contains(&r.fs_type)) {
        if let Some(dev) = root_block_device(root, &r)? {
            stack_names(root, &dev, 0, &mut root_stack)?;
        }
    }
    let is_root_device = |m: &crate::host::mounts::Mount| {
        root_mount.is_some_and(|r| {
            m.mount_point == "/"
                || (r.major != 0 && (m.major, m.minor) == (r.major, r.minor))
                || (r.major == 0 && m.source == r.source && m.fs_type == r.fs_type)
        })
    };
    let mounts = crate::host::mounts::parse_mountinfo(&text);
    btrfs_members(root, &mounts, &mut out)?;
    for m in mounts {
        if DISKLESS_FS.contains(&m.fs_type.as_str()) || is_root_device(&m) {
            continue;
        }
        if let Some(dev) = block_device_dir(root, m.major, m.minor, &m.source)? {
            let kind = StorageUseKind::Mount;
            add_use(
                root,
                &dev,
                kind,
                &m.mount_point,
                &m.line,
                MOUNTINFO,
                &mut out,
            )?;
        }
    }
    let swaps = root.read_optional(SWAPS)?.unwrap_or_default();
    for s in crate::host::mounts::parse_swaps(&swaps) {
        if !s.is_block_device() {
            continue;
        }
        if let Some(dev) = block_device_dir(root, 0, 0, &s.filename)? {
            let kind = StorageUseKind::Swap;
            add_use(root, &dev, kind, &s.filename, &s.line, SWAPS, &mut out)?;
        }
    }
    for name in root.list_dir_optional(SYS_BLOCK)? {
        let Some(dir) = resolve_opt(root, Path::new(SYS_BLOCK).join(&name))? else {
            continue;
        };
        let mut devices = vec![dir.clone()];
        for part in root.list_dir_optional(&dir)? {
            if is_plain_name(&part) && root.path(dir.join(&part).join("partition")).is_file() {
                devices.push(dir.join(part));
            }
        }
        for dev in devices {
            let holders_dir = dev.join("holders");
            for holder in root.list_dir_optional(&holders_dir)? {
                let link = holders_dir.join(&holder);
                let evidence = match root.read_link(&link) {
                    Ok(t) => format!("{} -> {}", link.display(), t.display()),
                    Err(_) => link.display().to_string(),
                };
                if root_stack.contains(&holder) {
                    continue;
                }
                let user = holder_name(root, &holder);
                let kind = StorageUseKind::Holder;
                let source = link.to_string_lossy().into_owned();
                add_use(root, &dev, kind, &user, &evidence, &source, &mut out)?;
            }
        }
    }
    if processes {
        open_block_devices(root, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// Block devices that processes hold open: `proc/<pid>/fd/*` links to `/dev/<name>`
/// where `sys/class/block/<name>` exists. Processes that vanish while scanning are
/// skipped.
fn open_block_devices(root: &HostRoot, out: &mut Vec<StorageUse>) -> Result<(), HostError> {
    let mut names: std::collections::BTreeMap<String, Option<String>> = Default::default();
    for pid in root.list_dir_optional("proc")? {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fd_dir = format!("proc/{pid}/fd");
        let Ok(fds) = root.list_dir(&fd_dir) else {
            continue;
        };
        let mut command: Option<String> = None;
        for fd in fds {
            let Ok(target) = root.read_link(format!("{fd_dir}/{fd}")) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let Some(node) = target.strip_prefix("/dev/") else {
                continue;
            };
            if !is_plain_name(node) {
                continue;
            }
            let block = match names.get(node) {
                Some(b) => b.clone(),
                None => {
                    let b = block_name_of_node(root, &target)?;
                    names.insert(node.to_string(), b.clone());
                    b
                }
            };
            let Some(block) = block else { continue };
            let Some(dev) = resolve_opt(root, Path::new("sys/class/block").join(&block))? else {
                continue;
            };
            let command = command.get_or_insert_with(|| {
                root.read_optional(format!("proc/{pid}/comm"))
                    .ok()
                    .flatten()
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|| "?".into())
            });
            let user = format!("{command} (pid {pid})");
            let evidence = format!("/proc/{pid}/fd/{fd} -> {target}");
            let source = format!("{fd_dir}/{fd}");
            add_use(
                root,
                &dev,
                StorageUseKind::Open,
                &user,
                &evidence,
                &source,
                out,
            )?;
        }
    }
    Ok(())
}

/// The PCI devices behind a network interface: its `device` link (a virtio or USB
/// NIC gives the PCI function it hangs off), or for a bridge, bond, VLAN or macvlan
/// the devices of its members (`brif/`, `lower_*` links, `bonding/slaves`).
fn interface_devices(
    root: &HostRoot,
    iface: &str,
    depth: usize,
    out: &mut Vec<PciAddress>,
) -> Result<(), HostError> {
    if depth > MAX_DEPTH || !is_plain_name(iface) {
        return Ok(());
    }
    let Some(dir) = resolve_opt(root, Path::new("sys/class/net").join(iface))? else {
        return Ok(());
    };
    if let Some(device) = resolve_opt(root, dir.join("device"))? {
        if let Some(a) = last_pci_address(&device) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        return Ok(());
    }
    let mut members: Vec<String> = root.list_dir_optional(dir.join("brif"))?;
    for name in root.list_dir_optional(&dir)? {
        if let Some(lower) = name.strip_prefix("lower_") {
            members.push(lower.to_string());
        }
    }
    if let Some(slaves) = root.read_optional(dir.join("bonding/slaves"))? {
        members.extend(slaves.split_whitespace().map(str::to_string));
    }
    members.sort();
    members.dedup();
    for member in members {
        interface_devices(root, &member, depth + 1, out)?;
    }
    Ok(())
}

/// The PCI NICs that carry a default route (IPv4 or IPv6).
pub fn default_route_nics(root: &HostRoot) -> Result<Vec<RouteNic>, HostError> {
    let v4 = root.read_optional(ROUTE_V4)?.unwrap_or_default();
    let v6 = root.read_optional(ROUTE_V6)?.unwrap_or_default();
    let routes = parse_default_routes_v4(&v4)
        .into_iter()
        .map(|r| (r, ROUTE_V4))
        .chain(
            parse_default_routes_v6(&v6)
                .into_iter()
                .map(|r| (r, ROUTE_V6)),
        );
    let mut out: Vec<RouteNic> = Vec::new();
    for (route, source) in routes {
        let mut devices = Vec::new();
        interface_devices(root, route.interface, 0, &mut devices)?;
        for address in devices {
            if !out
                .iter()
                .any(|n| n.address == address && n.interface == route.interface)
            {
                out.push(RouteNic {
                    address,
                    interface: route.interface.to_string(),
                    evidence: route.line.trim_end().to_string(),
                    source: PathBuf::from(source),
                });
            }
        }
    }
    Ok(out)
}

/// What the host uses: the devices `list` marks and `bind`, `enable` and the VM
/// commands refuse (or take only when told to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostUse {
    /// Root-disk controllers.
    pub root_disks: Vec<RootDiskController>,
    /// Default-route NICs.
    pub route_nics: Vec<RouteNic>,
    /// Disks the host uses besides the root disk, per controller.
    pub storage: Vec<StorageUse>,
    /// Devices `passthru bind` holds, with the time it took them (Unix seconds).
    pub held_by_passthru: Vec<(PciAddress, u64)>,
}

impl HostUse {
    /// Reads what the host uses on `root`; `records` are passthru's bind records
    /// (the devices it holds). A part that cannot be read is empty: it then marks
    /// nothing.
    pub fn read(root: &HostRoot, records: &[BindRecord]) -> Self {
        Self {
            root_disks: root_disk_controllers(root).unwrap_or_default(),
            route_nics: default_route_nics(root).unwrap_or_default(),
            storage: storage_in_use(root, root.is_system()).unwrap_or_default(),
            held_by_passthru: records.iter().map(|r| (r.address, r.since)).collect(),
        }
    }
}

/// Whether a class code is a bridge that stays with the host when its group is
/// passed through: host bridges (06 00) and PCI-to-PCI bridges (06 04, 06 09). Other
/// "bridges" (ISA/LPC 06 01) are chipset devices the host uses.
pub fn is_host_side_bridge(class: u32) -> bool {
    matches!(class >> 8, 0x0600 | 0x0604 | 0x0609)
}

/// Whether a class code is a core chipset function the host cannot give away even
/// when it shares a slot with passable-looking functions (Intel's PCH puts LPC, audio,
/// SMBus, SPI and the onboard NIC all at 00:1f): ISA/LPC bridges (06 01) and SMBus
/// controllers (0c 05).
pub fn is_platform_function(class: u32) -> bool {
    matches!(class >> 8, 0x0601 | 0x0c05)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Creates directory `rel` (root-relative) with empty `files`.
    fn dir(root: &Path, rel: &str, files: &[&str]) {
        let d = root.join(rel);
        crate::testing::mkdir(&d);
        for f in files {
            crate::testing::write(d.join(f), "1\n");
        }
    }

    /// Links `from` to `to` (both root-relative) with a relative target, as sysfs does
    /// (`sys/dev/block/259:2` → `../../../sys/devices/…`, equivalent to the kernel's
    /// `../../devices/…`).
    fn link(root: &Path, from: &str, to: &str) {
        let depth = from.split('/').count() - 1;
        let target = format!("{}{to}", "../".repeat(depth));
        crate::testing::mkdir(root.join(from).parent().unwrap());
        symlink(target, root.join(from)).unwrap();
    }

    fn write(root: &Path, rel: &str, content: &str) {
        crate::testing::mkdir(root.join(rel).parent().unwrap());
        crate::testing::write(root.join(rel), content);
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    // The first lines are real (a Ubuntu host's /proc/self/mountinfo quoted in
    // Canop/dysk issue #32); the root lines below follow proc(5)'s format.
    const MOUNTS_HEAD: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 31 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
26 31 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=16363092k,nr_inodes=4090773,mode=755,inode64
";
    const NVME_PART: &str = "pci0000:00/0000:00:01.1/0000:02:00.0/nvme/nvme0/nvme0n1";

    #[test]
    fn parses_the_root_mount() {
        // Real line from the same capture: btrfs reports an anonymous 0:NN device.
        let text = format!(
            "{MOUNTS_HEAD}31 1 0:27 /Ubuntu21.10 / rw,relatime shared:1 - btrfs /dev/nvme0n1p6 rw,ssd,space_cache,subvolid=2027,subvol=/Ubuntu21.10\n"
        );
        let m = parse_root_mount(&text).unwrap();
        assert_eq!((m.major, m.minor), (0, 27));
        assert_eq!(m.fs_type, "btrfs");
        assert_eq!(m.source, "/dev/nvme0n1p6");
        assert!(m.line.starts_with("31 1 0:27"));

        // proc(5)'s example has no `/` mount; a line without optional fields works too.
        let doc =
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
        assert_eq!(parse_root_mount(doc), None);
        let plain = "1 0 8:2 / / rw - ext4 /dev/sda2 rw\n";
        assert_eq!(parse_root_mount(plain).unwrap().source, "/dev/sda2");

        // Mounted twice: the later mount hides the earlier.
        let twice = "1 0 8:2 / / rw - ext4 /dev/sda2 rw\n2 1 0:40 / / rw - overlay overlay rw\n";
        assert_eq!(parse_root_mount(twice).unwrap().fs_type, "overlay");
        assert_eq!(parse_root_mount("garbage\n\n1 2 3\n"), None);
    }

    #[test]
    fn ext4_on_an_nvme_partition() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let root_line =
            "29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro";
        write(r, MOUNTINFO, &format!("{MOUNTS_HEAD}{root_line}\n"));
        dir(
            r,
            &format!("sys/devices/{NVME_PART}/nvme0n1p2"),
            &["partition", "dev"],
        );
        link(
            r,
            "sys/dev/block/259:2",
            &format!("sys/devices/{NVME_PART}/nvme0n1p2"),
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        assert_eq!(
            found,
            vec![RootDiskController {
                address: addr("0000:02:00.0"),
                block_device: "nvme0n1".into(),
                evidence: root_line.into(),
                source: PathBuf::from("proc/self/mountinfo"),
            }]
        );
    }

    #[test]
    fn btrfs_goes_by_the_source_name() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(
            r,
            MOUNTINFO,
            &format!("{MOUNTS_HEAD}31 1 0:27 /Ubuntu21.10 / rw,relatime shared:1 - btrfs /dev/nvme0n1p6 rw,ssd,space_cache,subvolid=2027,subvol=/Ubuntu21.10\n"),
        );
        dir(
            r,
            &format!("sys/devices/{NVME_PART}/nvme0n1p6"),
            &["partition"],
        );
        link(
            r,
            "sys/class/block/nvme0n1p6",
            &format!("sys/devices/{NVME_PART}/nvme0n1p6"),
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, addr("0000:02:00.0"));
        assert_eq!(found[0].block_device, "nvme0n1");
    }

    /// LVM inside LUKS on a SATA disk: dm-1 (the LV) → dm-0 (the crypt) → sda3.
    fn lvm_on_luks(r: &Path) {
        let sata = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
        dir(r, &format!("sys/devices/{sata}/sda3"), &["partition"]);
        dir(r, "sys/devices/virtual/block/dm-0/slaves", &[]);
        dir(r, "sys/devices/virtual/block/dm-1/slaves", &[]);
        link(
            r,
            "sys/devices/virtual/block/dm-0/slaves/sda3",
            &format!("../../../devices/{sata}/sda3"),
        );
        // The link above climbs from sys/devices/virtual/block/dm-0/slaves: fix depth.
        crate::testing::remove(r.join("sys/devices/virtual/block/dm-0/slaves/sda3"));
        symlink(
            format!("../../../../{sata}/sda3"),
            r.join("sys/devices/virtual/block/dm-0/slaves/sda3"),
        )
        .unwrap();
        symlink(
            "../../dm-0",
            r.join("sys/devices/virtual/block/dm-1/slaves/dm-0"),
        )
        .unwrap();
        link(r, "sys/dev/block/254:1", "sys/devices/virtual/block/dm-1");
        link(r, "sys/class/block/dm-1", "sys/devices/virtual/block/dm-1");
    }

    #[test]
    fn lvm_on_luks_through_slaves() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        lvm_on_luks(r);
        write(
            r,
            MOUNTINFO,
            "26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n",
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].address, addr("0000:00:17.0"));
        assert_eq!(found[0].block_device, "sda");
    }

    #[test]
    fn the_root_stack_is_the_root_disk_s_but_swap_beside_it_is_a_use() {
        // `/` on LVM in LUKS on sda3 (dm-1 → dm-0 → sda3), and a swap LV dm-2 in the
        // same volume group: the kernel links each holder from below.
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        lvm_on_luks(r);
        let sata = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
        link(r, "sys/block/sda", &format!("sys/devices/{sata}"));
        link(r, "sys/block/dm-0", "sys/devices/virtual/block/dm-0");
        link(r, "sys/block/dm-1", "sys/devices/virtual/block/dm-1");
        link(r, "sys/block/dm-2", "sys/devices/virtual/block/dm-2");
        link(r, "sys/class/block/dm-2", "sys/devices/virtual/block/dm-2");
        dir(r, &format!("sys/devices/{sata}/sda3/holders"), &[]);
        symlink(
            "../../../../../../../../../../virtual/block/dm-0",
            r.join(format!("sys/devices/{sata}/sda3/holders/dm-0")),
        )
        .unwrap();
        dir(r, "sys/devices/virtual/block/dm-0/holders", &[]);
        for h in ["dm-1", "dm-2"] {
            symlink(
                format!("../../{h}"),
                r.join(format!("sys/devices/virtual/block/dm-0/holders/{h}")),
            )
            .unwrap();
        }
        dir(r, "sys/devices/virtual/block/dm-2/slaves", &[]);
        symlink(
            "../../dm-0",
            r.join("sys/devices/virtual/block/dm-2/slaves/dm-0"),
        )
        .unwrap();
        write(r, "sys/devices/virtual/block/dm-2/dm/name", "vg-swap\n");
        write(r, "sys/devices/virtual/block/dm-2/dm/uuid", "LVM-abc\n");
        write(
            r,
            MOUNTINFO,
            "26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n",
        );
        dir(r, "dev", &[]);
        write(
            r,
            SWAPS,
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/dm-2                               partition\t999420\t\t0\t\t-2\n",
        );
        let found = storage_in_use(&HostRoot::new(r), false).unwrap();
        let got: Vec<String> = found.iter().map(StorageUse::describe).collect();
        assert_eq!(
            got,
            [
                "dm-0 (on sda) is held by dm-2 (LVM vg-swap)",
                "dm-2 (on sda) is swap (/dev/dm-2)",
            ]
        );
        assert!(found.iter().all(|u| u.address == addr("0000:00:17.0")));
        // Without the swap LV, the root disk has no other use.
        crate::testing::remove(r.join("sys/devices/virtual/block/dm-0/holders/dm-2"));
        write(
            r,
            SWAPS,
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        );
        assert!(storage_in_use(&HostRoot::new(r), false).unwrap().is_empty());
    }

    #[test]
    fn every_device_of_a_btrfs_raid() {
        // `/` is btrfs RAID 1 over nvme0n1p2 (02:00.0) and nvme1n1p2 (03:00.0);
        // `/data` is btrfs over nvme2n1 (04:00.0) and nvme3n1 (05:00.0). mountinfo
        // names one device of each.
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let nvme = |n: u32| {
            format!(
                "sys/devices/pci0000:00/0000:00:01.{}/0000:0{}:00.0/nvme/nvme{n}/nvme{n}n1",
                n + 1,
                n + 2
            )
        };
        for n in [0, 1] {
            let part = format!("{}/nvme{n}n1p2", nvme(n));
            dir(r, &part, &["partition"]);
            link(r, &format!("sys/class/block/nvme{n}n1p2"), &part);
            link(
                r,
                &format!("sys/fs/btrfs/1c3b7a36/devices/nvme{n}n1p2"),
                &part,
            );
        }
        for n in [2, 3] {
            dir(r, &nvme(n), &[]);
            link(r, &format!("sys/class/block/nvme{n}n1"), &nvme(n));
            link(
                r,
                &format!("sys/fs/btrfs/9f0e4d11/devices/nvme{n}n1"),
                &nvme(n),
            );
        }
        dir(r, "sys/fs/btrfs/features", &["raid1c34"]);
        write(
            r,
            MOUNTINFO,
            "26 1 0:26 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd,space_cache=v2,subvolid=256,subvol=/@
40 26 0:41 / /data rw,relatime shared:20 - btrfs /dev/nvme2n1 rw,space_cache=v2,subvolid=5,subvol=/
",
        );
        let root = HostRoot::new(r);
        let roots = root_disk_controllers(&root).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].address, addr("0000:02:00.0"));
        let found = storage_in_use(&root, false).unwrap();
        let got: Vec<(String, String)> = found
            .iter()
            .map(|u| (u.address.to_string(), u.describe()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "0000:03:00.0".to_string(),
                    "nvme1n1p2 (on nvme1n1) is mounted at /".to_string()
                ),
                (
                    "0000:04:00.0".to_string(),
                    "nvme2n1 is mounted at /data".to_string()
                ),
                (
                    "0000:05:00.0".to_string(),
                    "nvme3n1 is mounted at /data".to_string()
                ),
            ]
        );
        assert!(
            found[2]
                .evidence
                .starts_with("sys/fs/btrfs/9f0e4d11/devices/nvme3n1: a device of the btrfs filesystem on nvme2n1"),
            "{:?}",
            found[2]
        );
    }

    #[test]
    fn anonymous_device_through_dev_mapper() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        lvm_on_luks(r);
        dir(r, "dev/mapper", &[]);
        symlink("../dm-1", r.join("dev/mapper/vg-root")).unwrap();
        write(r, "dev/dm-1", "");
        write(
            r,
            MOUNTINFO,
            "26 1 0:32 /@ / rw,relatime shared:1 - btrfs /dev/mapper/vg-root rw,subvol=/@\n",
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].address, addr("0000:00:17.0"));
    }

    #[test]
    fn md_raid1_over_two_nvme_drives() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let a = "pci0000:00/0000:00:01.1/0000:02:00.0/nvme/nvme0/nvme0n1";
        let b = "pci0000:00/0000:00:01.2/0000:03:00.0/nvme/nvme1/nvme1n1";
        dir(r, &format!("sys/devices/{a}/nvme0n1p1"), &["partition"]);
        dir(r, &format!("sys/devices/{b}/nvme1n1p1"), &["partition"]);
        dir(r, "sys/devices/virtual/block/md0/slaves", &[]);
        symlink(
            format!("../../../../{a}/nvme0n1p1"),
            r.join("sys/devices/virtual/block/md0/slaves/nvme0n1p1"),
        )
        .unwrap();
        symlink(
            format!("../../../../{b}/nvme1n1p1"),
            r.join("sys/devices/virtual/block/md0/slaves/nvme1n1p1"),
        )
        .unwrap();
        link(r, "sys/dev/block/9:0", "sys/devices/virtual/block/md0");
        write(
            r,
            MOUNTINFO,
            "26 1 9:0 / / rw shared:1 - ext4 /dev/md0 rw\n",
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        let got: Vec<(String, String)> = found
            .iter()
            .map(|c| (c.address.to_string(), c.block_device.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("0000:02:00.0".to_string(), "nvme0n1".to_string()),
                ("0000:03:00.0".to_string(), "nvme1n1".to_string())
            ]
        );
    }

    #[test]
    fn nvme_native_multipath_head() {
        // With nvme_core.multipath=Y the namespace lives under the subsystem
        // (systemd/systemd PR #24766 quotes both paths).
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        dir(
            r,
            "sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/nvme0n1p2",
            &["partition"],
        );
        dir(
            r,
            "sys/devices/pci0000:00/0000:00:1c.4/0000:3c:00.0/nvme/nvme0",
            &[],
        );
        symlink(
            "../../../pci0000:00/0000:00:1c.4/0000:3c:00.0/nvme/nvme0",
            r.join("sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0"),
        )
        .unwrap();
        link(
            r,
            "sys/dev/block/259:2",
            "sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/nvme0n1p2",
        );
        write(
            r,
            MOUNTINFO,
            "26 1 259:2 / / rw shared:1 - xfs /dev/nvme0n1p2 rw\n",
        );
        let found = root_disk_controllers(&HostRoot::new(r)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].address, addr("0000:3c:00.0"));
        assert_eq!(found[0].block_device, "nvme0n1");
    }

    #[test]
    fn network_and_virtual_roots_have_no_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let root = HostRoot::new(r);
        assert!(root_disk_controllers(&root).unwrap().is_empty());
        // The testbed's root: the host's / over 9p (DESIGN.md).
        write(
            r,
            MOUNTINFO,
            "22 1 0:21 / / ro,relatime - 9p hostroot ro,access=client,trans=virtio\n",
        );
        assert!(root_disk_controllers(&root).unwrap().is_empty());
        // A loop device (a live image) has no PCI device in its path.
        dir(r, "sys/devices/virtual/block/loop0", &[]);
        link(r, "sys/dev/block/7:0", "sys/devices/virtual/block/loop0");
        write(r, MOUNTINFO, "22 1 7:0 / / ro - squashfs /dev/loop0 ro\n");
        assert!(root_disk_controllers(&root).unwrap().is_empty());
    }

    /// The header as the kernel prints it (net/ipv4/fib_trie.c, `Mask\t\tMTU`), with
    /// a real default-route line quoted in eminence/procfs PR #162.
    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       
wlp4s0\t00000000\t0112A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0                                                                               
wlp4s0\t0012A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0                                                                               
";

    /// Lines in the kernel's `ipv6_route` format (net/ipv6/route.c:
    /// `%pi6 %02x %pi6 %02x %pi6 %08x %08x %08x %08x %8s`), including the
    /// unreachable default the kernel keeps on `lo`.
    const ROUTE6: &str = "\
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   enp5s0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000022e6cfffe0d4c3e 00000400 00000002 00000000 00000003   enp5s0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn parses_default_routes() {
        let v4 = parse_default_routes_v4(ROUTE);
        assert_eq!(v4.len(), 1);
        assert_eq!(v4[0].interface, "wlp4s0");
        assert!(v4[0].line.contains("0112A8C0"));
        let v6 = parse_default_routes_v6(ROUTE6);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].interface, "enp5s0");
        assert!(v6[0].line.contains("fe80000000000000022e6cfffe0d4c3e"));
        assert!(parse_default_routes_v4("").is_empty());
        assert!(parse_default_routes_v6("junk\n").is_empty());
    }

    #[test]
    fn nics_behind_default_routes() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        // Wi-Fi card on 03:00.0 carries the IPv4 default.
        dir(
            r,
            "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/wlp4s0",
            &[],
        );
        link(
            r,
            "sys/class/net/wlp4s0",
            "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/wlp4s0",
        );
        symlink(
            "../../../0000:03:00.0",
            r.join("sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/wlp4s0/device"),
        )
        .unwrap();
        // IPv6 goes through br0, a bridge over the wired NIC enp5s0 (05:00.0).
        let wired = "pci0000:00/0000:00:1c.4/0000:05:00.0";
        dir(r, &format!("sys/devices/{wired}/net/enp5s0/brport"), &[]);
        symlink(
            "../../../0000:05:00.0",
            r.join(format!("sys/devices/{wired}/net/enp5s0/device")),
        )
        .unwrap();
        link(
            r,
            "sys/class/net/enp5s0",
            &format!("sys/devices/{wired}/net/enp5s0"),
        );
        dir(r, "sys/devices/virtual/net/br0/brif", &[]);
        symlink(
            format!("../../../../{wired}/net/enp5s0/brport"),
            r.join("sys/devices/virtual/net/br0/brif/enp5s0"),
        )
        .unwrap();
        symlink(
            format!("../../../{wired}/net/enp5s0"),
            r.join("sys/devices/virtual/net/br0/lower_enp5s0"),
        )
        .unwrap();
        link(r, "sys/class/net/br0", "sys/devices/virtual/net/br0");
        write(r, ROUTE_V4, ROUTE);
        write(r, ROUTE_V6, &ROUTE6.replace("enp5s0", "  br0"));

        let nics = default_route_nics(&HostRoot::new(r)).unwrap();
        let got: Vec<(String, &str, &Path)> = nics
            .iter()
            .map(|n| {
                (
                    n.address.to_string(),
                    n.interface.as_str(),
                    n.source.as_path(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("0000:03:00.0".to_string(), "wlp4s0", Path::new(ROUTE_V4)),
                ("0000:05:00.0".to_string(), "br0", Path::new(ROUTE_V6)),
            ]
        );
        assert!(nics[0].evidence.starts_with("wlp4s0\t00000000\t0112A8C0"));
        assert!(!nics[0].evidence.ends_with(' '));
    }

    #[test]
    fn virtual_interfaces_and_missing_tables_give_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let root = HostRoot::new(r);
        assert!(default_route_nics(&root).unwrap().is_empty());
        // A WireGuard tunnel: no device, no members.
        dir(r, "sys/devices/virtual/net/wg0", &[]);
        link(r, "sys/class/net/wg0", "sys/devices/virtual/net/wg0");
        write(r, ROUTE_V4, &ROUTE.replace("wlp4s0", "wg0"));
        assert!(default_route_nics(&root).unwrap().is_empty());
    }

    /// A desktop whose `/` is on the SATA disk, with a second and third disk in use:
    /// nvme0n1 (02:00.0) holds an LVM PV (nvme0n1p1 → dm-0, mounted at `/home`) and a
    /// swap partition (nvme0n1p2); nvme1n1 (03:00.0) is a member of md127 (assembled,
    /// not mounted); nvme2n1 (04:00.0) is unused but open in a process.
    fn disks_in_use(r: &Path) {
        let sata = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
        let n0 = "pci0000:00/0000:00:01.1/0000:02:00.0/nvme/nvme0/nvme0n1";
        let n1 = "pci0000:00/0000:00:01.2/0000:03:00.0/nvme/nvme1/nvme1n1";
        let n2 = "pci0000:00/0000:00:01.3/0000:04:00.0/nvme/nvme2/nvme2n1";
        for (disk, path, parts) in [
            ("sda", sata, &["sda1", "sda2"][..]),
            ("nvme0n1", n0, &["nvme0n1p1", "nvme0n1p2"][..]),
            ("nvme1n1", n1, &[][..]),
            ("nvme2n1", n2, &[][..]),
        ] {
            dir(r, &format!("sys/devices/{path}"), &["dev"]);
            link(
                r,
                &format!("sys/block/{disk}"),
                &format!("sys/devices/{path}"),
            );
            link(
                r,
                &format!("sys/class/block/{disk}"),
                &format!("sys/devices/{path}"),
            );
            for p in parts {
                dir(r, &format!("sys/devices/{path}/{p}"), &["partition", "dev"]);
                dir(r, &format!("sys/devices/{path}/{p}/holders"), &[]);
                link(
                    r,
                    &format!("sys/class/block/{p}"),
                    &format!("sys/devices/{path}/{p}"),
                );
            }
        }
        link(r, "sys/dev/block/8:2", &format!("sys/devices/{sata}/sda2"));
        link(r, "sys/dev/block/8:1", &format!("sys/devices/{sata}/sda1"));
        // dm-0 on nvme0n1p1, as the kernel links both ways.
        dir(r, "sys/devices/virtual/block/dm-0", &["dev"]);
        dir(r, "sys/devices/virtual/block/dm-0/holders", &[]);
        write(r, "sys/devices/virtual/block/dm-0/dm/name", "vg0-home\n");
        write(
            r,
            "sys/devices/virtual/block/dm-0/dm/uuid",
            "LVM-3yqBf1q0lQ4uC8Gc2bLxqQqBaPq1s1vR\n",
        );
        dir(r, "sys/devices/virtual/block/dm-0/slaves", &[]);
        symlink(
            format!("../../../../{n0}/nvme0n1p1"),
            r.join("sys/devices/virtual/block/dm-0/slaves/nvme0n1p1"),
        )
        .unwrap();
        symlink(
            "../../../../../../../../virtual/block/dm-0",
            r.join(format!("sys/devices/{n0}/nvme0n1p1/holders/dm-0")),
        )
        .unwrap();
        link(r, "sys/block/dm-0", "sys/devices/virtual/block/dm-0");
        link(r, "sys/class/block/dm-0", "sys/devices/virtual/block/dm-0");
        link(r, "sys/dev/block/254:0", "sys/devices/virtual/block/dm-0");
        dir(r, "dev/mapper", &[]);
        symlink("../dm-0", r.join("dev/mapper/vg0-home")).unwrap();
        // md127 over the whole nvme1n1.
        dir(r, "sys/devices/virtual/block/md127/md", &[]);
        dir(r, "sys/devices/virtual/block/md127/slaves", &[]);
        symlink(
            format!("../../../../{n1}"),
            r.join("sys/devices/virtual/block/md127/slaves/nvme1n1"),
        )
        .unwrap();
        dir(r, &format!("sys/devices/{n1}/holders"), &[]);
        symlink(
            "../../../../../../../virtual/block/md127",
            r.join(format!("sys/devices/{n1}/holders/md127")),
        )
        .unwrap();
        link(r, "sys/block/md127", "sys/devices/virtual/block/md127");
        link(
            r,
            "sys/class/block/md127",
            "sys/devices/virtual/block/md127",
        );
        write(
            r,
            MOUNTINFO,
            "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
29 28 8:2 /var/lib/images /srv/images rw,relatime shared:1 - ext4 /dev/sda2 rw
30 28 8:1 / /boot/efi rw,relatime shared:16 - vfat /dev/sda1 rw,fmask=0077
31 28 254:0 / /home\\040dir rw,relatime shared:17 - ext4 /dev/mapper/vg0-home rw
33 28 0:27 / /tmp rw,nosuid,nodev shared:18 - tmpfs tmpfs rw,size=16307360k,inode64
",
        );
        write(
            r,
            SWAPS,
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/nvme0n1p2                          partition\t8388604\t\t0\t\t-2
/swapfile                               file\t2097148\t\t0\t\t-3
",
        );
        // A process with nvme2n1, /dev/null and a file open.
        dir(r, "proc/4242/fd", &[]);
        write(r, "proc/4242/comm", "qemu-system-x86\n");
        symlink("/dev/nvme2n1", r.join("proc/4242/fd/3")).unwrap();
        symlink("/dev/null", r.join("proc/4242/fd/0")).unwrap();
        symlink("/home/anna/disk.img", r.join("proc/4242/fd/4")).unwrap();
        write(r, "dev/nvme2n1", "");
        write(r, "dev/null", "");
    }

    #[test]
    fn disks_in_use_beside_the_root_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        disks_in_use(r);
        let root = HostRoot::new(r);
        let found = storage_in_use(&root, false).unwrap();
        let got: Vec<(String, &str, &str, StorageUseKind, &str)> = found
            .iter()
            .map(|u| {
                (
                    u.address.to_string(),
                    u.disk.as_str(),
                    u.device.as_str(),
                    u.kind,
                    u.user.as_str(),
                )
            })
            .collect();
        use StorageUseKind::*;
        assert_eq!(
            got,
            [
                // The EFI partition on the root disk is a mount of its own; `/` and
                // the bind mount of a directory of `/` are the root disk's.
                ("0000:00:17.0".into(), "sda", "sda1", Mount, "/boot/efi"),
                ("0000:02:00.0".into(), "nvme0n1", "dm-0", Mount, "/home dir"),
                (
                    "0000:02:00.0".into(),
                    "nvme0n1",
                    "nvme0n1p1",
                    Holder,
                    "dm-0 (LVM vg0-home)"
                ),
                (
                    "0000:02:00.0".into(),
                    "nvme0n1",
                    "nvme0n1p2",
                    Swap,
                    "/dev/nvme0n1p2"
                ),
                (
                    "0000:03:00.0".into(),
                    "nvme1n1",
                    "nvme1n1",
                    Holder,
                    "md127 (md RAID)"
                ),
            ]
        );
        let home = &found[1];
        assert!(home.evidence.starts_with("31 28 254:0"), "{home:?}");
        assert_eq!(home.source, Path::new(MOUNTINFO));
        assert_eq!(home.describe(), "dm-0 (on nvme0n1) is mounted at /home dir");
        assert_eq!(
            found[3].describe(),
            "nvme0n1p2 (on nvme0n1) is swap (/dev/nvme0n1p2)"
        );
        assert_eq!(found[4].describe(), "nvme1n1 is held by md127 (md RAID)");
        assert!(
            found[4].evidence.contains("holders/md127 -> "),
            "{:?}",
            found[4]
        );

        // Processes count on the live system only; this one holds nvme2n1.
        let with = storage_in_use(&root, true).unwrap();
        let open: Vec<&StorageUse> = with.iter().filter(|u| u.kind == Open).collect();
        assert_eq!(open.len(), 1, "{with:?}");
        assert_eq!(open[0].address, addr("0000:04:00.0"));
        assert_eq!(
            open[0].describe(),
            "nvme2n1 is open in qemu-system-x86 (pid 4242)"
        );
        assert_eq!(open[0].evidence, "/proc/4242/fd/3 -> /dev/nvme2n1");
    }

    #[test]
    fn no_tables_no_use() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(storage_in_use(&HostRoot::new(tmp.path()), true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn last_pci_address_is_the_nearest_device() {
        let p = Path::new("/sys/devices/pci0000:00/0000:00:01.1/0000:02:00.0/nvme/nvme0/nvme0n1");
        assert_eq!(last_pci_address(p), Some(addr("0000:02:00.0")));
        assert_eq!(
            last_pci_address(Path::new("/sys/devices/virtual/block/dm-0")),
            None
        );
    }
}
