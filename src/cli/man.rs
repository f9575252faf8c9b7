//! `passthru man DIR`: one man page per command, generated from the command line's
//! own definitions (the same text as `--help`), written into DIR by
//! [`crate::apply::man`].

use std::path::PathBuf;

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use serde::Serialize;

use super::{print_json, Cli};
use crate::apply::man::{write_pages, Page};

/// `man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created when missing), e.g.
    /// ~/.cargo/share/man/man1.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// The `--json` document of `man`.
#[derive(Debug, Serialize)]
struct ManReport<'a> {
    schema_version: u32,
    /// The directory, as given.
    dir: &'a std::path::Path,
    /// Every page written, in the order of the commands.
    pages: Vec<PathBuf>,
}

/// Every man page of passthru: `passthru.1`, then one per command and subcommand
/// (`passthru-check.1`, …, `passthru-vm.1`, `passthru-vm-run.1`), in the order of
/// `--help`. Commands hidden from `--help` get none, and neither does `help`.
pub fn pages() -> Vec<Page> {
    let version = env!("CARGO_PKG_VERSION");
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its full name (`passthru-vm-run`) and the global
    // flags.
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, None, version, &mut pages);
    pages
}

/// Appends the page of `cmd` and those of its subcommands, depth first.
fn collect(cmd: &clap::Command, parent: Option<&str>, version: &str, pages: &mut Vec<Page>) {
    let name = page_name(cmd);
    let children: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .collect();
    let mut rendered = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name)
        .source(format!("passthru {version}"))
        .manual("User Commands")
        .render(&mut rendered)
        .expect("rendering into memory cannot fail");
    let mut content = ragged_right(&rendered);
    let mut see_also: Vec<String> = Vec::new();
    if let Some(parent) = parent {
        see_also.push(parent.to_owned());
        if parent != "passthru" {
            see_also.insert(0, "passthru".to_owned());
        }
    }
    see_also.extend(children.iter().map(|c| page_name(c).to_owned()));
    if !see_also.is_empty() {
        content.extend(see_also_section(&see_also).into_bytes());
    }
    pages.push(Page {
        file_name: format!("{name}.1"),
        content,
    });
    for child in children {
        collect(child, Some(name), version, pages);
    }
}

/// The page with `.ad l` and `.nh` after its `.TH` line: left-aligned, unhyphenated
/// text. Justified, groff would stretch the spaces of a command line to the margin,
/// and hyphenate long words at a line's end; the pages are full of paths and commands
/// to copy.
fn ragged_right(roff: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(roff.len() + 4);
    let mut done = false;
    for line in roff.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line);
        if !done && line.starts_with(b".TH ") {
            out.extend_from_slice(b".ad l\n.nh\n");
            done = true;
        }
    }
    out
}

/// A command's page name: `passthru`, `passthru-vm-run`.
fn page_name(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

/// `SEE ALSO` with the pages one level up and down, e.g. `passthru(1), passthru-vm(1)`.
fn see_also_section(names: &[String]) -> String {
    let mut inlines = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(name.as_str()));
        inlines.push(roman("(1)"));
    }
    Roff::new()
        .control("SH", ["SEE ALSO"])
        .text(inlines)
        .to_roff()
        + "\n"
}

/// `passthru man`.
pub(super) fn man(json: bool, args: &ManArgs) -> anyhow::Result<u8> {
    let written = write_pages(&args.dir, &pages())?;
    if json {
        print_json(&ManReport {
            schema_version: 1,
            dir: &args.dir,
            pages: written,
        })?;
    } else {
        for path in &written {
            println!("{}", path.display());
        }
        eprintln!(
            "passthru: wrote {} man pages into {}; read one with `man -l {}`",
            written.len(),
            args.dir.display(),
            args.dir.join("passthru-enable.1").display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_page_per_visible_command() {
        let pages = pages();
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names[0], "passthru.1");
        for name in [
            "passthru-check.1",
            "passthru-enable.1",
            "passthru-vm.1",
            "passthru-vm-run.1",
            "passthru-completions.1",
            "passthru-man.1",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help") || n.contains("__")));
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn pages_carry_their_name_and_links() {
        let pages = pages();
        let run = pages
            .iter()
            .find(|p| p.file_name == "passthru-vm-run.1")
            .unwrap();
        let text = String::from_utf8(run.content.clone()).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                ".TH passthru-vm-run 1  \"passthru {version}\" \"User Commands\""
            )),
            "{text}"
        );
        assert!(text.contains("\"User Commands\"\n.ad l\n.nh\n"), "{text}");
        assert!(text.contains(".SH \"SEE ALSO\""), "{text}");
        assert!(
            text.contains("\\fBpassthru\\fR(1), \\fBpassthru\\-vm\\fR(1)"),
            "{text}"
        );
    }
}
