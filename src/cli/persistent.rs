//! `passthru enable`, `disable`, `undo` and `verify` on the command line.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::binding::{parse_targets, require_live};
use super::output::{confirm, keys_sorted, print_refusals, progress};
use super::{print_json, ChangeOptions, EXIT_ERROR, EXIT_PROBLEMS};
use crate::apply::journal::Journal;
use crate::apply::{Applier, ApplyError};
use crate::check::{Finding, Status};
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::plan::bind::{self, Overrides, Refusal};
use crate::plan::disable::{self, DisableError, Remaining};
use crate::plan::enable::{self, EnableError, EnablePlan, EnableRequest, Enabled};
use crate::plan::verify;

#[derive(Debug, Serialize)]
struct EnableReport<'a> {
    schema_version: u32,
    action: &'static str,
    dry_run: bool,
    plan: Option<&'a EnablePlan>,
    refusals: &'a [Refusal],
    applied: bool,
    error: Option<String>,
}

/// The `--json` document of `undo`: one of three shapes, each with its keys in
/// alphabetical order (as schema 1 has them).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum UndoReport<'a> {
    /// There was nothing to undo.
    Nothing {
        action: &'static str,
        restored: [&'a Path; 0],
        schema_version: u32,
    },
    /// `--dry-run`: the files the journal would restore.
    DryRun {
        action: &'static str,
        dry_run: bool,
        journal: Vec<&'a Path>,
        schema_version: u32,
    },
    /// The files restored, and the error that stopped the undo, if one did.
    Done {
        action: &'static str,
        error: Option<String>,
        restored: Vec<&'a Path>,
        schema_version: u32,
    },
}

/// The `--json` document of `verify` (its keys in alphabetical order, as schema 1
/// has them).
#[derive(Debug, Serialize)]
struct VerifyReport<'a> {
    #[serde(serialize_with = "keys_sorted")]
    enabled: &'a Enabled,
    items: Vec<VerifyItem<'a>>,
    ok: bool,
    schema_version: u32,
}

/// A finding of `verify` as its `--json` prints it (see [`verify::verify`]): what was
/// verified, whether it holds, what was found, and the likely cause when it does not.
#[derive(Debug, Serialize)]
struct VerifyItem<'a> {
    cause: Option<&'a str>,
    found: &'a str,
    ok: bool,
    what: &'a str,
}

impl<'a> From<&'a Finding> for VerifyItem<'a> {
    fn from(f: &'a Finding) -> Self {
        Self {
            cause: f.remedy.as_deref(),
            found: &f.summary,
            ok: f.status == Status::Ok,
            what: &f.id,
        }
    }
}

/// The executor of `enable`, `disable` and `undo`. They write files and run
/// regenerators, no driver file: the applier's wait for a driver write never comes
/// into play, and the regenerators have their own limit and progress notes (see
/// [`crate::apply::enable`]), so these commands take no `--timeout`.
fn applier(root: &HostRoot) -> anyhow::Result<Applier> {
    let exe = std::env::current_exe().context("cannot find the passthru binary itself")?;
    Ok(Applier::new(root.clone(), Duration::from_secs(30), exe))
}

fn print_plan(plan: &EnablePlan) {
    if plan.is_noop() {
        println!("Nothing to change: the setup is already in place.");
        return;
    }
    let list = |a: &[crate::host::pci::PciAddress]| {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "Devices bound to vfio-pci at boot: {}",
        list(&plan.enabled.devices)
    );
    if !plan.enabled.by_address.is_empty() {
        println!(
            "Bound by address, as a device the host keeps has the same ids: {}",
            list(&plan.enabled.by_address)
        );
    }
    println!("Kernel arguments: {}", plan.enabled.kernel_args.join(" "));
    println!();
    for f in &plan.files {
        if f.after_commands {
            println!("(written after the commands below run)");
        }
        print!("{}", f.diff());
    }
    for s in &plan.snapshots {
        println!("(saved before the commands run: /{})", s.display());
    }
    if !plan.commands.is_empty() {
        println!("\nThen it runs:");
        for c in &plan.commands {
            println!("  {}    # {}", c.argv.join(" "), c.why);
        }
    }
    for i in &plan.inspections {
        println!(
            "  {}    # must list: {}",
            i.argv.join(" "),
            i.must_contain.join(", ")
        );
    }
    for m in &plan.manual {
        println!("\nBY HAND: {m}");
    }
    println!(
        "\nThe way back, if a binding ever locks you out: {}.",
        plan.way_back
    );
}

fn ask_or_refuse(opts: ChangeOptions, question: &str) -> anyhow::Result<bool> {
    if opts.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("this changes the host's boot setup: rerun with --yes to confirm, or --dry-run to only see the plan");
    }
    confirm(question)
}

fn report_refusals(
    json: bool,
    action: &'static str,
    dry_run: bool,
    refusals: &[Refusal],
) -> anyhow::Result<u8> {
    if json {
        print_json(&EnableReport {
            schema_version: 1,
            action,
            dry_run,
            plan: None,
            refusals,
            applied: false,
            error: None,
        })?;
    }
    print_refusals(action, refusals);
    Ok(EXIT_PROBLEMS)
}

/// Plans and (unless a dry run) applies `named`.
fn plan_and_apply(
    json: bool,
    action: &'static str,
    root: &HostRoot,
    snapshot: &HostSnapshot,
    named: &[PciAddress],
    overrides: Overrides,
    opts: ChangeOptions,
) -> anyhow::Result<u8> {
    let request = EnableRequest {
        named: named.to_vec(),
        overrides,
    };
    let plan = match enable::plan(snapshot, &request) {
        Ok(p) => p,
        Err(EnableError::Refused(r)) => return report_refusals(json, action, opts.dry_run, &r),
        Err(EnableError::Target(t)) => bail!(t),
        Err(EnableError::Snapshot(e)) => return Err(e.into()),
    };
    if !json {
        print_plan(&plan);
    }
    if opts.dry_run || plan.is_noop() {
        if json {
            print_json(&EnableReport {
                schema_version: 1,
                action,
                dry_run: opts.dry_run,
                plan: Some(&plan),
                refusals: &[],
                applied: false,
                error: None,
            })?;
        } else if opts.dry_run && !plan.is_noop() {
            println!("\n(dry run: nothing was changed)");
        }
        return Ok(0);
    }
    if !json && !ask_or_refuse(opts, "\nApply these changes?")? {
        println!("Nothing was changed.");
        return Ok(EXIT_PROBLEMS);
    }
    if json && !opts.yes {
        bail!("--json needs --yes (or --dry-run): there is no one to ask");
    }
    let applier = applier(root)?;
    let mut progress = progress(json);
    let result = applier.enable(&plan, &mut progress);
    let error = result.as_ref().err().map(|e| crate::error::error_chain(e));
    if json {
        print_json(&EnableReport {
            schema_version: 1,
            action,
            dry_run: false,
            plan: Some(&plan),
            refusals: &[],
            applied: error.is_none(),
            error: error.clone(),
        })?;
    }
    if let Some(e) = error {
        eprintln!("passthru: {action} failed: {e}");
        let untouched = matches!(
            result,
            Err(ApplyError::Changed { .. }
                | ApplyError::UnsafeLink { .. }
                | ApplyError::UndoUnfinished)
        );
        if untouched {
            // Refused before anything changed: a file edited since the plan was
            // made, a symlink passthru does not write through, an unfinished undo.
            return Ok(EXIT_PROBLEMS);
        }
        eprintln!(
            "passthru: every change is journaled: `passthru undo` restores the previous setup."
        );
        // A change that failed while it was applied (a write, a regenerator, the look
        // inside the new initramfs) is passthru failing, not a refusal.
        return Ok(EXIT_ERROR);
    }
    if !json {
        println!("\nDone. Reboot, then run `passthru verify`. `passthru undo` reverses all of it.");
        if !plan.manual.is_empty() {
            println!("Remember the steps marked BY HAND above.");
        }
    }
    Ok(0)
}

/// `passthru enable`.
pub(super) fn enable(
    json: bool,
    root: &HostRoot,
    devices: &[String],
    overrides: Overrides,
    opts: ChangeOptions,
) -> anyhow::Result<u8> {
    let targets = parse_targets(devices)?;
    if !opts.dry_run {
        require_live(root, "enable")?;
    }
    let snapshot = HostSnapshot::gather(root, Needs::ENABLE)?;
    let inputs = enable::boot_inputs(&snapshot);
    let mut named = bind::resolve_targets(&targets, &inputs).map_err(anyhow::Error::msg)?;
    // Enabling more devices adds them to what is enabled already.
    if let Some(prev) = &enable::previous(&snapshot) {
        named.extend(prev.named.iter().copied());
        named.sort();
        named.dedup();
    }
    plan_and_apply(json, "enable", root, &snapshot, &named, overrides, opts)
}

/// `passthru disable`.
pub(super) fn disable(
    json: bool,
    root: &HostRoot,
    devices: &[String],
    opts: ChangeOptions,
) -> anyhow::Result<u8> {
    let targets = parse_targets(devices)?;
    if !opts.dry_run {
        require_live(root, "disable")?;
    }
    let snapshot = HostSnapshot::gather(root, Needs::ENABLE)?;
    let Some(prev) = enable::previous(&snapshot) else {
        bail!("nothing is enabled (no /{})", enable::ENABLED_STATE);
    };
    let inputs = enable::boot_inputs(&snapshot);
    let remove = bind::resolve_targets(&targets, &inputs).map_err(anyhow::Error::msg)?;
    let remaining = match disable::remaining(&prev.named, &remove, &snapshot.devices) {
        Ok(Remaining::Some(left)) => left,
        Ok(Remaining::None) => {
            if !json {
                println!("No device would remain enabled: undoing the whole setup.");
            }
            return undo(json, root, opts);
        }
        Err(DisableError::NotEnabled(_)) => {
            bail!("{} is not among the enabled devices", devices.join(", "))
        }
    };
    plan_and_apply(
        json,
        "disable",
        root,
        &snapshot,
        &remaining,
        Overrides::default(),
        opts,
    )
}

/// What `undo` restores and runs, from the journal.
fn print_journal(journal: &Journal) {
    if journal.undo.is_some() {
        println!(
            "An interrupted undo already restored the files; passthru regenerates the boot files from them again:"
        );
        for c in &journal.regenerate {
            println!("  {}", c.argv.join(" "));
        }
    } else {
        println!("passthru restores:");
        for e in &journal.entries {
            if let (true, Some(link)) = (e.existed, &e.link) {
                println!(
                    "  /{}  (its previous content; the symlink /{} to it stays)",
                    e.path.display(),
                    link.display()
                );
            } else if e.existed {
                println!("  /{}  (its previous content)", e.path.display());
            } else {
                println!("  /{}  (removed: passthru created it)", e.path.display());
            }
        }
        for c in &journal.regenerate {
            println!("then runs: {}", c.argv.join(" "));
        }
    }
}

/// `passthru undo`.
pub(super) fn undo(json: bool, root: &HostRoot, opts: ChangeOptions) -> anyhow::Result<u8> {
    if !opts.dry_run {
        require_live(root, "undo")?;
    }
    let applier = applier(root)?;
    if !opts.dry_run {
        // An orphaned regenerator is stopped, and a journal a kill left without
        // manifest removed, before "nothing to undo" can be the answer.
        let mut progress = progress(json);
        if let Err(e) = applier.prepare_undo(&mut progress) {
            eprintln!("passthru: undo failed: {}", crate::error::error_chain(&e));
            return Ok(EXIT_ERROR);
        }
    }
    let journal: Journal = match applier.journal()? {
        Some(j) => j,
        None => {
            if json {
                print_json(&UndoReport::Nothing {
                    action: "undo",
                    restored: [],
                    schema_version: 1,
                })?;
            } else {
                println!("Nothing to undo: passthru has not changed the boot setup.");
            }
            return Ok(0);
        }
    };
    if !json {
        print_journal(&journal);
    }
    if opts.dry_run {
        if json {
            print_json(&UndoReport::DryRun {
                action: "undo",
                dry_run: true,
                journal: journal.entries.iter().map(|e| e.path.as_path()).collect(),
                schema_version: 1,
            })?;
        }
        return Ok(0);
    }
    if json && !opts.yes {
        bail!("--json needs --yes (or --dry-run): there is no one to ask");
    }
    if !json && !ask_or_refuse(opts, "Restore?")? {
        println!("Nothing was changed.");
        return Ok(EXIT_PROBLEMS);
    }
    let mut progress = progress(json);
    let result = applier.undo(&mut progress);
    if json {
        print_json(&UndoReport::Done {
            action: "undo",
            error: result.as_ref().err().map(|e| crate::error::error_chain(e)),
            restored: journal.entries.iter().map(|e| e.path.as_path()).collect(),
            schema_version: 1,
        })?;
    }
    match result {
        Ok(_) => {
            if !json {
                println!("Restored. Reboot to leave the VFIO setup.");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("passthru: undo failed: {}", crate::error::error_chain(&e));
            Ok(EXIT_ERROR)
        }
    }
}

/// `passthru verify`.
pub(super) fn verify(json: bool, root: &HostRoot) -> anyhow::Result<u8> {
    let enabled: Enabled = match root.read_optional(enable::ENABLED_STATE)? {
        Some(t) => serde_json::from_str(&t)
            .with_context(|| format!("/{} is damaged", enable::ENABLED_STATE))?,
        None => bail!(
            "nothing is enabled (no /{}): run `passthru enable` first",
            enable::ENABLED_STATE
        ),
    };
    let snapshot = HostSnapshot::gather(root, Needs::VERIFY)?;
    let findings = verify::verify(&enabled, snapshot.facts()?, &snapshot.devices);
    let items: Vec<VerifyItem> = findings.iter().map(VerifyItem::from).collect();
    let ok = items.iter().all(|i| i.ok);
    if json {
        print_json(&VerifyReport {
            enabled: &enabled,
            items,
            ok,
            schema_version: 1,
        })?;
    } else {
        for i in &items {
            println!("{} {}", if i.ok { "ok  " } else { "FAIL" }, i.what);
            if !i.ok {
                println!("     found: {}", i.found);
                if let Some(c) = i.cause {
                    println!("     likely cause: {c}");
                }
            }
        }
        println!(
            "\n{}",
            if ok {
                "Everything enable set up is in effect."
            } else {
                "Some of the setup did not take effect (see above)."
            }
        );
    }
    Ok(if ok { 0 } else { EXIT_PROBLEMS })
}
