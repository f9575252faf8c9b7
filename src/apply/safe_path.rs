//! The `PATH` passthru runs its tools with as root.
//!
//! passthru runs distribution tools by name (`update-initramfs`, `modprobe`,
//! `update-grub`, `qemu-system-x86_64`, …) so that each distribution's own layout
//! works. As root, a name looked up in a directory another user can write (`.`, a
//! relative entry, `~user/bin`, a group-writable `/opt/x/bin`) would run that user's
//! program as root. So when passthru runs as root, [`sanitise`] keeps only the
//! entries of `PATH` that are absolute and whose directory, and every directory
//! above it, is owned by root and writable by no one else (a sticky directory such
//! as `/tmp` may be above an entry: nobody else can rename what root created in it),
//! then appends the standard system directories it lacks.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The system directories every sanitised `PATH` ends with.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Whether root may look programs up in `dir` (see the module's documentation).
pub fn trusted_dir(dir: &Path) -> bool {
    if !dir.is_absolute() {
        return false;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return false;
    }
    let mut up = dir.parent();
    while let Some(d) = up {
        let Ok(m) = std::fs::metadata(d) else {
            return false;
        };
        let sticky = m.mode() & 0o1000 != 0;
        if m.uid() != 0 || (m.mode() & 0o022 != 0 && !sticky) {
            return false;
        }
        up = d.parent();
    }
    true
}

/// `path` with the entries root must not use left out and the system directories
/// appended where missing.
pub fn sanitise(path: Option<&OsStr>) -> OsString {
    let mut kept: Vec<std::path::PathBuf> = Vec::new();
    for entry in path.map(std::env::split_paths).into_iter().flatten() {
        if trusted_dir(&entry) && !kept.contains(&entry) {
            kept.push(entry);
        }
    }
    for d in SYSTEM_DIRS {
        let d = Path::new(d).to_path_buf();
        if !kept.contains(&d) {
            kept.push(d);
        }
    }
    std::env::join_paths(kept).unwrap_or_else(|_| SYSTEM_DIRS.join(":").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_foreign_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        crate::testing::mkdir(&open);
        crate::testing::chmod(&open, 0o777);
        let given = format!("bin:.::{}:/usr/bin:/nonexistent", open.display());
        let out = sanitise(Some(OsStr::new(&given)));
        let out = out.to_str().unwrap();
        assert!(
            !out.split(':')
                .any(|e| e == "bin" || e == "." || e.is_empty()),
            "{out}"
        );
        assert!(
            !out.contains("open") && !out.contains("nonexistent"),
            "{out}"
        );
        assert!(out.starts_with("/usr/bin:"), "{out}");
        for d in SYSTEM_DIRS {
            assert!(out.split(':').any(|e| e == *d), "{out} lacks {d}");
        }
        assert_eq!(sanitise(None).to_str().unwrap(), SYSTEM_DIRS.join(":"));
    }

    #[test]
    fn a_root_owned_directory_under_a_sticky_one_is_kept() {
        if !crate::apply::sys::is_root() {
            eprintln!("SKIPPED a_root_owned_directory_under_a_sticky_one_is_kept: not root");
            return;
        }
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        assert!(trusted_dir(dir.path()), "{}", dir.path().display());
        assert!(!trusted_dir(Path::new("relative/bin")));
    }
}
