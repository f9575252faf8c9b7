//! The host, read once: one [`HostSnapshot::gather`] feeds `check`, `list`, `bind`,
//! `enable`, `verify` and the VM commands, and the planners (`plan::bind::plan`,
//! `plan::enable::plan`, `vm::resolve::resolve`) take the snapshot and read nothing
//! themselves. Their results then depend only on what the snapshot holds, so a unit
//! test builds a snapshot in memory (its fields are plain data) and plans from it
//! without a single file.
//!
//! Some parts cost more than others to gather: the processes holding devices open
//! (every `/proc/<pid>/fd`), the kernel log and module index behind `check`'s facts,
//! the boot files `enable` edits, and what a VM's spec names. [`Needs`] says which
//! parts a command wants; the others stay empty (`None` for the optional parts), and
//! a planner given a snapshot without a part it needs says so ([`NotGathered`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::host::boot::{self, BootSetup};
use crate::host::facts::HostFacts;
use crate::host::holders::{self, Holders};
use crate::host::pci::device::PciError;
use crate::host::pci::names::PciNames;
use crate::host::pci::PciDevice;
use crate::host::records::{self, BindRecord, StateError};
use crate::host::root::HostRoot;
use crate::host::usage::HostUse;

/// Which parts of the host a command gathers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The PCI devices.
    pub devices: bool,
    /// Their names, passthru's bind records and what the host uses the devices for.
    pub usage: bool,
    /// The processes holding devices open and the framebuffer console (bind).
    pub holders: bool,
    /// `check`'s facts (CPU, kernel, IOMMU, tools).
    pub facts: bool,
    /// How the host boots and the files `enable` edits.
    pub boot: bool,
}

impl Needs {
    const NONE: Self = Self {
        devices: false,
        usage: false,
        holders: false,
        facts: false,
        boot: false,
    };
    /// `passthru check`.
    pub const CHECK: Self = Self {
        facts: true,
        ..Self::NONE
    };
    /// `passthru list`.
    pub const LIST: Self = Self {
        devices: true,
        usage: true,
        ..Self::NONE
    };
    /// `passthru bind` / `unbind`, and the binds of `vm run`.
    pub const BIND: Self = Self {
        holders: true,
        ..Self::LIST
    };
    /// `passthru enable` / `disable`.
    pub const ENABLE: Self = Self {
        facts: true,
        boot: true,
        ..Self::LIST
    };
    /// `passthru verify`.
    pub const VERIFY: Self = Self {
        devices: true,
        facts: true,
        ..Self::NONE
    };
    /// The VM commands (with [`HostSnapshot::gather_for_vm`], which reads the CPUs
    /// itself); `vm check` adds what `bind` needs, for what it would say.
    pub const VM: Self = Self {
        devices: true,
        ..Self::NONE
    };
}

/// A part of the snapshot that a planner needs was not gathered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host snapshot was gathered without {0}")]
pub struct NotGathered(pub &'static str);

/// How the host boots, and the files `enable` reads to plan its edits.
#[derive(Debug, Clone)]
pub struct BootFacts {
    /// The initramfs generator and the bootloader.
    pub setup: BootSetup,
    /// The files and directories `enable` plans from (see
    /// [`crate::plan::enable::files_to_read`]).
    pub files: FileView,
}

/// The host as read once.
#[derive(Debug, Default)]
pub struct HostSnapshot {
    /// Whether it was read from the running system (`/`) rather than a captured tree:
    /// only there do processes, drivers' `module` links and `/dev/kvm` say what they
    /// say about a live kernel.
    pub is_system: bool,
    /// Every PCI device ([`Needs::devices`]).
    pub devices: Vec<PciDevice>,
    /// Vendor and device names ([`Needs::usage`]).
    pub names: PciNames,
    /// The devices the host itself uses ([`Needs::usage`]).
    pub usage: HostUse,
    /// passthru's bind records ([`Needs::usage`]).
    pub records: Vec<BindRecord>,
    /// Bind records that could not be read (they only cannot mark a device as held:
    /// the command decides whether to warn).
    pub record_errors: Vec<StateError>,
    /// Processes holding devices open ([`Needs::holders`]).
    pub holders: Holders,
    /// Whether a virtual console runs on a framebuffer, which the boot display then
    /// drives ([`Needs::holders`]).
    pub console_on_framebuffer: bool,
    /// `check`'s facts ([`Needs::facts`]).
    pub facts: Option<HostFacts>,
    /// The boot setup and the files `enable` edits ([`Needs::boot`]).
    pub boot: Option<BootFacts>,
    /// What a VM's spec needs of the host ([`HostSnapshot::gather_for_vm`]).
    pub vm: Option<crate::vm::host::VmHost>,
}

impl HostSnapshot {
    /// Reads the parts of `root` that `needs` names. Fails only when the PCI devices
    /// cannot be listed at all; every other part that cannot be read is kept as
    /// unknown or empty.
    pub fn gather(root: &HostRoot, needs: Needs) -> Result<Self, PciError> {
        let mut s = Self {
            is_system: root.is_system(),
            ..Self::default()
        };
        if needs.devices || needs.usage || needs.holders || needs.boot {
            s.devices = crate::host::pci::device::read_all(root)?;
        }
        if needs.usage || needs.boot {
            let (records, errors) = records::read_all(root);
            s.usage = HostUse::read(root, &records);
            s.records = records;
            s.record_errors = errors;
            s.names = PciNames::load();
        }
        if needs.holders {
            s.holders = holders::find(root, &s.devices);
            s.console_on_framebuffer = console_on_framebuffer(root);
        }
        if needs.facts || needs.boot {
            s.facts = Some(HostFacts::gather(root));
        }
        if needs.boot {
            let release = s.facts.as_ref().and_then(|f| f.release.clone());
            let drivers = driver_names(&s.devices, &s.records);
            s.boot = Some(BootFacts {
                setup: boot::detect(root),
                files: FileView::gather(
                    root,
                    &crate::plan::enable::files_to_read(release.as_deref(), &drivers),
                ),
            });
        }
        Ok(s)
    }

    /// [`HostSnapshot::gather`], and what `spec` needs of the host.
    pub fn gather_for_vm(
        root: &HostRoot,
        needs: Needs,
        spec: &crate::vm::spec::VmSpec,
    ) -> Result<Self, PciError> {
        let mut s = Self::gather(root, needs)?;
        s.vm = Some(crate::vm::host::VmHost::gather(root, spec));
        Ok(s)
    }

    /// `check`'s facts.
    pub fn facts(&self) -> Result<&HostFacts, NotGathered> {
        self.facts.as_ref().ok_or(NotGathered("check's facts"))
    }

    /// The boot setup and files.
    pub fn boot(&self) -> Result<&BootFacts, NotGathered> {
        self.boot.as_ref().ok_or(NotGathered("the boot files"))
    }

    /// What the VM needs of the host.
    pub fn vm(&self) -> Result<&crate::vm::host::VmHost, NotGathered> {
        self.vm.as_ref().ok_or(NotGathered("the VM's host facts"))
    }

    /// The bind planner's view of the snapshot.
    pub fn bind_inputs(&self) -> crate::plan::bind::Inputs<'_> {
        crate::plan::bind::Inputs {
            devices: &self.devices,
            names: &self.names,
            host: &self.usage,
            holders: &self.holders,
            console_on_framebuffer: self.console_on_framebuffer,
            records: &self.records,
        }
    }
}

/// The drivers the devices use now and had before passthru bound them.
fn driver_names(devices: &[PciDevice], records: &[BindRecord]) -> BTreeSet<String> {
    devices
        .iter()
        .filter_map(|d| d.driver.clone())
        .chain(records.iter().filter_map(|r| r.original_driver.clone()))
        .collect()
}

/// Whether a virtual console runs on a framebuffer (`sys/class/vtconsole/vtcon*`
/// with name "frame buffer device" and `bind` = 1): then the boot display drives it.
pub fn console_on_framebuffer(root: &HostRoot) -> bool {
    root.list_dir_optional("sys/class/vtconsole")
        .unwrap_or_default()
        .iter()
        .any(|vt| {
            let read = |f: &str| {
                root.read_optional(format!("sys/class/vtconsole/{vt}/{f}"))
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            read("name").contains("frame buffer") && read("bind").trim() == "1"
        })
}

/// A path a planner will ask about, for [`FileView::gather`] to read beforehand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Whether it exists, and its contents.
    Read(String),
    /// Whether it exists.
    Exists(String),
    /// Whether a directory exists, its entries, and the contents of each entry.
    ReadDir(String),
    /// The target of a symlink, and whether its parent directory exists.
    Link(String),
}

/// What a read of one file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFact {
    /// There is no such file.
    NotFound,
    /// Its bytes.
    Bytes(Vec<u8>),
    /// It exists but could not be read, and why.
    Failed(String),
}

/// One path as it was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFact {
    /// It exists (as anything).
    pub exists: bool,
    /// Its contents, when asked for.
    pub read: Option<ReadFact>,
    /// Its entries, when it was listed as a directory.
    pub entries: Option<Vec<String>>,
    /// Its target, when it was read as a symlink (`None` inside: not a link).
    pub link: Option<Option<PathBuf>>,
}

/// Files read beforehand, by root-relative path, for a planner that must not read
/// the host itself. Built by [`FileView::gather`] or, in tests, by hand
/// ([`FileView::with_file`], [`FileView::with_dir`]); a path a hand-built view does
/// not hold does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileView {
    paths: BTreeMap<String, PathFact>,
    /// Gathered from a root (then a path asked for but never read is a bug in the
    /// list of paths to read, which debug builds report).
    gathered: bool,
}

fn key(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    p.strip_prefix("/")
        .unwrap_or(p)
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string()
}

impl FileView {
    /// Reads every path `wants` names from `root`.
    pub fn gather(root: &HostRoot, wants: &[Want]) -> Self {
        let mut view = Self {
            gathered: true,
            ..Self::default()
        };
        for want in wants {
            match want {
                Want::Read(p) => view.read_one(root, p),
                Want::Exists(p) => {
                    let exists = root.exists(p);
                    view.paths.entry(key(p)).or_default().exists = exists;
                }
                Want::ReadDir(dir) => {
                    let entries = root.list_dir_optional(dir).unwrap_or_default();
                    for name in &entries {
                        view.read_one(root, &format!("{dir}/{name}"));
                    }
                    let fact = view.paths.entry(key(dir)).or_default();
                    fact.exists = root.exists(dir);
                    fact.entries = Some(entries);
                }
                Want::Link(p) => {
                    let link = root.read_link(p).ok();
                    let fact = view.paths.entry(key(p)).or_default();
                    fact.link = Some(link);
                    if let Some(parent) = Path::new(p).parent() {
                        let exists = root.exists(parent);
                        view.paths.entry(key(parent)).or_default().exists = exists;
                    }
                }
            }
        }
        view
    }

    fn read_one(&mut self, root: &HostRoot, path: &str) {
        let read = match root.read_bytes(path) {
            Ok(bytes) => ReadFact::Bytes(bytes),
            Err(e) if e.is_not_found() => ReadFact::NotFound,
            Err(e) => ReadFact::Failed(e.to_string()),
        };
        let exists = root.exists(path);
        let fact = self.paths.entry(key(path)).or_default();
        fact.exists = exists;
        fact.read = Some(read);
    }

    /// Adds a file with `text` (for views built by hand).
    pub fn with_file(mut self, path: &str, text: &str) -> Self {
        let fact = self.paths.entry(key(path)).or_default();
        fact.exists = true;
        fact.read = Some(ReadFact::Bytes(text.as_bytes().to_vec()));
        self.add_to_parent(path);
        self
    }

    /// Adds an empty directory (for views built by hand); files added under it are
    /// its entries.
    pub fn with_dir(mut self, path: &str) -> Self {
        let fact = self.paths.entry(key(path)).or_default();
        fact.exists = true;
        fact.entries.get_or_insert_with(Vec::new);
        self
    }

    fn add_to_parent(&mut self, path: &str) {
        let k = key(path);
        if let Some((dir, name)) = k.rsplit_once('/') {
            if let Some(entries) = self.paths.get_mut(dir).and_then(|f| f.entries.as_mut()) {
                if !entries.iter().any(|e| e == name) {
                    entries.push(name.to_string());
                }
            }
        }
    }

    fn fact(&self, path: impl AsRef<Path>) -> Option<&PathFact> {
        let k = key(path);
        let fact = self.paths.get(&k);
        // A path in a directory that was listed, and not among its entries, is known
        // not to exist.
        let in_listed_dir = || {
            k.rsplit_once('/')
                .and_then(|(dir, _)| self.paths.get(dir))
                .is_some_and(|d| d.entries.is_some() || !d.exists)
        };
        debug_assert!(
            fact.is_some() || !self.gathered || in_listed_dir(),
            "{k} was not gathered for the planner that asks for it"
        );
        fact
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        self.fact(path).is_some_and(|f| f.exists)
    }

    /// The contents of `path`: `Ok(None)` when it does not exist, `Err` (why) when it
    /// exists but could not be read.
    pub fn bytes(&self, path: impl AsRef<Path>) -> Result<Option<&[u8]>, &str> {
        match self.fact(path).and_then(|f| f.read.as_ref()) {
            None | Some(ReadFact::NotFound) => Ok(None),
            Some(ReadFact::Bytes(b)) => Ok(Some(b)),
            Some(ReadFact::Failed(why)) => Err(why),
        }
    }

    /// The contents of `path` as text (bytes that are not UTF-8 replaced), `None`
    /// when it does not exist or could not be read.
    pub fn text(&self, path: impl AsRef<Path>) -> Option<String> {
        self.bytes(path)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The entries of directory `path` (none when it does not exist).
    pub fn entries(&self, path: impl AsRef<Path>) -> Vec<String> {
        self.fact(path)
            .and_then(|f| f.entries.clone())
            .unwrap_or_default()
    }

    /// The target of symlink `path`, `None` when it is none.
    pub fn link(&self, path: impl AsRef<Path>) -> Option<&Path> {
        self.fact(path)
            .and_then(|f| f.link.as_ref())
            .and_then(|l| l.as_deref())
    }
}

/// Snapshots built in memory, for the planners' unit tests.
#[cfg(test)]
pub(crate) mod in_memory {
    use super::*;
    use crate::host::cpu::{CpuInfo, CpuTopology, LogicalCpu};
    use crate::host::usage::RootDiskController;

    fn device(
        addr: &str,
        ids: (u16, u16),
        class: u32,
        driver: &str,
        group: u32,
        numa: i32,
    ) -> PciDevice {
        PciDevice {
            address: addr.parse().unwrap(),
            vendor_id: ids.0,
            device_id: ids.1,
            class,
            driver: Some(driver.to_string()),
            iommu_group: Some(group),
            numa_node: Some(numa),
            ..PciDevice::default()
        }
    }

    /// Two NUMA nodes: CPUs 0-4 on node 0, 5-7 on node 1 (one package and one L3
    /// cache each, no SMT).
    pub(crate) fn two_nodes() -> CpuTopology {
        CpuTopology {
            cpus: (0..8)
                .map(|cpu| {
                    let node = u32::from(cpu >= 5);
                    LogicalCpu {
                        cpu,
                        online: true,
                        package: Some(node),
                        die: Some(0),
                        core: Some(cpu),
                        thread_siblings: vec![cpu],
                        l3_shared_with: if node == 0 {
                            (0..5).collect()
                        } else {
                            (5..8).collect()
                        },
                        numa_node: Some(node),
                        core_kind: None,
                    }
                })
                .collect(),
        }
    }

    /// A desktop with [`two_nodes`]: a GPU with its audio function behind a root
    /// port (group 1, node 1), the boot display (group 2) and the NVMe drive holding
    /// `/` (group 7). Intel VT-d is in the ACPI tables; the kernel is a Debian one
    /// with GRUB and initramfs-tools.
    pub(crate) fn desktop() -> HostSnapshot {
        let mut bridge = device(
            "0000:00:01.0",
            (0x8086, 0x1901),
            0x060400,
            "pcieport",
            1,
            -1,
        );
        bridge.numa_node = None;
        let mut gpu = device("0000:01:00.0", (0x10de, 0x2484), 0x030000, "nvidia", 1, 1);
        gpu.parents = vec![bridge.address];
        let mut audio = device(
            "0000:01:00.1",
            (0x10de, 0x228b),
            0x040300,
            "snd_hda_intel",
            1,
            1,
        );
        audio.parents = vec![bridge.address];
        let mut igpu = device("0000:00:02.0", (0x8086, 0x3e92), 0x030000, "i915", 2, 0);
        igpu.boot_vga = Some(true);
        let nvme = device("0000:02:00.0", (0x144d, 0xa808), 0x010802, "nvme", 7, 0);
        let mut facts = HostFacts::unknown(HostRoot::new("/nonexistent"));
        facts.acpi.dmar = true;
        facts.acpi_visible = true;
        facts.release = Some("6.1.0-13-amd64".into());
        let mut groups = crate::host::iommu::IommuGroups::new();
        for d in [&bridge, &gpu, &audio, &igpu, &nvme] {
            groups
                .entry(d.iommu_group.unwrap_or_default())
                .or_default()
                .push(d.address);
        }
        facts.groups = Ok(groups);
        facts.cpu = Ok(CpuInfo {
            vendor_id: Some("GenuineIntel".into()),
            ..CpuInfo::default()
        });
        facts.topology = Ok(two_nodes());
        HostSnapshot {
            usage: HostUse {
                root_disks: vec![RootDiskController {
                    address: nvme.address,
                    block_device: "nvme0n1".into(),
                    evidence: "29 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw".into(),
                    source: "proc/self/mountinfo".into(),
                }],
                ..HostUse::default()
            },
            devices: vec![bridge, gpu, audio, igpu, nvme],
            facts: Some(facts),
            boot: Some(BootFacts {
                setup: BootSetup {
                    initramfs: boot::Initramfs::InitramfsTools,
                    bootloader: boot::Bootloader::Grub {
                        dropin: true,
                        update: vec!["update-grub".into()],
                    },
                },
                files: FileView::default()
                    .with_file(
                        "etc/default/grub",
                        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n",
                    )
                    .with_dir("etc/default/grub.d")
                    .with_file("etc/initramfs-tools/modules", "# modules\n")
                    .with_file("etc/grub.d/10_linux", "#! /bin/sh\n"),
            }),
            ..HostSnapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn a_view_gathered_holds_what_the_root_had() {
        let dir = tempfile::tempdir().unwrap();
        testing::mkdir(dir.path().join("etc/default/grub.d"));
        testing::write(dir.path().join("etc/default/grub"), "GRUB_TIMEOUT=5\n");
        testing::write(dir.path().join("etc/default/grub.d/a.cfg"), "X=1\n");
        let root = HostRoot::new(dir.path());
        let view = FileView::gather(
            &root,
            &[
                Want::Read("etc/default/grub".into()),
                Want::Read("etc/kernel/cmdline".into()),
                Want::ReadDir("etc/default/grub.d".into()),
                Want::Exists("etc/grub.d/10_linux".into()),
            ],
        );
        assert_eq!(
            view.text("etc/default/grub").as_deref(),
            Some("GRUB_TIMEOUT=5\n")
        );
        assert!(view.exists("/etc/default/grub"));
        assert_eq!(view.bytes("etc/kernel/cmdline"), Ok(None));
        assert!(!view.exists("etc/kernel/cmdline"));
        assert_eq!(
            view.entries("etc/default/grub.d"),
            vec!["a.cfg".to_string()]
        );
        assert_eq!(
            view.text("etc/default/grub.d/a.cfg").as_deref(),
            Some("X=1\n")
        );
        assert!(!view.exists("etc/grub.d/10_linux"));
        // A directory read as a file exists but gives no text.
        let view = FileView::gather(&root, &[Want::Read("etc/default/grub.d".into())]);
        assert!(view.exists("etc/default/grub.d"));
        assert!(view.bytes("etc/default/grub.d").is_err());
    }

    #[test]
    fn a_view_built_by_hand() {
        let view = FileView::default()
            .with_dir("boot/loader/entries")
            .with_file("boot/loader/entries/a.conf", "options quiet\n");
        assert_eq!(
            view.entries("boot/loader/entries"),
            vec!["a.conf".to_string()]
        );
        assert!(view.exists("boot/loader/entries/a.conf"));
        assert!(!view.exists("etc/default/grub"));
        assert_eq!(view.text("etc/default/grub"), None);
    }

    #[test]
    fn a_snapshot_gathers_only_what_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let s = HostSnapshot::gather(&root, Needs::LIST).unwrap();
        assert!(!s.is_system && s.devices.is_empty());
        assert!(s.facts().is_err() && s.boot().is_err() && s.vm().is_err());
        let s = HostSnapshot::gather(&root, Needs::CHECK).unwrap();
        assert!(s.facts().is_ok());
    }
}
