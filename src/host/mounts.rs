//! The kernel's tables of what uses block devices: mounted filesystems
//! (`/proc/self/mountinfo`) and active swap areas (`/proc/swaps`).
//!
//! Both are plain text, one entry a line, with the kernel's own escaping: a space, a
//! tab, a newline or a backslash in a path is written as a backslash and three octal
//! digits (`/mnt/my\040disk` is the directory `/mnt/my disk`). The parsers here take
//! the text and give typed entries with the paths unescaped; they never fail, a line
//! they cannot read is skipped. [`crate::host::usage`] maps the entries to the disks
//! and PCI controllers beneath them.

/// One mounted filesystem, as a line of `/proc/self/mountinfo` describes it.
///
/// The line is `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// mount id, parent id, `major:minor` of the device, the root of the mount within its
/// filesystem, the mount point, the mount options, optional fields up to a lone `-`,
/// then the filesystem type, the mount source and the superblock options (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Major device number: 0 for anonymous devices (btrfs, overlay, tmpfs, 9p …).
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// The directory of the filesystem that is mounted (`/` or a btrfs subvolume,
    /// a bind mount's source directory), unescaped.
    pub root: String,
    /// Where it is mounted, unescaped: `/home`, `/mnt/my disk`.
    pub mount_point: String,
    /// The filesystem type, e.g. `ext4`.
    pub fs_type: String,
    /// The mount source, unescaped: `/dev/nvme0n1p2`, `/dev/mapper/vg-home`, `tmpfs`.
    pub source: String,
    /// The line as the kernel wrote it, for evidence.
    pub line: String,
}

/// Parses `/proc/self/mountinfo` text into its mounts, in the kernel's order (a later
/// mount on the same point hides an earlier one).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(Mount {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(fields.get(3)?),
        mount_point: unescape(fields.get(4)?),
        fs_type: unescape(fields.get(dash + 1)?),
        source: unescape(fields.get(dash + 2)?),
        line: line.to_string(),
    })
}

/// One active swap area, as a line of `/proc/swaps` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// The block device (`/dev/nvme0n1p3`, `/dev/dm-1`, `/dev/zram0`) or file
    /// (`/swapfile`), unescaped.
    pub filename: String,
    /// `partition` for a block device, `file` for a swap file.
    pub kind: String,
    /// The line as the kernel wrote it, for evidence.
    pub line: String,
}

impl Swap {
    /// Whether the swap area is a block device of its own (a swap file lives on a
    /// filesystem, which is a mount).
    pub fn is_block_device(&self) -> bool {
        self.kind == "partition"
    }
}

/// Parses `/proc/swaps` text. Its first line is the header
/// `Filename  Type  Size  Used  Priority`; each further line is one area, the
/// columns separated by spaces and tabs (the filename escaped as in mountinfo, so it
/// holds no blank).
pub fn parse_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (filename, kind) = (f.next()?, f.next()?);
            if filename == "Filename" {
                return None;
            }
            Some(Swap {
                filename: unescape(filename),
                kind: kind.to_string(),
                line: line.trim_end().to_string(),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash); anything else stays as it is.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3');
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A desktop's `/proc/self/mountinfo` (LVM `/home`, an EFI partition, a USB stick
    /// whose label holds a space, a bind mount). The first three lines are real (a
    /// Ubuntu host's, quoted in Canop/dysk issue #32); the others are written as the
    /// kernel's `show_mountinfo()` (fs/proc_namespace.c) prints them, which the testbed
    /// checks against a real kernel (`passthru_disk_in_use`, a mount at `/mnt/my data`).
    const MOUNTINFO: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 31 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
26 31 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=16363092k,nr_inodes=4090773,mode=755,inode64
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 28 259:1 / /boot/efi rw,relatime shared:16 - vfat /dev/nvme0n1p1 rw,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro
31 28 254:0 / /home rw,relatime shared:17 - ext4 /dev/mapper/vg0-home rw
33 28 0:27 / /tmp rw,nosuid,nodev shared:18 - tmpfs tmpfs rw,size=16307360k,inode64
112 28 8:17 / /media/anna/USB\\040STICK rw,nosuid,nodev,relatime shared:60 - vfat /dev/sdb1 rw,uid=1000,gid=1000,fmask=0022,dmask=0022
120 31 254:0 /anna/shared /srv/shared rw,relatime shared:17 - ext4 /dev/mapper/vg0-home rw
";

    #[test]
    fn mountinfo_and_swaps_of_a_btrfs_host() {
        // From a Debian 12 host with btrfs on an NVMe drive (anonymous 0:xx numbers).
        let text = "22 1 0:21 /@rootfs / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd\n\
                    26 22 259:1 / /boot/efi rw,relatime shared:7 - vfat /dev/nvme0n1p1 rw\n\
                    27 22 8:17 / /mnt/my\\040disk rw shared:9 - ext4 /dev/sdb1 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].major, m[0].minor), (0, 21));
        assert_eq!(m[0].root, "/@rootfs");
        assert_eq!(m[0].source, "/dev/nvme0n1p2");
        assert_eq!((m[1].major, m[1].minor), (259, 1));
        assert_eq!(m[2].mount_point, "/mnt/my disk");
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/dm-1                               partition\t999420\t\t0\t\t-2\n\
                     /swap\\040file                          file\t\t1048572\t\t0\t\t-3\n";
        let s: Vec<String> = parse_swaps(swaps).into_iter().map(|s| s.filename).collect();
        assert_eq!(s, vec!["/dev/dm-1", "/swap file"]);
    }

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 9);
        let home = &m[5];
        assert_eq!((home.major, home.minor), (254, 0));
        assert_eq!(home.mount_point, "/home");
        assert_eq!(home.fs_type, "ext4");
        assert_eq!(home.source, "/dev/mapper/vg0-home");
        assert_eq!(home.root, "/");
        assert!(home.line.starts_with("31 28 254:0"));
        // The escaped space is a space.
        assert_eq!(m[7].mount_point, "/media/anna/USB STICK");
        assert!(m[7].line.contains("USB\\040STICK"));
        // A bind mount of a directory of /home.
        assert_eq!(m[8].root, "/anna/shared");
        assert_eq!(m[8].mount_point, "/srv/shared");
        // proc(5)'s own example.
        let doc = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(doc[0].mount_point, "/mnt2");
        assert_eq!(doc[0].source, "/dev/root");
    }

    #[test]
    fn odd_mountinfo_lines_are_skipped() {
        assert!(parse_mountinfo("").is_empty());
        assert!(parse_mountinfo("garbage\n1 2 3\n1 2 x:y / / rw - ext4 /dev/sda rw\n").is_empty());
        // No separator, or nothing after it.
        assert!(parse_mountinfo("1 0 8:2 / / rw shared:1 ext4 /dev/sda2 rw\n").is_empty());
        assert!(parse_mountinfo("1 0 8:2 / / rw -\n").is_empty());
        // The optional fields may be absent.
        assert_eq!(
            parse_mountinfo("1 0 8:2 / / rw - ext4 /dev/sda2 rw\n")[0].source,
            "/dev/sda2"
        );
    }

    /// `/proc/swaps` with a swap partition, a swap file and zram, as the kernel's
    /// `swap_show()` (mm/swapfile.c) prints it: the header as read on a real host, the
    /// name padded to 40 columns, a tab, the type, and a second tab after numbers below
    /// 10000000 (the testbed swaps on a real kernel too).
    const SWAPS: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/nvme0n1p3                          partition\t8388604\t\t0\t\t-2
/swapfile                               file\t2097148\t\t0\t\t-3
/dev/zram0                              partition\t4194300\t\t1024\t\t100
/srv/swap\\040area                       file\t1048572\t\t0\t\t-4
";

    #[test]
    fn parses_swaps() {
        let s = parse_swaps(SWAPS);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].filename, "/dev/nvme0n1p3");
        assert!(s[0].is_block_device());
        assert_eq!(s[1].filename, "/swapfile");
        assert!(!s[1].is_block_device());
        assert_eq!(s[3].filename, "/srv/swap area");
        assert!(s[0].line.starts_with("/dev/nvme0n1p3") && s[0].line.ends_with("-2"));
        // Only the header: swap is off.
        assert!(parse_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n").is_empty());
        assert!(parse_swaps("").is_empty());
        assert!(parse_swaps("lonely\n").is_empty());
    }

    #[test]
    fn unescapes_the_kernels_octal() {
        assert_eq!(unescape("/a\\040b\\011c\\012d\\134e"), "/a b\tc\nd\\e");
        // Not an escape: kept.
        assert_eq!(unescape("\\"), "\\");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\999"), "a\\999");
        assert_eq!(unescape("a\\777"), "a\\777");
        assert_eq!(unescape("plain"), "plain");
    }
}
