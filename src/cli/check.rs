//! `passthru check`: every readiness check, as text or JSON, and the kernel config
//! fragment this host needs.

use std::path::Path;

use super::output::{print_json, Style};
use super::EXIT_PROBLEMS;
use crate::check::{self, CheckReport, Status};
use crate::host::facts::HostFacts;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};

/// `passthru check`.
pub(super) fn check(
    json: bool,
    root: &HostRoot,
    verbose: bool,
    kernel_config: Option<&Path>,
    style: &Style,
) -> anyhow::Result<u8> {
    let snapshot = HostSnapshot::gather(root, Needs::CHECK)?;
    let facts = snapshot.facts()?;
    let report = check::run(facts);
    if let Some(path) = kernel_config {
        let fragment = check::kernel_config_fragment(facts);
        if path.as_os_str() == "-" {
            print!("{fragment}");
        } else {
            crate::apply::kernel_config::write_fragment(path, &fragment)?;
            if !json {
                eprintln!(
                    "passthru: wrote the kernel config fragment to {}",
                    path.display()
                );
            }
        }
    }
    if json {
        print_json(&report)?;
    } else if kernel_config != Some(Path::new("-")) {
        print!("{}", render_check(&report, facts, verbose, style));
    }
    Ok(if report.failed() { EXIT_PROBLEMS } else { 0 })
}

/// Shortens long evidence (a cpu flags line) for the terminal.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

fn render_check(report: &CheckReport, facts: &HostFacts, verbose: bool, style: &Style) -> String {
    let mut out = String::new();
    let cpu = facts
        .cpu
        .as_ref()
        .ok()
        .and_then(|c| c.model_name.clone())
        .unwrap_or_else(|| "unknown CPU".into());
    out.push_str(&format!(
        "passthru check of {} — kernel {}, {cpu}\n\n",
        report.root,
        report.kernel.as_deref().unwrap_or("unknown")
    ));
    let width = report
        .findings
        .iter()
        .map(|f| f.id.len())
        .max()
        .unwrap_or(10);
    for f in &report.findings {
        out.push_str(&format!(
            "{} {:<width$}  {}\n",
            style.status(f.status),
            f.id,
            f.summary
        ));
        let detail = verbose || f.status != Status::Ok;
        if detail {
            for e in &f.evidence {
                out.push_str(&style.dim(&format!(
                    "      evidence: {}: {}\n",
                    e.source,
                    clip(&e.text, 160)
                )));
            }
        }
        if f.status != Status::Ok || verbose {
            if let Some(r) = &f.remedy {
                out.push_str(&format!("      remedy:   {r}\n"));
            }
        }
    }
    let c = &report.counts;
    out.push_str(&format!(
        "\n{} ok, {} warnings, {} failed, {} unknown\n",
        c.ok, c.warn, c.fail, c.unknown
    ));
    if c.fail > 0 {
        out.push_str(
            "PCI passthrough is not possible on this host until the failed checks are fixed.\n",
        );
    }
    out
}
