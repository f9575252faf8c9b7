//! Where VM specs and a VM's own files live.
//!
//! Specs: `$PASSTHRU_VM_DIR`, else `/etc/passthru/vms` as root, else
//! `$XDG_CONFIG_HOME/passthru/vms` (`~/.config/passthru/vms`).
//! A VM's files (disk images created for it, UEFI variables, TPM state, QMP and
//! console sockets, the console log): `$PASSTHRU_VM_STATE_DIR`, else
//! `/var/lib/passthru/vms` as root, else `$XDG_DATA_HOME/passthru/vms`
//! (`~/.local/share/passthru/vms`); each VM has a directory named after it there.

use std::path::{Path, PathBuf};

use super::spec::{SpecError, VmSpec};

fn is_root() -> bool {
    crate::apply::sys::is_root()
}

fn home_dir(xdg: &str, fallback: &str) -> PathBuf {
    std::env::var_os(xdg)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where specs live.
pub fn spec_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PASSTHRU_VM_DIR") {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/etc/passthru/vms");
    }
    home_dir("XDG_CONFIG_HOME", ".config").join("passthru/vms")
}

/// Where VMs' own files live (one directory per VM below it).
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PASSTHRU_VM_STATE_DIR") {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/var/lib/passthru/vms");
    }
    home_dir("XDG_DATA_HOME", ".local/share").join("passthru/vms")
}

/// The directory of one VM's own files.
pub fn state_dir(name: &str) -> PathBuf {
    data_dir().join(name)
}

/// A spec given by name (`win11`) or by path (`./win11.toml`).
pub fn spec_path(arg: &Path) -> PathBuf {
    spec_path_in(arg, &spec_dir())
}

/// [`spec_path`] with the spec directory `dir`.
fn spec_path_in(arg: &Path, dir: &Path) -> PathBuf {
    let s = arg.to_string_lossy();
    if s.contains('/') || s.ends_with(".toml") {
        arg.to_path_buf()
    } else {
        dir.join(format!("{s}.toml"))
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read.
    #[error("cannot read {}: {source}{}", .path.display(), if .source.kind() == std::io::ErrorKind::NotFound { " (see `passthru vm list`, or create it with `passthru vm new`)" } else { "" })]
    Read {
        /// The spec's path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// As root, a spec or state directory that someone else can change.
    #[error("{}: {why}; as root, passthru takes VM specs and state only from files and directories that only root can change (chown root, chmod go-w)", .path.display())]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// Who else can change it.
        why: String,
    },
    /// `vm rm` was pointed at something that is not a VM spec of the spec directory.
    #[error("{} was not removed: {why}", .path.display())]
    NotASpec {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The spec could not be removed.
    #[error("cannot remove {}: {source}", .path.display())]
    Remove {
        /// The spec.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid spec.
    #[error("{} is not a valid VM spec: {source}", .path.display())]
    Invalid {
        /// The spec's path.
        path: PathBuf,
        /// What is wrong.
        source: SpecError,
    },
}

/// Reads and validates the spec named or pointed at by `arg`. As root, the spec must
/// be root's alone (see [`check_trusted`]).
pub fn load(arg: &Path) -> Result<(PathBuf, VmSpec), StoreError> {
    let path = spec_path(arg);
    check_trusted(&path)?;
    let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Read {
        path: path.clone(),
        source,
    })?;
    let spec = VmSpec::parse(&text).map_err(|source| StoreError::Invalid {
        path: path.clone(),
        source,
    })?;
    Ok((path, spec))
}

/// Who other than root can change `meta`'s file, if anyone. A directory with the
/// sticky bit (`/tmp`) may be writable by all when `sticky_ok`: there, no one can
/// rename or remove what root owns.
fn others_can_change(meta: &std::fs::Metadata, sticky_ok: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if meta.uid() != 0 {
        return Some(format!("it is owned by uid {}, not root", meta.uid()));
    }
    let sticky = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        return Some(format!(
            "it is writable by its {} (mode {:o})",
            if mode & 0o002 != 0 { "others" } else { "group" },
            mode & 0o7777
        ));
    }
    None
}

/// As root (and only then), refuses a spec file or a VM's state directory that
/// someone else could change: the file (or directory) itself must be root's and not
/// writable by group or others, and so must every directory above it (a sticky
/// directory such as `/tmp` is fine there). A spec is a program run as root — its
/// disks, ISOs, kernel and bridge reach QEMU — and the state directory holds what root
/// writes (NVRAM, sockets, TPM state, the domain XML). A path that does not exist yet
/// is checked from the nearest directory that does. Symlinks are followed, and the
/// place they lead to is checked.
pub fn check_trusted(path: &Path) -> Result<(), StoreError> {
    if !is_root() {
        return Ok(());
    }
    check_trusted_as_root(path)
}

fn check_trusted_as_root(path: &Path) -> Result<(), StoreError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // The nearest existing path, with its symlinks resolved.
    let mut existing = absolute.as_path();
    let real = loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            break real;
        }
        match existing.parent() {
            Some(p) => existing = p,
            None => return Ok(()),
        }
    };
    let untrusted = |p: &Path, why: String| StoreError::Untrusted {
        path: p.to_path_buf(),
        why,
    };
    for (i, p) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(p).map_err(|source| StoreError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        // The file itself must not be writable by others even in a sticky directory.
        let is_target = i == 0 && existing == absolute.as_path();
        if let Some(why) = others_can_change(&meta, !is_target) {
            return Err(untrusted(p, why));
        }
    }
    Ok(())
}

/// The spec `arg` names if `vm rm` may remove it, and nothing else: a regular file
/// (not a symlink) directly in `dir`, the spec directory, that parses as a VM spec
/// (and, as root, only root can change). Returns its path and the spec; the removal
/// itself is [`crate::apply::spec::remove_spec`].
pub fn removable_spec(arg: &Path, dir: &Path) -> Result<(PathBuf, VmSpec), StoreError> {
    let path = spec_path_in(arg, dir);
    let not = |why: String| StoreError::NotASpec {
        path: path.clone(),
        why,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(|source| StoreError::Read {
        path: path.clone(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(not("it is a symbolic link, not a spec file".into()));
    }
    if !meta.is_file() {
        return Err(not("it is not a regular file".into()));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let same_dir = match (std::fs::canonicalize(parent), std::fs::canonicalize(dir)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_dir || path.extension().is_none_or(|e| e != "toml") {
        return Err(not(format!(
            "`passthru vm rm` removes only the VM specs (NAME.toml) in {}",
            dir.display()
        )));
    }
    check_trusted(&path)?;
    let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Read {
        path: path.clone(),
        source,
    })?;
    let spec = VmSpec::parse(&text).map_err(|e| {
        not(format!(
            "it is not a valid VM spec ({e}); remove it yourself if it is not needed"
        ))
    })?;
    Ok((path, spec))
}

/// What is wrong with the text of an edited spec (`vm edit`), if anything: it must
/// parse as a spec, and keep the name of the VM it was (`original_name`, when the
/// spec parsed before the edit) — a VM's files and its libvirt domain go by its name.
pub fn edit_problem(original_name: Option<&str>, text: &str) -> Option<String> {
    match VmSpec::parse(text) {
        Ok(spec) if original_name.is_some_and(|n| n != spec.name) => Some(format!(
            "name: the VM is called '{}'; create a new one with `passthru vm new` to rename",
            original_name.unwrap_or_default()
        )),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "name = \"t\"\nmemory = \"1G\"\ncpus = 1\n";

    fn chmod(p: &Path, mode: u32) {
        crate::testing::chmod(p, mode);
    }

    /// Runs as root only (the rule applies to root); the test suite runs as root on
    /// the machines that run the testbed.
    #[test]
    fn as_root_only_roots_own_specs_and_state_are_taken() {
        if !is_root() {
            eprintln!("SKIPPED as_root_only_roots_own_specs_and_state_are_taken: not root");
            return;
        }
        // tempdir is in /tmp: root's, sticky and writable by all.
        let dir = tempfile::tempdir().unwrap();
        let specs = dir.path().join("specs");
        crate::testing::mkdir(&specs);
        chmod(&specs, 0o755);
        let spec = specs.join("t.toml");
        crate::testing::write(&spec, SPEC);
        chmod(&spec, 0o644);
        check_trusted_as_root(&spec).unwrap();
        // Not yet existing: checked from its nearest directory.
        check_trusted_as_root(&specs.join("new/state")).unwrap();
        chmod(&spec, 0o664);
        let e = check_trusted_as_root(&spec).unwrap_err().to_string();
        assert!(e.contains("it is writable by its group (mode 664)"), "{e}");
        chmod(&spec, 0o646);
        let e = check_trusted_as_root(&spec).unwrap_err().to_string();
        assert!(e.contains("writable by its others"), "{e}");
        chmod(&spec, 0o644);
        std::os::unix::fs::chown(&spec, Some(65534), None).unwrap();
        let e = check_trusted_as_root(&spec).unwrap_err().to_string();
        assert!(e.contains("it is owned by uid 65534, not root"), "{e}");
        assert!(e.contains("chown root, chmod go-w"), "{e}");
        std::os::unix::fs::chown(&spec, Some(0), None).unwrap();
        // A directory above that others can write (and not sticky).
        chmod(&specs, 0o777);
        let e = check_trusted_as_root(&spec).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: it is writable", specs.display())),
            "{e}"
        );
        let e = check_trusted_as_root(&specs.join("state/vm"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{}: it is writable", specs.display())),
            "{e}"
        );
        chmod(&specs, 0o1777);
        check_trusted_as_root(&spec).unwrap();
        // A sticky directory as the state directory itself is not fine.
        let e = check_trusted_as_root(&specs).unwrap_err().to_string();
        assert!(e.contains("mode 1777"), "{e}");
        chmod(&specs, 0o755);
        // A symlink leads to what is checked.
        let theirs = dir.path().join("theirs.toml");
        crate::testing::write(&theirs, SPEC);
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let link = specs.join("link.toml");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        let e = check_trusted_as_root(&link).unwrap_err().to_string();
        assert!(e.starts_with(&theirs.display().to_string()), "{e}");
    }

    #[test]
    fn an_edit_must_parse_and_keep_the_name() {
        assert_eq!(edit_problem(Some("t"), SPEC), None);
        let other_name = SPEC.replace("\"t\"", "\"u\"");
        let p = edit_problem(Some("t"), &other_name).unwrap();
        assert!(p.starts_with("name: the VM is called 't'"), "{p}");
        // A spec that did not parse before the edit may get any name.
        assert_eq!(edit_problem(None, &other_name), None);
        assert!(edit_problem(Some("t"), "name = ").is_some());
    }
}
