//! The kernel command line (`/proc/cmdline`): parse → render → parse gives the same
//! arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::kernel::cmdline::{Arg, Cmdline};

/// Writes one argument so that the kernel's splitting reads it back unchanged:
/// quoted when it holds whitespace, is empty, or is a lone `--`.
fn render(arg: &Arg) -> String {
    let token = match &arg.value {
        Some(v) => format!("{}={v}", arg.key),
        None => arg.key.clone(),
    };
    if token.is_empty() || token == "--" || token.chars().any(char::is_whitespace) {
        format!("\"{token}\"")
    } else {
        token
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = Cmdline::parse(text);
    assert!(c.raw.len() <= text.len());
    for arg in &c.args {
        assert!(
            !arg.key.contains('='),
            "{arg:?}: the first '=' ends the key"
        );
        assert!(!arg.key.contains('"') && !arg.value.as_deref().unwrap_or("").contains('"'));
    }
    let rendered: Vec<String> = c.args.iter().map(render).collect();
    let again = Cmdline::parse(&rendered.join(" "));
    assert_eq!(again.args, c.args, "{text:?} rendered as {rendered:?}");
    if let Some(first) = c.args.first() {
        assert!(c.contains(&first.key));
        assert!(c.values(&first.key).count() >= 1);
    }
});
