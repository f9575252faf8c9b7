//! `passthru vm plan` and `passthru vm render`: a VM spec turned into a plan, and the
//! plan into libvirt XML or a QEMU command line.

use std::path::Path;

use serde::Serialize;

use super::output::{keys_sorted, print_json};
use super::vm::load;
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::vm::hugepages::HugepagePlan;
use crate::vm::plan::Accel;
use crate::vm::render;

#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    schema_version: u32,
    name: &'a str,
    devices: &'a [PciAddress],
    pinning: &'a crate::vm::pinning::PinningPlan,
    hugepages: Option<HugepagesJson<'a>>,
    notes: &'a [String],
    blockers: Vec<String>,
}

/// The hugepages of `vm plan --json`: the plan (its keys in alphabetical order, as
/// schema 1 has them), or why the VM cannot have them.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum HugepagesJson<'a> {
    Plan(#[serde(serialize_with = "keys_sorted")] &'a HugepagePlan),
    Error { error: String },
}

/// `passthru vm plan SPEC`.
pub(super) fn plan(json: bool, root: &HostRoot, path: &Path) -> anyhow::Result<u8> {
    let r = load(root, path, Accel::Kvm, false)?;
    let (spec, pinning, devices) = (&r.plan.spec, &r.plan.pinning, &r.plan.devices);
    if json {
        print_json(&PlanReport {
            schema_version: 1,
            name: &spec.name,
            devices,
            pinning,
            hugepages: r.hugepages.as_ref().map(|h| match h {
                Ok(plan) => HugepagesJson::Plan(plan),
                Err(e) => HugepagesJson::Error {
                    error: e.to_string(),
                },
            }),
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
        crate::host::cpu::format_cpu_list(&pinning.emulator)
    );
    println!(
        "  left to the host: {}",
        crate::host::cpu::format_cpu_list(&pinning.host_keeps)
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
    let r = load(root, path, accel, false)?;
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
