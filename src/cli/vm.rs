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
    let path = &spec_path(path);
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

/// Where specs live: `$PASSTHRU_VM_DIR`, else /etc/passthru/vms as root, else the
/// user's config directory.
pub fn spec_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PASSTHRU_VM_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/etc/passthru/vms");
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("passthru/vms")
}

/// A spec given by name (`win11`) or by path (`./win11.toml`).
fn spec_path(arg: &Path) -> PathBuf {
    let s = arg.to_string_lossy();
    if s.contains('/') || s.ends_with(".toml") {
        arg.to_path_buf()
    } else {
        spec_dir().join(format!("{s}.toml"))
    }
}

/// `passthru vm new`.
#[allow(clippy::too_many_arguments)]
pub(super) fn new(
    name: &str,
    devices: &[PciAddress],
    cpus: u32,
    memory: &str,
    isos: &[PathBuf],
    disk: Option<&str>,
    os: crate::vm::spec::OsType,
    force: bool,
) -> anyhow::Result<u8> {
    use crate::vm::spec::{Disk, Display, Firmware, Network, OsType};
    let dir = spec_dir();
    let data = if dir.starts_with("/etc") {
        PathBuf::from("/var/lib/passthru/vms")
    } else {
        dir.parent().unwrap_or(&dir).join("disks")
    };
    let windows = os == OsType::Windows;
    let spec = VmSpec {
        name: name.to_string(),
        memory: memory.to_string(),
        cpus: Cpus::Count(cpus),
        devices: devices.to_vec(),
        disks: vec![Disk {
            path: data.join(format!("{name}.qcow2")),
            size: Some(disk.unwrap_or("64G").to_string()),
            format: "qcow2".into(),
        }],
        isos: isos.to_vec(),
        firmware: Firmware {
            uefi: true,
            secure_boot: windows,
            tpm: windows,
        },
        os,
        // Without a passed device the guest needs an emulated display.
        display: if devices.is_empty() {
            Display::Spice
        } else {
            Display::None
        },
        network: Network::User,
        hugepages: false,
    };
    spec.validate()?;
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !force {
        anyhow::bail!("{} exists already (--force replaces it)", path.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = spec.to_toml();
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("# {}\n{text}", path.display());
    eprintln!(
        "passthru: wrote {}; see where it runs with `passthru vm plan {name}`",
        path.display()
    );
    Ok(0)
}

/// `passthru vm list`.
pub(super) fn list(json: bool) -> anyhow::Result<u8> {
    let dir = spec_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|e| e.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    paths.sort();
    let specs: Vec<(PathBuf, anyhow::Result<VmSpec>)> = paths
        .into_iter()
        .map(|p| {
            let parsed = std::fs::read_to_string(&p)
                .map_err(anyhow::Error::from)
                .and_then(|t| VmSpec::parse(&t).map_err(anyhow::Error::from));
            (p, parsed)
        })
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = specs
            .iter()
            .map(|(p, s)| match s {
                Ok(s) => serde_json::json!({"path": p, "spec": s}),
                Err(e) => {
                    serde_json::json!({"path": p, "error": crate::facts::error_chain(e.as_ref())})
                }
            })
            .collect();
        print_json(&serde_json::json!({"schema_version": 1, "dir": dir, "vms": rows}))?;
        return Ok(0);
    }
    if specs.is_empty() {
        println!(
            "No VMs in {} (create one with `passthru vm new NAME`).",
            dir.display()
        );
    }
    for (p, s) in &specs {
        match s {
            Ok(s) => {
                let cpus = match &s.cpus {
                    Cpus::Count(n) => n.to_string(),
                    Cpus::Host(l) => format!("host CPUs {l}"),
                };
                let devs: Vec<String> = s.devices.iter().map(ToString::to_string).collect();
                let devs = if devs.is_empty() {
                    "none".into()
                } else {
                    devs.join(" ")
                };
                println!(
                    "{:<16} {:>6} memory, {cpus} vCPUs, devices: {devs}",
                    s.name, s.memory
                );
            }
            Err(e) => println!(
                "{}: invalid spec: {}",
                p.display(),
                crate::facts::error_chain(e.as_ref())
            ),
        }
    }
    Ok(0)
}

/// `passthru vm rm`.
pub(super) fn rm(name: &str) -> anyhow::Result<u8> {
    let path = spec_path(Path::new(name));
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!(
        "Removed {} (its disks stay where they are).",
        path.display()
    );
    Ok(0)
}
