//! `passthru vm plan` and `passthru vm render`: a VM spec turned into a plan, and the
//! plan into libvirt XML or a QEMU command line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::print_json;
use crate::host_root::HostRoot;
use crate::pci::PciAddress;
use crate::vm::render::{self, Accel};
use crate::vm::resolve::{self, Resolution, ResolveOptions};
use crate::vm::spec::{Cpus, VmSpec};
use crate::vm::store;

#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    schema_version: u32,
    name: &'a str,
    devices: &'a [PciAddress],
    pinning: &'a crate::vm::pinning::PinningPlan,
    hugepages: Option<serde_json::Value>,
    notes: &'a [String],
    blockers: Vec<String>,
}

/// Loads the spec named or pointed at by `arg` and resolves it on `root`.
pub(super) fn load(root: &HostRoot, arg: &Path, accel: Accel) -> anyhow::Result<Resolution> {
    let (_, spec) = store::load(arg)?;
    let options = ResolveOptions {
        accel,
        state_dir: store::state_dir(&spec.name),
    };
    Ok(resolve::resolve(root, spec, &options)?)
}

/// `passthru vm plan SPEC`.
pub(super) fn plan(json: bool, root: &HostRoot, path: &Path) -> anyhow::Result<u8> {
    let r = load(root, path, Accel::Kvm)?;
    let (spec, pinning, devices) = (&r.plan.spec, &r.plan.pinning, &r.plan.devices);
    if json {
        print_json(&PlanReport {
            schema_version: 1,
            name: &spec.name,
            devices,
            pinning,
            hugepages: serde_json::to_value(&r)
                .ok()
                .and_then(|v| v.get("hugepages").cloned()),
            notes: &r.notes,
            blockers: r.blockers(),
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
    for why in pinning.reasons.iter().chain(&r.notes) {
        println!("  - {why}");
    }
    let blockers = r.blockers();
    if !blockers.is_empty() {
        println!("Before it can start:");
        for b in &blockers {
            println!("  - {b}");
        }
    }
    Ok(0)
}

/// `passthru vm render SPEC [--qemu]`.
pub(super) fn render(root: &HostRoot, path: &Path, qemu: bool, accel: Accel) -> anyhow::Result<u8> {
    let r = load(root, path, accel)?;
    let spec = &r.plan.spec;
    if spec.firmware.uefi && r.plan.ovmf.is_none() {
        // The first blocker is the missing firmware, with its remedy.
        anyhow::bail!("{}", r.blockers().remove(0));
    }
    if qemu {
        println!("{}", render::qemu_argv(&r.plan).join("\n"));
    } else {
        print!("{}", render::libvirt_xml(&r.plan));
    }
    Ok(0)
}

/// `passthru vm new`.
#[allow(clippy::too_many_arguments)]
pub(super) fn new(
    root: &HostRoot,
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
    let dir = store::spec_dir();
    let data = store::data_dir();
    let windows = os == OsType::Windows;
    // Each device is written with its identity (IDs and subsystem), so the spec
    // still finds it after the buses are renumbered.
    let host = crate::pci::device::read_all(root)?;
    let devices = devices
        .iter()
        .map(|a| {
            host.iter()
                .find(|d| d.address == *a)
                .map(crate::vm::identity::identity_of)
                .with_context(|| format!("no PCI device at {a} on this host (see `passthru list`)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let no_device = devices.is_empty();
    let spec = VmSpec {
        name: name.to_string(),
        memory: memory.to_string(),
        cpus: Cpus::Count(cpus),
        devices,
        usb: Vec::new(),
        evdev: Vec::new(),
        kernel: None,
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
        display: if no_device {
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
    let dir = store::spec_dir();
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
    let path = store::spec_path(Path::new(name));
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!(
        "Removed {} (its disks stay where they are).",
        path.display()
    );
    Ok(0)
}

/// `passthru vm edit`.
pub(super) fn edit(_spec: &Path) -> anyhow::Result<u8> {
    anyhow::bail!("vm edit is not available yet")
}

/// `passthru vm check`.
pub(super) fn check(
    _json: bool,
    _root: &HostRoot,
    _spec: &Path,
    _accel: Accel,
) -> anyhow::Result<u8> {
    anyhow::bail!("vm check is not available yet")
}
