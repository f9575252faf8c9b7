//! `passthru bind` and `passthru unbind` on the command line: gather, plan, print,
//! confirm, apply.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::output::{confirm, print_json, print_refusals, progress};
use super::{ChangeOptions, EXIT_ERROR, EXIT_PROBLEMS};
use crate::apply::bind::GroupNode;
use crate::apply::Applier;
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::plan::bind::{self, Overrides, Plan, Refusal, Target};

/// The `--json` document of `bind` and `unbind`.
#[derive(Debug, Serialize)]
struct ChangeReport<'a> {
    schema_version: u32,
    action: &'static str,
    dry_run: bool,
    steps: &'a [bind::Step],
    groups: &'a [u32],
    refusals: &'a [Refusal],
    nodes: &'a [GroupNode],
    failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct Failure {
    address: Option<PciAddress>,
    error: String,
}

/// Reads the host for the bind planner, warning about damaged bind records.
pub(super) fn read_host(root: &HostRoot) -> anyhow::Result<HostSnapshot> {
    let state = HostSnapshot::gather(root, Needs::BIND)?;
    for e in &state.record_errors {
        eprintln!("passthru: warning: {}", crate::error::error_chain(e));
    }
    Ok(state)
}

pub(super) fn parse_targets(devices: &[String]) -> anyhow::Result<Vec<Target>> {
    devices
        .iter()
        .map(|d| d.parse::<Target>().with_context(|| format!("DEVICE '{d}'")))
        .collect()
}

pub(super) fn require_live(root: &HostRoot, what: &str) -> anyhow::Result<()> {
    if !root.is_system() {
        bail!("{what} changes the running host: --root works only with --dry-run");
    }
    if !crate::apply::sys::is_root() {
        bail!(
            "{what} changes the kernel's driver bindings: run it as root (sudo passthru {what} …)"
        );
    }
    Ok(())
}

/// The executor, waiting at most `timeout` seconds (`--timeout`) for each driver
/// write and for `modprobe`.
fn applier(root: &HostRoot, timeout: u64) -> anyhow::Result<Applier> {
    let exe = std::env::current_exe().context("cannot find the passthru binary itself")?;
    Ok(Applier::new(
        root.clone(),
        Duration::from_secs(timeout.max(1)),
        exe,
    ))
}

fn print_steps(title: &str, plan: &Plan) {
    println!("{title}");
    for s in &plan.steps {
        let change = if s.noop {
            format!(
                "{} (already, nothing to do)",
                s.from.as_deref().unwrap_or("no driver")
            )
        } else {
            format!(
                "{} → {}",
                s.from.as_deref().unwrap_or("no driver"),
                s.to.as_deref().unwrap_or("the kernel's choice")
            )
        };
        let group = s.group.map_or_else(|| "-".into(), |g| g.to_string());
        println!("  group {group:>3}  {}  {change}", s.description);
    }
}

/// Reports refusals (as JSON too, when asked) and returns the exit code.
fn refused(
    json: bool,
    action: &'static str,
    dry_run: bool,
    refusals: &[Refusal],
) -> anyhow::Result<u8> {
    if json {
        print_json(&ChangeReport {
            schema_version: 1,
            action,
            dry_run,
            steps: &[],
            groups: &[],
            refusals,
            nodes: &[],
            failures: Vec::new(),
        })?;
    }
    print_refusals(action, refusals);
    Ok(EXIT_PROBLEMS)
}

/// `passthru bind`.
pub(super) fn bind(
    json: bool,
    root: &HostRoot,
    devices: &[String],
    overrides: Overrides,
    opts: ChangeOptions,
    timeout: u64,
) -> anyhow::Result<u8> {
    let targets = parse_targets(devices)?;
    if !opts.dry_run {
        require_live(root, "bind")?;
    }
    let g = read_host(root)?;
    let inputs = g.bind_inputs();
    let named = bind::resolve_targets(&targets, &inputs).map_err(anyhow::Error::msg)?;
    let by_name = targets.iter().any(|t| matches!(t, Target::Name(_)));
    if by_name && !opts.yes && !opts.dry_run {
        if !std::io::stdin().is_terminal() {
            bail!(
                "devices matched by name need confirmation: rerun with --yes, or name them by address \
                 (matched: {})",
                named.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
        }
        println!("The name matches:");
        for a in &named {
            if let Some(d) = g.devices.iter().find(|d| d.address == *a) {
                println!("  {}", inputs.describe(d));
            }
        }
        if !confirm("Bind these (with the rest of their IOMMU groups) to vfio-pci?")? {
            println!("Nothing was changed.");
            return Ok(EXIT_PROBLEMS);
        }
    }
    let plan = match bind::plan_bind(&inputs, &named, overrides) {
        Ok(p) => p,
        Err(refusals) => return refused(json, "bind", opts.dry_run, &refusals),
    };
    if !json {
        let verb = if opts.dry_run { "would bind" } else { "binds" };
        let groups: Vec<String> = plan.groups.iter().map(ToString::to_string).collect();
        print_steps(
            &format!(
                "passthru {verb} IOMMU group {} to vfio-pci:",
                groups.join(", ")
            ),
            &plan,
        );
    }
    let mut nodes = Vec::new();
    let mut failures = Vec::new();
    if !opts.dry_run {
        let applier = applier(root, timeout)?;
        let mut progress = progress(json);
        match applier.bind(&plan, &mut progress) {
            Ok(n) => nodes = n,
            Err(e) => failures.push(Failure {
                address: None,
                error: crate::error::error_chain(&e),
            }),
        }
    }
    // A driver write that failed or got stuck is passthru failing to do what it
    // was asked (exit code 2), not a refusal.
    let code = if failures.is_empty() { 0 } else { EXIT_ERROR };
    if json {
        print_json(&ChangeReport {
            schema_version: 1,
            action: "bind",
            dry_run: opts.dry_run,
            steps: &plan.steps,
            groups: &plan.groups,
            refusals: &[],
            nodes: &nodes,
            failures,
        })?;
        return Ok(code);
    }
    if let Some(f) = failures.first() {
        eprintln!("passthru: bind failed: {}", f.error);
        eprintln!("passthru: `passthru unbind --all` gives back what was already taken.");
        return Ok(code);
    }
    if opts.dry_run {
        println!("(dry run: nothing was changed)");
    } else if plan.is_noop() {
        println!("Already bound to vfio-pci: nothing changed.");
    }
    for n in &nodes {
        println!("Group {} is ready for a VM: {}", n.group, n.node.display());
    }
    Ok(0)
}

/// `passthru unbind`.
pub(super) fn unbind(
    json: bool,
    root: &HostRoot,
    devices: &[String],
    all: bool,
    opts: ChangeOptions,
    timeout: u64,
) -> anyhow::Result<u8> {
    let targets = parse_targets(devices)?;
    if !opts.dry_run {
        require_live(root, "unbind")?;
    }
    let g = read_host(root)?;
    let inputs = g.bind_inputs();
    let named = if all {
        Vec::new()
    } else {
        bind::resolve_targets(&targets, &inputs).map_err(anyhow::Error::msg)?
    };
    let plan = match bind::plan_unbind(&inputs, &named) {
        Ok(p) => p,
        Err(refusals) => return refused(json, "unbind", opts.dry_run, &refusals),
    };
    if !json {
        if plan.steps.is_empty() {
            println!("passthru holds no devices: nothing to give back.");
        } else {
            let verb = if opts.dry_run {
                "would give back"
            } else {
                "gives back"
            };
            print_steps(&format!("passthru {verb}:"), &plan);
        }
    }
    let mut failures = Vec::new();
    if !opts.dry_run {
        let applier = applier(root, timeout)?;
        let mut progress = progress(json);
        failures = applier
            .unbind(&plan, &mut progress)
            .into_iter()
            .map(|(a, e)| Failure {
                address: Some(a),
                error: crate::error::error_chain(&e),
            })
            .collect();
    }
    let failed = !failures.is_empty();
    if json {
        print_json(&ChangeReport {
            schema_version: 1,
            action: "unbind",
            dry_run: opts.dry_run,
            steps: &plan.steps,
            groups: &plan.groups,
            refusals: &[],
            nodes: &[],
            failures,
        })?;
    } else {
        for f in &failures {
            eprintln!(
                "passthru: could not restore {}: {}",
                f.address.map_or_else(String::new, |a| a.to_string()),
                f.error
            );
        }
        if opts.dry_run {
            println!("(dry run: nothing was changed)");
        }
    }
    // A device not given back is a problem found on the host (exit code 1, as the
    // README says), to be looked at before the next try.
    Ok(if failed { EXIT_PROBLEMS } else { 0 })
}
