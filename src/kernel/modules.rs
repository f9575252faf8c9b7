//! Kernel modules: which drivers the kernel has built in (`modules.builtin`), which
//! it can load (`modules.dep`), and which are loaded now (`/sys/module`).
//!
//! Module names treat `-` and `_` alike (`vfio-pci.ko` is the module `vfio_pci`).
//! Whether `vfio-pci` is built in matters: a built-in driver ignores
//! `/etc/modprobe.d` and must be configured with `vfio-pci.ids=` on the kernel
//! command line instead.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};

/// Whether the kernel can use a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ModuleAvailability {
    /// Compiled into the kernel image.
    Builtin,
    /// A loadable module at this path under `lib/modules/<release>/`.
    Module {
        /// e.g. `kernel/drivers/vfio/pci/vfio-pci.ko.xz`.
        path: String,
    },
    /// Neither.
    Absent,
}

/// The modules a kernel release ships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    /// Normalized names (`_`) of built-in modules.
    pub builtin: BTreeSet<String>,
    /// Normalized name → path of loadable modules.
    pub loadable: BTreeMap<String, String>,
}

/// Normalizes a module name: `vfio-pci` → `vfio_pci`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Parses `modules.builtin` and `modules.dep` texts.
    pub fn parse(_builtin: &str, _dep: &str) -> Self {
        unimplemented!()
    }

    /// Reads `lib/modules/<release>/modules.builtin` and `modules.dep` (also under
    /// `usr/lib/modules`); `Ok(None)` when neither exists.
    pub fn read(_root: &HostRoot, _release: &str) -> Result<Option<Self>, HostError> {
        unimplemented!()
    }

    /// Whether `name` is built in, loadable, or absent.
    pub fn availability(&self, _name: &str) -> ModuleAvailability {
        unimplemented!()
    }
}

/// The loadable modules that are loaded now: entries of `sys/module` with an
/// `initstate` file (built-in modules have none). Normalized names.
pub fn read_loaded(_root: &HostRoot) -> Result<BTreeSet<String>, HostError> {
    unimplemented!()
}
