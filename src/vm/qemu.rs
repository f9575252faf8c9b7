//! What the installed QEMU offers, from its own answers: `--version`, and the lists
//! `-device help`, `-spice help`, `-tpmdev help` and `-netdev help` print.
//!
//! Distributions build QEMU with *modules*: parts such as the SPICE server
//! (`ui-spice-core.so`) or the QXL display (`hw-display-qxl.so`) are files that QEMU
//! loads on demand from its module directory, and that come in packages of their own
//! (see [`crate::check::platform::QemuModule`]). QEMU lists a module's devices and
//! options only when the file is there (and loads): the help output is the honest
//! answer to "can this QEMU start that command line", whatever the build.
//!
//! Parsers take the text QEMU printed; [`QemuCaps::probe`] runs the binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// QEMU's version, from `qemu-system-x86_64 --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    /// Major, minor, micro.
    pub number: (u32, u32, u32),
    /// What the packager put in parentheses (`Debian 1:10.0.2+ds-2+deb13u1~bpo12+1`,
    /// `qemu-9.1.2-3.fc41`), when it did.
    pub package: Option<String>,
}

impl QemuVersion {
    /// Parses the first line of `--version`:
    /// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?;
        let rest = line.trim().strip_prefix("QEMU emulator version ")?;
        let (number, package) = match rest.split_once(' ') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        let mut parts = number.split('.').map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
                .ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let micro = parts.next().flatten().unwrap_or(0);
        let package = package
            .map(|p| {
                p.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .trim()
            })
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        Some(Self {
            number: (major, minor, micro),
            package,
        })
    }

    /// Major and minor, as package choices depend on them.
    pub fn major_minor(&self) -> (u32, u32) {
        (self.number.0, self.number.1)
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.number;
        write!(f, "{a}.{b}.{c}")
    }
}

/// What the QEMU binary offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuCaps {
    /// `--version`, when it answered as QEMU does.
    pub version: Option<QemuVersion>,
    /// The device models (`-device help`).
    pub devices: BTreeSet<String>,
    /// Whether the `-spice` option group exists (`-spice help`); `None` when QEMU's
    /// answer was neither its option list nor "no option group".
    pub spice: Option<bool>,
    /// The TPM backends (`-tpmdev help`: `passthrough`, `emulator`); `None` when
    /// QEMU printed no such list.
    pub tpm_backends: Option<BTreeSet<String>>,
    /// The network backends (`-netdev help`: `user`, `tap`, `bridge`, …); `None`
    /// when QEMU printed no such list.
    pub netdevs: Option<BTreeSet<String>>,
    /// Modules QEMU found but could not load, as it said so
    /// (`failed to open module: libepoxy.so.0: cannot open shared object file…`).
    pub module_errors: Vec<String>,
}

impl QemuCaps {
    /// Parses `qemu-system-x86_64 -device help`, whose lines read
    /// `name "vfio-pci", bus PCI, desc "VFIO-based PCI device assignment"`.
    pub fn parse_device_help(text: &str) -> Self {
        Self {
            devices: parse_device_names(text),
            ..Self::default()
        }
    }

    /// Runs QEMU's help commands on this machine, concurrently, one short run each
    /// (a few milliseconds: QEMU prints and exits without starting a machine). This
    /// only reads: `-machine none -nodefaults` creates no guest and opens no file of
    /// the host's.
    pub fn probe(qemu: &Path) -> Result<Self, String> {
        let spawn = |args: &[&str]| {
            // read-only probe: QEMU prints its help (`-machine none`: no guest, no host file)
            Command::new(qemu)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", qemu.display()))
        };
        let help = |what: &str| spawn(&["-nodefaults", "-machine", "none", what, "help"]);
        let children = [
            spawn(&["--version"])?,
            help("-device")?,
            help("-spice")?,
            help("-tpmdev")?,
            help("-netdev")?,
        ];
        let mut outs = Vec::new();
        for child in children {
            let out = child
                .wait_with_output()
                .map_err(|e| format!("cannot read what {} printed: {e}", qemu.display()))?;
            outs.push((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let [version, device, spice, tpmdev, netdev] =
            <[_; 5]>::try_from(outs).map_err(|_| "QEMU's answers went missing".to_string())?;
        if !device.0 {
            return Err(format!(
                "{} -device help failed: {}",
                qemu.display(),
                device.2.trim()
            ));
        }
        let mut module_errors: Vec<String> = Vec::new();
        for (_, _, stderr) in [&device, &spice, &tpmdev, &netdev] {
            for e in parse_module_errors(stderr) {
                if !module_errors.contains(&e) {
                    module_errors.push(e);
                }
            }
        }
        Ok(Self {
            version: QemuVersion::parse(&version.1),
            devices: parse_device_names(&device.1),
            spice: parse_spice_help(&spice.1, &spice.2),
            tpm_backends: parse_tpmdev_help(&tpmdev.1),
            netdevs: parse_netdev_help(&netdev.1),
            module_errors,
        })
    }
}

fn parse_device_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("name \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// `-spice help`: the option list (`spice options:`) when SPICE is there, else
/// "There is no option group 'spice'" on stderr. QEMU exits with 1 either way.
pub fn parse_spice_help(stdout: &str, stderr: &str) -> Option<bool> {
    if stdout.lines().any(|l| l.trim() == "spice options:") {
        Some(true)
    } else if stderr.contains("There is no option group 'spice'") {
        Some(false)
    } else {
        None
    }
}

/// `-tpmdev help`: `Supported TPM types (choose only one):` and a line per backend,
/// `    emulator   TPM emulator backend driver`.
pub fn parse_tpmdev_help(stdout: &str) -> Option<BTreeSet<String>> {
    list_after(stdout, "Supported TPM types", |l| {
        l.split_whitespace().next().map(str::to_string)
    })
}

/// `-netdev help`: `Available netdev backend types:` and a name per line.
pub fn parse_netdev_help(stdout: &str) -> Option<BTreeSet<String>> {
    list_after(stdout, "Available netdev backend types", |l| {
        Some(l.trim().to_string())
    })
}

/// The non-empty lines after the heading starting with `heading`, each through
/// `item`; `None` without the heading.
fn list_after(
    text: &str,
    heading: &str,
    item: impl Fn(&str) -> Option<String>,
) -> Option<BTreeSet<String>> {
    let mut lines = text.lines().skip_while(|l| !l.trim().starts_with(heading));
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.trim().is_empty())
            .filter_map(item)
            .collect(),
    )
}

/// The "failed to open module: …" messages on QEMU's stderr, without QEMU's
/// `qemu-system-x86_64: -device help:` prefix.
pub fn parse_module_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.find("failed to open module:").map(|at| l[at..].trim()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // What QEMU 10.0.2 of bookworm-backports (1:10.0.2+ds-2+deb13u1~bpo12+1) printed
    // on this machine, without qemu-system-modules-spice installed, and with its
    // modules (and those of qemu-system-modules-opengl, which it depends on)
    // extracted by `dpkg -x` and given to QEMU through QEMU_MODULE_DIR.
    const VERSION_10: &str = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
    // `-device help`, its display section: the QXL devices only with the module.
    pub(crate) const DISPLAY_10: &str = r#"Display devices:
name "ati-vga", bus PCI
name "bochs-display", bus PCI
name "cirrus-vga", bus PCI, desc "Cirrus CLGD 54xx VGA"
name "isa-cirrus-vga", bus ISA
name "isa-vga", bus ISA
name "ramfb", bus System, desc "ram framebuffer standalone device"
name "secondary-vga", bus PCI
name "VGA", bus PCI
name "vhost-user-gpu", bus virtio-bus
name "vhost-user-gpu-pci", bus PCI
name "vhost-user-vga", bus PCI
name "virtio-gpu-device", bus virtio-bus
name "virtio-gpu-pci", bus PCI, alias "virtio-gpu"
name "virtio-vga", bus PCI
name "vmware-svga", bus PCI
"#;
    pub(crate) const DISPLAY_10_SPICE: &str = r#"Display devices:
name "ati-vga", bus PCI
name "bochs-display", bus PCI
name "cirrus-vga", bus PCI, desc "Cirrus CLGD 54xx VGA"
name "isa-cirrus-vga", bus ISA
name "isa-vga", bus ISA
name "qxl", bus PCI, desc "Spice QXL GPU (secondary)"
name "qxl-vga", bus PCI, desc "Spice QXL GPU (primary, vga compatible)"
name "ramfb", bus System, desc "ram framebuffer standalone device"
name "secondary-vga", bus PCI
name "VGA", bus PCI
name "vhost-user-gpu", bus virtio-bus
name "vhost-user-gpu-pci", bus PCI
name "vhost-user-vga", bus PCI
name "virtio-gpu-device", bus virtio-bus
name "virtio-gpu-gl-pci", bus PCI, alias "virtio-gpu-gl"
name "virtio-gpu-pci", bus PCI, alias "virtio-gpu"
name "virtio-vga", bus PCI
name "virtio-vga-gl", bus PCI
name "vmware-svga", bus PCI
"#;
    // `-spice help`: stderr without the module (exit code 1) ...
    pub(crate) const SPICE_HELP_10_MISSING: &str = "qemu-system-x86_64: -spice help: There is no option group 'spice'\nqemu-system-x86_64: -spice help: Perhaps you want to install qemu-system-modules-spice package?\n";
    // ... and the start of stdout with it (exit code 1 too).
    pub(crate) const SPICE_HELP_10: &str = "spice options:\n  addr=<str>\n  agent-mouse=<bool (on/off)>\n  disable-agent-file-xfer=<bool (on/off)>\n  disable-copy-paste=<bool (on/off)>\n  disable-ticketing=<bool (on/off)>\n  display=<str>\n  gl=<bool (on/off)>\n  port=<num>\n";
    // `-tpmdev help` (exit code 1), and `-netdev help`.
    pub(crate) const TPMDEV_HELP_10: &str = "Supported TPM types (choose only one):\n passthrough   Passthrough TPM backend driver\n    emulator   TPM emulator backend driver\n";
    pub(crate) const NETDEV_HELP_10: &str = "Available netdev backend types:\nsocket\nstream\ndgram\nhubport\ntap\nuser\nl2tpv3\nvde\nbridge\nvhost-user\nvhost-vdpa\n";
    // With the module files present but libspice-server's own libraries missing,
    // QEMU says so on stderr and goes on without them.
    const MODULE_FAILS_10: &str = "qemu-system-x86_64: -spice help: failed to open module: libepoxy.so.0: cannot open shared object file: No such file or directory\nqemu-system-x86_64: -spice help: There is no option group 'spice'\nqemu-system-x86_64: -spice help: Perhaps you want to install qemu-system-modules-spice package?\n";

    #[test]
    fn version() {
        let v = QemuVersion::parse(VERSION_10).unwrap();
        assert_eq!(v.number, (10, 0, 2));
        assert_eq!(v.major_minor(), (10, 0));
        assert_eq!(
            v.package.as_deref(),
            Some("Debian 1:10.0.2+ds-2+deb13u1~bpo12+1")
        );
        assert_eq!(v.to_string(), "10.0.2");
        // Debian 12's own QEMU, and an unpackaged build.
        let v = QemuVersion::parse("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\n")
            .unwrap();
        assert_eq!(v.major_minor(), (7, 2));
        let v = QemuVersion::parse("QEMU emulator version 9.2.50\n").unwrap();
        assert_eq!((v.number, v.package), ((9, 2, 50), None));
        assert_eq!(
            QemuVersion::parse("qemu-system-x86_64: unknown option"),
            None
        );
    }

    #[test]
    fn qxl_is_listed_only_with_its_module() {
        let without = QemuCaps::parse_device_help(DISPLAY_10);
        assert!(!without.devices.contains("qxl-vga") && without.devices.contains("VGA"));
        let with = QemuCaps::parse_device_help(DISPLAY_10_SPICE);
        assert!(with.devices.contains("qxl-vga") && with.devices.contains("qxl"));
    }

    #[test]
    fn spice_option_group() {
        assert_eq!(parse_spice_help("", SPICE_HELP_10_MISSING), Some(false));
        assert_eq!(parse_spice_help(SPICE_HELP_10, ""), Some(true));
        assert_eq!(
            parse_spice_help("", "qemu-system-x86_64: -spice: invalid option\n"),
            None
        );
    }

    #[test]
    fn tpm_and_network_backends() {
        let tpm = parse_tpmdev_help(TPMDEV_HELP_10).unwrap();
        assert_eq!(
            tpm.into_iter().collect::<Vec<_>>(),
            ["emulator", "passthrough"]
        );
        let net = parse_netdev_help(NETDEV_HELP_10).unwrap();
        assert!(net.contains("user") && net.contains("bridge") && net.contains("tap"));
        assert_eq!(net.len(), 11);
        assert_eq!(parse_tpmdev_help(""), None);
        assert_eq!(
            parse_netdev_help("qemu-system-x86_64: -netdev help: oops\n"),
            None
        );
    }

    #[test]
    fn module_errors() {
        assert_eq!(
            parse_module_errors(MODULE_FAILS_10),
            ["failed to open module: libepoxy.so.0: cannot open shared object file: No such file or directory"]
        );
        assert!(parse_module_errors(SPICE_HELP_10_MISSING).is_empty());
    }
}
