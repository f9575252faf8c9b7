//! `passthru vm plan` and `passthru vm render`: a VM spec turned into a plan, and the
//! plan into libvirt XML or a QEMU command line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::print_json;
use crate::cpu::{CpuInfo, CpuTopology, CpuVendor};
use crate::host_root::HostRoot;
use crate::list::is_host_side_bridge;
use crate::pci::PciAddress;
use crate::vm::pinning::{self, CpuRequest, PinningPlan};
use crate::vm::render::{self, Ovmf, VmPlan};
use crate::vm::spec::{Cpus, VmSpec};

/// UEFI code and variable-store templates, by distribution: (code, vars) for Secure
/// Boot first, then without.
const OVMF_PAIRS: &[(&str, &str, bool)] = &[
    (
        "usr/share/OVMF/OVMF_CODE_4M.ms.fd",
        "usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        true,
    ),
    (
        "usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        true,
    ),
    (
        "usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
        true,
    ),
    (
        "usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd",
        "usr/share/edk2/x64/OVMF_VARS.4m.fd",
        true,
    ),
    (
        "usr/share/OVMF/OVMF_CODE_4M.fd",
        "usr/share/OVMF/OVMF_VARS_4M.fd",
        false,
    ),
    (
        "usr/share/OVMF/OVMF_CODE.fd",
        "usr/share/OVMF/OVMF_VARS.fd",
        false,
    ),
    (
        "usr/share/edk2/ovmf/OVMF_CODE.fd",
        "usr/share/edk2/ovmf/OVMF_VARS.fd",
        false,
    ),
    (
        "usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "usr/share/edk2/x64/OVMF_VARS.4m.fd",
        false,
    ),
];

fn find_ovmf(root: &HostRoot, secure_boot: bool) -> Option<Ovmf> {
    OVMF_PAIRS
        .iter()
        .filter(|(_, _, sb)| *sb == secure_boot)
        .find(|(code, vars, _)| root.exists(code) && root.exists(vars))
        .map(|(code, vars, _)| Ovmf {
            code: Path::new("/").join(code),
            vars_template: Path::new("/").join(vars),
        })
}

/// The spec's devices with the rest of their IOMMU groups (bridges excluded), or of
/// their slots when the IOMMU is off.
fn expand_devices(
    spec: &VmSpec,
    devices: &[crate::pci::PciDevice],
) -> anyhow::Result<Vec<PciAddress>> {
    let mut out = Vec::new();
    for a in &spec.devices {
        let d = devices.iter().find(|d| d.address == *a).with_context(|| {
            format!(
                "device {a} of VM {} is not on this host (see `passthru list`)",
                spec.name
            )
        })?;
        for other in devices.iter().filter(|o| !is_host_side_bridge(o.class)) {
            let together = match d.iommu_group {
                Some(g) => other.iommu_group == Some(g),
                None => other.address.same_slot(*a),
            };
            if together {
                out.push(other.address);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    schema_version: u32,
    name: &'a str,
    devices: &'a [PciAddress],
    pinning: &'a PinningPlan,
}

/// Reads the spec and plans it on `root`.
fn load(
    root: &HostRoot,
    path: &Path,
) -> anyhow::Result<(VmSpec, PinningPlan, Vec<PciAddress>, bool)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = VmSpec::parse(&text)
        .with_context(|| format!("{} is not a valid VM spec", path.display()))?;
    let devices = crate::pci::device::read_all(root)?;
    let passed = expand_devices(&spec, &devices)?;
    let node = spec
        .devices
        .first()
        .and_then(|a| devices.iter().find(|d| d.address == *a))
        .and_then(|d| d.numa_node)
        .and_then(|n| u32::try_from(n).ok());
    let topology = CpuTopology::read(root)?;
    let request = match &spec.cpus {
        Cpus::Count(n) => CpuRequest::Count(*n),
        Cpus::Host(list) => CpuRequest::Host(crate::cpu::parse_cpu_list(list)?),
    };
    let pinning = pinning::plan(&topology, &request, node)?;
    let amd = CpuInfo::read(root).is_ok_and(|c| c.vendor() == CpuVendor::Amd);
    Ok((spec, pinning, passed, amd))
}

/// `passthru vm plan SPEC`.
pub(super) fn plan(json: bool, root: &HostRoot, path: &Path) -> anyhow::Result<u8> {
    let (spec, pinning, devices, _) = load(root, path)?;
    if json {
        print_json(&PlanReport {
            schema_version: 1,
            name: &spec.name,
            devices: &devices,
            pinning: &pinning,
        })?;
        return Ok(0);
    }
    let host: Vec<String> = pinning
        .vcpus
        .iter()
        .map(|(v, h)| format!("{v}→{h}"))
        .collect();
    println!(
        "VM {}: {} vCPUs ({} core(s) × {} thread(s))",
        spec.name,
        pinning.vcpus.len(),
        pinning.cores,
        pinning.threads
    );
    println!("  vCPU → host CPU: {}", host.join(" "));
    println!(
        "  QEMU's own threads: {}",
        crate::cpu::format_cpu_list(&pinning.emulator)
    );
    println!(
        "  left to the host: {}",
        crate::cpu::format_cpu_list(&pinning.host_keeps)
    );
    if let Some(n) = pinning.numa_node {
        println!("  memory from NUMA node {n}");
    }
    let devs: Vec<String> = devices.iter().map(ToString::to_string).collect();
    println!(
        "  devices (whole IOMMU groups): {}",
        if devs.is_empty() {
            "none".into()
        } else {
            devs.join(", ")
        }
    );
    println!("Why:");
    for r in &pinning.reasons {
        println!("  - {r}");
    }
    Ok(0)
}

/// `passthru vm render SPEC [--qemu]`.
pub(super) fn render(root: &HostRoot, path: &Path, qemu: bool) -> anyhow::Result<u8> {
    let (spec, pinning, devices, amd) = load(root, path)?;
    let ovmf = if spec.firmware.uefi {
        let found = find_ovmf(root, spec.firmware.secure_boot);
        if found.is_none() {
            anyhow::bail!(
                "no UEFI firmware{} found: install OVMF (Debian: ovmf, Fedora: edk2-ovmf, Arch: edk2-ovmf)",
                if spec.firmware.secure_boot { " with Secure Boot" } else { "" }
            );
        }
        found
    } else {
        None
    };
    let plan = VmPlan {
        spec: &spec,
        pinning: &pinning,
        devices,
        amd,
        ovmf,
        state_dir: PathBuf::from("/var/lib/passthru/vms").join(&spec.name),
    };
    if qemu {
        println!("{}", render::qemu_argv(&plan).join("\n"));
    } else {
        print!("{}", render::libvirt_xml(&plan));
    }
    Ok(0)
}
