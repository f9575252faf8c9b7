//! `passthru vm check`: can this VM start on this host? Every problem that would
//! stop QEMU or libvirt — or leave the guest without its devices — found before the
//! start, each with its remedy: devices present and bindable, the IOMMU groups, the
//! vCPU placement, hugepages, firmware and TPM, disks and ISOs, QEMU itself and the
//! devices it must offer (`qemu-system-x86_64 -device help`).
//!
//! Host files are read through the [`HostRoot`]; QEMU's capabilities come from a
//! [`QemuCaps`] the caller obtained (by running QEMU on a live host), so the checks
//! run on captured roots and in tests too.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::hugepages::{self, HugepageFacts};
use super::identity;
use super::pinning::{self, CpuRequest};
use super::render::Accel;
use super::resolve::find_ovmf;
use super::spec::{Cpus, Display, Network, VmSpec};
use crate::check::Status;
use crate::cpu::CpuTopology;
use crate::host_root::HostRoot;
use crate::pci::PciDevice;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmFinding {
    /// Which check (`devices`, `hugepages`, …).
    pub check: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found, in a sentence.
    pub summary: String,
    /// What to do about it (for warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

fn finding(check: &'static str, status: Status, summary: impl Into<String>) -> VmFinding {
    VmFinding {
        check,
        status,
        summary: summary.into(),
        remedy: None,
    }
}

impl VmFinding {
    fn remedy(mut self, r: impl Into<String>) -> Self {
        self.remedy = Some(r.into());
        self
    }
}

/// What the QEMU binary offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuCaps {
    /// The device models (`-device help`).
    pub devices: BTreeSet<String>,
}

impl QemuCaps {
    /// Parses `qemu-system-x86_64 -device help`, whose lines read
    /// `name "vfio-pci", bus PCI, desc "VFIO-based PCI device assignment"`.
    pub fn parse_device_help(text: &str) -> Self {
        let devices = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name \""))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect();
        Self { devices }
    }

    /// Runs `qemu-system-x86_64 -device help` on this machine.
    pub fn probe(qemu: &Path) -> Result<Self, String> {
        let out = std::process::Command::new(qemu)
            .args(["-nodefaults", "-machine", "none", "-device", "help"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} -device help failed: {}",
                qemu.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self::parse_device_help(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }
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

/// The devices QEMU must offer for this spec.
fn needed_devices(spec: &VmSpec, passes_devices: bool) -> Vec<&'static str> {
    let mut need = vec!["pcie-root-port", "virtio-blk-pci"];
    if passes_devices {
        need.push("vfio-pci");
    }
    if !spec.isos.is_empty() {
        need.push("ide-cd");
    }
    if spec.network != Network::None {
        need.push("virtio-net-pci");
    }
    if spec.firmware.tpm {
        need.push("tpm-crb");
    }
    if spec.display == Display::Spice {
        need.push("qxl-vga");
    }
    if !spec.usb.is_empty() {
        need.extend(["qemu-xhci", "usb-host"]);
    }
    need
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
    pub bind_refusals: Vec<(Option<crate::pci::PciAddress>, String, Option<&'static str>)>,
    /// QEMU's capabilities, or why they are unknown.
    pub qemu: Result<QemuCaps, String>,
    /// KVM or TCG.
    pub accel: Accel,
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
    // vCPUs.
    match CpuTopology::read(root) {
        Ok(topology) => {
            let request = match &spec.cpus {
                Cpus::Count(n) => Ok(CpuRequest::Count(*n)),
                Cpus::Host(l) => crate::cpu::parse_cpu_list(l)
                    .map(CpuRequest::Host)
                    .map_err(|e| e.to_string()),
            };
            match request.map(|r| pinning::plan(&topology, &r, None)) {
                Ok(Ok(p)) => out.push(finding(
                    "cpus",
                    Status::Ok,
                    format!(
                        "{} vCPUs pinned to host CPUs {}",
                        p.vcpus.len(),
                        crate::cpu::format_cpu_list(
                            &p.vcpus.iter().map(|(_, h)| *h).collect::<Vec<_>>()
                        )
                    ),
                )),
                Ok(Err(e)) => out.push(
                    finding("cpus", Status::Fail, e.to_string())
                        .remedy("change cpus in `passthru vm edit`"),
                ),
                Err(e) => out.push(finding("cpus", Status::Fail, e)),
            }
        }
        Err(e) => out.push(finding("cpus", Status::Unknown, e.to_string())),
    }
    // Hugepages.
    if spec.hugepages {
        match hugepages::plan(&HugepageFacts::read(root), spec.memory_mib()) {
            Ok(p) => out.push(finding("hugepages", Status::Ok, p.reason)),
            Err(e) => out.push(
                finding("hugepages", Status::Fail, e.to_string())
                    .remedy("or set hugepages = false in `passthru vm edit`"),
            ),
        }
    }
    // Firmware and TPM.
    if spec.firmware.uefi {
        match find_ovmf(root, spec.firmware.secure_boot) {
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
                .remedy("install OVMF (Debian/Ubuntu: ovmf, Fedora: edk2-ovmf, Arch: edk2-ovmf)"),
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
                .remedy("install swtpm (Debian/Ubuntu: swtpm swtpm-tools)"),
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
            let missing: Vec<&str> = needed_devices(spec, !found.is_empty())
                .into_iter()
                .filter(|d| !caps.devices.contains(*d))
                .collect();
            if missing.is_empty() {
                out.push(finding(
                    "qemu",
                    Status::Ok,
                    "QEMU offers every device the VM needs",
                ));
            } else {
                out.push(
                    finding(
                        "qemu",
                        Status::Fail,
                        format!("QEMU lacks the device model(s) {}", missing.join(", ")),
                    )
                    .remedy("install the full QEMU for x86-64 (Debian: qemu-system-x86)"),
                );
            }
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
        let inputs = CheckInputs {
            devices: &[],
            bind_refusals: Vec::new(),
            qemu: Ok(QemuCaps::parse_device_help(DEVICE_HELP)),
            accel: Accel::Kvm,
        };
        let f = check(&root, &s, &inputs);
        let by = |c: &str| f.iter().filter(|x| x.check == c).collect::<Vec<_>>();
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
