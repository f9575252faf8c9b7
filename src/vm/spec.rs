//! A VM's spec: a small TOML file (`/etc/passthru/vms/NAME.toml` as root, else the
//! user's config directory) saying what the VM gets — memory, vCPUs, passed-through
//! devices, disks, installer ISOs, firmware, OS type, display, network, hugepages.
//!
//! Unknown keys are errors (a typo must not silently change a VM), and every error
//! names the line and column, as the `toml` crate reports them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::pci::PciAddress;

/// The guest operating system, for defaults (TPM and Secure Boot for Windows 11,
/// Hyper-V enlightenments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    /// Windows 10/11.
    Windows,
    /// Linux.
    Linux,
    /// Anything else.
    #[default]
    Other,
}

/// The vCPUs: a count (passthru picks host cores) or explicit host CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cpus {
    /// How many vCPUs.
    Count(u32),
    /// Host CPUs in the kernel's list format, e.g. `"2-7,10-15"`.
    Host(String),
}

/// A disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The image file (created by `qemu-img` when missing and `size` is given), or a
    /// block device.
    pub path: PathBuf,
    /// Size for a new image, e.g. `"128G"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// `qcow2` (default) or `raw`.
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "qcow2".into()
}

/// The firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// UEFI (OVMF); false means legacy BIOS (SeaBIOS).
    #[serde(default = "yes")]
    pub uefi: bool,
    /// UEFI Secure Boot (needs `uefi`).
    #[serde(default)]
    pub secure_boot: bool,
    /// A TPM 2.0 through swtpm.
    #[serde(default)]
    pub tpm: bool,
}

fn yes() -> bool {
    true
}

impl Default for Firmware {
    fn default() -> Self {
        Self {
            uefi: true,
            secure_boot: false,
            tpm: false,
        }
    }
}

/// The guest's display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    /// None: the passed-through GPU is the display.
    #[default]
    None,
    /// SPICE with a virtual GPU (for installing before the GPU driver is there).
    Spice,
}

/// The guest's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// User-mode networking (NAT, no setup).
    #[default]
    User,
    /// A host bridge, e.g. `br0`.
    Bridge(String),
    /// No network.
    None,
}

/// A `vendor:device` pair of 16-bit hex IDs, as `lspci -nn` prints them
/// (`10de:2684`). Used for PCI devices, their subsystems, and USB devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdPair {
    /// The vendor (PCI-SIG or USB-IF assigned).
    pub vendor: u16,
    /// The vendor's device (or subsystem, or product) number.
    pub device: u16,
}

impl std::fmt::Display for IdPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

impl std::str::FromStr for IdPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a vendor:device pair of hex IDs (e.g. 10de:2684)");
        let (v, d) = s.trim().split_once(':').ok_or_else(bad)?;
        let hex = |t: &str| {
            (!t.is_empty() && t.len() <= 4)
                .then(|| u16::from_str_radix(t, 16).ok())
                .flatten()
        };
        Ok(Self {
            vendor: hex(v).ok_or_else(bad)?,
            device: hex(d).ok_or_else(bad)?,
        })
    }
}

impl Serialize for IdPair {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdPair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A PCI device to pass through. Written either as a bare address
/// (`"0000:01:00.0"`) or as a table with the device's **identity**:
///
/// ```toml
/// [[devices]]
/// address = "0000:01:00.0"     # where it was when the spec was written
/// id = "10de:2684"             # vendor:device
/// subsystem = "1043:88e2"      # the board maker's subsystem IDs
/// rom = "/var/lib/passthru/roms/rtx4090.rom"   # optional ROM image
/// ```
///
/// Bus numbers move when a card is added or a BIOS setting changes: with an
/// identity, the device is found again wherever it went, and a spec whose hardware
/// changed is refused with what is there now instead of passing the wrong device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRef {
    /// The PCI address (the slot it was seen at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<PciAddress>,
    /// `vendor:device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<IdPair>,
    /// `subsystem-vendor:subsystem-device` (tells apart two boards with one chip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<IdPair>,
    /// A ROM image for the device (a GPU's VBIOS dumped or downloaded), given to the
    /// guest instead of the one on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rom: Option<PathBuf>,
}

impl DeviceRef {
    /// A device given by address only.
    pub fn at(address: PciAddress) -> Self {
        Self {
            address: Some(address),
            id: None,
            subsystem: None,
            rom: None,
        }
    }
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.address, &self.id) {
            (Some(a), Some(id)) => write!(f, "{a} [{id}]"),
            (Some(a), None) => write!(f, "{a}"),
            (None, Some(id)) => write!(f, "[{id}]"),
            (None, None) => write!(f, "(no address or id)"),
        }
    }
}

/// The table form of [`DeviceRef`], with unknown keys rejected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTable {
    address: Option<PciAddress>,
    id: Option<IdPair>,
    subsystem: Option<IdPair>,
    rom: Option<PathBuf>,
}

/// Accepts `"01:00.0"` or a table (see [`DeviceRef`]), keeping the table's own
/// errors (unknown keys, bad IDs) with their line numbers.
impl<'de> Deserialize<'de> for DeviceRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DeviceRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PCI address or a table with address, id, subsystem, rom")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DeviceRef, E> {
                v.parse::<PciAddress>()
                    .map(DeviceRef::at)
                    .map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DeviceRef, A::Error> {
                let t =
                    DeviceTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(DeviceRef {
                    address: t.address,
                    id: t.id,
                    subsystem: t.subsystem,
                    rom: t.rom,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A USB device given to the guest, by `vendor:product` (as `lsusb` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbDevice {
    /// `vendor:product`.
    pub id: IdPair,
}

/// Direct kernel boot: QEMU loads a Linux kernel and initramfs itself, without a
/// boot loader in the guest (for Linux guests, appliances and tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectKernel {
    /// The kernel image (`vmlinuz`).
    pub path: PathBuf,
    /// The initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
}

/// A VM spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM's name (letters, digits, `-`, `_`, `.`; see [`check_name`]).
    pub name: String,
    /// Memory, e.g. `"16G"`, `"8192M"`.
    pub memory: String,
    /// vCPUs.
    pub cpus: Cpus,
    /// PCI devices to pass through (each with its whole IOMMU group).
    #[serde(default)]
    pub devices: Vec<DeviceRef>,
    /// Disks, in boot order.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Installer ISOs (and a driver ISO such as virtio-win), attached as CD-ROMs.
    #[serde(default)]
    pub isos: Vec<PathBuf>,
    /// The firmware.
    #[serde(default)]
    pub firmware: Firmware,
    /// The guest OS.
    #[serde(default)]
    pub os: OsType,
    /// The display.
    #[serde(default)]
    pub display: Display,
    /// The network.
    #[serde(default)]
    pub network: Network,
    /// Back the memory with hugepages (1 GiB pages where the host has enough, else
    /// 2 MiB pages).
    #[serde(default)]
    pub hugepages: bool,
    /// USB devices passed by ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usb: Vec<UsbDevice>,
    /// Keyboards and mice given to the guest through evdev (`/dev/input/by-id/…`):
    /// both Ctrl keys together switch them between host and guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evdev: Vec<PathBuf>,
    /// Direct kernel boot instead of firmware boot from a disk or ISO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<DirectKernel>,
}

/// Why a spec is not valid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML, or not the spec's shape (the message names the line).
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The most disks a spec may have: each is a `virtio-blk-pci` device on the guest's
/// PCIe root bus (`pcie.0`), which has 30 free slots to share with the root ports of
/// the passed-through slots, the NIC, the USB controller and the display.
pub const MAX_DISKS: usize = 16;

/// The most installer ISOs a spec may have: one per port of the q35 machine's AHCI
/// controller (`ide.0` … `ide.5`).
pub const MAX_ISOS: usize = 6;

/// Checks a VM's name. It names the spec file, the VM's state directory, the libvirt
/// domain and QEMU's `-name`, and it is given to `virsh`: letters, digits, `-`, `_` and
/// `.`, at most 64 of them, and not beginning with `.` (no `.`, `..` or hidden
/// directory) or `-` (never read as an option).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty: a VM needs a name".into());
    }
    if name.len() > 64 {
        return Err("is longer than 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("must be letters, digits, '-', '_' or '.'".into());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not begin with '.' or '-'".into());
    }
    Ok(())
}

/// Checks a Linux network interface name, as the kernel accepts it (`dev_valid_name`:
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace) and as QEMU's options
/// can carry it (no `,` or `=`); nor may it begin with `-`.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("is not an interface name: Linux names are 1 to 15 bytes".into());
    }
    if name == "." || name == ".." {
        return Err("is not an interface name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | ',' | '=') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("is not an interface name: it contains {c:?}"));
    }
    if name.starts_with('-') {
        return Err("is not an interface name: it begins with '-'".into());
    }
    Ok(())
}

/// Checks a host path of the spec: absolute (a relative path would depend on where
/// passthru runs, and one beginning with `-` would be read as an option), and free of
/// control characters (a newline would split the libvirt XML's text and QEMU's error
/// messages). Commas are fine: the renderers escape them.
pub fn check_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("is not an absolute path (write it from /)".into());
    }
    let text = path.to_string_lossy();
    if text.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// Parses a size like `16G`, `8192M`, `512MiB`, `1T` into MiB.
pub fn parse_mib(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = t[digits.len()..].trim().to_ascii_uppercase();
    let mib = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "M" | "" => n,
        "G" => n.checked_mul(1024)?,
        "T" => n.checked_mul(1024 * 1024)?,
        _ => return None,
    };
    (mib > 0).then_some(mib)
}

impl VmSpec {
    /// Parses and validates a spec.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec: Self = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what serde cannot: names, sizes, counts, combinations.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field, message: String| Err(SpecError::Invalid { field, message });
        if let Err(why) = check_name(&self.name) {
            return invalid("name", format!("'{}' {why}", self.name));
        }
        if parse_mib(&self.memory).is_none() {
            return invalid(
                "memory",
                format!("'{}' is not a size (write e.g. 16G or 8192M)", self.memory),
            );
        }
        match &self.cpus {
            Cpus::Count(0) => return invalid("cpus", "a VM needs at least one vCPU".into()),
            Cpus::Host(list)
                if crate::host::cpu::parse_cpu_list(list).map_or(true, |l| l.is_empty()) =>
            {
                return invalid(
                    "cpus",
                    format!("'{list}' is not a host CPU list (write e.g. \"2-7,10-15\")"),
                );
            }
            _ => {}
        }
        for d in &self.disks {
            if let Some(size) = &d.size {
                if parse_mib(size).is_none() {
                    return invalid("disks.size", format!("'{size}' is not a size"));
                }
            }
            if d.format != "qcow2" && d.format != "raw" {
                return invalid(
                    "disks.format",
                    format!("'{}' must be qcow2 or raw", d.format),
                );
            }
        }
        if self.disks.len() > MAX_DISKS {
            return invalid(
                "disks",
                format!(
                    "{} disks: a VM takes at most {MAX_DISKS} (each is a virtio disk on the \
                     guest's PCIe root bus, which has room for only so many)",
                    self.disks.len()
                ),
            );
        }
        if self.isos.len() > MAX_ISOS {
            return invalid(
                "isos",
                format!(
                    "{} ISOs: a VM takes at most {MAX_ISOS} (they are CD-ROMs on the q35 \
                     machine's SATA controller, which has {MAX_ISOS} ports)",
                    self.isos.len()
                ),
            );
        }
        if let Network::Bridge(br) = &self.network {
            if let Err(why) = check_interface_name(br) {
                return invalid("network.bridge", format!("{br:?} {why}"));
            }
        }
        for (field, path) in self.paths() {
            if let Err(why) = check_path(path) {
                return invalid(field, format!("{:?} {why}", path.display().to_string()));
            }
        }
        for d in &self.devices {
            if d.address.is_none() && d.id.is_none() {
                return invalid(
                    "devices",
                    "each device needs an address, an id (vendor:device), or both".into(),
                );
            }
        }
        if self.firmware.secure_boot && !self.firmware.uefi {
            return invalid(
                "firmware.secure_boot",
                "Secure Boot needs UEFI (uefi = true)".into(),
            );
        }
        Ok(())
    }

    /// Every host path of the spec, with the field it is in: disks, ISOs, ROM images,
    /// evdev devices, the directly booted kernel and its initramfs.
    pub fn paths(&self) -> Vec<(&'static str, &Path)> {
        let mut out: Vec<(&'static str, &Path)> = Vec::new();
        out.extend(self.disks.iter().map(|d| ("disks.path", d.path.as_path())));
        out.extend(self.isos.iter().map(|p| ("isos", p.as_path())));
        out.extend(
            self.devices
                .iter()
                .filter_map(|d| d.rom.as_deref())
                .map(|p| ("devices.rom", p)),
        );
        out.extend(self.evdev.iter().map(|p| ("evdev", p.as_path())));
        if let Some(k) = &self.kernel {
            out.push(("kernel.path", k.path.as_path()));
            if let Some(i) = &k.initrd {
                out.push(("kernel.initrd", i.as_path()));
            }
        }
        out
    }

    /// Memory in MiB (validated).
    pub fn memory_mib(&self) -> u64 {
        parse_mib(&self.memory).unwrap_or(0)
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAMING: &str = r#"
name = "win11"
memory = "16G"
cpus = 8
devices = ["0000:01:00.0", "0000:01:00.1"]
isos = ["/var/lib/passthru/iso/Win11_23H2_English_x64.iso", "/var/lib/passthru/iso/virtio-win.iso"]
os = "windows"
hugepages = true

[[disks]]
path = "/var/lib/passthru/vms/win11.qcow2"
size = "128G"

[firmware]
secure_boot = true
tpm = true
"#;

    #[test]
    fn a_gaming_vm() {
        let spec = VmSpec::parse(GAMING).unwrap();
        assert_eq!(spec.memory_mib(), 16384);
        assert_eq!(spec.cpus, Cpus::Count(8));
        assert_eq!(spec.devices.len(), 2);
        assert_eq!(spec.disks[0].format, "qcow2");
        assert!(spec.firmware.uefi && spec.firmware.secure_boot && spec.firmware.tpm);
        assert_eq!(spec.os, OsType::Windows);
        assert_eq!(spec.network, Network::User);
        // it round-trips
        assert_eq!(VmSpec::parse(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn errors_name_the_line() {
        let typo = GAMING.replace("hugepages = true", "hugepage = true");
        let err = VmSpec::parse(&typo).unwrap_err().to_string();
        assert!(
            err.contains("line 8") && err.contains("unknown field `hugepage`"),
            "{err}"
        );
        let bad_addr = GAMING.replace("0000:01:00.1", "01:00.9");
        let err = VmSpec::parse(&bad_addr).unwrap_err().to_string();
        assert!(
            err.contains("function '9' must be a digit from 0 to 7"),
            "{err}"
        );
        let err = VmSpec::parse(&GAMING.replace("\"16G\"", "\"lots\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "memory: 'lots' is not a size (write e.g. 16G or 8192M)"
        );
        let err = VmSpec::parse(&GAMING.replace("cpus = 8", "cpus = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cpus: 'x' is not a host CPU list"), "{err}");
    }

    #[test]
    fn devices_by_identity() {
        let text = r#"
name = "desk"
memory = "16G"
cpus = 8
devices = ["0000:02:00.0", { id = "1b21:1242" }]

[[disks]]
path = "/vm/desk.qcow2"
"#;
        let spec = VmSpec::parse(text).unwrap();
        assert_eq!(spec.devices[0].address.unwrap().to_string(), "0000:02:00.0");
        assert_eq!(spec.devices[1].id.unwrap().to_string(), "1b21:1242");
        let tables = r#"
name = "desk"
memory = "16G"
cpus = 8

[[devices]]
address = "0000:01:00.0"
id = "10de:2684"
subsystem = "1043:889d"
rom = "/var/lib/passthru/roms/4090.rom"
"#;
        let spec = VmSpec::parse(tables).unwrap();
        let d = &spec.devices[0];
        assert_eq!(d.subsystem.unwrap().to_string(), "1043:889d");
        assert!(d.rom.is_some());
        assert_eq!(VmSpec::parse(&spec.to_toml()).unwrap(), spec);
        // errors keep their line numbers inside a device table
        let err = VmSpec::parse(&tables.replace("rom =", "romfile ="))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 10") && err.contains("unknown field `romfile`"),
            "{err}"
        );
        let err = VmSpec::parse(&tables.replace("10de:2684", "10de-2684"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'10de-2684' is not a vendor:device pair"),
            "{err}"
        );
        let err = VmSpec::parse(&tables.replace(
            "address = \"0000:01:00.0\"\nid = \"10de:2684\"\nsubsystem = \"1043:889d\"\n",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs an address, an id"), "{err}");
    }

    /// Values that would reach QEMU's options, a shell-less argv or the file system
    /// as something else than what they say are refused with the field they are in.
    #[test]
    fn hostile_values_are_refused() {
        let base = "name = \"t\"\nmemory = \"1G\"\ncpus = 1\n";
        let err = |extra: &str| {
            VmSpec::parse(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string()
        };
        // A bridge that would hand QEMU a helper program to run as root.
        let e = err("network = { bridge = \"br0,helper=/tmp/x\" }\n");
        assert!(
            e.starts_with("network.bridge: \"br0,helper=/tmp/x\" is not an interface name"),
            "{e}"
        );
        for bad in [
            "",
            ".",
            "..",
            "br/0",
            "br 0",
            "br=0",
            "br:0",
            "-br0",
            "a-name-of-16byte",
        ] {
            let e = err(&format!("network = {{ bridge = {bad:?} }}\n"));
            assert!(e.starts_with("network.bridge:"), "{bad}: {e}");
        }
        for good in ["br0", "virbr0", "br-lan.10", "a-name-of-15byt"] {
            VmSpec::parse(&format!("{base}network = {{ bridge = {good:?} }}\n")).unwrap();
        }
        // Relative paths (and so paths beginning with '-') in every path field.
        let e = err("[[disks]]\npath = \"-o,backing_file=/etc/shadow\"\n");
        assert!(
            e.starts_with("disks.path: \"-o,backing_file=/etc/shadow\" is not an absolute path"),
            "{e}"
        );
        assert!(err("isos = [\"win.iso\"]\n").starts_with("isos:"));
        assert!(err("evdev = [\"kbd\"]\n").starts_with("evdev:"));
        assert!(err("[kernel]\npath = \"vmlinuz\"\n").starts_with("kernel.path:"));
        assert!(err("[kernel]\npath = \"/v\"\ninitrd = \"i\"\n").starts_with("kernel.initrd:"));
        assert!(err("[[devices]]\naddress = \"01:00.0\"\nrom = \"r.rom\"\n")
            .starts_with("devices.rom:"));
        assert!(err("isos = [\"/a\\nb.iso\"]\n").contains("control character"));
        // Commas in absolute paths are fine: the renderers escape them.
        VmSpec::parse(&format!("{base}isos = [\"/iso/a,b=c.iso\"]\n")).unwrap();
        // Names that are directories of their own, hidden, or options.
        for bad in [".", "..", ".hidden", "-rf", &"x".repeat(65)] {
            let e = VmSpec::parse(&GAMING.replace("\"win11\"", &format!("{bad:?}")))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("name:"), "{bad}: {e}");
        }
        VmSpec::parse(&GAMING.replace("\"win11\"", "\"win11.2-test_a\"")).unwrap();
        // More disks or ISOs than the machine has places for.
        let isos: Vec<String> = (0..7).map(|i| format!("\"/iso/{i}.iso\"")).collect();
        let e = err(&format!("isos = [{}]\n", isos.join(", ")));
        assert!(e.starts_with("isos: 7 ISOs: a VM takes at most 6"), "{e}");
        let disks: String = (0..17)
            .map(|i| format!("[[disks]]\npath = \"/vm/{i}.img\"\n"))
            .collect();
        assert!(err(&disks).starts_with("disks: 17 disks: a VM takes at most 16"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("16G"), Some(16384));
        assert_eq!(parse_mib("8192M"), Some(8192));
        assert_eq!(parse_mib("512MiB"), Some(512));
        assert_eq!(parse_mib("1T"), Some(1_048_576));
        assert_eq!(parse_mib("0G"), None);
        assert_eq!(parse_mib("12X"), None);
        assert_eq!(parse_mib(""), None);
    }
}
