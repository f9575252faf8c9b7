//! `passthru report`: what passthru reads, captured into an archive `--root` reads.

use std::path::Path;

use super::output::print_json;
use crate::host::root::HostRoot;
use crate::report;

/// `passthru report`.
pub(super) fn report(json: bool, root: &HostRoot, output: &Path) -> anyhow::Result<u8> {
    let entries = report::write_report(root, output)?;
    if json {
        print_json(&serde_json::json!({
            "schema_version": 1,
            "path": output,
            "entries": entries,
        }))?;
    } else {
        println!(
            "Wrote {} ({entries} entries). Read it anywhere with:\n  mkdir r && tar xzf {} -C r && passthru check --root r",
            output.display(),
            output.display()
        );
    }
    Ok(0)
}
