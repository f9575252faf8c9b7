//! `passthru vm check`: whether a VM can start on this host, each problem with its
//! remedy.

use std::path::Path;

use serde::Serialize;

use super::output::print_json;
use crate::check::{Finding, Status};
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::vm::plan::Accel;
use crate::vm::store;

#[derive(Debug, Serialize)]
struct CheckReportJson<'a> {
    schema_version: u32,
    vm: &'a str,
    ok: bool,
    findings: Vec<FindingJson<'a>>,
}

/// A finding as `vm check --json` prints it: its id as `check`, no evidence, and
/// the remedy only when there is one.
#[derive(Debug, Serialize)]
struct FindingJson<'a> {
    check: &'a str,
    status: Status,
    summary: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    remedy: Option<&'a str>,
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(f: &'a Finding) -> Self {
        Self {
            check: &f.id,
            status: f.status,
            summary: &f.summary,
            remedy: f.remedy.as_deref(),
        }
    }
}

/// `passthru vm check`.
pub(super) fn check(json: bool, root: &HostRoot, arg: &Path, accel: Accel) -> anyhow::Result<u8> {
    use crate::vm::check::{self as vmcheck, CheckInputs, QemuCaps};
    let (_, spec) = store::load(arg)?;
    let gathered = HostSnapshot::gather_for_vm(root, Needs::BIND, &spec)?;
    for e in &gathered.record_errors {
        eprintln!("passthru: warning: {}", crate::error::error_chain(e));
    }
    let inputs = gathered.bind_inputs();
    // What `passthru bind` would say about the devices that can be found.
    let found: Vec<PciAddress> = spec
        .devices
        .iter()
        .filter_map(|d| crate::vm::identity::find(inputs.devices, d).ok())
        .map(|f| f.address)
        .collect();
    let bind_refusals = if found.is_empty() {
        Vec::new()
    } else {
        match crate::plan::bind::plan_bind(&inputs, &found, crate::plan::bind::Overrides::default())
        {
            Ok(_) => Vec::new(),
            Err(refusals) => refusals
                .into_iter()
                .map(|r| (r.address, r.reason, r.override_flag))
                .collect(),
        }
    };
    let qemu = if root.is_system() {
        match vmcheck::find_qemu(root) {
            Some(q) => QemuCaps::probe(Path::new(&q)),
            None => Err(format!(
                "QEMU is not installed: {}",
                crate::check::platform::install_command(
                    &crate::host::facts::Distro::read(root),
                    &[crate::check::platform::Need::Qemu],
                    None
                )
            )),
        }
    } else {
        Err("QEMU was not run: --root is another host's tree".into())
    };
    // The decisions `vm run` and `vm define` take, for the devices as found.
    let decisions = crate::vm::resolve::decide(&gathered, &spec, found.first().copied(), false)?;
    let findings = vmcheck::check(
        root,
        &spec,
        &CheckInputs {
            devices: inputs.devices,
            bind_refusals,
            qemu,
            accel,
            decisions,
        },
    );
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    if json {
        print_json(&CheckReportJson {
            schema_version: 1,
            vm: &spec.name,
            ok: !failed,
            findings: findings.iter().map(FindingJson::from).collect(),
        })?;
    } else {
        for f in &findings {
            println!("{:<5} {:<10} {}", f.status.label(), f.id, f.summary);
            if let Some(r) = &f.remedy {
                println!("{:16} → {r}", "");
            }
        }
        if failed {
            println!(
                "VM {} cannot start yet: fix the FAIL lines above.",
                spec.name
            );
        } else {
            println!("VM {} is ready to start.", spec.name);
        }
    }
    Ok(if failed { super::EXIT_PROBLEMS } else { 0 })
}
