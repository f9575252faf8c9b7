//! How errors are told to the user: an error and its causes on one line.
//!
//! Each module has its own error enum (`thiserror`), whose messages say what failed
//! and why; a message that wraps another error usually names it as its `source`. The
//! command line, and the warnings a command prints while it goes on, show the whole
//! chain.

/// An error and its causes on one line (`cannot read X: Permission denied`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        // Messages that already carry their cause (`cannot read X: No such file`)
        // are not told twice.
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_say_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read spec.toml: {source}")]
        struct Carries {
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start the VM")]
        struct Wraps(#[source] Carries);
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        assert_eq!(
            error_chain(&Carries { source: io() }),
            "cannot read spec.toml: No such file"
        );
        assert_eq!(
            error_chain(&Wraps(Carries { source: io() })),
            "cannot start the VM: cannot read spec.toml: No such file"
        );
    }
}
