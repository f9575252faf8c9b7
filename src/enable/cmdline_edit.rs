//! Editing kernel command lines as text: add the arguments passthru needs, drop the
//! ones that contradict them, keep everything else exactly as written.

/// Whether `arg` (`key` or `key=value`) is present in `line` with the same key and
/// value (`-` and `_` alike in keys, as the kernel reads them).
pub fn has_arg(line: &str, arg: &str) -> bool {
    let norm = |a: &str| match a.split_once('=') {
        Some((k, v)) => format!("{}={v}", k.replace('-', "_")),
        None => a.replace('-', "_"),
    };
    let want = norm(arg);
    line.split_whitespace().any(|a| norm(a) == want)
}

/// The key of an argument, normalised.
fn key(arg: &str) -> String {
    arg.split_once('=')
        .map_or(arg, |(k, _)| k)
        .replace('-', "_")
}

/// `line` with every argument of `add` present once (appended when missing; an
/// existing argument with the same key but another value is replaced in place) and
/// every argument in `remove` dropped.
pub fn edit(line: &str, add: &[String], remove: &[String]) -> String {
    let mut words: Vec<String> = line
        .split_whitespace()
        .filter(|w| !remove.iter().any(|r| has_arg(w, r)))
        .map(str::to_string)
        .collect();
    for a in add {
        if words.iter().any(|w| has_arg(w, a)) {
            continue;
        }
        // Same key, other value (vfio-pci.ids=old): replace where it stands.
        if let Some(w) = words
            .iter_mut()
            .find(|w| key(w) == key(a) && a.contains('='))
        {
            *w = a.clone();
        } else {
            words.push(a.clone());
        }
    }
    words.join(" ")
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
            edit(line, &s(&["intel_iommu=on", "iommu=pt"]), &[]),
            "quiet splash intel_iommu=on iommu=pt"
        );
        assert_eq!(edit("", &s(&["iommu=pt"]), &[]), "iommu=pt");
        let once = edit(line, &s(&["iommu=pt"]), &[]);
        assert_eq!(edit(&once, &s(&["iommu=pt"]), &[]), once);
    }

    #[test]
    fn replaces_values_and_drops_contradictions() {
        assert_eq!(
            edit(
                "ro vfio-pci.ids=10de:1b81 intel_iommu=off",
                &s(&["vfio-pci.ids=10de:2484,10de:228b", "intel_iommu=on"]),
                &s(&["intel_iommu=off"])
            ),
            "ro vfio-pci.ids=10de:2484,10de:228b intel_iommu=on"
        );
        assert!(has_arg("a vfio_pci.ids=1:2 b", "vfio-pci.ids=1:2"));
        assert!(!has_arg("iommu=pt", "iommu=off"));
    }
}
