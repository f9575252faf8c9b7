//! One PCI function, read from its sysfs directory.
//!
//! `/sys/bus/pci/devices/<address>` is a symlink into `/sys/devices/pci<dom>:<bus>/…`;
//! the real path lists every bridge between the root complex and the device, which
//! is how its parent bridges are found. Inside the directory: `vendor`, `device`,
//! `subsystem_vendor`, `subsystem_device`, `class` (0xCCSSPP: class, subclass,
//! programming interface), `revision`, the `driver` and `iommu_group` links,
//! `boot_vga` (display devices only), `reset_method` (kernel 5.15+; older kernels have
//! a `reset` file exactly when some reset method exists) and `numa_node`.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::host::pci::address::PciAddress;
#[cfg(test)]
use crate::host::root::ATTR_CAP;
use crate::host::root::{HostDir, HostError, HostRoot};

/// What kind of device a PCI class code describes, for role hints and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Display controller (class 03): a GPU.
    Gpu,
    /// Audio device (class 04 01 / 04 03), e.g. a GPU's HDMI audio function.
    Audio,
    /// USB controller (class 0c 03).
    Usb,
    /// NVMe controller (class 01 08).
    Nvme,
    /// Other mass storage (SATA, SAS, RAID …, class 01).
    Storage,
    /// Network controller (class 02).
    Network,
    /// PCI bridge or host bridge (class 06).
    Bridge,
    /// Anything else.
    Other,
}

/// One PCI function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// `vendor`.
    pub vendor_id: u16,
    /// `device`.
    pub device_id: u16,
    /// `subsystem_vendor`.
    pub subsystem_vendor_id: Option<u16>,
    /// `subsystem_device`.
    pub subsystem_device_id: Option<u16>,
    /// `class`: 24 bits, class << 16 | subclass << 8 | prog-if.
    pub class: u32,
    /// `revision`.
    pub revision: Option<u8>,
    /// The bound driver's name (`driver` link), if any.
    pub driver: Option<String>,
    /// The IOMMU group (`iommu_group` link), if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// `boot_vga`: the firmware's boot display. `None` when the file is absent.
    pub boot_vga: Option<bool>,
    /// `reset_method` split on spaces (`flr`, `pm`, `bus`, …); `None` when the file is
    /// absent (older kernels).
    pub reset_methods: Option<Vec<String>>,
    /// Whether any reset exists: `reset_method` non-empty, or on older kernels the
    /// presence of the `reset` file.
    pub has_reset: bool,
    /// `numa_node`; `None` when absent or when the kernel says -1 (no NUMA node).
    pub numa_node: Option<i32>,
    /// `driver_override`: the only driver allowed to bind the device (`None` when the
    /// kernel says `(null)` or the file is absent). `passthru bind` sets it to
    /// `vfio-pci`.
    pub driver_override: Option<String>,
    /// Bridges between the root complex and the device, outermost first.
    pub parents: Vec<PciAddress>,
    /// The device's real directory, relative to the host root.
    pub sysfs_path: PathBuf,
}

/// Why a device could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] HostError),
    /// A file held something that is not what the kernel writes there.
    #[error("{}: unexpected content {content:?}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

impl PciDevice {
    /// The class byte (`class >> 16`).
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// The subclass byte.
    pub fn subclass(&self) -> u8 {
        (self.class >> 8) as u8
    }

    /// Its kind from the class code.
    pub fn kind(&self) -> DeviceKind {
        kind_of_class(self.class)
    }

    /// Whether it is a bridge (PCI-PCI, host, ISA …: class 06).
    pub fn is_bridge(&self) -> bool {
        self.base_class() == 0x06
    }
}

/// The kind of device a 24-bit class code describes.
pub fn kind_of_class(class: u32) -> DeviceKind {
    match ((class >> 16) as u8, (class >> 8) as u8) {
        (0x03, _) => DeviceKind::Gpu,
        (0x04, 0x01 | 0x03) => DeviceKind::Audio,
        (0x0c, 0x03) => DeviceKind::Usb,
        (0x01, 0x08) => DeviceKind::Nvme,
        (0x01, _) => DeviceKind::Storage,
        (0x02, _) => DeviceKind::Network,
        (0x06, _) => DeviceKind::Bridge,
        _ => DeviceKind::Other,
    }
}

/// Reads a small attribute file as text (lossily), `Ok(None)` when it does not exist;
/// see [`HostDir::read_attr`].
fn read_attr(dir: &HostDir<'_>, name: &CStr) -> Result<Option<String>, HostError> {
    Ok(dir
        .read_attr(name)?
        .map(|bytes| match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
}

/// The last component of a symlink's target, `Ok(None)` when the link is absent.
/// Only the name matters (`…/drivers/nvidia` → `nvidia`), so the link is read, never
/// followed.
fn link_name(dir: &HostDir<'_>, name: &CStr) -> Result<Option<String>, HostError> {
    Ok(dir
        .read_link(name)?
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned())))
}

fn content_error(path: &Path, content: &str) -> PciError {
    PciError::Content {
        path: path.to_path_buf(),
        content: content.to_string(),
    }
}

/// Parses a sysfs hex attribute (`0x10de\n`) no larger than `max`.
fn parse_hex(path: &Path, content: &str, max: u32) -> Result<u32, PciError> {
    let t = content.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    match u32::from_str_radix(digits, 16) {
        Ok(n) if n <= max && !digits.is_empty() => Ok(n),
        _ => Err(content_error(path, content)),
    }
}

/// A required hex attribute: absence is an error naming the file.
fn required_hex(dir: &HostDir<'_>, name: &CStr, max: u32) -> Result<u32, PciError> {
    let path = dir.path_of(name);
    match read_attr(dir, name)? {
        Some(c) => parse_hex(&path, &c, max),
        None => Err(PciError::Read(HostError {
            path,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })),
    }
}

/// An optional hex attribute.
fn optional_hex(dir: &HostDir<'_>, name: &CStr, max: u32) -> Result<Option<u32>, PciError> {
    let path = dir.path_of(name);
    read_attr(dir, name)?
        .map(|c| parse_hex(&path, &c, max))
        .transpose()
}

/// Who a device is: its IDs and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    vendor_id: u16,
    device_id: u16,
    class: u32,
    subsystem_vendor_id: Option<u16>,
    subsystem_device_id: Option<u16>,
}

impl Identity {
    /// From the device's `uevent` file, which the kernel (`pci_uevent`) fills with
    /// `PCI_CLASS=%04X`, `PCI_ID=%04X:%04X` and `PCI_SUBSYS_ID=%04X:%04X` — the same
    /// values as the `class`, `vendor`, `device` and `subsystem_*` attributes, in one
    /// read instead of five — and `DRIVER=`, the bound driver's name, which the
    /// `driver` link also gives. `None` when the IDs or the class are missing or
    /// malformed: then the attributes and the link are read.
    fn of_uevent(text: &str) -> Option<(Self, Option<String>)> {
        let (mut id, mut class, mut subsys, mut driver) = (None, None, None, None);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("DRIVER", v)) if !v.is_empty() => driver = Some(v.to_string()),
                Some(("PCI_ID", v)) => id = Some(v),
                Some(("PCI_CLASS", v)) => class = Some(v),
                Some(("PCI_SUBSYS_ID", v)) => subsys = Some(v),
                _ => {}
            }
        }
        let pair = |v: &str| -> Option<(u16, u16)> {
            let (a, b) = v.split_once(':')?;
            let hex = |h: &str| {
                (!h.is_empty() && h.len() <= 4)
                    .then(|| u16::from_str_radix(h, 16).ok())
                    .flatten()
            };
            Some((hex(a)?, hex(b)?))
        };
        let (vendor_id, device_id) = pair(id?)?;
        let class = class?;
        let class = (!class.is_empty() && class.len() <= 6)
            .then(|| u32::from_str_radix(class, 16).ok())
            .flatten()?;
        let subsys = match subsys {
            Some(v) => Some(pair(v)?),
            None => None,
        };
        let identity = Self {
            vendor_id,
            device_id,
            class,
            subsystem_vendor_id: subsys.map(|s| s.0),
            subsystem_device_id: subsys.map(|s| s.1),
        };
        Some((identity, driver))
    }

    /// From the attribute files: `vendor`, `device` and `class` required, the
    /// subsystem IDs optional.
    fn of_attributes(dir: &HostDir<'_>) -> Result<Self, PciError> {
        // The limits make the narrowing casts lossless.
        Ok(Self {
            vendor_id: required_hex(dir, c"vendor", 0xffff)? as u16,
            device_id: required_hex(dir, c"device", 0xffff)? as u16,
            class: required_hex(dir, c"class", 0xff_ffff)?,
            subsystem_vendor_id: optional_hex(dir, c"subsystem_vendor", 0xffff)?.map(|v| v as u16),
            subsystem_device_id: optional_hex(dir, c"subsystem_device", 0xffff)?.map(|v| v as u16),
        })
    }
}

/// Reads one device from its real sysfs directory `sysfs_path` (relative to the host
/// root, links resolved), from which the parent bridges are also taken.
///
/// Each attribute is read once (open + read); the `driver` and `iommu_group` links are
/// read with `readlink`, not followed. The IDs and the class come from `uevent` where
/// it has them, else `vendor`, `device` and `class` are required; all other files may
/// be absent. A `numa_node` of `-1` (the kernel's "no node", as on
/// every single-socket machine) is reported as `None`.
pub fn read_device_dir(
    root: &HostRoot,
    address: PciAddress,
    sysfs_path: &Path,
) -> Result<PciDevice, PciError> {
    read_device(&root.open_host_dir(sysfs_path, true)?, address, sysfs_path)
}

/// [`read_device_dir`] on the opened directory.
fn read_device(
    dir: &HostDir<'_>,
    address: PciAddress,
    sysfs_path: &Path,
) -> Result<PciDevice, PciError> {
    // The identity in one read where the kernel summarises it (`uevent`), else from the
    // attributes one by one (trees captured without `uevent`).
    // The kernel writes `DRIVER=` there exactly while a driver is bound (the `driver`
    // link's name); the link is read only without a usable `uevent`.
    let (identity, driver) = match read_attr(dir, c"uevent")?
        .as_deref()
        .and_then(Identity::of_uevent)
    {
        Some(found) => found,
        None => (Identity::of_attributes(dir)?, link_name(dir, c"driver")?),
    };
    let Identity {
        vendor_id,
        device_id,
        class,
        subsystem_vendor_id,
        subsystem_device_id,
    } = identity;
    let revision = optional_hex(dir, c"revision", 0xff)?.map(|v| v as u8);

    let group_link = dir.path_of(c"iommu_group");
    let iommu_group = match link_name(dir, c"iommu_group")? {
        Some(name) => Some(
            name.parse::<u32>()
                .map_err(|_| content_error(&group_link, &name))?,
        ),
        None => None,
    };

    // The kernel creates `boot_vga` only for VGA-class devices (`pci_is_vga`: class
    // 0x0300xx, or the pre-2.0 "VGA-compatible unclassified" 0x0001xx): skip the
    // lookup for everything else.
    let boot_vga_path = dir.path_of(c"boot_vga");
    let may_have_boot_vga = matches!(class >> 8, 0x0300 | 0x0001);
    let boot_vga_content = if may_have_boot_vga {
        read_attr(dir, c"boot_vga")?
    } else {
        None
    };
    let boot_vga = match boot_vga_content {
        Some(c) => match c.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => return Err(content_error(&boot_vga_path, &c)),
        },
        None => None,
    };

    let reset_methods: Option<Vec<String>> = read_attr(dir, c"reset_method")?
        .map(|c| c.split_whitespace().map(str::to_string).collect());
    let has_reset = match &reset_methods {
        Some(methods) => !methods.is_empty(),
        // Kernels before 5.15 create `reset` exactly when a reset method exists.
        None => dir.has(c"reset"),
    };

    let numa_path = dir.path_of(c"numa_node");
    let numa_node = match read_attr(dir, c"numa_node")? {
        Some(c) => {
            let n: i32 = c
                .trim()
                .parse()
                .map_err(|_| content_error(&numa_path, &c))?;
            (n >= 0).then_some(n)
        }
        None => None,
    };

    let driver_override = read_attr(dir, c"driver_override")?
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty() && c != "(null)");

    let parents = sysfs_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => name.to_str()?.parse::<PciAddress>().ok(),
            _ => None,
        })
        .filter(|a| *a != address)
        .collect();

    Ok(PciDevice {
        address,
        vendor_id,
        device_id,
        subsystem_vendor_id,
        subsystem_device_id,
        class,
        revision,
        driver,
        iommu_group,
        boot_vga,
        reset_methods,
        has_reset,
        numa_node,
        driver_override,
        parents,
        sysfs_path: sysfs_path.to_path_buf(),
    })
}

/// Where the kernel lists every PCI function.
const DEVICES: &str = "sys/bus/pci/devices";

/// Resolves `base/name` (root-relative, `base` already resolved and opened as
/// `bus`) like [`HostRoot::resolve`], with fewer system calls, and opens the device
/// directory it leads to: a kernel-made link such as
/// `../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0` is read relative to `bus`
/// and applied to `base` lexically, its parent directory is resolved and opened once
/// (`parents` caches it: devices behind one bridge share it), and the device's
/// directory is opened relative to it by its one name with `O_NOFOLLOW`, which fails
/// when it is a link. Any other shape of link goes through [`HostRoot::resolve`]. `Ok(None)` when
/// the entry no longer exists.
fn resolve_entry<'r>(
    root: &'r HostRoot,
    (bus, base): (&HostDir<'r>, &Path),
    name: &str,
    parents: &mut HashMap<PathBuf, HostDir<'r>>,
) -> Result<Option<(PathBuf, HostDir<'r>)>, PciError> {
    let entry = base.join(name);
    let full = |root: &'r HostRoot| -> Result<Option<(PathBuf, HostDir<'r>)>, PciError> {
        let resolved = match root.resolve(&entry) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let dir = root.open_host_dir(&resolved, true)?;
        Ok(Some((resolved, dir)))
    };
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    let target = match bus.read_link(&cname) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        // Not a link (a real directory in some captures), or unreadable.
        Err(_) => return full(root),
    };
    // Only `../../…/normal/names`: leading `..`s then plain names.
    let mut candidate = base.to_path_buf();
    let mut seen_normal = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !seen_normal => {
                candidate.pop();
            }
            Component::Normal(n) => {
                seen_normal = true;
                candidate.push(n);
            }
            _ => return full(root),
        }
    }
    let (Some(parent), Some(last)) = (candidate.parent(), candidate.file_name()) else {
        return full(root);
    };
    if !parents.contains_key(parent) {
        let opened = match root.resolve(parent) {
            Ok(resolved) => match root.open_host_dir(&resolved, false) {
                Ok(opened) => opened,
                Err(_) => return full(root),
            },
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        parents.insert(parent.to_path_buf(), opened);
    }
    let Some(parent_dir) = parents.get(parent) else {
        return Ok(None);
    };
    let Ok(last) = std::ffi::CString::new(last.as_bytes()) else {
        return Ok(None);
    };
    match parent_dir.open_subdir(&last) {
        Ok(dir) => Ok(Some((dir.rel().to_path_buf(), dir))),
        Err(e) if e.is_not_found() => Ok(None),
        // A link (or no directory) at the end: resolve it the long way.
        Err(_) => full(root),
    }
}

/// Below this many devices they are read on one thread: starting threads would cost
/// more than it saves (a desktop has 20 to 60 functions; SR-IOV hosts thousands).
const PARALLEL_MIN: usize = 256;

/// The most threads that read devices: beyond this the kernel's sysfs locks, not the
/// cores, set the pace.
const MAX_THREADS: usize = 8;

/// How many threads read `n` devices.
fn threads_for(n: usize) -> usize {
    if n < PARALLEL_MIN {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_THREADS)
}

/// Reads every device in `sys/bus/pci/devices`, sorted by address. An empty or
/// missing directory gives an empty list. Entries whose names are not PCI addresses
/// are skipped, and so is a device whose link no longer resolves (removed while
/// being listed).
///
/// On a large host the devices are read by several threads, each taking one
/// contiguous part of the sorted listing; the parts are joined in order, so the
/// result, and the error reported when a device cannot be read (the first in
/// listing order), are those of a reading on one thread.
pub fn read_all(root: &HostRoot) -> Result<Vec<PciDevice>, PciError> {
    let entries: Vec<(PciAddress, String)> = root
        .list_dir_optional(DEVICES)?
        .into_iter()
        .filter_map(|name| Some((name.parse().ok()?, name)))
        .collect();
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let base = root.resolve(DEVICES)?;
    let bus = root.open_host_dir(&base, true)?;
    let read_part = |part: &[(PciAddress, String)]| -> Result<Vec<PciDevice>, PciError> {
        let mut parents = HashMap::new();
        let mut out = Vec::with_capacity(part.len());
        for (address, name) in part {
            let Some((resolved, dir)) = resolve_entry(root, (&bus, &base), name, &mut parents)?
            else {
                continue;
            };
            out.push(read_device(&dir, *address, &resolved)?);
        }
        Ok(out)
    };
    let threads = threads_for(entries.len());
    let mut out = if threads <= 1 {
        read_part(&entries)?
    } else {
        let size = entries.len().div_ceil(threads);
        let mut parts = entries.chunks(size);
        let first = parts.next().unwrap_or_default();
        let results: Vec<Result<Vec<PciDevice>, PciError>> = std::thread::scope(|scope| {
            let others: Vec<_> = parts.map(|part| scope.spawn(|| read_part(part))).collect();
            let mut results = vec![read_part(first)];
            for handle in others {
                results.push(
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            results
        });
        let mut out = Vec::with_capacity(entries.len());
        for part in results {
            out.extend(part?);
        }
        out
    };
    out.sort_by_key(|d| d.address);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::testing;
    use std::io;

    /// Writes one device directory under `sys/devices/<real>` with the given attribute
    /// files, and the `sys/bus/pci/devices/<address>` link to it, relative as the
    /// kernel makes it.
    fn add_device(root: &Path, real: &str, files: &[(&str, &str)]) {
        let dir = root.join("sys/devices").join(real);
        testing::mkdir(&dir);
        for (name, content) in files {
            testing::write(dir.join(name), content);
        }
        let bus = root.join("sys/bus/pci/devices");
        testing::mkdir(&bus);
        let address = real.rsplit('/').next().unwrap();
        testing::symlink(format!("../../../devices/{real}"), bus.join(address));
    }

    /// Links `driver` and `iommu_group` the way sysfs does, relative to the device
    /// directory (`../../../../bus/pci/drivers/nvidia` for a device two bridges deep).
    fn add_links(root: &Path, real: &str, driver: &str, group: u32) {
        let dir = root.join("sys/devices").join(real);
        let up = "../".repeat(real.split('/').count() + 1);
        let drv = root.join("sys/bus/pci/drivers").join(driver);
        testing::mkdir(&drv);
        testing::symlink(format!("{up}bus/pci/drivers/{driver}"), dir.join("driver"));
        let grp = root.join("sys/kernel/iommu_groups").join(group.to_string());
        testing::mkdir(&grp);
        testing::symlink(
            format!("{up}kernel/iommu_groups/{group}"),
            dir.join("iommu_group"),
        );
    }

    /// A desktop: an Intel root port 00:01.0 with an RTX 3070 (GPU + HDMI audio
    /// function) behind it, and QEMU's `edu` device on the root bus. Ids and class codes
    /// are the real ones (pci.ids: 10de:2484 "GA104 [GeForce RTX 3070]", 10de:228b
    /// "GA104 High Definition Audio Controller"; edu is 1234:11e8 class 00ff00, and has
    /// no reset method: DESIGN.md testbed facts).
    fn desktop() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        add_device(
            r,
            "pci0000:00/0000:00:01.0",
            &[
                ("vendor", "0x8086\n"),
                ("device", "0x1901\n"),
                ("class", "0x060400\n"),
                ("revision", "0x07\n"),
                ("numa_node", "-1\n"),
                ("reset_method", "pm\n"),
            ],
        );
        add_links(r, "pci0000:00/0000:00:01.0", "pcieport", 1);
        add_device(
            r,
            "pci0000:00/0000:00:01.0/0000:01:00.0",
            &[
                ("vendor", "0x10de\n"),
                ("device", "0x2484\n"),
                ("subsystem_vendor", "0x10de\n"),
                ("subsystem_device", "0x146b\n"),
                ("class", "0x030000\n"),
                ("revision", "0xa1\n"),
                ("boot_vga", "0\n"),
                ("numa_node", "-1\n"),
                ("reset_method", "bus\n"),
            ],
        );
        add_links(r, "pci0000:00/0000:00:01.0/0000:01:00.0", "nvidia", 14);
        add_device(
            r,
            "pci0000:00/0000:00:01.0/0000:01:00.1",
            &[
                ("vendor", "0x10de\n"),
                ("device", "0x228b\n"),
                ("subsystem_vendor", "0x10de\n"),
                ("subsystem_device", "0x146b\n"),
                ("class", "0x040300\n"),
                ("revision", "0xa1\n"),
                ("numa_node", "-1\n"),
                ("reset_method", "flr bus\n"),
            ],
        );
        add_links(
            r,
            "pci0000:00/0000:00:01.0/0000:01:00.1",
            "snd_hda_intel",
            14,
        );
        // edu: no driver bound, no reset method at all (since 5.15 the kernel then
        // hides `reset_method`, and older kernels never create `reset`).
        add_device(
            r,
            "pci0000:00/0000:00:03.0",
            &[
                ("vendor", "0x1234\n"),
                ("device", "0x11e8\n"),
                ("subsystem_vendor", "0x1af4\n"),
                ("subsystem_device", "0x1100\n"),
                ("class", "0x00ff00\n"),
                ("revision", "0x10\n"),
                ("numa_node", "-1\n"),
            ],
        );
        tmp
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    /// A host with more functions than one thread reads: `n` virtual functions
    /// behind four root ports, each with its own driver link and group.
    fn many(n: usize) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..n {
            let port = i % 4;
            let real = format!(
                "pci0000:00/0000:00:0{port}.0/0000:{:02x}:{:02x}.{}",
                port + 1,
                (i / 4) / 8,
                (i / 4) % 8
            );
            let device = format!("0x{:04x}\n", 0x1000 + i);
            add_device(
                tmp.path(),
                &real,
                &[
                    ("vendor", "0x15b3\n"),
                    ("device", device.as_str()),
                    ("class", "0x020000\n"),
                ],
            );
            add_links(tmp.path(), &real, "mlx5_core", u32::try_from(i).unwrap());
        }
        tmp
    }

    #[test]
    fn many_devices_are_read_in_parallel_as_on_one_thread() {
        let n = PARALLEL_MIN + 60;
        let tmp = many(n);
        let root = HostRoot::new(tmp.path());
        let all = read_all(&root).unwrap();
        assert_eq!(all.len(), n);
        // The same devices, in the same order, as reading them one by one.
        let mut one_by_one: Vec<PciDevice> = all
            .iter()
            .map(|d| read_device_dir(&root, d.address, &d.sysfs_path).unwrap())
            .collect();
        one_by_one.sort_by_key(|d| d.address);
        assert_eq!(all, one_by_one);
        assert!(all.windows(2).all(|w| w[0].address < w[1].address));
        assert!(all.iter().all(|d| d.driver.as_deref() == Some("mlx5_core")));

        // Two broken devices, one early and one late in the listing: the error is
        // the first one's, as on one thread.
        let broken = |d: &PciDevice| tmp.path().join(d.sysfs_path.strip_prefix("/").unwrap());
        testing::write(broken(&all[n - 3]).join("class"), "0xlate\n");
        testing::write(broken(&all[5]).join("class"), "0xearly\n");
        for _ in 0..5 {
            let err = read_all(&root).unwrap_err();
            assert!(err.to_string().contains("0xearly"), "{err}");
        }
    }

    #[test]
    fn reads_a_gpu_with_its_audio_function_and_parents() {
        let tmp = desktop();
        let all = read_all(&HostRoot::new(tmp.path())).unwrap();
        let addrs: Vec<String> = all.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "0000:00:01.0",
                "0000:00:03.0",
                "0000:01:00.0",
                "0000:01:00.1"
            ]
        );

        let gpu = &all[2];
        assert_eq!((gpu.vendor_id, gpu.device_id), (0x10de, 0x2484));
        assert_eq!(gpu.subsystem_vendor_id, Some(0x10de));
        assert_eq!(gpu.subsystem_device_id, Some(0x146b));
        assert_eq!(gpu.class, 0x030000);
        assert_eq!(gpu.kind(), DeviceKind::Gpu);
        assert_eq!(gpu.revision, Some(0xa1));
        assert_eq!(gpu.driver.as_deref(), Some("nvidia"));
        assert_eq!(gpu.iommu_group, Some(14));
        assert_eq!(gpu.boot_vga, Some(false));
        assert_eq!(gpu.reset_methods, Some(vec!["bus".to_string()]));
        assert!(gpu.has_reset);
        assert_eq!(gpu.numa_node, None);
        assert_eq!(gpu.parents, vec![addr("0000:00:01.0")]);
        assert_eq!(
            gpu.sysfs_path,
            PathBuf::from("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0")
        );

        let audio = &all[3];
        assert_eq!(audio.kind(), DeviceKind::Audio);
        assert_eq!(audio.driver.as_deref(), Some("snd_hda_intel"));
        assert_eq!(audio.iommu_group, Some(14));
        assert_eq!(audio.boot_vga, None);
        assert_eq!(
            audio.reset_methods,
            Some(vec!["flr".to_string(), "bus".to_string()])
        );

        let port = &all[0];
        assert!(port.is_bridge());
        assert!(port.parents.is_empty());
        assert_eq!(port.driver.as_deref(), Some("pcieport"));
    }

    #[test]
    fn a_device_without_driver_group_or_reset() {
        let tmp = desktop();
        let all = read_all(&HostRoot::new(tmp.path())).unwrap();
        let edu = &all[1];
        assert_eq!((edu.vendor_id, edu.device_id), (0x1234, 0x11e8));
        assert_eq!(edu.class, 0x00ff00);
        assert_eq!(edu.kind(), DeviceKind::Other);
        assert_eq!(edu.driver, None);
        assert_eq!(edu.iommu_group, None);
        assert_eq!(edu.reset_methods, None);
        assert!(!edu.has_reset);
    }

    #[test]
    fn empty_reset_method_and_old_kernel_reset_file() {
        let tmp = desktop();
        let dir = tmp.path().join("sys/devices/pci0000:00/0000:00:03.0");
        let rel = Path::new("/sys/devices/pci0000:00/0000:00:03.0");
        testing::write(dir.join("reset_method"), "\n");
        let d = read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).unwrap();
        assert_eq!(d.reset_methods, Some(vec![]));
        assert!(!d.has_reset);

        // A pre-5.15 kernel: no reset_method, but a write-only `reset` file.
        testing::remove(dir.join("reset_method"));
        testing::write(dir.join("reset"), "");
        let d = read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).unwrap();
        assert_eq!(d.reset_methods, None);
        assert!(d.has_reset);
    }

    #[test]
    fn numa_node_and_boot_vga_values() {
        let tmp = desktop();
        let dir = tmp
            .path()
            .join("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
        let rel = Path::new("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
        testing::write(dir.join("numa_node"), "1\n");
        testing::write(dir.join("boot_vga"), "1\n");
        let d = read_device_dir(&HostRoot::new(tmp.path()), addr("0000:01:00.0"), rel).unwrap();
        assert_eq!(d.numa_node, Some(1));
        assert_eq!(d.boot_vga, Some(true));
    }

    #[test]
    fn errors_name_the_file() {
        let tmp = desktop();
        let dir = tmp.path().join("sys/devices/pci0000:00/0000:00:03.0");
        let rel = Path::new("/sys/devices/pci0000:00/0000:00:03.0");

        testing::write(dir.join("class"), "0xzz\n");
        let err =
            read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).unwrap_err();
        assert!(matches!(err, PciError::Content { ref path, .. } if path.ends_with("class")));
        assert!(err.to_string().contains("0xzz"), "{err}");

        testing::write(dir.join("class"), "0x1000000\n");
        assert!(read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).is_err());

        testing::remove(dir.join("class"));
        let err =
            read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).unwrap_err();
        let PciError::Read(e) = err else {
            panic!("expected a read error, got {err}")
        };
        assert!(e.is_not_found());
        assert!(e.path.ends_with("0000:00:03.0/class"));
    }

    #[test]
    fn bad_group_link_is_a_content_error() {
        let tmp = desktop();
        let dir = tmp.path().join("sys/devices/pci0000:00/0000:00:03.0");
        testing::symlink("../../../kernel/iommu_groups/x", dir.join("iommu_group"));
        let rel = Path::new("/sys/devices/pci0000:00/0000:00:03.0");
        let err =
            read_device_dir(&HostRoot::new(tmp.path()), addr("0000:00:03.0"), rel).unwrap_err();
        assert!(
            matches!(err, PciError::Content { ref path, .. } if path.ends_with("iommu_group")),
            "{err}"
        );
    }

    #[test]
    fn absolute_links_stay_in_the_root_and_odd_entries_are_skipped() {
        let tmp = desktop();
        let bus = tmp.path().join("sys/bus/pci/devices");
        testing::remove(bus.join("0000:00:03.0"));
        testing::symlink(
            "/sys/devices/pci0000:00/0000:00:03.0",
            bus.join("0000:00:03.0"),
        );
        testing::mkdir(bus.join("not-a-device"));
        let all = read_all(&HostRoot::new(tmp.path())).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].device_id, 0x11e8);
    }

    #[test]
    fn missing_bus_directory_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_all(&HostRoot::new(tmp.path())).unwrap().is_empty());
    }

    #[test]
    fn attributes_are_read_only_from_regular_files_inside_the_root() {
        let tmp = desktop();
        let outside = tempfile::tempdir().unwrap();
        testing::write(outside.path().join("vendor"), "0x1234\n");
        let dir = tmp.path().join("sys/devices/pci0000:00/0000:00:03.0");
        let rel = Path::new("/sys/devices/pci0000:00/0000:00:03.0");
        let root = HostRoot::new(tmp.path());
        // An attribute that is a link (here: out of the root) is not followed.
        testing::remove(dir.join("revision"));
        testing::symlink(outside.path().join("vendor"), dir.join("revision"));
        let err = read_device_dir(&root, addr("0000:00:03.0"), rel).unwrap_err();
        assert!(err.to_string().ends_with("0000:00:03.0/revision"), "{err}");
        // A FIFO is refused, not opened (opening it would block).
        testing::remove(dir.join("revision"));
        testing::mkfifo(dir.join("revision"));
        let err = read_device_dir(&root, addr("0000:00:03.0"), rel).unwrap_err();
        let PciError::Read(e) = err else {
            panic!("expected a read error, got {err}")
        };
        assert_eq!(e.source.kind(), io::ErrorKind::InvalidInput, "{e:?}");
        // Oversized attributes are refused.
        testing::remove(dir.join("revision"));
        testing::write(dir.join("revision"), vec![b'0'; ATTR_CAP + 1]);
        assert!(read_device_dir(&root, addr("0000:00:03.0"), rel).is_err());
        // A device directory linked from outside the root is the one inside it.
        testing::remove(dir.join("revision"));
        let bus = tmp.path().join("sys/bus/pci/devices");
        testing::remove(bus.join("0000:00:03.0"));
        testing::symlink(
            format!("../../../../../../../../../../..{}", dir.display()),
            bus.join("0000:00:03.0"),
        );
        let all = read_all(&root).unwrap();
        assert_eq!(all.len(), 3, "the link leads to nothing inside the root");
    }

    #[test]
    fn a_device_directory_that_is_itself_a_link_is_resolved_the_long_way() {
        let tmp = desktop();
        let devices = tmp.path().join("sys/devices");
        testing::mv(devices.join("pci0000:00/0000:00:03.0"), devices.join("edu"));
        testing::symlink("/sys/devices/edu", devices.join("pci0000:00/0000:00:03.0"));
        let all = read_all(&HostRoot::new(tmp.path())).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].device_id, 0x11e8);
        assert_eq!(all[1].sysfs_path, PathBuf::from("/sys/devices/edu"));
    }

    /// The kernel's `uevent` summary gives the same identity as the attribute files,
    /// in one read; a `uevent` without the IDs (or a tree captured without it) falls
    /// back to the attributes.
    #[test]
    fn the_identity_is_read_from_uevent_or_else_from_the_attributes() {
        // A real uevent of an NVMe drive (Linux 6.12).
        let uevent = "DRIVER=nvme\nPCI_CLASS=10802\nPCI_ID=144D:A808\nPCI_SUBSYS_ID=144D:A801\n\
                      PCI_SLOT_NAME=0000:01:00.0\n\
                      MODALIAS=pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02\n";
        let attributes: &[(&str, &str)] = &[
            ("vendor", "0x144d\n"),
            ("device", "0xa808\n"),
            ("subsystem_vendor", "0x144d\n"),
            ("subsystem_device", "0xa801\n"),
            ("class", "0x010802\n"),
            ("revision", "0x00\n"),
        ];
        let read = |files: &[(&str, &str)]| {
            let tmp = tempfile::tempdir().unwrap();
            add_device(tmp.path(), "pci0000:00/0000:01:00.0", files);
            read_all(&HostRoot::new(tmp.path())).map(|mut all| all.remove(0))
        };
        let from_attributes = read(attributes).unwrap();
        assert_eq!(
            (
                from_attributes.vendor_id,
                from_attributes.device_id,
                from_attributes.class
            ),
            (0x144d, 0xa808, 0x010802)
        );
        assert_eq!(from_attributes.driver, None);
        // Only uevent and revision: no vendor, device or class file is needed, and
        // DRIVER= names the bound driver as the `driver` link would.
        let from_uevent = read(&[("uevent", uevent), ("revision", "0x00\n")]).unwrap();
        assert_eq!(from_uevent.driver.as_deref(), Some("nvme"));
        assert_eq!(
            PciDevice {
                driver: None,
                ..from_uevent
            },
            from_attributes
        );
        let unbound = uevent.replace("DRIVER=nvme\n", "");
        assert_eq!(
            read(&[("uevent", &unbound), ("revision", "0x00\n")]).unwrap(),
            from_attributes
        );
        // A uevent that says something else wins over stale attributes: it is read first.
        let other = uevent.replace("PCI_ID=144D:A808", "PCI_ID=144D:A80A");
        let mut files = attributes.to_vec();
        files.push(("uevent", &other));
        assert_eq!(read(&files).unwrap().device_id, 0xa80a);
        let bad: &[&str] = &[
            "DRIVER=nvme\nPCI_CLASS=10802\n",
            "PCI_CLASS=10802\nPCI_ID=144D\n",
            "PCI_CLASS=zz\nPCI_ID=144D:A808\n",
            "PCI_CLASS=10802\nPCI_ID=144D:A808\nPCI_SUBSYS_ID=1:\n",
        ];
        // Without PCI_ID (or with a malformed one) the attributes are read.
        for bad in bad {
            let mut files = attributes.to_vec();
            files.push(("uevent", bad));
            assert_eq!(read(&files).unwrap(), from_attributes, "{bad}");
            // ... and then they are required, as without a uevent.
            let err = read(&[("uevent", bad)]).unwrap_err().to_string();
            assert!(err.contains("0000:01:00.0/vendor"), "{bad}: {err}");
        }
        // A uevent without PCI_SUBSYS_ID leaves the subsystem to the attributes'
        // absence: none.
        let no_subsys = read(&[("uevent", "PCI_CLASS=10802\nPCI_ID=144D:A808\n")]).unwrap();
        assert_eq!(no_subsys.subsystem_vendor_id, None);
        assert_eq!(no_subsys.vendor_id, 0x144d);
    }
}
