//! `passthru completions SHELL`: the shell completion script, generated from the
//! command line's own definitions, on standard output.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// The completion script for `shell`, for the command `passthru`. Internal commands
/// (hidden from `--help`) are not offered.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "passthru", &mut out);
    out
}

/// `passthru completions`.
pub(super) fn completions(json: bool, args: &CompletionsArgs) -> anyhow::Result<u8> {
    if json {
        anyhow::bail!(
            "`passthru completions` prints a shell script, which has no JSON form: \
             leave out --json"
        );
    }
    // Rendered first, written at once: a reader that goes away ends passthru quietly
    // (SIGPIPE), any other write error is reported.
    let script = script(args.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to standard output")?;
    Ok(0)
}
