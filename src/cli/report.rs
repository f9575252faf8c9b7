//! `passthru report`: what passthru reads, captured into an archive `--root` reads.

use std::path::Path;

use serde::Serialize;

use super::output::print_json;
use crate::host::root::HostRoot;

/// The `--json` document of `report` (its keys in alphabetical order, as schema 1
/// has them).
#[derive(Debug, Serialize)]
struct ReportDoc<'a> {
    /// How many files and links the archive holds.
    entries: usize,
    /// Where it was written.
    path: &'a Path,
    schema_version: u32,
}

/// `passthru report`.
pub(super) fn report(json: bool, root: &HostRoot, output: &Path) -> anyhow::Result<u8> {
    let entries = crate::apply::report::write_report(root, output)?;
    if json {
        print_json(&ReportDoc {
            entries,
            path: output,
            schema_version: 1,
        })?;
    } else {
        println!(
            "Wrote {} ({entries} entries). Read it anywhere with:\n  mkdir r && tar xzf {} -C r && passthru check --root r",
            output.display(),
            output.display()
        );
    }
    Ok(0)
}
