//! Checks of the machine itself: CPU virtualization, KVM, tools, memory, topology.

use super::{Finding, KvmState, Status};
use crate::host::cpu::CpuVendor;
use crate::host::facts::{Distro, HostFacts, KvmNode};
use crate::host::kernel::modules::ModuleAvailability;

const CPUINFO: &str = "/proc/cpuinfo";

/// The vendor as one word for the summary.
pub fn vendor_word(facts: &HostFacts) -> &'static str {
    match facts.cpu.as_ref().map(crate::host::cpu::CpuInfo::vendor) {
        Ok(CpuVendor::Intel) => "intel",
        Ok(CpuVendor::Amd) => "amd",
        Ok(CpuVendor::Other(_)) => "other",
        _ => "unknown",
    }
}

/// Which virtualization extension the CPU has: `("vmx", "Intel VT-x", "kvm_intel")`.
fn extension(facts: &HostFacts) -> Option<(&'static str, &'static str, &'static str)> {
    let cpu = facts.cpu.as_ref().ok()?;
    if cpu.has_flag("vmx") {
        Some(("vmx", "Intel VT-x", "kvm_intel"))
    } else if cpu.has_flag("svm") {
        Some(("svm", "AMD-V", "kvm_amd"))
    } else {
        None
    }
}

fn flags_evidence(finding: Finding, facts: &HostFacts) -> Finding {
    match facts.cpu.as_ref().ok().and_then(|c| c.flags_line.clone()) {
        Some(line) => finding.evidence(CPUINFO, line),
        None => finding.evidence(CPUINFO, "no flags line"),
    }
}

/// `cpu.virtualization`: VT-x / AMD-V.
pub fn cpu_virtualization(facts: &HostFacts) -> Vec<Finding> {
    let id = "cpu.virtualization";
    let cpu = match &facts.cpu {
        Ok(cpu) => cpu,
        Err(why) => {
            return vec![
                Finding::new(id, Status::Unknown, "Cannot read the CPU's flags")
                    .evidence(CPUINFO, why.clone()),
            ]
        }
    };
    let mut out = Vec::new();
    if let Some((flag, name, _)) = extension(facts) {
        let nested = if cpu.has_flag("hypervisor") {
            " (this machine is itself a VM whose hypervisor offers nested virtualization)"
        } else {
            ""
        };
        out.push(flags_evidence(
            Finding::new(
                id,
                Status::Ok,
                format!("{name} is available (cpu flag {flag}){nested}"),
            ),
            facts,
        ));
    } else if cpu.has_flag("hypervisor") {
        out.push(flags_evidence(
            Finding::new(
                id,
                Status::Fail,
                "This machine is itself a virtual machine, and its hypervisor does not offer \
                 nested virtualization (no vmx/svm flag, hypervisor flag set)",
            )
            .remedy(
                "Run passthru on the physical host, or enable nested virtualization on the outer \
                 host (e.g. `options kvm_intel nested=1` / `options kvm_amd nested=1` there, and \
                 a CPU model that passes vmx/svm through). PCI passthrough also needs a real \
                 IOMMU, which a nested guest rarely has.",
            ),
            facts,
        ));
    } else {
        let vendor_hint = match cpu.vendor() {
            CpuVendor::Amd => "SVM Mode (AMD-V)",
            CpuVendor::Intel => "Intel Virtualization Technology (VT-x)",
            _ => "the CPU virtualization extension",
        };
        let mut f = Finding::new(
            id,
            Status::Fail,
            "The CPU offers no hardware virtualization (no vmx/svm flag)",
        )
        .remedy(format!(
            "Enable {vendor_hint} in the firmware setup (UEFI/BIOS), then reboot. If the \
             option does not exist, this CPU cannot run KVM guests."
        ));
        if let Some(line) = kernel_line(facts, &["disabled by bios", "disabled by BIOS"]) {
            f = f.evidence("kernel log", line);
        }
        out.push(flags_evidence(f, facts));
    }
    out
}

fn kernel_line(facts: &HostFacts, needles: &[&str]) -> Option<String> {
    let log = facts.log.as_ref().ok()?.as_ref()?;
    needles
        .iter()
        .find_map(|n| log.find(n))
        .map(crate::host::kernel::log::LogLine::display)
}

/// The state of `/dev/kvm` in a word.
pub fn kvm_state(facts: &HostFacts) -> KvmState {
    match facts.kvm {
        KvmNode::Usable { .. } | KvmNode::Captured => KvmState::Usable,
        KvmNode::NotOpenable(_) => KvmState::NoAccess,
        KvmNode::Missing => KvmState::NoDevice,
    }
}

/// `kvm`: `/dev/kvm` and its modules.
pub fn kvm(facts: &HostFacts) -> Finding {
    let id = "kvm";
    match &facts.kvm {
        KvmNode::Usable { api_version } => {
            let evidence = match api_version {
                Some(v) => format!("opened read-write; KVM_GET_API_VERSION = {v}"),
                None => "opened read-write; KVM_GET_API_VERSION failed".into(),
            };
            if extension(facts).is_none() && facts.cpu.is_ok() {
                return Finding::new(
                    id,
                    Status::Warn,
 "/dev/kvm answers, but the CPU shows no vmx/svm: this KVM is provided by the layer this machine runs on, not by hardware virtualization, and may not run ordinary guests",
                )
                .evidence("/dev/kvm", evidence)
                .remedy("Run VMs on the physical host (see cpu.virtualization).");
            }
            if *api_version != Some(12) {
                return Finding::new(id, Status::Warn, "/dev/kvm opens but does not answer as KVM does (API version 12)")
                    .evidence("/dev/kvm", evidence)
                    .remedy("Check that /dev/kvm is the kvm device node (character 10:232).");
            }
            return loaded_kvm_evidence(
                Finding::new(id, Status::Ok, "/dev/kvm is present and answers (KVM API 12)")
                    .evidence("/dev/kvm", evidence),
                facts,
            );
        }
        KvmNode::Captured => {
            return loaded_kvm_evidence(
                Finding::new(id, Status::Ok, "/dev/kvm is present (captured host)")
                    .evidence("/dev/kvm", "present"),
                facts,
            )
        }
        KvmNode::NotOpenable(why) => {
            return Finding::new(id, Status::Warn, "/dev/kvm exists but cannot be opened by this user")
                .evidence("/dev/kvm", why.clone())
                .remedy("Add your user to the `kvm` group (`sudo usermod -aG kvm $USER`, then log in again), or run VMs through libvirt's system instance.")
        }
        KvmNode::Missing => {}
    }
    if facts.cpu.is_err() {
        return Finding::new(id, Status::Fail, "/dev/kvm does not exist")
            .evidence("/dev/kvm", "missing")
            .remedy("Load the KVM module for your CPU (`sudo modprobe kvm_intel` or `sudo modprobe kvm_amd`) and read `dmesg` for its errors.");
    }
    let Some((_, name, module)) = extension(facts) else {
        return Finding::new(
            id,
            Status::Fail,
            "/dev/kvm does not exist: without hardware virtualization the kernel offers no KVM",
        )
        .evidence("/dev/kvm", "missing")
        .remedy("See cpu.virtualization first.");
    };
    let loaded = facts.loaded.as_ref().ok();
    let is_loaded = |m: &str| loaded.is_some_and(|l| l.contains(m));
    let availability = facts
        .modules
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(|m| m.availability(module));
    let mut f = match (is_loaded(module), availability) {
        (true, _) => Finding::new(
            id,
            Status::Fail,
            format!("/dev/kvm does not exist although {module} is loaded"),
        )
        .remedy(format!(
            "Look for `kvm: disabled by bios` or `{module}` errors in `dmesg`: {name} may be \
             disabled in the firmware setup. Without udev, create the node with \
             `mknod /dev/kvm c 10 232`."
        )),
        (false, Some(ModuleAvailability::Module { .. })) => Finding::new(
            id,
            Status::Fail,
            format!("/dev/kvm does not exist: the {module} module is not loaded"),
        )
        .remedy(format!(
            "Load it now with `sudo modprobe {module}`; to load it at every boot, \
             `echo {module} | sudo tee /etc/modules-load.d/kvm.conf`."
        )),
        (false, Some(ModuleAvailability::Absent)) => Finding::new(
            id,
            Status::Fail,
            format!("/dev/kvm does not exist: this kernel has no {module} (KVM not built)"),
        )
        .remedy("Use a kernel built with CONFIG_KVM and CONFIG_KVM_INTEL / CONFIG_KVM_AMD (see kernel.vfio and `passthru check --kernel-config FILE`)."),
        (false, Some(ModuleAvailability::Builtin)) => Finding::new(
            id,
            Status::Fail,
            format!("/dev/kvm does not exist although {module} is built into the kernel"),
        )
        .remedy(format!("{name} is probably disabled in the firmware setup; look for `kvm: disabled by bios` in `dmesg`.")),
        (false, None) => Finding::new(
            id,
            Status::Fail,
            format!("/dev/kvm does not exist and the {module} module was not found loaded"),
        )
        .remedy(format!("Try `sudo modprobe {module}` and read `dmesg` for its errors.")),
    };
    f = loaded_kvm_evidence(f.evidence("/dev/kvm", "missing"), facts);
    if let Some(line) = kernel_line(facts, &["disabled by bios", "disabled by BIOS"]) {
        f = f.evidence("kernel log", line);
    }
    f
}

/// Adds which kvm modules are loaded (`kvm`, `kvm_intel`, `kvm_amd`) as evidence.
fn loaded_kvm_evidence(f: Finding, facts: &HostFacts) -> Finding {
    let Ok(loaded) = &facts.loaded else { return f };
    let kvm_mods: Vec<&str> = loaded
        .iter()
        .filter(|m| m.starts_with("kvm"))
        .map(String::as_str)
        .collect();
    let text = if kvm_mods.is_empty() {
        "no kvm module loaded".to_string()
    } else {
        format!("loaded: {}", kvm_mods.join(", "))
    };
    f.evidence("/sys/module", text)
}

/// A part of QEMU that modular builds ship as a loadable file (`<module dir>/NAME.so`,
/// see [`crate::host::facts::QEMU_MODULE_DIRS`]) and that distributions package apart from
/// QEMU's binary. QEMU loads it on demand: without the file, `-device help` does not
/// list its devices and its options do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QemuModule {
    /// `ui-spice-core`: the SPICE server, QEMU's `-spice` option group.
    SpiceCore,
    /// `hw-display-qxl`: the QXL display devices (`qxl-vga`, `qxl`); needs
    /// `ui-spice-core`.
    DisplayQxl,
    /// `hw-usb-host`: the `usb-host` device (a host USB device given to the guest).
    UsbHost,
}

impl QemuModule {
    /// The module's name, as its file is called without `.so`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SpiceCore => "ui-spice-core",
            Self::DisplayQxl => "hw-display-qxl",
            Self::UsbHost => "hw-usb-host",
        }
    }
}

/// Something a remedy asks the user to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// QEMU for x86-64 guests, with everything its binary has built in (vfio-pci,
    /// virtio, q35's AHCI, `tpm-crb`, the TPM emulator backend, user networking).
    Qemu,
    /// One of QEMU's loadable modules.
    QemuModule(QemuModule),
    /// UEFI firmware for guests.
    Ovmf,
    /// libvirt's daemon.
    Libvirt,
    /// The software TPM (`swtpm`, and `swtpm_setup` to create its state).
    Swtpm,
}

/// Where a need comes from on one distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaged {
    /// These packages (space-separated) bring it.
    By(&'static str),
    /// The distribution ships no package with it; the text says so and what to do.
    Not(&'static str),
}

/// The one table of package names. `family` is [`Distro::family`]; `qemu` the version
/// (major, minor) of the installed QEMU where the packaging changed with it.
///
/// Sources of the names:
/// - Debian/Ubuntu: the SPICE and QXL modules moved from `qemu-system-common` into
///   `qemu-system-modules-spice` with Debian's QEMU 1:8.1.0+ds-1~exp2 (its
///   changelog: "optional spice and opengl modules from qemu-system-common"); Debian
///   13 and bookworm-backports (10.0) ship it, and Ubuntu has the split from 24.04
///   (8.2; quickemu-project/quickemu#1694, #1696). Debian 12's own QEMU 7.2 keeps them
///   in `qemu-system-common`, which `qemu-system-x86` depends on. `hw-usb-host.so` is
///   in `qemu-system-common` in both (`dpkg -S` on bookworm-backports' 10.0.2).
/// - Fedora: `qemu-ui-spice-core`, `qemu-device-display-qxl`, `qemu-device-usb-host`
///   (qemu.spec's `%package` names, packages.fedoraproject.org); `qemu-system-x86`
///   requires every module, `qemu-system-x86-core` none. RHEL 9 and later build QEMU
///   without SPICE (`have_spice 0` for `rhel >= 9` in the same spec).
/// - Arch: `qemu-ui-spice-core`, `qemu-hw-display-qxl`, `qemu-hw-usb-host`
///   (archlinux.org/packages, the `qemu` PKGBUILD's split packages).
/// - openSUSE: `qemu-ui-spice-core`, `qemu-hw-display-qxl`, `qemu-hw-usb-host`
///   (openSUSE's qemu.spec).
pub fn packaged(family: &str, rhel_like: bool, need: Need, qemu: Option<(u32, u32)>) -> Packaged {
    use Packaged::{By, Not};
    use QemuModule::{DisplayQxl, SpiceCore, UsbHost};
    const RHEL_NO_SPICE: &str =
        "RHEL and its rebuilds build QEMU without SPICE since RHEL 9: use display = \"none\"";
    match (family, need) {
        ("debian", Need::Qemu) => By("qemu-system-x86"),
        ("debian", Need::QemuModule(SpiceCore | DisplayQxl)) => match qemu {
            Some(v) if v < (8, 1) => By("qemu-system-common"),
            _ => By("qemu-system-modules-spice"),
        },
        ("debian", Need::QemuModule(UsbHost)) => By("qemu-system-common"),
        ("debian", Need::Ovmf) => By("ovmf"),
        ("debian", Need::Libvirt) => By("libvirt-daemon-system"),
        ("debian", Need::Swtpm) | ("fedora", Need::Swtpm) => By("swtpm swtpm-tools"),
        ("fedora", Need::Qemu) => By("qemu-kvm"),
        ("fedora", Need::QemuModule(SpiceCore | DisplayQxl)) if rhel_like => Not(RHEL_NO_SPICE),
        ("fedora", Need::QemuModule(SpiceCore)) => By("qemu-ui-spice-core"),
        ("fedora", Need::QemuModule(DisplayQxl)) => By("qemu-device-display-qxl"),
        ("fedora", Need::QemuModule(UsbHost)) => By("qemu-device-usb-host"),
        ("fedora", Need::Ovmf) | ("arch", Need::Ovmf) => By("edk2-ovmf"),
        ("arch", Need::Qemu) => By("qemu-full"),
        ("suse", Need::Qemu) => By("qemu-x86"),
        ("suse", Need::Ovmf) => By("qemu-ovmf-x86_64"),
        ("arch" | "suse", Need::QemuModule(SpiceCore)) => By("qemu-ui-spice-core"),
        ("arch" | "suse", Need::QemuModule(DisplayQxl)) => By("qemu-hw-display-qxl"),
        ("arch" | "suse", Need::QemuModule(UsbHost)) => By("qemu-hw-usb-host"),
        (_, Need::Libvirt) => By("libvirt"),
        (_, Need::Swtpm) => By("swtpm"),
        // Unknown families: what Debian calls it, the best-known name.
        (_, need) => packaged("debian", false, need, qemu),
    }
}

/// The install command for `needs` on `distro` (`sudo apt install …`), or, for a
/// distribution of no known family, the packages of each family
/// (`Debian/Ubuntu: …; Fedora: …; Arch: …; openSUSE: …`).
pub fn install_command(distro: &Distro, needs: &[Need], qemu: Option<(u32, u32)>) -> String {
    let for_family = |family: &str| {
        let mut names: Vec<&str> = Vec::new();
        let mut nots: Vec<&str> = Vec::new();
        for need in needs {
            match packaged(family, distro.rhel_like(), *need, qemu) {
                Packaged::By(p) => names.extend(p.split(' ')),
                Packaged::Not(why) => nots.push(why),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(*n));
        nots.dedup();
        (names.join(" "), nots.join("; "))
    };
    let Some(family) = distro.family() else {
        let list: Vec<String> = [
            ("Debian/Ubuntu", "debian"),
            ("Fedora", "fedora"),
            ("Arch", "arch"),
            ("openSUSE", "suse"),
        ]
        .iter()
        .map(|(name, family)| format!("{name}: {}", for_family(family).0))
        .collect();
        return list.join("; ");
    };
    let (names, nots) = for_family(family);
    let command = match family {
        "debian" => "sudo apt install",
        "fedora" => "sudo dnf install",
        "arch" => "sudo pacman -S",
        _ => "sudo zypper install",
    };
    match (names.is_empty(), nots.is_empty()) {
        (false, true) => format!("{command} {names}"),
        (true, _) => nots,
        (false, false) => format!("{command} {names}; {nots}"),
    }
}

/// [`install_command`] as a remedy of its own: for a distribution of no known family,
/// `Install it with your package manager (Debian/Ubuntu: …; …)`.
pub fn install_hint(distro: &Distro, needs: &[Need], qemu: Option<(u32, u32)>) -> String {
    let command = install_command(distro, needs, qemu);
    match distro.family() {
        Some(_) => command,
        None => format!("Install it with your package manager ({command})"),
    }
}

/// `tools.*`: QEMU, OVMF, libvirt, swtpm.
pub fn tools(facts: &HostFacts) -> Vec<Finding> {
    let t = &facts.tools;
    let mut out = Vec::new();
    let found = |id, what: &str, path: &std::path::Path| {
        Finding::new(id, Status::Ok, format!("{what} found"))
            .evidence(path.display().to_string(), "present")
    };
    out.push(match &t.qemu {
        Some(p) => qemu_modules(found("tools.qemu", "QEMU", p), facts),
        None => Finding::new(
            "tools.qemu",
            Status::Warn,
            "QEMU is not installed: VMs cannot run",
        )
        .evidence("/usr/bin", "no qemu-system-x86_64 or qemu-kvm")
        .remedy(install_hint(&facts.distro, &[Need::Qemu], None)),
    });
    out.push(match t.ovmf.first() {
        Some(p) => found("tools.ovmf", "UEFI firmware for VMs (OVMF)", p),
        None => Finding::new(
            "tools.ovmf",
            Status::Warn,
            "No UEFI firmware for VMs (OVMF): modern GPUs and Windows 11 need a UEFI guest",
        )
        .evidence("/usr/share", "no OVMF_CODE image in the usual places")
        .remedy(install_hint(&facts.distro, &[Need::Ovmf], None)),
    });
    out.push(match &t.libvirt {
        Some(p) => found("tools.libvirt", "libvirt", p),
        None => Finding::new(
            "tools.libvirt",
            Status::Warn,
            "libvirt is not installed (optional: passthru can also run QEMU directly)",
        )
        .evidence("/usr/sbin", "no libvirtd, virtqemud or virsh")
        .remedy(install_hint(&facts.distro, &[Need::Libvirt], None)),
    });
    out.push(match &t.swtpm {
        Some(p) => found("tools.swtpm", "swtpm (software TPM)", p),
        None => Finding::new(
            "tools.swtpm",
            Status::Warn,
            "swtpm is not installed: Windows 11 guests need a TPM",
        )
        .evidence("/usr/bin/swtpm", "missing")
        .remedy(install_hint(&facts.distro, &[Need::Swtpm], None)),
    });
    out
}

/// The SPICE modules of a modular QEMU, from its module directory (read from the
/// root, not from QEMU): a QEMU without `ui-spice-core.so` cannot start a VM with
/// `display = "spice"`. Builds without modules (no module directory) are left to
/// `vm check`, which asks QEMU itself. QEMU's version is not known here (QEMU is not
/// run): on Debian/Ubuntu the package named is the split one, `qemu-system-modules-spice`,
/// the only layout in which the modules can be missing (before QEMU 8.1 they are files
/// of `qemu-system-common`, which `qemu-system-x86` depends on).
fn qemu_modules(f: Finding, facts: &HostFacts) -> Finding {
    let Some(dir) = &facts.tools.qemu_modules else {
        return f;
    };
    let spice = [QemuModule::SpiceCore, QemuModule::DisplayQxl];
    let absent: Vec<String> = spice
        .iter()
        .filter(|m| !dir.has(m.name()))
        .map(|m| format!("{}.so", m.name()))
        .collect();
    if absent.is_empty() {
        return f.evidence(
            dir.dir.display().to_string(),
            "ui-spice-core.so and hw-display-qxl.so present (SPICE display)",
        );
    }
    let needs: Vec<Need> = spice.iter().map(|m| Need::QemuModule(*m)).collect();
    Finding {
        summary: format!(
            "{}, without its SPICE modules: VMs with display = \"spice\" cannot start",
            f.summary
        ),
        ..f
    }
    .evidence(
        dir.dir.display().to_string(),
        format!("no {}", absent.join(", ")),
    )
    .remedy(format!(
        "Only for an emulated display (display = \"spice\"): {}",
        install_command(&facts.distro, &needs, None)
    ))
}

/// `memory.hugepages`: reserved hugepages (optional, recommended for VM memory).
pub fn hugepages(facts: &HostFacts) -> Finding {
    let id = "memory.hugepages";
    let h = match &facts.hugepages {
        Ok(h) => h,
        Err(why) => {
            return Finding::new(id, Status::Unknown, "Cannot read /proc/meminfo")
                .evidence("/proc/meminfo", why.clone())
        }
    };
    let gib_1g = h.sizes_kib.contains(&1_048_576);
    let sizes = if gib_1g { "2 MiB and 1 GiB" } else { "2 MiB" };
    let mut f = if h.total > 0 {
        Finding::new(
            id,
            Status::Ok,
            format!(
                "{} hugepages of {} KiB reserved ({} free)",
                h.total, h.size_kib, h.free
            ),
        )
    } else {
        Finding::new(
            id,
            Status::Ok,
            format!("No hugepages reserved (optional; the kernel offers {sizes} pages)"),
        )
        .remedy("For VM memory backed by hugepages, reserve them at boot (`hugepages=N` or `hugepagesz=1G hugepages=N` on the kernel command line) or before starting a VM (`echo N | sudo tee /proc/sys/vm/nr_hugepages`).")
    };
    for line in &h.evidence {
        f = f.evidence("/proc/meminfo", line.clone());
    }
    f
}

/// `cpu.topology`: cores, threads and cache domains, for pinning.
pub fn topology(facts: &HostFacts) -> Option<Finding> {
    let id = "cpu.topology";
    let topo = match &facts.topology {
        Ok(t) if !t.cpus.is_empty() => t,
        Ok(_) => return None,
        Err(why) => {
            return Some(
                Finding::new(id, Status::Unknown, "Cannot read the CPU topology")
                    .evidence("/sys/devices/system/cpu", why.clone()),
            )
        }
    };
    let s = topo.summary();
    let mut text = format!(
        "{} package(s), {} cores, {} threads, {} L3 cache domain(s), {} NUMA node(s)",
        s.packages,
        s.cores,
        s.threads,
        s.l3_domains.len(),
        s.numa_nodes.len().max(1)
    );
    if s.performance_cores + s.efficiency_cores > 0 {
        text.push_str(&format!(
            "; hybrid: {} performance and {} efficiency cores",
            s.performance_cores, s.efficiency_cores
        ));
    }
    let domains: Vec<String> = s
        .l3_domains
        .iter()
        .map(|d| crate::host::cpu::format_cpu_list(d))
        .collect();
    let mut f = Finding::new(id, Status::Ok, text);
    if !domains.is_empty() {
        f = f.evidence(
            "/sys/devices/system/cpu/cpu*/cache",
            format!("L3 shared by: {}", domains.join(" | ")),
        );
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::root::HostRoot;

    fn distro(os_release: &str) -> Distro {
        Distro::parse(os_release)
    }

    #[test]
    fn spice_packages_follow_the_distribution_and_qemu() {
        let spice = [
            Need::QemuModule(QemuModule::SpiceCore),
            Need::QemuModule(QemuModule::DisplayQxl),
        ];
        let bookworm = distro("ID=debian\nVERSION_ID=\"12\"\n");
        // bookworm-backports' QEMU 10.0 and Debian 13 split SPICE off ...
        assert_eq!(
            install_hint(&bookworm, &spice, Some((10, 0))),
            "sudo apt install qemu-system-modules-spice"
        );
        // ... Debian 12's own QEMU 7.2 has it in qemu-system-common.
        assert_eq!(
            install_hint(&bookworm, &spice, Some((7, 2))),
            "sudo apt install qemu-system-common"
        );
        let noble = distro("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n");
        assert_eq!(
            install_hint(&noble, &spice, Some((8, 2))),
            "sudo apt install qemu-system-modules-spice"
        );
        assert_eq!(
            install_hint(&distro("ID=fedora\n"), &spice, Some((9, 1))),
            "sudo dnf install qemu-ui-spice-core qemu-device-display-qxl"
        );
        assert_eq!(
            install_hint(&distro("ID=arch\n"), &spice, None),
            "sudo pacman -S qemu-ui-spice-core qemu-hw-display-qxl"
        );
        assert_eq!(
            install_hint(
                &distro("ID=\"opensuse-tumbleweed\"\nID_LIKE=\"opensuse suse\"\n"),
                &spice,
                None
            ),
            "sudo zypper install qemu-ui-spice-core qemu-hw-display-qxl"
        );
        let alma = distro("ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert!(install_hint(&alma, &spice, None).contains("without SPICE since RHEL 9"));
        // USB passthrough is a module too, in qemu-system-common on Debian.
        assert_eq!(
            install_hint(&bookworm, &[Need::QemuModule(QemuModule::UsbHost)], None),
            "sudo apt install qemu-system-common"
        );
        assert_eq!(
            install_hint(
                &distro("ID=fedora\n"),
                &[Need::QemuModule(QemuModule::UsbHost)],
                None
            ),
            "sudo dnf install qemu-device-usb-host"
        );
    }

    #[test]
    fn unknown_distributions_get_every_family() {
        let hint = install_hint(&distro("ID=nixos\n"), &[Need::Swtpm], None);
        assert_eq!(
            hint,
            "Install it with your package manager (Debian/Ubuntu: swtpm swtpm-tools; Fedora: swtpm swtpm-tools; Arch: swtpm; openSUSE: swtpm)"
        );
        assert_eq!(
            install_hint(&distro("ID=debian\n"), &[Need::Qemu, Need::Ovmf], None),
            "sudo apt install qemu-system-x86 ovmf"
        );
    }

    fn tools_qemu(modules: &[&str]) -> Finding {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &str, text: &str| {
            let path = dir.path().join(p);
            crate::testing::mkdir(path.parent().unwrap());
            crate::testing::write(path, text);
        };
        w("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        w("usr/bin/qemu-system-x86_64", "");
        for m in modules {
            w(&format!("usr/lib/x86_64-linux-gnu/qemu/{m}.so"), "");
        }
        let facts = HostFacts::gather(&HostRoot::new(dir.path()));
        tools(&facts).remove(0)
    }

    #[test]
    fn tools_qemu_names_the_missing_spice_modules() {
        // The modules of qemu-system-common 1:10.0.2 (bookworm-backports), without
        // qemu-system-modules-spice.
        let f = tools_qemu(&[
            "audio-alsa",
            "hw-usb-host",
            "hw-display-virtio-vga",
            "ui-curses",
        ]);
        assert_eq!(f.status, Status::Ok);
        assert!(
            f.summary.contains("without its SPICE modules"),
            "{}",
            f.summary
        );
        let ev = &f.evidence[1];
        assert_eq!(ev.source, "/usr/lib/x86_64-linux-gnu/qemu");
        assert_eq!(ev.text, "no ui-spice-core.so, hw-display-qxl.so");
        assert!(f
            .remedy
            .as_deref()
            .unwrap()
            .ends_with("sudo apt install qemu-system-modules-spice"));
        // With the package's files (dpkg -c qemu-system-modules-spice).
        let f = tools_qemu(&[
            "hw-usb-host",
            "ui-spice-core",
            "hw-display-qxl",
            "audio-spice",
        ]);
        assert_eq!(f.summary, "QEMU found");
        assert_eq!(f.remedy, None);
        // A QEMU without modules: nothing to say from the files.
        let f = tools_qemu(&[]);
        assert_eq!((f.summary.as_str(), f.evidence.len()), ("QEMU found", 1));
    }
}
