//! Kernel modules: which drivers the kernel has built in (`modules.builtin`), which
//! it can load (`modules.dep`), and which are loaded now (`/sys/module`).
//!
//! Module names treat `-` and `_` alike (`vfio-pci.ko` is the module `vfio_pci`).
//! Whether `vfio-pci` is built in matters: a built-in driver ignores
//! `/etc/modprobe.d` and must be configured with `vfio-pci.ids=` on the kernel
//! command line instead.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host::root::{HostError, HostRoot};

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

/// The module name a file path stands for: the file name without `.ko` and any
/// compression suffix (`.ko.xz`, `.ko.zst`, `.ko.gz`), normalized. `None` when the
/// path does not name a kernel object.
pub fn module_name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let at = file.find(".ko")?;
    let (stem, suffix) = file.split_at(at);
    let after = &suffix[3..];
    if stem.is_empty() || !(after.is_empty() || after.starts_with('.')) {
        return None;
    }
    Some(normalize(stem))
}

impl ModuleIndex {
    /// Parses `modules.builtin` and `modules.dep` texts.
    ///
    /// `modules.builtin` lists one path per line (`kernel/drivers/vfio/vfio.ko`);
    /// `modules.dep` lists `path: dependency paths…`, the paths relative to
    /// `lib/modules/<release>/` and compressed as the distribution ships them.
    pub fn parse(builtin: &str, dep: &str) -> Self {
        let builtin = builtin
            .lines()
            .filter_map(|line| module_name_from_path(line.trim()))
            .collect();
        let mut loadable = BTreeMap::new();
        for line in dep.lines() {
            let Some((path, _deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if let Some(name) = module_name_from_path(path) {
                loadable.entry(name).or_insert_with(|| path.to_string());
            }
        }
        Self { builtin, loadable }
    }

    /// Reads `lib/modules/<release>/modules.builtin` and `modules.dep` (also under
    /// `usr/lib/modules`); `Ok(None)` when neither exists.
    ///
    /// Paths are resolved inside the root, so a merged-`/usr` capture whose `lib`
    /// is a link to `/usr/lib` is read from the capture, not from this machine.
    pub fn read(root: &HostRoot, release: &str) -> Result<Option<Self>, HostError> {
        if release.is_empty() || release.contains('/') || release == ".." {
            return Ok(None);
        }
        for base in ["lib/modules", "usr/lib/modules"] {
            let dir = format!("{base}/{release}");
            let builtin = read_inside(root, &format!("{dir}/modules.builtin"))?;
            let dep = read_inside(root, &format!("{dir}/modules.dep"))?;
            if builtin.is_some() || dep.is_some() {
                return Ok(Some(Self::parse(
                    builtin.as_deref().unwrap_or(""),
                    dep.as_deref().unwrap_or(""),
                )));
            }
        }
        Ok(None)
    }

    /// Whether `name` is built in, loadable, or absent.
    pub fn availability(&self, name: &str) -> ModuleAvailability {
        let name = normalize(name);
        if self.builtin.contains(&name) {
            ModuleAvailability::Builtin
        } else if let Some(path) = self.loadable.get(&name) {
            ModuleAvailability::Module { path: path.clone() }
        } else {
            ModuleAvailability::Absent
        }
    }
}

/// Reads `rel` after resolving its symlinks inside the root; `Ok(None)` when any
/// part of it is missing.
fn read_inside(root: &HostRoot, rel: &str) -> Result<Option<String>, HostError> {
    match root.resolve(rel) {
        Ok(real) => root.read_optional(real),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The loadable modules that are loaded now: entries of `sys/module` with an
/// `initstate` file (built-in modules have none). Normalized names.
pub fn read_loaded(root: &HostRoot) -> Result<BTreeSet<String>, HostError> {
    Ok(root
        .list_dir_optional("sys/module")?
        .into_iter()
        .filter(|name| root.exists(format!("sys/module/{name}/initstate")))
        .map(|name| normalize(&name))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Lines of Debian 12's `/lib/modules/6.1.0-13-amd64/modules.dep` (xz
    /// compressed modules, as `depmod` writes them).
    const DEBIAN_DEP: &str = "\
kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/drivers/vfio/vfio_iommu_type1.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz
kernel/drivers/vfio/vfio.ko.xz:
kernel/virt/lib/irqbypass.ko.xz:
kernel/arch/x86/kvm/kvm-intel.ko.xz: kernel/arch/x86/kvm/kvm.ko.xz
";

    /// Lines of Debian 12's `modules.builtin`.
    const DEBIAN_BUILTIN: &str = "\
kernel/drivers/iommu/intel/intel-iommu.ko
kernel/drivers/pci/pci-stub.ko
kernel/drivers/usb/host/xhci-hcd.ko
";

    #[test]
    fn parses_builtin_and_dep() {
        let idx = ModuleIndex::parse(DEBIAN_BUILTIN, DEBIAN_DEP);
        assert!(idx.builtin.contains("pci_stub"));
        assert!(idx.builtin.contains("xhci_hcd"));
        assert_eq!(idx.builtin.len(), 3);
        // Dependencies alone are not entries; every line's own module is.
        assert_eq!(idx.loadable.len(), 6);
        assert_eq!(
            idx.availability("vfio-pci"),
            ModuleAvailability::Module {
                path: "kernel/drivers/vfio/pci/vfio-pci.ko.xz".into()
            }
        );
        assert_eq!(
            idx.availability("vfio_pci_core"),
            ModuleAvailability::Module {
                path: "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz".into()
            }
        );
        assert_eq!(idx.availability("pci-stub"), ModuleAvailability::Builtin);
        assert_eq!(idx.availability("vfio_virqfd"), ModuleAvailability::Absent);
    }

    #[test]
    fn every_compression_suffix() {
        assert_eq!(
            module_name_from_path("kernel/drivers/vfio/pci/vfio-pci.ko"),
            Some("vfio_pci".into())
        );
        // Fedora compresses with xz, Arch with zstd, some with gzip.
        assert_eq!(
            module_name_from_path("kernel/drivers/vfio/vfio_iommu_type1.ko.xz"),
            Some("vfio_iommu_type1".into())
        );
        assert_eq!(
            module_name_from_path("kernel/drivers/vfio/vfio.ko.zst"),
            Some("vfio".into())
        );
        assert_eq!(
            module_name_from_path("kernel/drivers/net/e1000e/e1000e.ko.gz"),
            Some("e1000e".into())
        );
        assert_eq!(module_name_from_path("kernel/drivers/x/readme.txt"), None);
        assert_eq!(module_name_from_path("kernel/drivers/x/foo.kobj"), None);
        assert_eq!(module_name_from_path(""), None);
        // An Arch-style modules.dep line with zstd.
        let idx = ModuleIndex::parse(
            "",
            "kernel/drivers/vfio/pci/vfio-pci.ko.zst: kernel/drivers/vfio/pci/vfio-pci-core.ko.zst\n",
        );
        assert_eq!(
            idx.availability("vfio_pci"),
            ModuleAvailability::Module {
                path: "kernel/drivers/vfio/pci/vfio-pci.ko.zst".into()
            }
        );
    }

    #[test]
    fn builtin_wins_over_a_stray_module_file() {
        let idx = ModuleIndex::parse(
            "kernel/drivers/vfio/pci/vfio-pci.ko\n",
            "kernel/drivers/vfio/pci/vfio-pci.ko: \n",
        );
        assert_eq!(idx.availability("vfio_pci"), ModuleAvailability::Builtin);
    }

    fn write(dir: &std::path::Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        crate::testing::mkdir(p.parent().unwrap());
        crate::testing::write(p, text);
    }

    #[test]
    fn reads_lib_modules() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "lib/modules/6.1.0-13-amd64/modules.dep",
            DEBIAN_DEP,
        );
        let root = HostRoot::new(dir.path());
        let idx = ModuleIndex::read(&root, "6.1.0-13-amd64").unwrap().unwrap();
        assert!(idx.builtin.is_empty());
        assert!(idx.loadable.contains_key("kvm_intel"));
        assert!(ModuleIndex::read(&root, "6.5.0").unwrap().is_none());
        assert!(ModuleIndex::read(&root, "").unwrap().is_none());
    }

    #[test]
    fn reads_usr_lib_modules_through_a_merged_usr_link() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "usr/lib/modules/6.5.6-300.fc39.x86_64/modules.builtin",
            DEBIAN_BUILTIN,
        );
        let root = HostRoot::new(dir.path());
        let idx = ModuleIndex::read(&root, "6.5.6-300.fc39.x86_64")
            .unwrap()
            .unwrap();
        assert!(idx.builtin.contains("intel_iommu"));
        // A merged-/usr root: `lib` is an absolute link that must stay inside.
        std::os::unix::fs::symlink("/usr/lib", dir.path().join("lib")).unwrap();
        let idx = ModuleIndex::read(&root, "6.5.6-300.fc39.x86_64")
            .unwrap()
            .unwrap();
        assert!(idx.builtin.contains("xhci_hcd"));
    }

    #[test]
    fn loaded_modules_have_initstate() {
        let dir = tempfile::tempdir().unwrap();
        // As in /sys/module: loadable modules have `initstate` ("live"); built-in
        // ones with parameters have only `parameters/`.
        write(dir.path(), "sys/module/vfio_pci/initstate", "live\n");
        write(dir.path(), "sys/module/kvm_intel/initstate", "live\n");
        write(dir.path(), "sys/module/pci_stub/parameters/ids", "\n");
        crate::testing::mkdir(dir.path().join("sys/module/xhci_hcd"));
        let root = HostRoot::new(dir.path());
        let loaded = read_loaded(&root).unwrap();
        assert_eq!(
            loaded.into_iter().collect::<Vec<_>>(),
            vec!["kvm_intel".to_string(), "vfio_pci".to_string()]
        );
        let empty = HostRoot::new(dir.path().join("nothing"));
        assert!(read_loaded(&empty).unwrap().is_empty());
    }
}
