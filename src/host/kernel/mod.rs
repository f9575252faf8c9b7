//! The running kernel: release, command line, build configuration, modules, log.

pub mod cmdline;
pub mod config;
pub mod log;
pub mod modules;

use crate::host::root::{HostError, HostRoot};

/// The kernel release (`uname -r`), read from `proc/sys/kernel/osrelease`.
pub fn read_release(root: &HostRoot) -> Result<Option<String>, HostError> {
    Ok(root
        .read_optional("proc/sys/kernel/osrelease")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}
