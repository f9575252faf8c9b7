//! `passthru vm check`: can this VM start on this host? Every problem that would
//! stop QEMU or libvirt — or leave the guest without its devices — found before the
//! start, each with its remedy: devices present and bindable, the IOMMU groups, the
//! vCPU placement, hugepages, firmware and TPM, disks and ISOs, QEMU itself and what
//! the VM's command line asks of it ([`qemu_needs`]: device models, the `-spice`
//! option, the TPM emulator backend, the network backend), each missing part named
//! with the package that brings it on this distribution ([`qemu_finding`]).
//!
//! The vCPU placement, hugepages, firmware, memory and host disks are the decisions
//! of the resolution `vm run` and `vm define` use ([`super::resolve::decide`]), so
//! what `check` approves is what starts. Other host files are read through the
//! [`HostRoot`]; QEMU's capabilities come from a
//! [`QemuCaps`] the caller obtained (by running QEMU on a live host, see
//! [`super::qemu`]), so the checks run on captured roots and in tests too.

use std::path::Path;

use super::identity;
use super::plan::{Accel, VmPlan};
pub use super::qemu::QemuCaps;
use super::qemu::QemuVersion;
use super::resolve::{Decisions, ResolveError};
use super::spec::{Display, Network, VmSpec};
use crate::check::platform::{self, Need, QemuModule};
use crate::check::Status;
use crate::host::facts::{Distro, QemuModuleDir};
use crate::host::pci::PciDevice;
use crate::host::root::HostRoot;

/// One check's verdict: a [`crate::check::Finding`] whose id is the check's name
/// (`devices`, `hugepages`, …), with no evidence.
pub type VmFinding = crate::check::Finding;

fn finding(check: &'static str, status: Status, summary: impl Into<String>) -> VmFinding {
    VmFinding::new(check, status, summary)
}

/// Where distributions put QEMU for x86-64 guests.
pub const QEMU_PATHS: &[&str] = &[
    "usr/bin/qemu-system-x86_64",
    "usr/libexec/qemu-kvm",
    "usr/local/bin/qemu-system-x86_64",
];

/// The QEMU binary on `root`, as an absolute path of that root's host.
pub fn find_qemu(root: &HostRoot) -> Option<String> {
    QEMU_PATHS
        .iter()
        .find(|p| root.exists(p))
        .map(|p| format!("/{p}"))
}

/// Something the VM's QEMU command line (or libvirt's, from the same plan) asks of
/// QEMU; each as [`super::render`] emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuNeed {
    /// A device model (`-device NAME`; `-vga qxl` is the `qxl-vga` device).
    Device(&'static str),
    /// The `-spice` option group (SPICE display).
    Spice,
    /// The TPM emulator backend (`-tpmdev emulator`, the socket swtpm serves).
    TpmEmulator,
    /// A network backend (`-nic user`, `-nic bridge`).
    Netdev(&'static str),
}

impl QemuNeed {
    /// In words, for the summary.
    fn what(self) -> String {
        match self {
            Self::Device("qxl-vga") => "the QXL display (device qxl-vga)".into(),
            Self::Device("usb-host") => "USB host passthrough (device usb-host)".into(),
            Self::Device(d) => format!("the device model {d}"),
            Self::Spice => "SPICE (the -spice option)".into(),
            Self::TpmEmulator => "the TPM emulator backend (-tpmdev emulator)".into(),
            Self::Netdev("user") => "user-mode networking (-nic user, libslirp)".into(),
            Self::Netdev(n) => format!("the network backend {n}"),
        }
    }

    /// Whether `caps` has it; `None` when QEMU's answer did not say.
    fn offered(self, caps: &QemuCaps) -> Option<bool> {
        match self {
            Self::Device(d) => Some(caps.devices.contains(d)),
            Self::Spice => caps.spice,
            Self::TpmEmulator => caps.tpm_backends.as_ref().map(|b| b.contains("emulator")),
            Self::Netdev(n) => caps.netdevs.as_ref().map(|b| b.contains(n)),
        }
    }

    /// The module that brings it in modular builds; `None`: built into the binary.
    fn module(self) -> Option<QemuModule> {
        match self {
            Self::Spice => Some(QemuModule::SpiceCore),
            Self::Device("qxl-vga" | "qxl") => Some(QemuModule::DisplayQxl),
            Self::Device("usb-host") => Some(QemuModule::UsbHost),
            _ => None,
        }
    }
}

/// What QEMU must offer for this spec: the devices, options and backends of its
/// command line.
pub fn qemu_needs(spec: &VmSpec, passes_devices: bool) -> Vec<QemuNeed> {
    use QemuNeed::{Device, Netdev};
    let mut need = vec![Device("pcie-root-port")];
    if !spec.disks.is_empty() {
        need.push(Device("virtio-blk-pci"));
    }
    if passes_devices {
        need.push(Device("vfio-pci"));
    }
    if !spec.isos.is_empty() {
        need.push(Device("ide-cd"));
    }
    match &spec.network {
        Network::User => need.extend([Device("virtio-net-pci"), Netdev("user")]),
        Network::Bridge(_) => need.extend([Device("virtio-net-pci"), Netdev("bridge")]),
        Network::None => {}
    }
    if spec.firmware.tpm {
        need.extend([Device("tpm-crb"), QemuNeed::TpmEmulator]);
    }
    if spec.display == Display::Spice {
        need.extend([QemuNeed::Spice, Device("qxl-vga")]);
    }
    if !spec.usb.is_empty() {
        need.extend([Device("qemu-xhci"), Device("usb-host")]);
    }
    need
}

/// The host around QEMU, for the remedy: which distribution packages it, and how.
#[derive(Debug, Clone, Default)]
pub struct QemuHost {
    /// The distribution (`etc/os-release`).
    pub distro: Distro,
    /// The QEMU binary asked, as a path of the host.
    pub binary: Option<String>,
    /// QEMU's module directory, when it is a modular build.
    pub modules: Option<QemuModuleDir>,
}

impl QemuHost {
    /// Reads the distribution and QEMU's module directory from `root`.
    pub fn read(root: &HostRoot, binary: Option<String>) -> Self {
        Self {
            distro: Distro::read(root),
            binary,
            modules: QemuModuleDir::read(root),
        }
    }
}

/// The `qemu` finding: what the installed QEMU lacks for `spec`, and the package
/// that brings it on this distribution — or that everything is there.
pub fn qemu_finding(
    spec: &VmSpec,
    passes_devices: bool,
    caps: &QemuCaps,
    host: &QemuHost,
) -> VmFinding {
    let named = caps
        .version
        .as_ref()
        .map_or_else(|| "QEMU".to_string(), |v| format!("QEMU {v}"));
    let missing: Vec<QemuNeed> = qemu_needs(spec, passes_devices)
        .into_iter()
        .filter(|n| n.offered(caps) == Some(false))
        .collect();
    if missing.is_empty() {
        return finding(
            "qemu",
            Status::Ok,
            format!("{named} offers every device and option the VM needs"),
        );
    }
    let what: Vec<String> = missing.iter().map(|n| n.what()).collect();
    let mut summary = format!("{named} lacks {}", join_and(&what));
    let modules: Vec<QemuModule> = {
        let mut m: Vec<QemuModule> = missing.iter().filter_map(|n| n.module()).collect();
        m.sort();
        m.dedup();
        m
    };
    if let Some(dir) = &host.modules {
        let absent: Vec<String> = modules
            .iter()
            .filter(|m| !dir.has(m.name()))
            .map(|m| format!("{}.so", m.name()))
            .collect();
        if !absent.is_empty() {
            summary.push_str(&format!(
                " ({} has no {})",
                dir.dir.display(),
                absent.join(", ")
            ));
        }
    }
    if !caps.module_errors.is_empty() {
        summary.push_str(&format!("; QEMU said: {}", caps.module_errors.join("; ")));
    }
    let built_in = missing.iter().any(|n| n.module().is_none());
    let version = caps.version.as_ref().map(QemuVersion::major_minor);
    let remedy = match host
        .binary
        .as_deref()
        .filter(|b| b.starts_with("/usr/local/"))
    {
        // Built by hand: no package adds to it.
        Some(bin) => format!(
            "{bin} was built without {}: rebuild it with them (SPICE needs --enable-spice, \
             usb-host libusb), or install the distribution's QEMU: {}",
            join_and(&what),
            platform::install_command(&host.distro, &[Need::Qemu], version)
        ),
        None => {
            let mut needs: Vec<Need> = modules.iter().map(|m| Need::QemuModule(*m)).collect();
            if built_in {
                needs.insert(0, Need::Qemu);
            }
            if built_in {
                format!(
                    "this QEMU was built without some of them; install the distribution's \
                     full QEMU: {}",
                    platform::install_command(&host.distro, &needs, version)
                )
            } else {
                platform::install_hint(&host.distro, &needs, version)
            }
        }
    };
    finding("qemu", Status::Fail, summary).remedy(remedy)
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// What the QEMU of this live host lacks for `plan`, each as the `qemu` finding of
/// `vm check` says it (summary, then remedy): `vm run` and `vm define` refuse with it
/// instead of letting QEMU fail. Runs QEMU's help commands (a read, see
/// [`QemuCaps::probe`]); nothing when QEMU cannot be asked (the start will say why).
pub fn qemu_blockers(root: &HostRoot, plan: &VmPlan) -> Vec<String> {
    let Some(binary) = find_qemu(root) else {
        let distro = Distro::read(root);
        return vec![format!(
            "QEMU is not installed: {}",
            platform::install_command(&distro, &[Need::Qemu], None)
        )];
    };
    let Ok(caps) = QemuCaps::probe(Path::new(&binary)) else {
        return Vec::new();
    };
    let host = QemuHost::read(root, Some(binary));
    let f = qemu_finding(&plan.spec, !plan.devices.is_empty(), &caps, &host);
    if f.status != Status::Fail {
        return Vec::new();
    }
    vec![match &f.remedy {
        Some(r) => format!("{}: {r}", f.summary),
        None => f.summary,
    }]
}

/// Whether a USB device with `id` is plugged in (`sys/bus/usb/devices/*/idVendor`).
fn usb_present(root: &HostRoot, id: super::spec::IdPair) -> bool {
    root.list_dir_optional("sys/bus/usb/devices")
        .unwrap_or_default()
        .iter()
        .any(|dev| {
            let read = |f: &str| {
                root.read_to_string(format!("sys/bus/usb/devices/{dev}/{f}"))
                    .ok()
                    .and_then(|t| u16::from_str_radix(t.trim(), 16).ok())
            };
            read("idVendor") == Some(id.vendor) && read("idProduct") == Some(id.device)
        })
}

fn exists(root: &HostRoot, path: &Path) -> bool {
    root.exists(path.strip_prefix("/").unwrap_or(path))
}

/// Everything [`check`] takes besides the spec.
#[derive(Debug)]
pub struct CheckInputs<'a> {
    /// The host's PCI devices.
    pub devices: &'a [PciDevice],
    /// Refusals `passthru bind` would give for the VM's devices, as
    /// (address, reason, override flag); empty when all can be bound.
    pub bind_refusals: Vec<(
        Option<crate::host::pci::PciAddress>,
        String,
        Option<&'static str>,
    )>,
    /// QEMU's capabilities, or why they are unknown.
    pub qemu: Result<QemuCaps, String>,
    /// KVM or TCG.
    pub accel: Accel,
    /// The resolution's decisions for the spec (see [`super::resolve::decide`]).
    pub decisions: Decisions,
}

/// Runs every check for `spec`.
pub fn check(root: &HostRoot, spec: &VmSpec, inputs: &CheckInputs<'_>) -> Vec<VmFinding> {
    let mut out = Vec::new();
    // Devices, found by address or identity.
    let mut found = Vec::new();
    for want in &spec.devices {
        match identity::find(inputs.devices, want) {
            Ok(f) => {
                let mut text = format!("{want} is present at {}", f.address);
                if let Some(old) = f.moved_from {
                    text.push_str(&format!(" (moved from {old})"));
                }
                found.push(f.address);
                out.push(finding("devices", Status::Ok, text));
            }
            Err(e) => out.push(
                finding("devices", Status::Fail, e.to_string())
                    .remedy("run `passthru list` and correct the device in `passthru vm edit`"),
            ),
        }
        if let Some(rom) = &want.rom {
            if !exists(root, rom) {
                out.push(
                    finding(
                        "devices",
                        Status::Fail,
                        format!("ROM file {} is missing", rom.display()),
                    )
                    .remedy("dump the card's ROM or correct the path"),
                );
            }
        }
    }
    for d in found
        .iter()
        .filter_map(|a| inputs.devices.iter().find(|d| d.address == *a))
    {
        if d.iommu_group.is_none() {
            out.push(
                finding(
                    "iommu",
                    Status::Fail,
                    format!("{} has no IOMMU group: the IOMMU is off", d.address),
                )
                .remedy("run `passthru check` and `passthru enable`"),
            );
        }
    }
    if inputs.bind_refusals.is_empty() {
        if !found.is_empty() {
            out.push(finding(
                "binding",
                Status::Ok,
                "every device (with its whole IOMMU group) can be bound to vfio-pci",
            ));
        }
    } else {
        for (addr, reason, flag) in &inputs.bind_refusals {
            let at = addr.map_or_else(String::new, |a| format!("{a}: "));
            let mut f = finding("binding", Status::Fail, format!("{at}{reason}"));
            if let Some(flag) = flag {
                f = f.remedy(format!("if that is intended, accept it with {flag}"));
            }
            out.push(f);
        }
    }
    // vCPUs, hugepages and firmware: the decisions `vm run` and `vm define` act on.
    let d = &inputs.decisions;
    match &d.pinning {
        Ok(p) => out.push(finding(
            "cpus",
            Status::Ok,
            format!(
                "{} vCPUs pinned to host CPUs {}",
                p.vcpus.len(),
                crate::host::cpu::format_cpu_list(
                    &p.vcpus.iter().map(|(_, h)| *h).collect::<Vec<_>>()
                )
            ),
        )),
        Err(ResolveError::Pinning(e)) => out.push(
            finding("cpus", Status::Fail, e.to_string())
                .remedy("change cpus in `passthru vm edit`"),
        ),
        Err(ResolveError::CpuList(e)) => out.push(finding("cpus", Status::Fail, e.clone())),
        Err(e) => out.push(finding("cpus", Status::Unknown, e.to_string())),
    }
    match &d.hugepages {
        Some(Ok(p)) => out.push(finding("hugepages", Status::Ok, p.reason.clone())),
        Some(Err(e)) => out.push(
            finding("hugepages", Status::Fail, e.to_string())
                .remedy("or set hugepages = false in `passthru vm edit`"),
        ),
        None => {}
    }
    if spec.firmware.uefi {
        match &d.ovmf {
            Some(o) => out.push(finding(
                "firmware",
                Status::Ok,
                format!("UEFI firmware {}", o.code.display()),
            )),
            None => out.push(
                finding(
                    "firmware",
                    Status::Fail,
                    format!(
                        "no UEFI firmware{} found",
                        if spec.firmware.secure_boot {
                            " with Secure Boot"
                        } else {
                            ""
                        }
                    ),
                )
                .remedy(format!(
                    "install OVMF ({})",
                    platform::install_command(&Distro::read(root), &[Need::Ovmf], None)
                )),
            ),
        }
    }
    if spec.firmware.tpm {
        if ["usr/bin/swtpm", "usr/local/bin/swtpm"]
            .iter()
            .any(|p| root.exists(p))
        {
            out.push(finding("tpm", Status::Ok, "swtpm is installed"));
        } else {
            out.push(
                finding(
                    "tpm",
                    Status::Fail,
                    "the VM has a TPM but swtpm is not installed",
                )
                .remedy(format!(
                    "install swtpm ({})",
                    platform::install_command(&Distro::read(root), &[Need::Swtpm], None)
                )),
            );
        }
    }
    // Disks, ISOs, kernel.
    for d in &spec.disks {
        if exists(root, &d.path) {
            out.push(finding(
                "disks",
                Status::Ok,
                format!("{} exists", d.path.display()),
            ));
        } else if d.size.is_some() {
            out.push(finding(
                "disks",
                Status::Ok,
                format!(
                    "{} will be created ({} {}) at the first start",
                    d.path.display(),
                    d.format,
                    d.size.as_deref().unwrap_or_default()
                ),
            ));
        } else {
            out.push(
                finding(
                    "disks",
                    Status::Fail,
                    format!("{} does not exist", d.path.display()),
                )
                .remedy("give it a size to create it, or correct the path"),
            );
        }
    }
    // Paths that are no disks, and block devices the host uses.
    for b in &d.disk_blockers {
        out.push(finding("disks", Status::Fail, b.clone()));
    }
    if let Some(b) = &d.memory_blocker {
        out.push(finding("memory", Status::Fail, b.clone()).remedy("give the VM less memory"));
    }
    for iso in &spec.isos {
        if !exists(root, iso) {
            out.push(
                finding(
                    "isos",
                    Status::Fail,
                    format!("{} does not exist", iso.display()),
                )
                .remedy("download it there or correct the path"),
            );
        }
    }
    if let Some(k) = &spec.kernel {
        for p in std::iter::once(&k.path).chain(k.initrd.as_ref()) {
            if !exists(root, p) {
                out.push(finding(
                    "kernel",
                    Status::Fail,
                    format!("{} does not exist", p.display()),
                ));
            }
        }
    }
    for dev in &spec.evdev {
        if !exists(root, dev) {
            out.push(
                finding(
                    "input",
                    Status::Fail,
                    format!("{} does not exist", dev.display()),
                )
                .remedy("list keyboards and mice with `ls /dev/input/by-id/`"),
            );
        }
    }
    for u in &spec.usb {
        if !usb_present(root, u.id) {
            out.push(
                finding(
                    "usb",
                    Status::Warn,
                    format!("USB device {} is not plugged in", u.id),
                )
                .remedy("plug it in, or QEMU starts without it"),
            );
        }
    }
    // KVM.
    if inputs.accel == Accel::Kvm && !root.exists("dev/kvm") {
        out.push(
            finding("kvm", Status::Fail, "/dev/kvm is missing: the guest cannot use the CPU's virtualization")
                .remedy("enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd (`passthru check` says which)"),
        );
    }
    // QEMU.
    match &inputs.qemu {
        Ok(caps) => {
            let host = QemuHost::read(root, find_qemu(root));
            out.push(qemu_finding(spec, !found.is_empty(), caps, &host));
        }
        Err(why) => out.push(finding("qemu", Status::Unknown, why.clone())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines of `qemu-system-x86_64 -nodefaults -machine none -device help` from
    // Debian's QEMU 7.2.22 (1:7.2+dfsg-7+deb12u18), with their section headings.
    const DEVICE_HELP: &str = r#"Controller/Bridge/Hub devices:
name "pcie-root-port", bus PCI, desc "PCI Express Root Port"
name "usb-host", bus usb-bus
USB devices:
name "qemu-xhci", bus PCI
Storage devices:
name "ide-cd", bus IDE, desc "virtual IDE CD-ROM"
name "virtio-blk-pci", bus PCI, alias "virtio-blk"
Network devices:
name "virtio-net-pci", bus PCI, alias "virtio-net"
Input devices:
Display devices:
Misc devices:
name "tpm-crb"
name "vfio-pci", bus PCI, desc "VFIO-based PCI device assignment"
"#;

    #[test]
    fn device_help() {
        let caps = QemuCaps::parse_device_help(DEVICE_HELP);
        assert!(caps.devices.contains("vfio-pci") && caps.devices.contains("ide-cd"));
        assert!(!caps.devices.contains("qxl-vga"));
        assert_eq!(caps.devices.len(), 8);
    }

    fn spec(text: &str) -> VmSpec {
        VmSpec::parse(text).unwrap()
    }

    // Lines of `-device help` from bookworm-backports' QEMU 10.0.2 on this machine
    // (its display section is in `super::super::qemu`'s tests).
    const DEVICES_10: &str = r#"Controller/Bridge/Hub devices:
name "pcie-root-port", bus PCI, desc "PCI Express Root Port"
name "usb-host", bus usb-bus
USB devices:
name "qemu-xhci", bus PCI
Storage devices:
name "ide-cd", bus IDE, desc "virtual IDE CD-ROM"
name "nvme", bus PCI, desc "Non-Volatile Memory Express"
name "virtio-blk-pci", bus PCI, alias "virtio-blk"
Network devices:
name "virtio-net-pci", bus PCI, alias "virtio-net"
Misc devices:
name "tpm-crb"
name "tpm-tis", bus ISA
name "vfio-pci", bus PCI, desc "VFIO-based PCI device assignment"
"#;

    /// QEMU 10.0.2 as bookworm-backports installs it, with or without
    /// qemu-system-modules-spice (real outputs, see `super::super::qemu`).
    fn qemu_10(with_spice: bool) -> QemuCaps {
        use super::super::qemu::{self, tests as real};
        let display = if with_spice {
            real::DISPLAY_10_SPICE
        } else {
            real::DISPLAY_10
        };
        let (out, err) = if with_spice {
            (real::SPICE_HELP_10, "")
        } else {
            ("", real::SPICE_HELP_10_MISSING)
        };
        QemuCaps {
            version: QemuVersion::parse(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
            ),
            spice: qemu::parse_spice_help(out, err),
            tpm_backends: qemu::parse_tpmdev_help(real::TPMDEV_HELP_10),
            netdevs: qemu::parse_netdev_help(real::NETDEV_HELP_10),
            ..QemuCaps::parse_device_help(&format!("{DEVICES_10}{display}"))
        }
    }

    /// Debian 12 with QEMU from bookworm-backports: the modules of
    /// qemu-system-common, and those of qemu-system-modules-spice when installed.
    fn bookworm_backports(with_spice: bool) -> QemuHost {
        let mut modules: Vec<&str> = vec!["audio-alsa", "hw-usb-host", "ui-curses"];
        if with_spice {
            modules.extend(["ui-spice-core", "hw-display-qxl", "audio-spice"]);
        }
        QemuHost {
            distro: Distro::parse(
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
            ),
            binary: Some("/usr/bin/qemu-system-x86_64".into()),
            modules: Some(QemuModuleDir {
                dir: "/usr/lib/x86_64-linux-gnu/qemu".into(),
                modules: modules.into_iter().map(str::to_string).collect(),
            }),
        }
    }

    const SPICE_SPEC: &str = "name = \"inst\"\nmemory = \"4G\"\ncpus = 2\ndisplay = \"spice\"\nisos = [\"/isos/debian.iso\"]\n\n[firmware]\ntpm = true\n\n[[disks]]\npath = \"/vms/inst.qcow2\"\nsize = \"32G\"\n";

    #[test]
    fn spice_is_named_with_the_package_that_brings_it() {
        let s = spec(SPICE_SPEC);
        let f = qemu_finding(&s, false, &qemu_10(false), &bookworm_backports(false));
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.summary,
            "QEMU 10.0.2 lacks SPICE (the -spice option) and the QXL display (device qxl-vga) \
             (/usr/lib/x86_64-linux-gnu/qemu has no ui-spice-core.so, hw-display-qxl.so)"
        );
        // QEMU 10.0.2 itself says "Perhaps you want to install
        // qemu-system-modules-spice package?".
        assert_eq!(
            f.remedy.as_deref(),
            Some("sudo apt install qemu-system-modules-spice")
        );
        // Once installed, nothing is missing (TPM and the ISO's ide-cd included).
        let f = qemu_finding(&s, false, &qemu_10(true), &bookworm_backports(true));
        assert_eq!(f.status, Status::Ok, "{f:?}");
        assert_eq!(
            f.summary,
            "QEMU 10.0.2 offers every device and option the VM needs"
        );
        // A spec without SPICE needs nothing more from this QEMU.
        let plain = spec(&SPICE_SPEC.replace("display = \"spice\"", "display = \"none\""));
        let f = qemu_finding(&plain, true, &qemu_10(false), &bookworm_backports(false));
        assert_eq!(f.status, Status::Ok, "{f:?}");
    }

    #[test]
    fn the_remedy_follows_the_packaging() {
        let s = spec(SPICE_SPEC);
        // Debian 12's own QEMU 7.2 keeps the modules in qemu-system-common.
        let mut caps = qemu_10(false);
        caps.version =
            QemuVersion::parse("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)");
        let f = qemu_finding(&s, false, &caps, &bookworm_backports(false));
        assert!(
            f.summary.starts_with("QEMU 7.2.22 lacks SPICE"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.remedy.as_deref(),
            Some("sudo apt install qemu-system-common")
        );
        // Fedora's qemu-system-x86-core without the module packages.
        let fedora = QemuHost {
            distro: Distro::parse("ID=fedora\nVERSION_ID=41\n"),
            binary: Some("/usr/bin/qemu-system-x86_64".into()),
            modules: Some(QemuModuleDir {
                dir: "/usr/lib64/qemu".into(),
                modules: ["hw-usb-host".to_string()].into(),
            }),
        };
        let f = qemu_finding(&s, false, &qemu_10(false), &fedora);
        assert!(
            f.summary.contains("/usr/lib64/qemu has no"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.remedy.as_deref(),
            Some("sudo dnf install qemu-ui-spice-core qemu-device-display-qxl")
        );
        // A QEMU built by hand gets no package for its modules.
        let local = QemuHost {
            binary: Some("/usr/local/bin/qemu-system-x86_64".into()),
            modules: None,
            ..bookworm_backports(false)
        };
        let f = qemu_finding(&s, false, &qemu_10(false), &local);
        let r = f.remedy.unwrap();
        assert!(
            r.starts_with("/usr/local/bin/qemu-system-x86_64 was built without SPICE")
                && r.contains("--enable-spice")
                && r.ends_with("sudo apt install qemu-system-x86"),
            "{r}"
        );
    }

    #[test]
    fn built_in_parts_name_the_full_qemu() {
        // A QEMU without vfio-pci, the TPM emulator backend and libslirp (as a build
        // configured with --disable-slirp lists no `user` netdev).
        let mut caps = qemu_10(true);
        caps.devices.remove("vfio-pci");
        caps.tpm_backends = Some(["passthrough".to_string()].into());
        caps.netdevs.as_mut().unwrap().remove("user");
        let s = spec(&format!("{SPICE_SPEC}\n[[usb]]\nid = \"046d:c52b\"\n"));
        let f = qemu_finding(&s, true, &caps, &bookworm_backports(true));
        assert_eq!(
            f.summary,
            "QEMU 10.0.2 lacks the device model vfio-pci, user-mode networking (-nic user, \
             libslirp) and the TPM emulator backend (-tpmdev emulator)"
        );
        assert_eq!(
            f.remedy.as_deref(),
            Some("this QEMU was built without some of them; install the distribution's full QEMU: sudo apt install qemu-system-x86")
        );
        // usb-host is a module: on Debian in qemu-system-common.
        let mut caps = qemu_10(true);
        caps.devices.remove("usb-host");
        let f = qemu_finding(&s, false, &caps, &bookworm_backports(true));
        assert!(
            f.summary.contains("USB host passthrough (device usb-host)"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.remedy.as_deref(),
            Some("sudo apt install qemu-system-common")
        );
    }

    #[test]
    fn a_module_that_does_not_load_is_quoted() {
        let mut caps = qemu_10(false);
        caps.module_errors = vec!["failed to open module: libepoxy.so.0: cannot open shared object file: No such file or directory".into()];
        let f = qemu_finding(&spec(SPICE_SPEC), false, &caps, &bookworm_backports(true));
        // The files are there (no "has no"), QEMU's own reason is quoted.
        assert!(!f.summary.contains("has no"), "{}", f.summary);
        assert!(f.summary.ends_with("; QEMU said: failed to open module: libepoxy.so.0: cannot open shared object file: No such file or directory"), "{}", f.summary);
    }

    /// The QEMU installed here, asked for real: a SPICE spec is reported as lacking
    /// SPICE when QEMU's module directory has no `ui-spice-core.so`, with the package
    /// this distribution and this QEMU's packaging name — read independently from
    /// `/etc/os-release` and `dpkg-query` — and as QEMU's own hint names it.
    #[test]
    fn the_real_qemu_and_its_packaging() {
        let root = HostRoot::system();
        let Some(binary) = find_qemu(&root) else {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
                "CI=true: qemu-system-x86_64 must be installed"
            );
            eprintln!("SKIPPED the_real_qemu_and_its_packaging: no qemu-system-x86_64");
            return;
        };
        let started = std::time::Instant::now();
        let caps = QemuCaps::probe(Path::new(&binary)).unwrap();
        eprintln!("QEMU probed in {:?}", started.elapsed());
        assert!(caps.devices.contains("pcie-root-port"), "{caps:?}");
        let host = QemuHost::read(&root, Some(binary.clone()));
        let s = spec(SPICE_SPEC);
        let f = qemu_finding(&s, false, &caps, &host);
        let modular = host.modules.as_ref();
        match modular.map(|m| m.has("ui-spice-core")) {
            Some(true) => {
                assert_eq!(caps.spice, Some(true), "{caps:?}");
                assert_eq!(f.status, Status::Ok, "{f:?}");
                return;
            }
            Some(false) => {}
            None => {
                eprintln!(
                    "SKIPPED the_real_qemu_and_its_packaging: {binary} has no module directory"
                );
                return;
            }
        }
        assert_eq!(caps.spice, Some(false), "{caps:?}");
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(
            f.summary.contains("lacks SPICE (the -spice option)"),
            "{}",
            f.summary
        );
        let remedy = f.remedy.clone().unwrap();
        // What the packaging says, read apart from QEMU.
        if host.distro.family() == Some("debian") {
            // read-only probe: dpkg-query prints the installed QEMU package's version
            let dpkg = std::process::Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}", "qemu-system-x86"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            match dpkg {
                Some(v) => {
                    // 1:10.0.2+ds-2+deb13u1~bpo12+1 → (10, 0)
                    let upstream = v.split_once(':').map_or(v.as_str(), |(_, u)| u);
                    let mut n = upstream.split(|c: char| !c.is_ascii_digit());
                    let major: u32 = n.next().unwrap().parse().unwrap();
                    let minor: u32 = n.next().unwrap_or("0").parse().unwrap_or(0);
                    let package = if (major, minor) >= (8, 1) {
                        "qemu-system-modules-spice"
                    } else {
                        "qemu-system-common"
                    };
                    eprintln!("qemu-system-x86 {v}: SPICE comes with {package}");
                    assert_eq!(remedy, format!("sudo apt install {package}"));
                }
                None => eprintln!(
                    "SKIPPED the package check: qemu-system-x86 is not a dpkg package here"
                ),
            }
        }
        // Debian's QEMU says which package it misses; it must be ours.
        // read-only probe: QEMU prints its `-spice help` (`-machine none`: no guest)
        let out = std::process::Command::new(&binary)
            .args(["-nodefaults", "-machine", "none", "-spice", "help"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        if let Some(hint) = said
            .split("Perhaps you want to install ")
            .nth(1)
            .and_then(|h| h.split(" package?").next())
        {
            assert!(remedy.contains(hint), "QEMU names {hint}, we say {remedy}");
        }
    }

    #[test]
    fn problems_come_with_remedies() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let s = spec(
            r#"
name = "t"
memory = "4G"
cpus = 2
devices = ["0000:01:00.0"]
isos = ["/isos/missing.iso"]
display = "spice"
hugepages = true
[firmware]
tpm = true
[[disks]]
path = "/vms/t.qcow2"
size = "8G"
"#,
        );
        use crate::host::snapshot::{HostSnapshot, Needs};
        let snapshot = HostSnapshot::gather_for_vm(&root, Needs::VM, &s).unwrap();
        let inputs = CheckInputs {
            devices: &[],
            bind_refusals: Vec::new(),
            qemu: Ok(QemuCaps::parse_device_help(DEVICE_HELP)),
            accel: Accel::Kvm,
            decisions: super::super::resolve::decide(&snapshot, &s, None, false).unwrap(),
        };
        let f = check(&root, &s, &inputs);
        let by = |c: &str| f.iter().filter(|x| x.id == c).collect::<Vec<_>>();
        assert_eq!(by("devices")[0].status, Status::Fail);
        assert!(by("devices")[0]
            .summary
            .contains("no PCI device at 0000:01:00.0"));
        assert_eq!(by("hugepages")[0].status, Status::Fail);
        assert_eq!(by("firmware")[0].status, Status::Fail);
        assert!(by("firmware")[0]
            .remedy
            .as_deref()
            .unwrap()
            .contains("ovmf"));
        assert_eq!(by("tpm")[0].status, Status::Fail);
        assert_eq!(by("disks")[0].status, Status::Ok);
        assert!(by("disks")[0].summary.contains("will be created"));
        assert_eq!(by("isos")[0].status, Status::Fail);
        assert_eq!(by("kvm")[0].status, Status::Fail);
        let qemu = by("qemu");
        assert_eq!(qemu[0].status, Status::Fail);
        assert!(qemu[0].summary.contains("qxl-vga"), "{}", qemu[0].summary);
    }
}
