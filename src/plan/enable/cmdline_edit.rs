//! Editing kernel command lines as text: add the arguments passthru needs, drop the
//! ones that contradict them, keep everything else exactly as written.
//!
//! The kernel splits its command line at spaces outside double quotes
//! (`next_arg()` in `lib/cmdline.c`), so `acpi_osi="Windows 2015"` is one argument:
//! arguments are kept whole, quotes and all. A line with a double quote that is
//! never closed is refused: whatever passthru appended would become part of the
//! quoted value.

/// Why a command line cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A `"` opens a value that never ends.
    #[error("the kernel command line `{0}` has a double quote that is never closed")]
    UnclosedQuote(String),
}

/// The arguments of `line` as the kernel splits them (each with its quotes).
pub fn args(line: &str) -> Result<Vec<&str>, CmdlineError> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                out.push(&line[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if quoted {
        return Err(CmdlineError::UnclosedQuote(line.to_string()));
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    Ok(out)
}

/// An argument as the kernel compares it: quotes removed, `-` and `_` alike in the key.
fn norm(a: &str) -> String {
    let a = a.replace('"', "");
    match a.split_once('=') {
        Some((k, v)) => format!("{}={v}", k.replace('-', "_")),
        None => a.replace('-', "_"),
    }
}

/// Whether `arg` (`key` or `key=value`) is present in `line` with the same key and
/// value (`-` and `_` alike in keys, as the kernel reads them).
pub fn has_arg(line: &str, arg: &str) -> bool {
    let want = norm(arg);
    match args(line) {
        Ok(list) => list.iter().any(|a| norm(a) == want),
        Err(_) => line.split_whitespace().any(|a| norm(a) == want),
    }
}

/// The key of an argument, normalised.
fn key(arg: &str) -> String {
    let a = norm(arg);
    a.split_once('=').map_or(a.clone(), |(k, _)| k.to_string())
}

/// `line` with every argument of `add` present once (appended when missing; an
/// existing argument with the same key but another value is replaced in place) and
/// every argument in `remove` dropped. Arguments are separated by one space.
pub fn edit(line: &str, add: &[String], remove: &[String]) -> Result<String, CmdlineError> {
    Ok(edit_lines(&[line], add, remove)?.remove(0))
}

/// [`edit`] for a command line written over several lines, as the `options` lines of
/// a boot loader entry that the boot loader joins: an argument counts as present on
/// any line, contradictions go from every line, an argument with another value is
/// replaced where it stands, and the missing ones go at the end of the last line.
/// A line that needs no change is returned exactly as it was.
pub fn edit_lines(
    lines: &[&str],
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>, CmdlineError> {
    let mut words: Vec<Vec<String>> = Vec::new();
    for line in lines {
        words.push(
            args(line)?
                .into_iter()
                .filter(|w| !remove.iter().any(|r| norm(w) == norm(r)))
                .map(str::to_string)
                .collect(),
        );
    }
    for a in add {
        if words.iter().flatten().any(|w| norm(w) == norm(a)) {
            continue;
        }
        // Same key, other value (vfio-pci.ids=old): replace where it stands.
        if let Some(w) = words
            .iter_mut()
            .flatten()
            .find(|w| a.contains('=') && key(w) == key(a))
        {
            *w = a.clone();
        } else if let Some(last) = words.last_mut() {
            last.push(a.clone());
        }
    }
    Ok(lines
        .iter()
        .zip(words)
        .map(|(line, w)| {
            let unchanged = args(line).is_ok_and(|old| old == w);
            if unchanged {
                (*line).to_string()
            } else {
                w.join(" ")
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn adds_missing_arguments_once() {
        let line = "quiet splash intel_iommu=on";
        assert_eq!(
            edit(line, &s(&["intel_iommu=on", "iommu=pt"]), &[]).unwrap(),
            "quiet splash intel_iommu=on iommu=pt"
        );
        assert_eq!(edit("", &s(&["iommu=pt"]), &[]).unwrap(), "iommu=pt");
        let once = edit(line, &s(&["iommu=pt"]), &[]).unwrap();
        assert_eq!(edit(&once, &s(&["iommu=pt"]), &[]).unwrap(), once);
    }

    #[test]
    fn replaces_values_and_drops_contradictions() {
        assert_eq!(
            edit(
                "ro vfio-pci.ids=10de:1b81 intel_iommu=off",
                &s(&["vfio-pci.ids=10de:2484,10de:228b", "intel_iommu=on"]),
                &s(&["intel_iommu=off"])
            )
            .unwrap(),
            "ro vfio-pci.ids=10de:2484,10de:228b intel_iommu=on"
        );
        assert!(has_arg("a vfio_pci.ids=1:2 b", "vfio-pci.ids=1:2"));
        assert!(!has_arg("iommu=pt", "iommu=off"));
    }

    /// A quoted value with a space is one argument, kept whole.
    #[test]
    fn quoted_values_stay_whole() {
        let line = r#"quiet acpi_osi="Windows 2015" splash"#;
        assert_eq!(
            args(line).unwrap(),
            ["quiet", r#"acpi_osi="Windows 2015""#, "splash"]
        );
        assert_eq!(
            edit(line, &s(&["iommu=pt"]), &s(&["intel_iommu=off"])).unwrap(),
            r#"quiet acpi_osi="Windows 2015" splash iommu=pt"#
        );
        assert!(has_arg(r#"a "dyndbg=file x +p" b"#, "dyndbg=file x +p"));
        assert_eq!(
            edit(r#"quiet acpi_osi="Windows"#, &s(&["iommu=pt"]), &[]),
            Err(CmdlineError::UnclosedQuote(
                r#"quiet acpi_osi="Windows"#.into()
            ))
        );
    }

    /// Every line counts; contradictions go from every line; additions go last.
    #[test]
    fn several_lines() {
        let out = edit_lines(
            &["root=/dev/sda2  rw", "intel_iommu=off quiet"],
            &s(&["intel_iommu=on", "iommu=pt"]),
            &s(&["intel_iommu=off"]),
        )
        .unwrap();
        assert_eq!(out, ["root=/dev/sda2  rw", "quiet intel_iommu=on iommu=pt"]);
        let out = edit_lines(
            &["vfio-pci.ids=1:2 rw", "quiet"],
            &s(&["vfio-pci.ids=3:4"]),
            &[],
        )
        .unwrap();
        assert_eq!(out, ["vfio-pci.ids=3:4 rw", "quiet"]);
    }
}
