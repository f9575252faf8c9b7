//! Devices the host itself depends on: the controller of the disk that holds `/`,
//! and the network card carrying the default route. Giving either to a VM takes it
//! away from the host, so `list` marks them and `bind` refuses them.
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

use crate::host_root::{HostError, HostRoot};
use crate::pci::address::PciAddress;

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
    if mount.major != 0 {
        let by_number = format!("sys/dev/block/{}:{}", mount.major, mount.minor);
        if let Some(p) = resolve_opt(root, by_number)? {
            return Ok(Some(p));
        }
    }
    // Anonymous device number (btrfs, …): go by the source's name.
    let Some(rel) = mount.source.strip_prefix("/dev/") else {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Creates directory `rel` (root-relative) with empty `files`.
    fn dir(root: &Path, rel: &str, files: &[&str]) {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            std::fs::write(d.join(f), "1\n").unwrap();
        }
    }

    /// Links `from` to `to` (both root-relative) with a relative target, as sysfs does
    /// (`sys/dev/block/259:2` → `../../../sys/devices/…`, equivalent to the kernel's
    /// `../../devices/…`).
    fn link(root: &Path, from: &str, to: &str) {
        let depth = from.split('/').count() - 1;
        let target = format!("{}{to}", "../".repeat(depth));
        std::fs::create_dir_all(root.join(from).parent().unwrap()).unwrap();
        symlink(target, root.join(from)).unwrap();
    }

    fn write(root: &Path, rel: &str, content: &str) {
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        std::fs::write(root.join(rel), content).unwrap();
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
        std::fs::remove_file(r.join("sys/devices/virtual/block/dm-0/slaves/sda3")).unwrap();
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
