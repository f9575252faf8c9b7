//! Everything `check` needs to know about a host, gathered in one pass.
//!
//! Each part is read independently: a part that cannot be read is kept as the reason
//! (`Err(String)`), so one unreadable file makes one finding "unknown" instead of
//! stopping the whole check.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::error_chain;
use crate::host::cpu::{CpuInfo, CpuTopology};
use crate::host::iommu::{self, AcpiTables, IommuGroups, IommuLog};
use crate::host::kernel::cmdline::Cmdline;
use crate::host::kernel::config::KernelConfig;
use crate::host::kernel::log::KernelLog;
use crate::host::kernel::modules::{self, ModuleIndex};
use crate::host::kernel::read_release;
use crate::host::root::HostRoot;

/// A fact, or why it is unknown.
pub type Known<T> = Result<T, String>;

/// What `/dev/kvm` looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmNode {
    /// Absent.
    Missing,
    /// Present and opened read-write (live hosts only), with the API version that
    /// `KVM_GET_API_VERSION` returned (12 on every kernel since 2.6.22).
    Usable {
        /// The answer to `KVM_GET_API_VERSION`, `None` when the ioctl failed.
        api_version: Option<i32>,
    },
    /// Present, but opening it failed (e.g. permission denied).
    NotOpenable(String),
    /// Present in a captured tree, where it cannot be opened.
    Captured,
}

/// Virtualization tools found on the host (paths relative to the root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    /// A QEMU system emulator.
    pub qemu: Option<PathBuf>,
    /// UEFI firmware images for VMs (OVMF / edk2).
    pub ovmf: Vec<PathBuf>,
    /// libvirt's daemon or client.
    pub libvirt: Option<PathBuf>,
    /// The software TPM (for Windows 11 guests).
    pub swtpm: Option<PathBuf>,
    /// QEMU's loadable modules, when QEMU is a modular build.
    pub qemu_modules: Option<QemuModuleDir>,
}

/// Where modular builds of QEMU keep their loadable modules (`ui-spice-core.so`,
/// `hw-display-qxl.so`, …): Debian/Ubuntu (multiarch libdir, as `dpkg -L
/// qemu-system-common` shows), Fedora/RHEL and openSUSE (`%{_libdir}/qemu` in their
/// spec files), Arch (the file lists of its `qemu-hw-*` packages). A directory counts
/// only with a module in it: Debian's `usr/lib/qemu` holds `qemu-bridge-helper`.
pub const QEMU_MODULE_DIRS: &[&str] = &[
    "usr/lib/x86_64-linux-gnu/qemu",
    "usr/lib64/qemu",
    "usr/lib/qemu",
];

/// QEMU's module directory and the modules it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuModuleDir {
    /// The directory, as an absolute path of the root's host.
    pub dir: PathBuf,
    /// The modules, by name (`ui-spice-core` for `ui-spice-core.so`).
    pub modules: BTreeSet<String>,
}

impl QemuModuleDir {
    /// The first of [`QEMU_MODULE_DIRS`] on `root` that holds a module.
    pub fn read(root: &HostRoot) -> Option<Self> {
        QEMU_MODULE_DIRS.iter().find_map(|dir| {
            let modules: BTreeSet<String> = root
                .list_dir_optional(dir)
                .ok()?
                .iter()
                .filter_map(|f| f.strip_suffix(".so"))
                .map(str::to_string)
                .collect();
            (!modules.is_empty()).then(|| Self {
                dir: PathBuf::from("/").join(dir),
                modules,
            })
        })
    }

    /// Whether module `name` (without `.so`) is there.
    pub fn has(&self, name: &str) -> bool {
        self.modules.contains(name)
    }
}

/// Where distributions install QEMU.
pub const QEMU_PATHS: &[&str] = &[
    "usr/bin/qemu-system-x86_64",
    "usr/libexec/qemu-kvm",
    "usr/bin/qemu-kvm",
];

/// Where distributions install OVMF (UEFI for x86-64 guests): Debian/Ubuntu, Fedora/RHEL,
/// Arch, openSUSE, Gentoo.
pub const OVMF_PATHS: &[&str] = &[
    "usr/share/OVMF/OVMF_CODE_4M.fd",
    "usr/share/OVMF/OVMF_CODE.fd",
    "usr/share/ovmf/OVMF.fd",
    "usr/share/edk2/ovmf/OVMF_CODE.fd",
    "usr/share/edk2/x64/OVMF_CODE.4m.fd",
    "usr/share/edk2/x64/OVMF_CODE.fd",
    "usr/share/edk2-ovmf/x64/OVMF_CODE.fd",
    "usr/share/qemu/ovmf-x86_64-code.bin",
    "usr/share/edk2-ovmf/OVMF_CODE.fd",
];

/// libvirt's daemons (monolithic or modular) and client.
pub const LIBVIRT_PATHS: &[&str] = &["usr/sbin/libvirtd", "usr/sbin/virtqemud", "usr/bin/virsh"];

/// The software TPM.
pub const SWTPM_PATHS: &[&str] = &["usr/bin/swtpm"];

/// Hugepage reservations, from `/proc/meminfo` and `sys/kernel/mm/hugepages`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hugepages {
    /// `HugePages_Total`.
    pub total: u64,
    /// `HugePages_Free`.
    pub free: u64,
    /// `Hugepagesize` in KiB.
    pub size_kib: u64,
    /// Page sizes the kernel offers (`hugepages-2048kB` → 2048).
    pub sizes_kib: Vec<u64>,
    /// The meminfo lines read, for evidence.
    pub evidence: Vec<String>,
}

impl Hugepages {
    /// Parses `/proc/meminfo` (the sizes come from sysfs separately).
    pub fn parse_meminfo(text: &str) -> Self {
        let mut h = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok());
            let slot = match key.trim() {
                "HugePages_Total" => &mut h.total,
                "HugePages_Free" => &mut h.free,
                "Hugepagesize" => &mut h.size_kib,
                _ => continue,
            };
            if let Some(n) = number {
                *slot = n;
                h.evidence.push(line.trim().to_string());
            }
        }
        h
    }
}

/// The distribution, from `etc/os-release` (`ID` and `ID_LIKE`), for remedies that
/// name packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    /// `ID` and the `ID_LIKE` entries, lower-case.
    pub ids: Vec<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
}

impl Distro {
    /// Parses `os-release` text.
    pub fn parse(text: &str) -> Self {
        let mut d = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'');
            match k.trim() {
                "ID" => d.ids.insert(0, v.to_lowercase()),
                "ID_LIKE" => d.ids.extend(v.split_whitespace().map(str::to_lowercase)),
                "PRETTY_NAME" => d.pretty_name = Some(v.to_string()),
                _ => {}
            }
        }
        d
    }

    /// Reads `etc/os-release` (else `usr/lib/os-release`) on `root`; a host without
    /// either is a distribution of no known family.
    pub fn read(root: &HostRoot) -> Self {
        root.read_optional("etc/os-release")
            .ok()
            .flatten()
            .or_else(|| root.read_optional("usr/lib/os-release").ok().flatten())
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// RHEL or one of its rebuilds (CentOS Stream, AlmaLinux, Rocky): the `fedora`
    /// family, but packaged differently (no SPICE in QEMU since RHEL 9).
    pub fn rhel_like(&self) -> bool {
        self.ids.first().is_some_and(|id| id != "fedora")
            && self.ids.iter().any(|id| id == "rhel" || id == "centos")
    }

    /// The family used to name packages: `debian`, `fedora`, `arch`, `suse`, or
    /// `None`.
    pub fn family(&self) -> Option<&'static str> {
        self.ids.iter().find_map(|id| match id.as_str() {
            "debian" | "ubuntu" => Some("debian"),
            "fedora" | "rhel" | "centos" => Some("fedora"),
            "arch" => Some("arch"),
            "suse" | "opensuse" => Some("suse"),
            _ => None,
        })
    }
}

/// The facts `check` judges.
#[derive(Debug)]
pub struct HostFacts {
    /// The root they were read from.
    pub root: HostRoot,
    /// `/proc/cpuinfo`.
    pub cpu: Known<CpuInfo>,
    /// CPU topology.
    pub topology: Known<CpuTopology>,
    /// Kernel release.
    pub release: Option<String>,
    /// `/proc/cmdline`.
    pub cmdline: Known<Cmdline>,
    /// Kernel build configuration (`None`: not available on this host).
    pub config: Known<Option<KernelConfig>>,
    /// Modules the kernel has (`None`: no modules directory for this release).
    pub modules: Known<Option<ModuleIndex>>,
    /// Modules loaded now.
    pub loaded: Known<BTreeSet<String>>,
    /// The kernel log (`None`: no `dev/kmsg`).
    pub log: Known<Option<KernelLog>>,
    /// IOMMU verdicts from the log (empty when the log is unknown).
    pub iommu_log: IommuLog,
    /// ACPI IOMMU tables, and whether the tables directory exists at all.
    pub acpi: AcpiTables,
    /// Whether `sys/firmware/acpi/tables` exists (without it absence proves nothing).
    pub acpi_visible: bool,
    /// `sys/class/iommu` entries.
    pub iommu_units: Vec<String>,
    /// IOMMU groups.
    pub groups: Known<IommuGroups>,
    /// `/dev/kvm`.
    pub kvm: KvmNode,
    /// Virtualization tools.
    pub tools: Tools,
    /// Hugepages.
    pub hugepages: Known<Hugepages>,
    /// The distribution.
    pub distro: Distro,
    /// `sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts` is `Y`.
    pub unsafe_interrupts_allowed: bool,
}

fn first_existing(root: &HostRoot, paths: &[&str]) -> Option<PathBuf> {
    paths
        .iter()
        .find(|p| root.exists(p))
        .map(|p| PathBuf::from("/").join(p))
}

fn kvm_node(root: &HostRoot) -> KvmNode {
    if !root.exists("dev/kvm") {
        return KvmNode::Missing;
    }
    if !root.is_system() {
        return KvmNode::Captured;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.path("dev/kvm"))
    {
        Ok(file) => KvmNode::Usable {
            api_version: kvm_api_version(&file),
        },
        Err(e) => KvmNode::NotOpenable(e.to_string()),
    }
}

/// `KVM_GET_API_VERSION` (`_IO(KVMIO, 0x00)`, KVMIO = 0xAE): proves the node is KVM.
fn kvm_api_version(file: &std::fs::File) -> Option<i32> {
    let v = crate::apply::sys::kvm_get_api_version(file);
    (v >= 0).then_some(v)
}

impl HostFacts {
    /// Facts of which nothing is known: every part unknown or absent, for snapshots
    /// built in memory (a test sets the parts it plans from). `root` is kept only
    /// as where the facts would have come from.
    pub fn unknown(root: HostRoot) -> Self {
        let why = || "not read".to_string();
        Self {
            root,
            cpu: Err(why()),
            topology: Err(why()),
            release: None,
            cmdline: Err(why()),
            config: Ok(None),
            modules: Ok(None),
            loaded: Err(why()),
            log: Ok(None),
            iommu_log: IommuLog::default(),
            acpi: AcpiTables::default(),
            acpi_visible: false,
            iommu_units: Vec::new(),
            groups: Err(why()),
            kvm: KvmNode::Missing,
            tools: Tools::default(),
            hugepages: Err(why()),
            distro: Distro::default(),
            unsafe_interrupts_allowed: false,
        }
    }
}

impl HostFacts {
    /// Reads every fact from `root`.
    pub fn gather(root: &HostRoot) -> Self {
        let release = read_release(root).ok().flatten();
        // The slowest reads on a live host, the kernel log (one record per read(2))
        // and the compressed kernel config: on another thread, while the others go on.
        let config_release = release.clone();
        let pending = root.read_in_background(move |root| {
            (
                KernelLog::read(root),
                KernelConfig::read(root, config_release.as_deref()),
            )
        });
        let cmdline = root
            .read_to_string("proc/cmdline")
            .map(|s| Cmdline::parse(&s))
            .map_err(|e| error_chain(&e));
        let modules = match &release {
            Some(r) => ModuleIndex::read(root, r).map_err(|e| error_chain(&e)),
            None => Err("the kernel release is unknown (no proc/sys/kernel/osrelease)".into()),
        };
        let hugepages = root.read_to_string("proc/meminfo").map(|text| {
            let mut h = Hugepages::parse_meminfo(&text);
            h.sizes_kib = root
                .list_dir_optional("sys/kernel/mm/hugepages")
                .unwrap_or_default()
                .iter()
                .filter_map(|n| {
                    n.strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect();
            h
        });
        let (log, config) = pending.wait();
        let log = log.map_err(|e| error_chain(&e));
        let config = config.map_err(|e| error_chain(&e));
        let iommu_log = match &log {
            Ok(Some(log)) => IommuLog::analyse(log),
            _ => IommuLog::default(),
        };
        Self {
            cpu: CpuInfo::read(root).map_err(|e| error_chain(&e)),
            topology: CpuTopology::read(root).map_err(|e| error_chain(&e)),
            release,
            cmdline,
            config,
            modules,
            loaded: modules::read_loaded(root).map_err(|e| error_chain(&e)),
            log,
            iommu_log,
            acpi: AcpiTables::read(root),
            acpi_visible: root.exists("sys/firmware/acpi/tables"),
            iommu_units: iommu::read_units(root).unwrap_or_default(),
            groups: iommu::read_groups(root).map_err(|e| error_chain(&e)),
            kvm: kvm_node(root),
            tools: Tools {
                qemu: first_existing(root, QEMU_PATHS),
                ovmf: OVMF_PATHS
                    .iter()
                    .filter(|p| root.exists(p))
                    .map(|p| PathBuf::from("/").join(p))
                    .collect(),
                libvirt: first_existing(root, LIBVIRT_PATHS),
                swtpm: first_existing(root, SWTPM_PATHS),
                qemu_modules: QemuModuleDir::read(root),
            },
            hugepages: hugepages.map_err(|e| error_chain(&e)),
            distro: Distro::read(root),
            unsafe_interrupts_allowed: root
                .read_optional("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
                .ok()
                .flatten()
                .is_some_and(|v| v.trim() == "Y" || v.trim() == "1"),
            root: root.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_hugepages() {
        // From a Debian 12 host with 8 GiB reserved as 2 MiB pages.
        let text = "MemTotal:       32779276 kB\nHugePages_Total:    4096\nHugePages_Free:     4096\nHugePages_Rsvd:        0\nHugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:         8388608 kB\n";
        let h = Hugepages::parse_meminfo(text);
        assert_eq!((h.total, h.free, h.size_kib), (4096, 4096, 2048));
        assert_eq!(h.evidence.len(), 3);
    }

    #[test]
    fn os_release_families() {
        let pop = Distro::parse("NAME=\"Pop!_OS\"\nID=pop\nID_LIKE=\"ubuntu debian\"\nPRETTY_NAME=\"Pop!_OS 22.04 LTS\"\n");
        assert_eq!(pop.family(), Some("debian"));
        assert_eq!(pop.pretty_name.as_deref(), Some("Pop!_OS 22.04 LTS"));
        let alma = Distro::parse("ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(alma.family(), Some("fedora"));
        assert_eq!(Distro::parse("ID=arch\n").family(), Some("arch"));
        assert_eq!(Distro::parse("ID=nixos\n").family(), None);
        assert!(alma.rhel_like());
        assert!(!Distro::parse("ID=fedora\n").rhel_like());
        let stream = Distro::parse("ID=\"centos\"\nID_LIKE=\"rhel fedora\"\n");
        assert!(stream.rhel_like() && stream.family() == Some("fedora"));
    }

    #[test]
    fn qemu_module_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(QemuModuleDir::read(&root), None);
        // Debian: usr/lib/qemu holds only the bridge helper; the modules are in the
        // multiarch directory (names as qemu-system-common 1:10.0.2 installs them).
        crate::testing::mkdir(dir.path().join("usr/lib/qemu"));
        crate::testing::write(dir.path().join("usr/lib/qemu/qemu-bridge-helper"), "");
        assert_eq!(QemuModuleDir::read(&root), None);
        let multiarch = dir.path().join("usr/lib/x86_64-linux-gnu/qemu");
        crate::testing::mkdir(&multiarch);
        for m in ["audio-alsa.so", "hw-usb-host.so", "ui-curses.so"] {
            crate::testing::write(multiarch.join(m), "");
        }
        let m = QemuModuleDir::read(&root).unwrap();
        assert_eq!(m.dir, PathBuf::from("/usr/lib/x86_64-linux-gnu/qemu"));
        assert!(m.has("hw-usb-host") && !m.has("ui-spice-core"));
        assert_eq!(m.modules.len(), 3);
    }
}
