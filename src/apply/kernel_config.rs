//! `passthru check --kernel-config FILE`: the kernel configuration fragment a rebuilt
//! kernel needs for VFIO (made by [`crate::check::kernel_config_fragment`]), written
//! where the user asked. Like the man pages ([`super::man`]), a file written for the
//! user, not a change to the host that needs a way back.

use std::path::{Path, PathBuf};

/// Why the fragment could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct KernelConfigError {
    /// The file asked for.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Writes `fragment` to `path` (replacing a file there).
pub fn write_fragment(path: &Path, fragment: &str) -> Result<(), KernelConfigError> {
    std::fs::write(path, fragment).map_err(|source| KernelConfigError {
        path: path.to_path_buf(),
        source,
    })
}
