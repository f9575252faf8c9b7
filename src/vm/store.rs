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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
    let s = arg.to_string_lossy();
    if s.contains('/') || s.ends_with(".toml") {
        arg.to_path_buf()
    } else {
        spec_dir().join(format!("{s}.toml"))
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
    /// The file is not a valid spec.
    #[error("{} is not a valid VM spec: {source}", .path.display())]
    Invalid {
        /// The spec's path.
        path: PathBuf,
        /// What is wrong.
        source: SpecError,
    },
}

/// Reads and validates the spec named or pointed at by `arg`.
pub fn load(arg: &Path) -> Result<(PathBuf, VmSpec), StoreError> {
    let path = spec_path(arg);
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
