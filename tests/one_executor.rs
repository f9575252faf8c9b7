//! The layering rule "only `src/apply/` changes the host", checked on the source.
//!
//! Outside `src/apply/`, the code that runs (not the unit tests) may not write, create,
//! remove, rename or re-permission files, start programs, send signals or set CPU
//! affinity — with one exception: a program run only to read something (QEMU's help,
//! `qemu-img map`) is a read-only probe, and says so in a comment on its line or the
//! line above (`// read-only probe: …`). Comments and string literals are not code:
//! a message that tells the user to rename something is no rename.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// The calls that change the host (the same list as the review's `grep -E`).
const CHANGES: &[&str] = &[
    "fs::write",
    "File::create",
    "create_dir",
    "remove_file",
    "rename",
    "set_permissions",
    "Command::new",
    "kill(",
    "sched_setaffinity",
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `text` with every comment and string or character literal blanked out (newlines
/// kept, so lines still line up): what is left is code.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&b, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(b[i..j.min(b.len())].iter().map(|c| blank(*c)));
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(b.len());
            out.extend(b[i..end].iter().map(|c| blank(*c)));
            i = end;
        } else if c == '\'' {
            // A character literal ('"', '\n', '\'') — or a lifetime, left as it is.
            let lit = match (next, b.get(i + 2), b.get(i + 3)) {
                (Some('\\'), _, _) => b[i + 3..].iter().position(|c| *c == '\'').map(|p| p + 4),
                (Some(_), Some('\''), _) => Some(3),
                _ => None,
            };
            match lit {
                Some(n) => {
                    out.extend(std::iter::repeat_n(' ', n));
                    i += n;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The lines of `text` before its unit tests (`#[cfg(test)]` then `mod …`).
fn before_tests(lines: &[&str]) -> usize {
    (0..lines.len())
        .find(|&i| {
            lines[i] == "#[cfg(test)]"
                && lines[i + 1..]
                    .iter()
                    .find(|l| !l.starts_with("#["))
                    .is_some_and(|l| l.starts_with("mod ") || l.starts_with("pub(crate) mod "))
        })
        .unwrap_or(lines.len())
}

/// Each change made outside `src/apply/` that is not a commented read-only probe, as
/// `path:line: text`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        // The executor itself, and the fixtures module that only unit tests compile.
        if rel.starts_with("apply") || rel == Path::new("testing.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = code_only(&text);
        let original: Vec<&str> = text.lines().collect();
        let code: Vec<&str> = code.lines().collect();
        assert_eq!(original.len(), code.len(), "{}", f.display());
        for i in 0..before_tests(&original) {
            let line = code[i].trim_start();
            if line.starts_with("#[serde(") || !CHANGES.iter().any(|c| line.contains(c)) {
                continue;
            }
            let said = |j: usize| original[j].contains("read-only probe");
            if said(i) || (i > 0 && said(i - 1)) {
                continue;
            }
            found.push(format!(
                "src/{}:{}: {}",
                rel.display(),
                i + 1,
                original[i].trim()
            ));
        }
    }
    found
}

#[test]
fn only_apply_changes_the_host() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "outside src/apply/, these change the host (move them to src/apply/, or mark a \
         read-only probe `// read-only probe: what it reads`):\n{}",
        found.join("\n")
    );
}

/// The checker itself: it finds a write and a spawned program, and lets a commented
/// probe, a message, a comment, a serde attribute and the unit tests pass.
#[test]
fn the_check_tells_changes_from_probes_and_prose() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("vm")).unwrap();
    std::fs::create_dir_all(src.join("apply")).unwrap();
    std::fs::write(
        src.join("vm/a.rs"),
        "#[serde(rename_all = \"lowercase\")]\n\
         // A comment may say fs::write.\n\
         fn f() {\n\
         \x20   let m = \"rename it, or kill( it\";\n\
         \x20   let r = r#\"Command::new\"#;\n\
         \x20   let q = '\"';\n\
         \x20   // read-only probe: qemu --help\n\
         \x20   let p = Command::new(\"qemu\");\n\
         \x20   std::fs::write(\"/etc/x\", \"y\").unwrap();\n\
         \x20   let c = std::process::Command::new(\"sh\");\n\
         }\n\
         #[cfg(test)]\n\
         mod tests {\n\
         \x20   fn t() { std::fs::write(\"/tmp/x\", \"\").unwrap(); }\n\
         }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("apply/b.rs"),
        "fn g() { std::fs::write(\"x\", \"y\"); }\n",
    )
    .unwrap();
    assert_eq!(
        violations(src),
        [
            "src/vm/a.rs:9: std::fs::write(\"/etc/x\", \"y\").unwrap();",
            "src/vm/a.rs:10: let c = std::process::Command::new(\"sh\");"
        ]
    );
}
