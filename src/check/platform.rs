//! Checks of the machine itself: CPU virtualization, KVM, tools, memory, topology.

use super::{Finding, KvmState, Status};
use crate::cpu::CpuVendor;
use crate::facts::{HostFacts, KvmNode};
use crate::kernel::modules::ModuleAvailability;

const CPUINFO: &str = "/proc/cpuinfo";

/// The vendor as one word for the summary.
pub fn vendor_word(facts: &HostFacts) -> &'static str {
    match facts.cpu.as_ref().map(crate::cpu::CpuInfo::vendor) {
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
        .map(crate::kernel::log::LogLine::display)
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

fn install_hint(facts: &HostFacts, debian: &str, fedora: &str, arch: &str, suse: &str) -> String {
    match facts.distro.family() {
        Some("debian") => format!("sudo apt install {debian}"),
        Some("fedora") => format!("sudo dnf install {fedora}"),
        Some("arch") => format!("sudo pacman -S {arch}"),
        Some("suse") => format!("sudo zypper install {suse}"),
        _ => format!(
            "Install it with your package manager (Debian/Ubuntu: {debian}; Fedora: {fedora}; Arch: {arch})"
        ),
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
        Some(p) => found("tools.qemu", "QEMU", p),
        None => Finding::new(
            "tools.qemu",
            Status::Warn,
            "QEMU is not installed: VMs cannot run",
        )
        .evidence("/usr/bin", "no qemu-system-x86_64 or qemu-kvm")
        .remedy(install_hint(
            facts,
            "qemu-system-x86",
            "qemu-kvm",
            "qemu-full",
            "qemu-x86",
        )),
    });
    out.push(match t.ovmf.first() {
        Some(p) => found("tools.ovmf", "UEFI firmware for VMs (OVMF)", p),
        None => Finding::new(
            "tools.ovmf",
            Status::Warn,
            "No UEFI firmware for VMs (OVMF): modern GPUs and Windows 11 need a UEFI guest",
        )
        .evidence("/usr/share", "no OVMF_CODE image in the usual places")
        .remedy(install_hint(
            facts,
            "ovmf",
            "edk2-ovmf",
            "edk2-ovmf",
            "qemu-ovmf-x86_64",
        )),
    });
    out.push(match &t.libvirt {
        Some(p) => found("tools.libvirt", "libvirt", p),
        None => Finding::new(
            "tools.libvirt",
            Status::Warn,
            "libvirt is not installed (optional: passthru can also run QEMU directly)",
        )
        .evidence("/usr/sbin", "no libvirtd, virtqemud or virsh")
        .remedy(install_hint(
            facts,
            "libvirt-daemon-system",
            "libvirt",
            "libvirt",
            "libvirt",
        )),
    });
    out.push(match &t.swtpm {
        Some(p) => found("tools.swtpm", "swtpm (software TPM)", p),
        None => Finding::new(
            "tools.swtpm",
            Status::Warn,
            "swtpm is not installed: Windows 11 guests need a TPM",
        )
        .evidence("/usr/bin/swtpm", "missing")
        .remedy(install_hint(
            facts,
            "swtpm swtpm-tools",
            "swtpm swtpm-tools",
            "swtpm",
            "swtpm",
        )),
    });
    out
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
        .map(|d| crate::cpu::format_cpu_list(d))
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
