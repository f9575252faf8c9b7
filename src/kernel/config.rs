//! The kernel's build configuration (`CONFIG_*`), from `/proc/config.gz` (when the
//! kernel was built with `CONFIG_IKCONFIG_PROC`) or `/boot/config-<release>`.
//!
//! Each option is built in (`=y`), a module (`=m`), a value (`="..."`, `=123`), or
//! not set (`# CONFIG_X is not set`, or simply absent).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};

/// The state of one option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigValue {
    /// `=y`.
    Builtin,
    /// `=m`.
    Module,
    /// Not set, or absent from the file.
    NotSet,
    /// Any other value, unquoted.
    Value(String),
}

/// A parsed kernel configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelConfig {
    /// Where it was read, relative to the host root (`/proc/config.gz`, …).
    pub source: PathBuf,
    /// Every option named in the file, `CONFIG_` prefix included.
    pub options: BTreeMap<String, ConfigValue>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] HostError),
    /// `config.gz` is not valid gzip.
    #[error("{} is not a valid gzip file", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
}

impl KernelConfig {
    /// Parses the text of a `.config` file.
    pub fn parse(_text: &str, source: impl Into<PathBuf>) -> Self {
        let _ = source.into();
        unimplemented!()
    }

    /// Reads `proc/config.gz`, else `boot/config-<release>`; `Ok(None)` when neither
    /// exists.
    pub fn read(_root: &HostRoot, _release: Option<&str>) -> Result<Option<Self>, ConfigError> {
        unimplemented!()
    }

    /// The state of `name` (with or without the `CONFIG_` prefix); absent is `NotSet`.
    pub fn get(&self, _name: &str) -> ConfigValue {
        unimplemented!()
    }
}
