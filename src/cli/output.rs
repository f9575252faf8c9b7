//! What the commands print, beside the words themselves: JSON documents, terminal
//! styling, progress lines, refusals and the question before a change.

use std::io::{BufRead, IsTerminal, Write};

use crate::check::Status;
use crate::plan::bind::Refusal;

use super::ColorChoice;

/// Prints a `--json` document (pretty, one trailing newline) on standard output.
pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    // stdout is line-buffered: buffer the whole document (thousands of lines for a
    // large host) instead of one write per line.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Serialises `value` with the keys of every object in it sorted, as a
/// `serde_json::Value` prints them. The documents of `report`, `undo`, `verify`,
/// `vm list` (and the hugepages of `vm plan`) have printed their keys in that order
/// since `schema_version` 1: their envelopes list their fields alphabetically, and
/// the values they carry go through this.
pub(super) fn keys_sorted<T, S>(value: &T, s: S) -> Result<S::Ok, S::Error>
where
    T: serde::Serialize + ?Sized,
    S: serde::Serializer,
{
    use serde::Serialize;
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// Terminal styling.
pub(super) struct Style {
    color: bool,
}

impl Style {
    pub(super) fn new(choice: ColorChoice) -> Self {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        Self { color }
    }

    pub(super) fn status(&self, s: Status) -> String {
        let label = format!("{:<5}", s.label());
        if !self.color {
            return label;
        }
        let code = match s {
            Status::Ok => "32",
            Status::Warn => "33",
            Status::Fail => "1;31",
            Status::Unknown => "35",
        };
        format!("\x1b[{code}m{label}\x1b[0m")
    }

    pub(super) fn dim(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Prints why `what` was refused, each reason with the flag that accepts it.
pub(super) fn print_refusals(what: &str, refusals: &[Refusal]) {
    eprintln!("passthru: {what} refused; nothing was changed:");
    for r in refusals {
        match r.override_flag {
            Some(flag) => eprintln!("  - {} (to accept this, add {flag})", r.reason),
            None => eprintln!("  - {}", r.reason),
        }
    }
}

/// Prints progress lines: on stdout, or on stderr when stdout carries JSON.
pub(super) fn progress(json: bool) -> impl FnMut(&str) {
    move |line: &str| {
        if json {
            eprintln!("passthru: {line}");
        } else {
            println!("  … {line}");
        }
    }
}

/// Asks a yes/no question on the terminal; anything but yes is no.
pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
