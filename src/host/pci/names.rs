//! Human names for PCI ids, from the pci.ids database.
//!
//! The `pci-ids` crate embeds a copy of the database (version [`EMBEDDED_VERSION`]).
//! When the analysing machine has a newer `pci.ids` (`/usr/share/misc/pci.ids`,
//! `/usr/share/hwdata/pci.ids`, `/usr/share/pci.ids`), that file is used instead, so
//! a recently released GPU still gets its name. Names are a property of the tool,
//! not of the analysed host, so this is read from the analysing machine's own `/`.
//!
//! The environment variable `PASSTHRU_PCI_IDS` names a pci.ids file to use instead of
//! the standard locations; a file named there is used whatever its version (an
//! explicit choice), and when it cannot be read (or is not a regular file, or is larger
//! than [`IDS_CAP`]) the embedded copy is used.
//!
//! # The pci.ids format
//!
//! ```text
//! 10de  NVIDIA Corporation                      vendor: 4 hex digits, 2 spaces, name
//! <TAB>2484  GA104 [GeForce RTX 3070]             device
//! <TAB><TAB>10de 146b  GA104 [GeForce RTX 3070]   subsystem: subvendor subdevice
//! C 03  Display controller                      class (after all vendors)
//! <TAB>00  VGA compatible controller              subclass
//! <TAB><TAB>00  VGA controller                    programming interface
//! ```
//!
//! Lines starting with `#` are comments; the header carries `#<TAB>Version: 2025.07.11`.
//! The file is about 1.4 MB; [`parse_pci_ids`] indexes only vendors and classes up
//! front and parses a vendor's devices the first time one of them is asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pci_ids::FromId;

/// The `Version:` of the pci.ids copy that the `pci-ids` crate embeds.
pub const EMBEDDED_VERSION: &str = "2025.07.11";

/// The environment variable naming a pci.ids file to use instead of the system's.
pub const PCI_IDS_ENV: &str = "PASSTHRU_PCI_IDS";

/// Where distributions install pci.ids (Debian: `misc`; Fedora/Arch: `hwdata`).
pub const SYSTEM_PATHS: [&str; 3] = [
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// A source of names.
#[derive(Debug, Default)]
pub struct PciNames {
    file: Option<IdsFile>,
}

/// A pci.ids file read from disk.
#[derive(Debug)]
struct IdsFile {
    path: PathBuf,
    ids: PciIds<'static>,
}

impl PciNames {
    /// The embedded database, or the system's when its version is newer (or the file
    /// named by `PASSTHRU_PCI_IDS`).
    pub fn load() -> Self {
        match std::env::var_os(PCI_IDS_ENV) {
            Some(p) if !p.is_empty() => Self::load_from(&[PathBuf::from(p)], true),
            _ => {
                let paths: Vec<PathBuf> = SYSTEM_PATHS.iter().map(PathBuf::from).collect();
                Self::load_from(&paths, false)
            }
        }
    }

    /// The embedded database only.
    pub fn embedded() -> Self {
        Self { file: None }
    }

    /// Uses the first readable file of `paths` when `always` is set or its version is
    /// newer than the embedded one; the embedded database otherwise.
    pub fn load_from(paths: &[PathBuf], always: bool) -> Self {
        for path in paths {
            // Only the header is read to learn the version: the whole file (about
            // 1.4 MB) is read only when it is used, which on most hosts it is not.
            let Ok(mut file) = IdsReader::open(path) else {
                continue;
            };
            let Ok(header) = file.read_header() else {
                continue;
            };
            let newer = pci_ids_version(&String::from_utf8_lossy(header))
                .is_some_and(|v| v > EMBEDDED_VERSION);
            if always || newer {
                match file.read_rest() {
                    Ok(text) => return Self::from_text(path, text),
                    Err(_) => continue,
                }
            }
            // The first file found is the system's database: if it is older, so
            // are any others a distribution might have left around.
            break;
        }
        Self::embedded()
    }

    /// Names from the text of a pci.ids file, labelled with `path`.
    ///
    /// The text lives as long as the program: names are looked up for the whole
    /// run, and one database is loaded per run.
    pub fn from_text(path: &Path, text: String) -> Self {
        let text: &'static str = Box::leak(text.into_boxed_str());
        Self {
            file: Some(IdsFile {
                path: path.to_path_buf(),
                ids: parse_pci_ids(text),
            }),
        }
    }

    /// Which database is in use: `embedded <version>` or `<path> <version>`.
    pub fn source(&self) -> String {
        match &self.file {
            None => format!("embedded {EMBEDDED_VERSION}"),
            Some(f) => format!(
                "{} {}",
                f.path.display(),
                f.ids.version.unwrap_or("(no version)")
            ),
        }
    }

    /// The vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        match &self.file {
            None => pci_ids::Vendor::from_id(vendor).map(pci_ids::Vendor::name),
            Some(f) => f.ids.vendor(vendor),
        }
    }

    /// The device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        match &self.file {
            None => pci_ids::Device::from_vid_pid(vendor, device).map(pci_ids::Device::name),
            Some(f) => f.ids.device(vendor, device),
        }
    }

    /// The subsystem's name.
    pub fn subsystem(
        &self,
        vendor: u16,
        device: u16,
        sub_vendor: u16,
        sub_device: u16,
    ) -> Option<&str> {
        match &self.file {
            None => pci_ids::Device::from_vid_pid(vendor, device)?
                .subsystems()
                .find(|s| s.subvendor() == sub_vendor && s.subdevice() == sub_device)
                .map(pci_ids::SubSystem::name),
            Some(f) => f.ids.subsystem(vendor, device, sub_vendor, sub_device),
        }
    }

    /// The most specific class name for a 24-bit class code (subclass, else class),
    /// e.g. `VGA compatible controller`, `Audio device`; falls back to the hex code
    /// (`Class 0bff`).
    pub fn class(&self, class: u32) -> String {
        let (c, s) = ((class >> 16) as u8, (class >> 8) as u8);
        let name = match &self.file {
            None => pci_ids::Subclass::from_cid_sid(c, s)
                .map(pci_ids::Subclass::name)
                .or_else(|| pci_ids::Class::from_id(c).map(pci_ids::Class::name)),
            Some(f) => f.ids.class(c, s),
        };
        match name {
            Some(n) => n.to_string(),
            None => format!("Class {c:02x}{s:02x}"),
        }
    }

    /// The programming interface's name (the low byte of the class code), e.g.
    /// `NVM Express` for 0x010802, if the database has one.
    pub fn prog_if(&self, class: u32) -> Option<&str> {
        let (c, s, p) = ((class >> 16) as u8, (class >> 8) as u8, class as u8);
        match &self.file {
            None => pci_ids::Subclass::from_cid_sid(c, s)?
                .prog_ifs()
                .find(|i| i.id() == p)
                .map(pci_ids::ProgIf::name),
            Some(f) => f
                .ids
                .classes
                .get(&c)?
                .subclasses
                .get(&s)?
                .prog_ifs
                .get(&p)
                .copied(),
        }
    }
}

/// The most bytes read from a pci.ids file: the database is about 1.4 MB today.
pub const IDS_CAP: usize = 64 << 20;

/// Reads a pci.ids file, which must be a regular file of at most [`IDS_CAP`] bytes:
/// opened `O_NONBLOCK` (a FIFO named in `PASSTHRU_PCI_IDS` cannot block) and checked
/// with `fstat` on the open descriptor (`/dev/zero` is refused, not read forever).
#[cfg(test)]
fn read_ids_file(path: &Path) -> std::io::Result<String> {
    let mut file = IdsReader::open(path)?;
    file.read_header()?;
    file.read_rest()
}

/// A pci.ids file being read: first its header (to learn its version), then, when
/// it is used, the rest.
struct IdsReader {
    file: std::fs::File,
    /// The size `fstat` gave, a hint for the buffer.
    len: u64,
    /// What has been read so far.
    bytes: Vec<u8>,
}

/// How much of a pci.ids file is read at a time while looking for the end of its
/// header: the header of the real file is about 1 KiB.
const HEADER_CHUNK: usize = 8 << 10;

impl IdsReader {
    /// Opens `path`, which must be a regular file (see [`read_ids_file`]).
    fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(crate::host::root::not_regular(&meta));
        }
        Ok(Self {
            file,
            len: meta.len(),
            bytes: Vec::new(),
        })
    }

    /// Reads on until the header (the comment and empty lines before the first entry)
    /// has been read whole, or the file ends; returns what has been read, which may go
    /// on past the header.
    fn read_header(&mut self) -> std::io::Result<&[u8]> {
        use std::io::Read;
        let mut scanned = 0;
        loop {
            // Whole lines only: the last one may still be incomplete.
            while let Some(end) = self.bytes[scanned..].iter().position(|&b| b == b'\n') {
                let line = &self.bytes[scanned..scanned + end];
                if !(line.is_empty() || line == b"\r" || line.starts_with(b"#")) {
                    return Ok(&self.bytes);
                }
                scanned += end + 1;
            }
            let start = self.bytes.len();
            if start >= IDS_CAP {
                return Err(too_large());
            }
            self.bytes.resize(start + HEADER_CHUNK, 0);
            let n = loop {
                match self.file.read(&mut self.bytes[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.bytes.truncate(start + n);
            if n == 0 {
                return Ok(&self.bytes);
            }
        }
    }

    /// Reads the rest of the file and returns it whole, as text.
    fn read_rest(mut self) -> std::io::Result<String> {
        use std::io::Read;
        let hint = usize::try_from(self.len).unwrap_or(IDS_CAP).min(IDS_CAP);
        self.bytes
            .reserve(hint.saturating_sub(self.bytes.len()).saturating_add(1));
        let room = IDS_CAP.saturating_sub(self.bytes.len());
        let limit = u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1);
        (&mut self.file).take(limit).read_to_end(&mut self.bytes)?;
        if self.bytes.len() > IDS_CAP {
            return Err(too_large());
        }
        String::from_utf8(self.bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// The error for a pci.ids file larger than [`IDS_CAP`].
fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "larger than 64 MiB, more than any pci.ids holds",
    )
}

/// The `#<TAB>Version: 2025.07.11` of a pci.ids text (looked for in the header only).
pub fn pci_ids_version(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.is_empty() || l.starts_with('#'))
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("Version:"))
        .map(str::trim)
}

/// A parsed pci.ids text, borrowing its names from the text.
#[derive(Debug, Default)]
pub struct PciIds<'a> {
    /// The header's `Version:`.
    pub version: Option<&'a str>,
    vendors: HashMap<u16, VendorEntry<'a>>,
    classes: HashMap<u8, ClassEntry<'a>>,
}

#[derive(Debug)]
struct VendorEntry<'a> {
    name: &'a str,
    /// The vendor's device and subsystem lines, parsed on first use.
    body: &'a str,
    devices: OnceLock<HashMap<u16, DeviceEntry<'a>>>,
}

#[derive(Debug, Clone, Copy)]
struct DeviceEntry<'a> {
    name: &'a str,
    /// The device's subsystem lines, scanned when asked.
    body: &'a str,
}

#[derive(Debug, Default)]
struct ClassEntry<'a> {
    name: &'a str,
    subclasses: HashMap<u8, SubclassEntry<'a>>,
}

#[derive(Debug, Default)]
struct SubclassEntry<'a> {
    name: &'a str,
    prog_ifs: HashMap<u8, &'a str>,
}

/// `"10de  NVIDIA Corporation"` → (0x10de, "NVIDIA Corporation"), for ids of
/// `N` hex digits.
fn id_and_name<const N: usize>(line: &str) -> Option<(u32, &str)> {
    let id = line.get(..N)?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = line.get(N..)?;
    // The separator is two spaces; accept any whitespace, require some.
    let name = rest.trim_start();
    if name.len() == rest.len() || name.is_empty() {
        return None;
    }
    Some((u32::from_str_radix(id, 16).ok()?, name.trim_end()))
}

/// Indexes a pci.ids text: vendors (name and the extent of their block) and the whole
/// class section; a vendor's devices are parsed on first lookup. Lines that do not
/// fit the format are skipped.
pub fn parse_pci_ids(text: &str) -> PciIds<'_> {
    let mut ids = PciIds {
        version: pci_ids_version(text),
        ..PciIds::default()
    };
    // The vendor whose block is open: (id, name, byte offset where the body starts).
    let mut open: Option<(u16, &str, usize)> = None;
    let mut in_classes = false;
    let mut class: Option<u8> = None;
    let mut subclass: Option<u8> = None;
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with('\t') {
            // A top-level line closes the open vendor block.
            if let Some((id, name, body_start)) = open.take() {
                ids.vendors.insert(
                    id,
                    VendorEntry {
                        name,
                        body: &text[body_start..start],
                        devices: OnceLock::new(),
                    },
                );
            }
            if let Some(rest) = line.strip_prefix("C ") {
                in_classes = true;
                subclass = None;
                class = id_and_name::<2>(rest).map(|(id, name)| {
                    let id = id as u8;
                    ids.classes.insert(
                        id,
                        ClassEntry {
                            name,
                            ..ClassEntry::default()
                        },
                    );
                    id
                });
            } else if !in_classes {
                open = id_and_name::<4>(line).map(|(id, name)| (id as u16, name, offset));
            } else {
                // Another section after the classes (none today): not ours.
                class = None;
                subclass = None;
            }
            continue;
        }
        if !in_classes {
            continue; // device and subsystem lines wait for the lazy parse
        }
        let Some(c) = class else { continue };
        let Some(entry) = ids.classes.get_mut(&c) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("\t\t") {
            if let (Some(s), Some((id, name))) = (subclass, id_and_name::<2>(rest)) {
                if let Some(sub) = entry.subclasses.get_mut(&s) {
                    sub.prog_ifs.insert(id as u8, name);
                }
            }
        } else if let Some((id, name)) = id_and_name::<2>(&line[1..]) {
            let id = id as u8;
            entry.subclasses.insert(
                id,
                SubclassEntry {
                    name,
                    ..SubclassEntry::default()
                },
            );
            subclass = Some(id);
        }
    }
    if let Some((id, name, body_start)) = open {
        ids.vendors.insert(
            id,
            VendorEntry {
                name,
                body: &text[body_start..],
                devices: OnceLock::new(),
            },
        );
    }
    ids
}

/// Parses a vendor block's device lines (one tab); each device's body is the run of
/// subsystem lines (two tabs) and comments that follows it.
fn parse_devices(body: &str) -> HashMap<u16, DeviceEntry<'_>> {
    let mut devices = HashMap::new();
    let mut open: Option<(u16, &str, usize)> = None;
    let mut offset = 0;
    for raw in body.split_inclusive('\n') {
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let Some(rest) = line.strip_prefix('\t') else {
            continue;
        };
        if rest.starts_with('\t') {
            continue;
        }
        if let Some((id, name, body_start)) = open.take() {
            devices.insert(
                id,
                DeviceEntry {
                    name,
                    body: &body[body_start..start],
                },
            );
        }
        open = id_and_name::<4>(rest).map(|(id, name)| (id as u16, name, offset));
    }
    if let Some((id, name, body_start)) = open {
        devices.insert(
            id,
            DeviceEntry {
                name,
                body: &body[body_start..],
            },
        );
    }
    devices
}

impl<'a> PciIds<'a> {
    fn device_entry(&self, vendor: u16, device: u16) -> Option<DeviceEntry<'a>> {
        let v = self.vendors.get(&vendor)?;
        v.devices
            .get_or_init(|| parse_devices(v.body))
            .get(&device)
            .copied()
    }

    /// The vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&'a str> {
        self.vendors.get(&vendor).map(|v| v.name)
    }

    /// The device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&'a str> {
        self.device_entry(vendor, device).map(|d| d.name)
    }

    /// The subsystem's name.
    pub fn subsystem(
        &self,
        vendor: u16,
        device: u16,
        sub_vendor: u16,
        sub_device: u16,
    ) -> Option<&'a str> {
        let d = self.device_entry(vendor, device)?;
        d.body.lines().find_map(|line| {
            let rest = line.strip_prefix("\t\t")?;
            let (sv, rest) = rest.split_once(' ')?;
            let (sd, name) = id_and_name::<4>(rest)?;
            (u16::from_str_radix(sv, 16).ok()? == sub_vendor && sd == u32::from(sub_device))
                .then_some(name)
        })
    }

    /// The subclass's name, else the class's.
    pub fn class(&self, class: u8, subclass: u8) -> Option<&'a str> {
        let c = self.classes.get(&class)?;
        Some(c.subclasses.get(&subclass).map_or(c.name, |s| s.name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::testing;

    /// Real lines of pci.ids version 2025.07.11 (the copy bundled with the `pci-ids`
    /// crate, `pciids/pci.ids`): the header, parts of the NVIDIA block, the start of
    /// the next vendor, and parts of the class section. `\t` is the file's tab.
    const EXCERPT: &str = "#
#\tList of PCI ID's
#
#\tVersion: 2025.07.11
#\tDate:    2025-07-11 03:15:02
#
10de  NVIDIA Corporation
\t0008  NV1 [STG2000X-B Series]
\t0009  NV1 [NV1 Series]
\t228b  GA104 High Definition Audio Controller
\t228e  GA106 High Definition Audio Controller
\t2483  GA104
\t2484  GA104 [GeForce RTX 3070]
\t\t10de 146b  GA104 [GeForce RTX 3070]
\t\t10de 14ae  GA104 [GeForce RTX 3070 16GB]
\t2486  GA104 [GeForce RTX 3060 Ti]
10df  Emulex Corporation
\t0720  OneConnect NIC (Skyhawk)
\t\t103c 1934  FlexFabric 20Gb 2-port 650M Adapter
\t\t103c 1935  FlexFabric 20Gb 2-port 650FLB Adapter
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t01  NVMHCI
\t\t02  NVM Express
C 02  Network controller
\t00  Ethernet controller
C 03  Display controller
\t00  VGA compatible controller
\t\t00  VGA controller
\t\t01  8514 controller
\t01  XGA compatible controller
\t02  3D controller
\t80  Display controller
C 04  Multimedia controller
\t01  Multimedia audio controller
\t03  Audio device
";

    #[test]
    fn parses_vendors_devices_and_subsystems() {
        let ids = parse_pci_ids(EXCERPT);
        assert_eq!(ids.version, Some("2025.07.11"));
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(ids.vendor(0x10df), Some("Emulex Corporation"));
        assert_eq!(ids.vendor(0x1234), None);
        assert_eq!(ids.device(0x10de, 0x2484), Some("GA104 [GeForce RTX 3070]"));
        assert_eq!(
            ids.device(0x10de, 0x228b),
            Some("GA104 High Definition Audio Controller")
        );
        // The last device of a block, and one of the next vendor.
        assert_eq!(
            ids.device(0x10de, 0x2486),
            Some("GA104 [GeForce RTX 3060 Ti]")
        );
        assert_eq!(ids.device(0x10df, 0x0720), Some("OneConnect NIC (Skyhawk)"));
        assert_eq!(ids.device(0x10df, 0x2484), None);
        assert_eq!(
            ids.subsystem(0x10de, 0x2484, 0x10de, 0x14ae),
            Some("GA104 [GeForce RTX 3070 16GB]")
        );
        assert_eq!(
            ids.subsystem(0x10df, 0x0720, 0x103c, 0x1935),
            Some("FlexFabric 20Gb 2-port 650FLB Adapter")
        );
        // Subsystems belong to their own device only.
        assert_eq!(ids.subsystem(0x10de, 0x2486, 0x10de, 0x146b), None);
        assert_eq!(ids.subsystem(0x10de, 0x2484, 0x10de, 0x0001), None);
    }

    #[test]
    fn parses_classes_subclasses_and_prog_ifs() {
        let ids = parse_pci_ids(EXCERPT);
        assert_eq!(ids.class(0x03, 0x00), Some("VGA compatible controller"));
        assert_eq!(ids.class(0x04, 0x03), Some("Audio device"));
        assert_eq!(
            ids.class(0x01, 0x08),
            Some("Non-Volatile memory controller")
        );
        assert_eq!(ids.class(0x02, 0x00), Some("Ethernet controller"));
        // Unknown subclass: the class name; unknown class: nothing.
        assert_eq!(ids.class(0x02, 0x42), Some("Network controller"));
        assert_eq!(ids.class(0x0c, 0x03), None);
        let names = PciNames {
            file: Some(IdsFile {
                path: PathBuf::from("/usr/share/misc/pci.ids"),
                ids,
            }),
        };
        assert_eq!(names.prog_if(0x010802), Some("NVM Express"));
        assert_eq!(names.prog_if(0x030001), Some("8514 controller"));
        assert_eq!(names.class(0x0c0330), "Class 0c03");
        assert_eq!(names.source(), "/usr/share/misc/pci.ids 2025.07.11");
    }

    #[test]
    fn tolerates_crlf_and_junk_lines() {
        let text = "#\tVersion: 2099.01.01\r\n10de  NVIDIA Corporation\r\n\tzzzz  junk\r\n\t2484  GA104 [GeForce RTX 3070]\r\nnonsense\r\n";
        let ids = parse_pci_ids(text);
        assert_eq!(ids.device(0x10de, 0x2484), Some("GA104 [GeForce RTX 3070]"));
        assert_eq!(ids.version, Some("2099.01.01"));
    }

    #[test]
    fn embedded_names() {
        let n = PciNames::embedded();
        assert_eq!(n.source(), format!("embedded {EMBEDDED_VERSION}"));
        assert_eq!(n.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(n.device(0x10de, 0x2484), Some("GA104 [GeForce RTX 3070]"));
        assert_eq!(
            n.subsystem(0x10de, 0x2484, 0x10de, 0x146b),
            Some("GA104 [GeForce RTX 3070]")
        );
        // QEMU's edu device has no entry (vendor 1234 is not in pci.ids).
        assert_eq!(n.vendor(0x1234), None);
        assert_eq!(n.device(0x1234, 0x11e8), None);
        for (class, name) in [
            (0x030000, "VGA compatible controller"),
            (0x040300, "Audio device"),
            (0x010802, "Non-Volatile memory controller"),
            (0x020000, "Ethernet controller"),
            (0x0c0330, "USB controller"),
            (0x060400, "PCI bridge"),
            (0x00ff00, "Unclassified device"),
            (0xfe0000, "Class fe00"),
        ] {
            assert_eq!(n.class(class), name, "{class:06x}");
        }
        assert_eq!(n.prog_if(0x0c0330), Some("XHCI"));
    }

    #[test]
    fn a_newer_file_replaces_the_embedded_copy_and_an_older_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer.ids");
        testing::write(
            &newer,
            EXCERPT.replace("Version: 2025.07.11", "Version: 2099.01.01"),
        );
        let older = dir.path().join("older.ids");
        testing::write(
            &older,
            EXCERPT.replace("Version: 2025.07.11", "Version: 2023.04.10"),
        );
        let missing = dir.path().join("missing.ids");

        let n = PciNames::load_from(&[missing.clone(), newer.clone()], false);
        assert!(
            n.source().ends_with("newer.ids 2099.01.01"),
            "{}",
            n.source()
        );
        // The excerpt has no Intel: proof the file, not the embedded copy, answers.
        assert_eq!(n.vendor(0x8086), None);
        assert_eq!(n.device(0x10de, 0x2484), Some("GA104 [GeForce RTX 3070]"));

        let n = PciNames::load_from(&[older.clone(), newer], false);
        assert_eq!(n.source(), format!("embedded {EMBEDDED_VERSION}"));
        assert_eq!(n.vendor(0x8086), Some("Intel Corporation"));

        // An explicitly named file is used whatever its version.
        let n = PciNames::load_from(&[older], true);
        assert!(
            n.source().ends_with("older.ids 2023.04.10"),
            "{}",
            n.source()
        );
        let n = PciNames::load_from(&[missing], true);
        assert!(n.source().starts_with("embedded"));
    }

    #[test]
    fn only_a_regular_pci_ids_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pci.ids");
        testing::mkfifo(&fifo);
        for path in [Path::new("/dev/zero"), &fifo] {
            let err = read_ids_file(path).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
            let names = PciNames::load_from(&[path.to_path_buf()], true);
            assert_eq!(names.source(), format!("embedded {EMBEDDED_VERSION}"));
        }
    }
}
