//! `passthru vm run`: a VM run by QEMU directly, without libvirt.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::binding::require_live;
use super::output::print_refusals;
use super::{print_json, RiskArgs, EXIT_PROBLEMS};
use crate::apply::vm_session::{self as run, QemuExit, RunError, RunOptions};
use crate::host::root::HostRoot;
use crate::plan::bind::Overrides;
use crate::vm::plan::Accel;

/// `vm run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The VM's name, or the path of a spec file.
    pub spec: PathBuf,
    /// kvm, or tcg (software emulation) where KVM is not usable.
    #[arg(long, value_enum, default_value_t = Accel::Kvm)]
    pub accel: Accel,
    #[command(flatten)]
    pub(super) risks: RiskArgs,
    /// Seconds to wait for each driver write before calling it stuck (at most a day).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(..=MAX_WAIT_SECS))]
    pub timeout: u64,
    /// Seconds the guest has to power down after Ctrl-C or SIGTERM before QEMU is
    /// told to quit (a second Ctrl-C quits at once; at most a day).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(..=MAX_WAIT_SECS))]
    pub shutdown_timeout: u64,
}

/// The longest wait a `--timeout` or `--shutdown-timeout` flag takes, in seconds: a
/// day. (A deadline is the time now plus the wait, which must stay a time the system
/// clock can hold.)
pub(super) const MAX_WAIT_SECS: u64 = 24 * 60 * 60;

/// The `--json` document of `vm run`, printed when QEMU has ended.
#[derive(Debug, Serialize)]
struct RunReport<'a> {
    schema_version: u32,
    name: &'a str,
    pid: u32,
    /// QEMU's exit code, when it exited.
    qemu_exit_code: Option<i32>,
    /// The signal that killed QEMU, when one did.
    qemu_signal: Option<i32>,
    /// The signal passthru received that stopped the VM.
    stopped_by_signal: Option<i32>,
    cleanup_failures: &'a [String],
}

/// `passthru vm run`.
pub(super) fn run(
    json: bool,
    root: &HostRoot,
    args: &RunArgs,
    host_lock: Option<&crate::apply::lock::HostLock>,
) -> anyhow::Result<u8> {
    if !root.is_system() {
        anyhow::bail!("vm run starts a VM on this host: it cannot work with --root");
    }
    let resolution =
        super::vm::load_to_start(root, &args.spec, args.accel, args.risks.allow_disk_in_use)?;
    let plan = &resolution.plan;
    let changes_host = !plan.devices.is_empty()
        || matches!(&resolution.hugepages, Some(Ok(h)) if h.to_reserve > 0);
    if changes_host {
        require_live(root, "vm run")?;
    }
    let mut progress = |line: &str| eprintln!("passthru: {line}");
    for n in &resolution.notes {
        progress(n);
    }
    let options = RunOptions {
        host_lock,
        overrides: Overrides::from(args.risks),
        sysfs_timeout: Duration::from_secs(args.timeout.max(1)),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        exe: std::env::current_exe().context("cannot find the passthru binary itself")?,
    };
    let outcome = match run::run(root, &resolution, &options, &mut progress) {
        Ok(o) => o,
        Err(RunError::Refused(refusals)) => {
            print_refusals("vm run", &refusals);
            return Ok(EXIT_PROBLEMS);
        }
        Err(RunError::Blocked(blockers)) => {
            eprintln!("passthru: VM {} cannot start on this host:", plan.spec.name);
            for b in &blockers {
                eprintln!("  - {b}");
            }
            return Ok(EXIT_PROBLEMS);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        let (code, signal) = match outcome.exit {
            QemuExit::Code(c) => (Some(c), None),
            QemuExit::Signal(s) => (None, Some(s)),
        };
        print_json(&RunReport {
            schema_version: 1,
            name: &plan.spec.name,
            pid: outcome.pid,
            qemu_exit_code: code,
            qemu_signal: signal,
            stopped_by_signal: outcome.stopped_by,
            cleanup_failures: &outcome.cleanup_failures,
        })?;
    }
    for f in &outcome.cleanup_failures {
        eprintln!("passthru: {f}");
    }
    match outcome.exit {
        QemuExit::Signal(_) => eprintln!(
            "passthru: error: {} while the VM ran; {}",
            outcome.exit,
            if outcome.cleanup_failures.is_empty() {
                "its devices were given back"
            } else {
                "see above for what could not be undone"
            }
        ),
        QemuExit::Code(c) if c != 0 => eprintln!(
            "passthru: error: {} (its messages are above; the console log is {})",
            outcome.exit,
            plan.console_log_path().display()
        ),
        QemuExit::Code(_) => {}
    }
    let code = outcome.exit.code();
    Ok(if code == 0 && !outcome.cleanup_failures.is_empty() {
        EXIT_PROBLEMS
    } else {
        code
    })
}
