//! `passthru enable`: the persistent setup that makes the IOMMU and the `vfio-pci`
//! binding survive a reboot, planned as data.
//!
//! Three things must hold at the next boot:
//! 1. the kernel arguments: `intel_iommu=on` (Intel, unless the kernel turns VT-d on
//!    by default), `iommu=pt`, and `vfio-pci.ids=` when vfio-pci is built into the
//!    kernel (a built-in driver never reads `/etc/modprobe.d`);
//! 2. early binding: with vfio-pci as a module, `/etc/modprobe.d/passthru-vfio.conf`
//!    says which ids it takes (`options vfio-pci ids=…`) and makes every host driver
//!    that would otherwise win wait for it (`softdep <driver> pre: vfio-pci`); a
//!    device whose ids a device the host keeps shares is claimed by address instead,
//!    by an `install` hook on its host driver's module (see [`by_address`]);
//! 3. the initramfs loads vfio-pci and carries that file, because GPU, storage and
//!    USB drivers load from the initramfs, before the root filesystem.
//!
//! The planner reads the host's files (through [`EnableFacts`]) and produces an
//! [`EnablePlan`]: the new content of every file, the commands to regenerate the
//! initramfs and the bootloader configuration, and what to look for inside the
//! regenerated image. Files passthru owns are generated whole, so planning again
//! with the same devices gives the same bytes: re-running `enable` changes nothing.

pub mod by_address;
pub mod cmdline_edit;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bind::{self, Overrides, Refusal};
use crate::boot::{self, BootSetup, Bootloader, Initramfs};
use crate::check::{IommuKind, Provision};
use crate::facts::HostFacts;
use crate::host_root::HostRoot;
use crate::kernel::config::ConfigValue;
use crate::kernel::modules::normalize;
use crate::list::HostUse;
use crate::pci::names::PciNames;
use crate::pci::{PciAddress, PciDevice};
use crate::state::BindRecord;

use by_address::HostDriver;

/// passthru's modprobe.d file.
pub const MODPROBE_FILE: &str = "etc/modprobe.d/passthru-vfio.conf";
/// passthru's GRUB drop-in (Debian's grub-mkconfig reads `/etc/default/grub.d/*.cfg`).
pub const GRUB_DROPIN: &str = "etc/default/grub.d/passthru.cfg";
/// passthru's dracut drop-in (dracut reads only `*.conf` there).
pub const DRACUT_DROPIN: &str = "etc/dracut.conf.d/passthru-vfio.conf";
/// passthru's mkinitcpio drop-in.
pub const MKINITCPIO_DROPIN: &str = "etc/mkinitcpio.conf.d/passthru-vfio.conf";
/// The script that binds devices by address, for devices that share their ids with
/// one the host keeps (run by modprobe in place of loading their host driver).
pub const OVERRIDE_SCRIPT: &str = "usr/local/sbin/passthru-vfio-override";
/// The initramfs-tools hook that puts [`OVERRIDE_SCRIPT`] into the initramfs.
pub const INITRAMFS_TOOLS_HOOK: &str = "etc/initramfs-tools/hooks/passthru-vfio";
/// What `enable` set up, for `verify` and `disable`.
pub const ENABLED_STATE: &str = "var/lib/passthru/enabled.json";

/// The kernel argument of the way back: vfio-pci cannot load, so the host drivers take
/// the devices as before `enable` (the softdeps on it are best-effort).
pub const WAY_BACK_ARG: &str = "module_blacklist=vfio_pci";

/// What to do at the boot menu when a binding locks the user out.
const WAY_BACK_BY_HAND: &str = "at the boot menu, edit the entry (press `e` in GRUB) and add \
    `module_blacklist=vfio_pci` to the `linux` line: the host drivers then keep every device";

/// The GRUB script that adds the way-back entries.
pub const GRUB_WAY_BACK: &str = "etc/grub.d/11_passthru_without_vfio";

/// A `/etc/grub.d` script that runs GRUB's own `10_linux` again with passthru's
/// arguments taken out, `module_blacklist=vfio_pci` added and the titles marked
/// "(without VFIO)": the same kernels, bootable without the VFIO binding.
fn grub_way_back_script(add: &[String]) -> String {
    format!(
        "#!/bin/sh\n{HEADER}# The way back: the same Linux entries as 10_linux, titled \"(without VFIO)\",\n\
         # without passthru's kernel arguments and with {WAY_BACK_ARG}, so the host\n\
         # drivers keep every device.\n\
         set -e\n\
         strip() {{\n    out=\" $1 \"\n    for a in {}; do\n        out=$(printf '%s' \"$out\" | sed \"s| $a | |g\")\n    done\n    printf '%s' \"$out\"\n}}\n\
         GRUB_CMDLINE_LINUX=$(strip \"$GRUB_CMDLINE_LINUX\")\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"$(strip \"$GRUB_CMDLINE_LINUX_DEFAULT\") {WAY_BACK_ARG}\"\n\
         GRUB_DISTRIBUTOR=\"${{GRUB_DISTRIBUTOR:-Linux}} (without VFIO)\"\n\
         GRUB_DISABLE_RECOVERY=true\n\
         GRUB_DISABLE_SUBMENU=true\n\
         export GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT GRUB_DISTRIBUTOR GRUB_DISABLE_RECOVERY GRUB_DISABLE_SUBMENU\n\
         exec \"$(dirname \"$0\")/10_linux\"\n",
        add.join(" ")
    )
}

/// The way back on systemd-boot, where passthru adds an entry per existing entry.
const WAY_BACK_ENTRIES: &str = "choose an entry marked \"(without VFIO)\" in the boot menu: \
    it boots without the VFIO arguments and with `module_blacklist=vfio_pci`";

/// The VFIO modules the initramfs must load, in load order.
pub const VFIO_MODULES: &[&str] = &["vfio", "vfio_iommu_type1", "vfio_pci"];

const HEADER: &str =
    "# Written by `passthru enable` for PCI passthrough; `passthru undo` removes it.\n\
# Do not edit: passthru regenerates this file.\n";

/// A file as it is and as it will be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Root-relative path.
    pub path: PathBuf,
    /// Current content (`None`: the file does not exist).
    pub before: Option<String>,
    /// New content (`None`: the file is removed).
    pub after: Option<String>,
    /// The mode of a file passthru creates, when not 0644 (scripts: 0755).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Written after the plan's commands ran: a command such as `grubby
    /// --update-kernel=ALL` would otherwise edit this file too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_commands: bool,
}

impl FileChange {
    /// Whether it changes anything.
    pub fn is_change(&self) -> bool {
        self.before != self.after
    }

    /// A unified diff (`--- a/path`, `+++ b/path`).
    pub fn diff(&self) -> String {
        let before = self.before.as_deref().unwrap_or("");
        let after = self.after.as_deref().unwrap_or("");
        let name = self.path.display().to_string();
        let old = if self.before.is_some() {
            format!("a/{name}")
        } else {
            "/dev/null".into()
        };
        let new = if self.after.is_some() {
            format!("b/{name}")
        } else {
            "/dev/null".into()
        };
        similar::TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header(&old, &new)
            .to_string()
    }
}

/// A command the plan runs, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// What it is for.
    pub why: String,
}

/// A look inside a regenerated initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// The listing command (`lsinitramfs IMAGE`).
    pub argv: Vec<String>,
    /// Substrings that must appear in its output (file names in the image).
    pub must_contain: Vec<String>,
}

/// What `enable` set up: saved for `verify`, `disable` and `undo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Every device bound at boot (all functions, whole groups).
    pub devices: Vec<PciAddress>,
    /// The devices the user named (what `disable` removes from).
    pub named: Vec<PciAddress>,
    /// `vendor:device` ids given to vfio-pci.
    pub ids: Vec<String>,
    /// Kernel arguments passthru added.
    pub kernel_args: Vec<String>,
    /// The regenerators to run again on `undo`.
    pub regenerate: Vec<PlannedCommand>,
    /// The module that would take each device without vfio-pci: after the reboot
    /// vfio-pci holds the devices from boot, and running `enable` again must still
    /// order (and for devices bound by address, hook) the same modules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_modules: BTreeMap<PciAddress, String>,
    /// The devices bound by address (their ids are shared with a device the host
    /// keeps), by the hook on their host driver's module; `verify` names that hook
    /// when one of them is not on vfio-pci.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_address: Vec<PciAddress>,
}

/// Everything `enable` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnablePlan {
    /// How the host boots.
    pub boot: BootSetup,
    /// The state after enabling.
    pub enabled: Enabled,
    /// Files that change (unchanged files are left out).
    pub files: Vec<FileChange>,
    /// Files a command may change (grubby, kernelstub): saved before, restored by `undo`.
    pub snapshots: Vec<PathBuf>,
    /// Commands, in order.
    pub commands: Vec<PlannedCommand>,
    /// Looks inside the regenerated initramfs.
    pub inspections: Vec<Inspection>,
    /// What the user must do by hand (unknown bootloader or initramfs generator).
    pub manual: Vec<String>,
    /// How to boot without the VFIO binding if it locks the user out.
    pub way_back: String,
}

impl EnablePlan {
    /// Whether nothing needs to change.
    pub fn is_noop(&self) -> bool {
        self.files.is_empty() && self.commands.is_empty() && self.snapshots.is_empty()
    }
}

/// What the planner reads from the host.
#[derive(Debug)]
pub struct EnableFacts {
    /// The host root the file contents were read from.
    pub root: HostRoot,
    /// check's facts (IOMMU kind, kernel config, modules).
    pub facts: HostFacts,
    /// PCI devices.
    pub devices: Vec<PciDevice>,
    /// How the host boots.
    pub boot: BootSetup,
    /// Root disk and default route.
    pub host: HostUse,
    /// Runtime bind records (a device passthru holds now had another driver).
    pub records: Vec<BindRecord>,
    /// What a previous `enable` set up.
    pub previous: Option<Enabled>,
}

impl EnableFacts {
    /// Reads everything `enable` plans from.
    pub fn gather(root: &HostRoot) -> Result<Self, crate::pci::device::PciError> {
        let devices = crate::pci::device::read_all(root)?;
        let (records, _) = crate::state::read_all(root);
        Ok(Self {
            facts: HostFacts::gather(root),
            boot: boot::detect(root),
            host: HostUse {
                root_disks: crate::host_devices::root_disk_controllers(root).unwrap_or_default(),
                route_nics: crate::host_devices::default_route_nics(root).unwrap_or_default(),
                held_by_passthru: Vec::new(),
            },
            previous: root
                .read_optional(ENABLED_STATE)
                .ok()
                .flatten()
                .and_then(|t| serde_json::from_str(&t).ok()),
            records,
            devices,
            root: root.clone(),
        })
    }

    fn read(&self, path: &str) -> Option<String> {
        self.root.read_optional(path).ok().flatten()
    }
}

/// The kernel arguments for this host: `(add, remove)`.
fn kernel_args(f: &EnableFacts, ids: &[String]) -> (Vec<String>, Vec<String>) {
    let summary = crate::check::run(&f.facts);
    let mut add = Vec::new();
    let mut remove = vec!["iommu=off".to_string()];
    match summary.host.iommu.kind {
        Some(IommuKind::Intel) => {
            remove.push("intel_iommu=off".into());
            let default_on = f
                .facts
                .config
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .is_some_and(|c| c.get("CONFIG_INTEL_IOMMU_DEFAULT_ON") == ConfigValue::Builtin);
            if !default_on {
                add.push("intel_iommu=on".into());
            }
        }
        Some(IommuKind::Amd) => remove.push("amd_iommu=off".into()),
        None => {}
    }
    add.push("iommu=pt".into());
    if summary.host.vfio_pci == Provision::Builtin && !ids.is_empty() {
        add.push(format!("vfio-pci.ids={}", ids.join(",")));
    }
    (add, remove)
}

/// Why `enable` cannot plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnableError {
    /// A target could not be resolved.
    Target(String),
    /// The devices cannot be bound at boot, with reasons.
    Refused(Vec<Refusal>),
}

/// The driver each device would have at boot without vfio-pci: the one it uses now,
/// else the one it had before passthru bound it at runtime, else the one a previous
/// `enable` recorded (after the reboot, vfio-pci holds it from boot), else the one
/// a device with the same ids uses.
fn host_drivers(f: &EnableFacts, devices: &[PciAddress]) -> BTreeMap<PciAddress, HostDriver> {
    let usable = |d: Option<&str>| d.filter(|d| *d != bind::VFIO_PCI).map(str::to_string);
    let mut drivers = BTreeMap::new();
    for a in devices {
        let Some(d) = f.devices.iter().find(|d| d.address == *a) else {
            continue;
        };
        if let Some(drv) = usable(d.driver.as_deref()).or_else(|| {
            f.records
                .iter()
                .find(|r| r.address == *a)
                .and_then(|r| r.original_driver.clone())
        }) {
            drivers.insert(*a, driver_module(f, &drv));
        } else if let Some(m) = f.previous.as_ref().and_then(|p| p.host_modules.get(a)) {
            drivers.insert(*a, HostDriver::Module(m.clone()));
        } else if let Some(drv) = f
            .devices
            .iter()
            .filter(|o| (o.vendor_id, o.device_id) == (d.vendor_id, d.device_id))
            .find_map(|o| usable(o.driver.as_deref()))
        {
            drivers.insert(*a, driver_module(f, &drv));
        }
    }
    drivers
}

/// The module a driver is (modprobe names modules: the driver `bochs-drm` is the
/// module `bochs`), from the driver's `module` link in sysfs; a live driver without
/// one is built in. On a captured root without the links, the driver's name, built in
/// when `modules.builtin` lists it.
fn driver_module(f: &EnableFacts, drv: &str) -> HostDriver {
    let dir = format!("sys/bus/pci/drivers/{drv}");
    match f.root.read_link(format!("{dir}/module")) {
        Ok(target) => match target.file_name() {
            Some(m) => HostDriver::Module(normalize(&m.to_string_lossy())),
            None => HostDriver::Builtin(drv.to_string()),
        },
        Err(_) if f.root.is_system() && f.root.exists(&dir) => HostDriver::Builtin(drv.to_string()),
        Err(_) => {
            let builtin = matches!(&f.facts.modules, Ok(Some(index)) if index.builtin.contains(&normalize(drv)));
            if builtin {
                HostDriver::Builtin(drv.to_string())
            } else {
                HostDriver::Module(normalize(drv))
            }
        }
    }
}

/// passthru's modprobe.d file: the ids for a vfio-pci module, the `install` hooks of
/// the host drivers of devices bound by address, and the order of the host drivers
/// after a vfio-pci module.
fn modprobe_file(
    ids: &[String],
    softdeps: &BTreeSet<String>,
    hooks: &BTreeSet<String>,
    builtin: bool,
) -> String {
    let mut s = String::from(HEADER);
    if !builtin && !ids.is_empty() {
        s.push_str(&format!("options vfio-pci ids={}\n", ids.join(",")));
    }
    s.push_str(&by_address::install_lines(hooks));
    if !builtin {
        for d in softdeps {
            s.push_str(&format!("softdep {d} pre: vfio-pci\n"));
        }
    }
    s
}

/// What booster users must know when devices are bound by address: booster's init
/// loads modules itself and runs no `install` command.
fn booster_by_address(hooks: &BTreeSet<String>) -> String {
    let list = hooks.iter().cloned().collect::<Vec<_>>().join(", ");
    format!(
        "booster loads modules itself and ignores `install` lines in /etc/modprobe.d: if its image \
         carries {list}, they take the devices that share their ids with one the host keeps \
         before passthru's hook can run. After the reboot `passthru verify` tells; if so, \
         bind those devices after each boot with `passthru bind`"
    )
}

/// What a vfio-pci module cannot do at boot: a host driver built into the kernel binds
/// its devices while the kernel starts, before any module loads, so those devices need
/// a runtime bind after each boot.
fn builtin_host_drivers(
    drivers: &BTreeMap<PciAddress, HostDriver>,
    vfio_builtin: bool,
) -> Vec<String> {
    if vfio_builtin {
        return Vec::new();
    }
    let mut by_driver: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (a, d) in drivers {
        if let HostDriver::Builtin(drv) = d {
            by_driver.entry(drv).or_default().push(a.to_string());
        }
    }
    by_driver
        .into_iter()
        .map(|(drv, addrs)| {
            format!(
                "{drv} is built into this kernel: it takes {} while the kernel starts, before \
                 the vfio-pci module can load, so this binding cannot take effect from boot. \
                 After each boot, run `passthru bind {}`",
                addrs.join(", "),
                addrs.join(" ")
            )
        })
        .collect()
}

/// The host modules to hook for the devices bound by address, or why they cannot be.
fn by_address_hooks(
    f: &EnableFacts,
    inputs: &bind::Inputs<'_>,
    by_address: &[PciAddress],
    drivers: &BTreeMap<PciAddress, HostDriver>,
) -> Result<BTreeSet<String>, EnableError> {
    if by_address.is_empty() {
        return Ok(BTreeSet::new());
    }
    let conflicts = by_address::conflicts(&f.root, f.facts.release.as_deref());
    let mut hooks = BTreeSet::new();
    let mut refusals = Vec::new();
    for a in by_address {
        let desc = f
            .devices
            .iter()
            .find(|d| d.address == *a)
            .map_or_else(|| a.to_string(), |d| inputs.describe(d));
        let shared = "shares its ids with a device the host keeps, so it must be bound by address";
        let reason = match drivers.get(a) {
            Some(HostDriver::Module(m)) => match conflicts.get(m) {
                Some(c) => format!(
                    "{desc} {shared}, which passthru does with an `install` hook on its driver's \
                     module {m}, but {}; or use `passthru bind` after each boot instead",
                    c.explain(m)
                ),
                None => {
                    hooks.insert(m.clone());
                    continue;
                }
            },
            Some(HostDriver::Builtin(drv)) => format!(
                "{desc} {shared}, but its driver {drv} is built into the kernel and takes every \
                 such device before any program runs: use `passthru bind` after each boot instead"
            ),
            None => format!(
                "{desc} {shared} before its host driver loads, and no driver takes devices with \
                 these ids now, so passthru cannot tell which module to hook: load the driver \
                 (or use `passthru bind` after each boot)"
            ),
        };
        refusals.push(Refusal {
            address: Some(*a),
            reason,
            override_flag: None,
        });
    }
    if refusals.is_empty() {
        Ok(hooks)
    } else {
        Err(EnableError::Refused(refusals))
    }
}

/// The initramfs-tools hook that copies the override script into the image.
fn initramfs_tools_hook() -> String {
    format!(
        "#!/bin/sh\n{HEADER}PREREQ=\"\"\nprereqs() {{ echo \"$PREREQ\"; }}\n\
         case \"$1\" in prereqs) prereqs; exit 0 ;; esac\n\
         . /usr/share/initramfs-tools/hook-functions\n\
         copy_file script /{OVERRIDE_SCRIPT} /{OVERRIDE_SCRIPT}\n"
    )
}

fn change(f: &EnableFacts, path: &str, after: Option<String>) -> FileChange {
    FileChange {
        path: PathBuf::from(path),
        before: f.read(path),
        after,
        mode: None,
        after_commands: false,
    }
}

/// Appends the missing modules to a one-module-per-line file (initramfs-tools'
/// `/etc/initramfs-tools/modules`), keeping everything else.
fn append_modules(before: Option<&str>, modules: &[&str]) -> String {
    let text = before.unwrap_or("");
    let present: BTreeSet<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_whitespace().next())
        .map(|m| m.replace('-', "_"))
        .collect();
    let missing: Vec<&&str> = modules.iter().filter(|m| !present.contains(**m)).collect();
    if missing.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# VFIO for PCI passthrough (added by passthru enable)\n");
    for m in missing {
        out.push_str(m);
        out.push('\n');
    }
    out
}

/// Adds `items` to a bash array assignment (`MODULES=(a b)`) in a file such as
/// `/etc/mkinitcpio.conf`, at the front or the back, skipping those present; the last
/// uncommented assignment is edited, or one is appended.
pub fn edit_bash_array(text: &str, name: &str, items: &[&str], front: bool) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let prefix = format!("{name}=(");
    let at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(&prefix));
    let Some(i) = at else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{name}=({})\n", items.join(" ")));
        return out;
    };
    let line = lines[i].trim_end_matches('\n');
    let inner = line
        .trim_start()
        .strip_prefix(&prefix)
        .and_then(|r| r.rsplit_once(')'))
        .map_or("", |(inside, _)| inside);
    let mut words: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
    let missing: Vec<String> = items
        .iter()
        .filter(|it| !words.iter().any(|w| w.trim_matches(['"', '\'']) == **it))
        .map(|it| (*it).to_string())
        .collect();
    if missing.is_empty() {
        return text.to_string();
    }
    if front {
        words.splice(0..0, missing);
    } else {
        words.extend(missing);
    }
    let mut out: String = lines[..i].concat();
    out.push_str(&format!("{prefix}{})\n", words.join(" ")));
    out.push_str(&lines[i + 1..].concat());
    out
}

/// For every systemd-boot entry, a copy that boots without VFIO: `title … (without
/// VFIO)`, passthru's arguments removed, the way-back argument added. Entries that
/// are themselves such copies are skipped.
fn way_back_entries(f: &EnableFacts, entries: &[String], add: &[String]) -> Vec<FileChange> {
    entries
        .iter()
        .filter(|e| !e.ends_with("-without-vfio.conf"))
        .filter_map(|e| {
            let text = f.read(e)?;
            let mut out = String::new();
            for line in text.lines() {
                if let Some(title) = line.strip_prefix("title") {
                    out.push_str(&format!("title {} (without VFIO)\n", title.trim()));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            let remove: Vec<String> = add.to_vec();
            let out = edit_loader_entry(&out, &[WAY_BACK_ARG.to_string()], &remove);
            let path = format!("{}-without-vfio.conf", e.trim_end_matches(".conf"));
            Some(change(f, &path, Some(out)))
        })
        .collect()
}

/// [`way_back_entries`] for every entry in `dir`, written after the plan's commands
/// ran: for tools (grubby, kernelstub) that rewrite the entries themselves.
fn way_back_after_commands(f: &EnableFacts, dir: &str, add: &[String]) -> Vec<FileChange> {
    let entries: Vec<String> = f
        .root
        .list_dir_optional(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    way_back_entries(f, &entries, add)
        .into_iter()
        .map(|c| FileChange {
            after_commands: true,
            ..c
        })
        .collect()
}

/// Every systemd-boot entry with its `options` line edited.
fn entry_changes(
    f: &EnableFacts,
    entries: &[String],
    add: &[String],
    remove: &[String],
) -> Vec<FileChange> {
    entries
        .iter()
        .filter(|e| !e.ends_with("-without-vfio.conf"))
        .map(|e| {
            let before = f.read(e);
            let after = before.as_deref().map(|t| edit_loader_entry(t, add, remove));
            FileChange {
                path: e.into(),
                before,
                after,
                mode: None,
                after_commands: false,
            }
        })
        .collect()
}

/// Edits the `options` line of a systemd-boot entry: the first `options` line gets
/// `add` and loses `remove` (see [`cmdline_edit::edit`]); an entry without one gets
/// one. Every other line stays as it is.
pub fn edit_loader_entry(text: &str, add: &[String], remove: &[String]) -> String {
    let mut found = false;
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if let Some(rest) = body.strip_prefix("options") {
            if rest.starts_with([' ', '\t']) && !found {
                found = true;
                out.push_str(&format!(
                    "options {}",
                    cmdline_edit::edit(rest.trim(), add, remove)
                ));
                if line.ends_with('\n') {
                    out.push('\n');
                }
                continue;
            }
        }
        out.push_str(line);
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("options {}\n", add.join(" ")));
    }
    out
}

/// Plans `enable` for the named devices.
pub fn plan(
    f: &EnableFacts,
    named: &[PciAddress],
    overrides: Overrides,
) -> Result<EnablePlan, EnableError> {
    // The same group logic as a runtime bind; the host drivers and the boot display
    // matter even more at boot, when nothing can be closed first.
    let names = PciNames::load();
    let holders = bind::holders::Holders::new();
    let inputs = bind::Inputs {
        devices: &f.devices,
        names: &names,
        host: &f.host,
        holders: &holders,
        console_on_framebuffer: true,
        records: &f.records,
    };
    if crate::check::run(&f.facts).host.iommu.state == crate::check::IommuState::Absent {
        return Err(EnableError::Refused(vec![Refusal {
            address: None,
            reason: "the firmware describes no IOMMU (no ACPI DMAR or IVRS table): no kernel \
                     argument can turn one on, so nothing could be passed through after a \
                     reboot (see `passthru check`)"
                .into(),
            override_flag: None,
        }]));
    }
    let iommu_on = f.devices.iter().any(|d| d.iommu_group.is_some());
    let devices: Vec<PciAddress> = if iommu_on {
        let bind_plan = bind::plan_bind(&inputs, named, overrides).map_err(EnableError::Refused)?;
        bind_plan.steps.iter().map(|s| s.address).collect()
    } else {
        // The IOMMU is off, so its groups are unknown until the reboot: take each named
        // device's functions, refuse what the host needs, and let `verify` and `list`
        // judge the groups afterwards.
        slot_devices(f, &inputs, named, overrides)?
    };
    let chosen: BTreeSet<PciAddress> = devices.iter().copied().collect();
    let mut ids = BTreeSet::new();
    for a in &devices {
        if let Some(d) = f.devices.iter().find(|d| d.address == *a) {
            ids.insert((d.vendor_id, d.device_id));
        }
    }
    // `ids=` takes every device with those ids: a device whose ids another device
    // that stays with the host shares is bound by address instead.
    let host_ids: BTreeSet<(u16, u16)> = f
        .devices
        .iter()
        .filter(|d| !chosen.contains(&d.address))
        .map(|d| (d.vendor_id, d.device_id))
        .collect();
    let by_address: Vec<PciAddress> = devices
        .iter()
        .copied()
        .filter(|a| {
            f.devices
                .iter()
                .any(|d| d.address == *a && host_ids.contains(&(d.vendor_id, d.device_id)))
        })
        .collect();
    let ids: Vec<String> = ids
        .iter()
        .filter(|id| !host_ids.contains(id))
        .map(|(v, d)| format!("{v:04x}:{d:04x}"))
        .collect();
    let builtin = crate::check::run(&f.facts).host.vfio_pci == Provision::Builtin;
    let drivers = host_drivers(f, &devices);
    let hooks = by_address_hooks(f, &inputs, &by_address, &drivers)?;
    // A hooked module loads vfio-pci from its hook: a softdep would make kmod skip it.
    let softdeps: BTreeSet<String> = drivers
        .values()
        .filter_map(HostDriver::module)
        .filter(|m| !hooks.contains(*m))
        .map(str::to_string)
        .collect();
    let (add, remove) = kernel_args(f, &ids);
    let mut manual = builtin_host_drivers(&drivers, builtin);

    let mut files = Vec::new();
    let mut snapshots = Vec::new();
    let mut commands = Vec::new();
    let mut regenerate = Vec::new();
    let mut inspections = Vec::new();
    let mut way_back = WAY_BACK_BY_HAND.to_string();

    // A built-in vfio-pci binds its `vfio-pci.ids=` from the command line before any
    // module loads: modprobe.d and the initramfs play a part only for the devices
    // bound by address, whose host drivers' hooks must be there wherever they load.
    let script = (!by_address.is_empty()).then(|| format!("/{OVERRIDE_SCRIPT}"));
    if !builtin || script.is_some() {
        files.push(change(
            f,
            MODPROBE_FILE,
            Some(modprobe_file(&ids, &softdeps, &hooks, builtin)),
        ));
    }
    if script.is_some() {
        files.push(FileChange {
            mode: Some(0o755),
            ..change(
                f,
                OVERRIDE_SCRIPT,
                Some(by_address::override_script(&by_address)),
            )
        });
    } else {
        // No device is bound by address (any more, after `disable`): passthru's own
        // files for that go, and so does its modprobe.d file when a built-in vfio-pci
        // leaves nothing else for it to say.
        let mut stale = vec![OVERRIDE_SCRIPT, INITRAMFS_TOOLS_HOOK];
        if builtin {
            stale.push(MODPROBE_FILE);
        }
        files.extend(
            stale
                .into_iter()
                .filter(|p| f.root.exists(p))
                .map(|p| change(f, p, None)),
        );
    }
    let initramfs = f.boot.initramfs;

    // The initramfs.
    let release = f.facts.release.clone().unwrap_or_default();
    // A built-in vfio-pci has no modules to load.
    let vfio_modules: Vec<&str> = if builtin {
        Vec::new()
    } else {
        VFIO_MODULES.to_vec()
    };
    let image_must = || {
        let mut v = Vec::new();
        v.extend((!builtin).then(|| "vfio-pci.ko".to_string()));
        v.push(MODPROBE_FILE.to_string());
        v.extend(script.is_some().then(|| OVERRIDE_SCRIPT.to_string()));
        v
    };
    let rebuild_why = |what: &str| {
        if builtin {
            format!(
                "rebuild {what} so it carries the hook that claims the devices bound by \
                 address before their host drivers load"
            )
        } else {
            format!("rebuild {what} so vfio-pci loads first and takes the devices")
        }
    };
    match initramfs {
        _ if builtin && script.is_none() => {}
        Initramfs::InitramfsTools => {
            let path = "etc/initramfs-tools/modules";
            let before = f.read(path);
            if !vfio_modules.is_empty() {
                files.push(FileChange {
                    path: path.into(),
                    after: Some(append_modules(before.as_deref(), &vfio_modules)),
                    before,
                    mode: None,
                    after_commands: false,
                });
            }
            if script.is_some() {
                files.push(FileChange {
                    mode: Some(0o755),
                    ..change(f, INITRAMFS_TOOLS_HOOK, Some(initramfs_tools_hook()))
                });
            }
            let cmd = PlannedCommand {
                argv: vec![
                    "update-initramfs".into(),
                    "-u".into(),
                    "-k".into(),
                    "all".into(),
                ],
                why: rebuild_why("the initramfs"),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            if !release.is_empty() {
                inspections.push(Inspection {
                    argv: vec!["lsinitramfs".into(), format!("/boot/initrd.img-{release}")],
                    must_contain: image_must(),
                });
            }
        }
        Initramfs::Dracut => {
            let force = if vfio_modules.is_empty() {
                String::new()
            } else {
                format!("force_drivers+=\" {} \"\n", vfio_modules.join(" "))
            };
            let text = format!(
                "{HEADER}{force}install_items+=\" /{MODPROBE_FILE} {}\"\n",
                script
                    .as_deref()
                    .map(|s| format!("{s} "))
                    .unwrap_or_default()
            );
            files.push(change(f, DRACUT_DROPIN, Some(text)));
            let cmd = PlannedCommand {
                argv: vec!["dracut".into(), "-f".into(), "--regenerate-all".into()],
                why: rebuild_why("every initramfs"),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            if !release.is_empty() {
                inspections.push(Inspection {
                    argv: vec!["lsinitrd".into(), dracut_image(f, &release)],
                    must_contain: image_must(),
                });
            }
        }
        Initramfs::Mkinitcpio => {
            let mut extra_files = vec![format!("/{MODPROBE_FILE}")];
            extra_files.extend(script.clone());
            if f.root.exists("etc/mkinitcpio.conf.d") {
                let modules = if vfio_modules.is_empty() {
                    String::new()
                } else {
                    format!("MODULES+=({})\n", vfio_modules.join(" "))
                };
                let text = format!("{HEADER}{modules}FILES+=({})\n", extra_files.join(" "));
                files.push(change(f, MKINITCPIO_DROPIN, Some(text)));
            } else {
                // mkinitcpio before v36 reads no drop-ins: edit the arrays in place,
                // vfio first in MODULES so it loads before the GPU drivers listed there.
                let path = "etc/mkinitcpio.conf";
                let before = f.read(path).unwrap_or_default();
                let edited = edit_bash_array(
                    &edit_bash_array(&before, "MODULES", &vfio_modules, true),
                    "FILES",
                    &extra_files.iter().map(String::as_str).collect::<Vec<_>>(),
                    false,
                );
                files.push(change(f, path, Some(edited)));
            }
            let cmd = PlannedCommand {
                argv: vec!["mkinitcpio".into(), "-P".into()],
                why: rebuild_why("every preset's initramfs"),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            inspections.push(Inspection {
                argv: vec!["lsinitcpio".into(), "/boot/initramfs-linux.img".into()],
                must_contain: image_must(),
            });
        }
        Initramfs::Booster if builtin => manual.push(booster_by_address(&hooks)),
        Initramfs::Booster => {
            // booster force-loads `modules_force_load` at the start of its init, before
            // it walks the devices' modaliases, and bakes the `options` lines of
            // /etc/modprobe.d into the image when it is built (it reads no `softdep` or
            // `install` lines there).
            let path = "etc/booster.yaml";
            let before = f.read(path);
            files.push(FileChange {
                path: path.into(),
                after: Some(edit_booster_yaml(
                    before.as_deref().unwrap_or(""),
                    BOOSTER_FORCE_LOAD,
                )),
                before,
                mode: None,
                after_commands: false,
            });
            let argv = match boot::program(&f.root, &["usr/lib/booster/regenerate_images"]) {
                Some(p) => vec![p],
                None => vec![
                    "booster".into(),
                    "build".into(),
                    "--force".into(),
                    format!("--kernel-version={release}"),
                    booster_image(f, &release),
                ],
            };
            let cmd = PlannedCommand {
                argv,
                why: "rebuild the booster images so vfio-pci loads first and takes the devices"
                    .into(),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            if !release.is_empty() {
                // booster stores modules under their normalised names (`vfio_pci.ko`).
                inspections.push(Inspection {
                    argv: vec!["booster".into(), "ls".into(), booster_image(f, &release)],
                    must_contain: vec!["vfio_pci.ko".into()],
                });
                if !ids.is_empty() {
                    inspections.push(Inspection {
                        argv: vec![
                            "booster".into(),
                            "cat".into(),
                            booster_image(f, &release),
                            // booster's cpio names have no leading slash, and `booster
                            // cat` matches the name exactly; the generator writes the
                            // options of the image's modules into this init config.
                            "etc/booster.init.yaml".into(),
                        ],
                        must_contain: vec![format!("ids={}", ids.join(","))],
                    });
                }
            }
            if script.is_some() {
                manual.push(booster_by_address(&hooks));
            }
        }
        Initramfs::Unknown => {
            let mut load = vfio_modules.join(", ");
            if load.is_empty() {
                load = "nothing more".into();
            }
            let script = script
                .as_deref()
                .map(|s| format!(" and {s}"))
                .unwrap_or_default();
            manual.push(format!(
                "passthru does not know how to configure this initramfs generator: make it load {load} early and include /{MODPROBE_FILE}{script}, then rebuild the initramfs"
            ));
        }
    }

    // The bootloader.
    let args_text = add.join(" ");
    match &f.boot.bootloader {
        Bootloader::Grub { dropin, update } => {
            let main = f.read("etc/default/grub").unwrap_or_default();
            let current = format!(
                "{} {}",
                boot::shell_var(&main, "GRUB_CMDLINE_LINUX").unwrap_or_default(),
                boot::shell_var(&main, "GRUB_CMDLINE_LINUX_DEFAULT").unwrap_or_default()
            );
            let conflicts = remove.iter().any(|r| cmdline_edit::has_arg(&current, r));
            let missing: Vec<String> = add.iter().filter(|a| !cmdline_edit::has_arg(&current, a)).cloned().collect();
            if *dropin && !conflicts {
                let text = (!missing.is_empty()).then(|| {
                    format!(
                        "{HEADER}GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT {}\"\n",
                        missing.join(" ")
                    )
                });
                let c = change(f, GRUB_DROPIN, text);
                if c.is_change() {
                    files.push(c);
                }
            } else {
                files.push(change(f, "etc/default/grub", Some(edit_grub_default(&main, &add, &remove))));
            }
            // The way back: a second set of menu entries, made by GRUB's own 10_linux.
            if f.root.exists("etc/grub.d/10_linux") {
                files.push(FileChange {
                    mode: Some(0o755),
                    ..change(f, GRUB_WAY_BACK, Some(grub_way_back_script(&add)))
                });
                way_back = WAY_BACK_ENTRIES.into();
            }
            let cmd = PlannedCommand {
                argv: update.clone(),
                why: "regenerate grub.cfg with the new kernel arguments".into(),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
        }
        Bootloader::Grubby => {
            snapshots.extend(grubby_files(f));
            // Only what the entries lack: an argument the user configured stays theirs
            // (`undo` restores the snapshots byte for byte either way).
            let configured = grubby_configured(f);
            let missing: Vec<&String> = add
                .iter()
                .filter(|a| !configured.iter().all(|line| cmdline_edit::has_arg(line, a)))
                .collect();
            let drop: Vec<&String> = remove
                .iter()
                .filter(|r| configured.iter().any(|line| cmdline_edit::has_arg(line, r)))
                .collect();
            let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            if !missing.is_empty() || !drop.is_empty() {
                let mut argv = vec!["grubby".into(), "--update-kernel=ALL".into()];
                if !missing.is_empty() {
                    argv.push(format!("--args={}", join(&missing)));
                }
                if !drop.is_empty() {
                    argv.push(format!("--remove-args={}", join(&drop)));
                }
                commands.push(PlannedCommand {
                    argv,
                    why: "add the kernel arguments to every boot entry".into(),
                });
            }
            // The way back: Fedora's GRUB (blscfg) lists every BLS entry, so a copy of
            // each, written after grubby ran (`--update-kernel=ALL` would give the
            // copies the VFIO arguments too).
            let copies = way_back_after_commands(f, "boot/loader/entries", &add);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
        }
        Bootloader::Kernelstub => {
            snapshots.push("etc/kernelstub/configuration".into());
            snapshots.extend(
                f.root
                    .list_dir_optional("boot/efi/loader/entries")
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| PathBuf::from(format!("boot/efi/loader/entries/{n}"))),
            );
            let configured = kernelstub_options(f.read("etc/kernelstub/configuration").as_deref().unwrap_or(""));
            let missing: Vec<String> = add
                .iter()
                .filter(|a| !configured.as_deref().is_some_and(|c| cmdline_edit::has_arg(c, a)))
                .cloned()
                .collect();
            let drop: Vec<String> = remove
                .iter()
                .filter(|r| configured.as_deref().is_some_and(|c| cmdline_edit::has_arg(c, r)))
                .cloned()
                .collect();
            if !missing.is_empty() {
                commands.push(PlannedCommand {
                    argv: vec!["kernelstub".into(), "--add-options".into(), missing.join(" ")],
                    why: "add the kernel arguments to the boot entry".into(),
                });
            }
            if !drop.is_empty() {
                commands.push(PlannedCommand {
                    argv: vec!["kernelstub".into(), "--delete-options".into(), drop.join(" ")],
                    why: "drop the kernel arguments that contradict them".into(),
                });
            }
            // The way back: kernelstub writes systemd-boot entries on the ESP
            // (`Pop_OS-current.conf`, `Pop_OS-oldkern.conf`) that point at kernels it
            // copies to stable paths there, so a copy of each without the VFIO
            // arguments stays bootable across kernel updates. Written after kernelstub
            // ran, which rewrites only its own entries.
            let copies = way_back_after_commands(f, "boot/efi/loader/entries", &add);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
        }
        Bootloader::KernelCmdline { refresh, entries } => {
            let before = f.read("etc/kernel/cmdline");
            let after = cmdline_edit::edit(before.as_deref().unwrap_or("").trim(), &add, &remove) + "\n";
            files.push(FileChange {
                path: "etc/kernel/cmdline".into(),
                before,
                after: Some(after),
                mode: None,
                after_commands: false,
            });
            files.extend(entry_changes(f, entries, &add, &remove));
            let copies = way_back_entries(f, entries, &add);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
            if let Some(r) = refresh {
                let cmd = PlannedCommand {
                    argv: r.clone(),
                    why: "copy the new command line to the boot entries".into(),
                };
                commands.push(cmd.clone());
                regenerate.push(cmd);
            }
        }
        Bootloader::LoaderEntries { entries } => {
            files.extend(entry_changes(f, entries, &add, &remove));
            let copies = way_back_entries(f, entries, &add);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
        }
        Bootloader::Unknown => manual.push(format!(
            "passthru does not recognise this bootloader: add these kernel arguments by hand: {args_text}"
        )),
    }

    let enabled = Enabled {
        devices: devices.clone(),
        named: named.to_vec(),
        ids,
        kernel_args: add,
        regenerate,
        host_modules: drivers
            .iter()
            .filter_map(|(a, d)| Some((*a, d.module()?.to_string())))
            .collect(),
        by_address,
    };
    let state = serde_json::to_string_pretty(&enabled).unwrap_or_default() + "\n";
    files.push(change(f, ENABLED_STATE, Some(state)));

    files.retain(FileChange::is_change);
    // Nothing to write means nothing to regenerate: running `enable` again is a no-op.
    if files.is_empty() && f.previous.as_ref() == Some(&enabled) {
        commands.clear();
        inspections.clear();
        snapshots.clear();
    }
    Ok(EnablePlan {
        boot: f.boot.clone(),
        enabled,
        files,
        snapshots,
        commands,
        inspections,
        manual,
        way_back,
    })
}

/// The named devices and the other functions of their slots, with the same refusals
/// as a bind (bridges, the boot display, the root disk, the default route).
fn slot_devices(
    f: &EnableFacts,
    inputs: &bind::Inputs<'_>,
    named: &[PciAddress],
    o: Overrides,
) -> Result<Vec<PciAddress>, EnableError> {
    let mut take = BTreeSet::new();
    let mut refusals = Vec::new();
    for a in named {
        for d in f.devices.iter().filter(|d| d.address.same_slot(*a)) {
            if crate::list::is_host_side_bridge(d.class) {
                continue;
            }
            take.insert(d.address);
        }
    }
    for a in &take {
        let Some(d) = f.devices.iter().find(|d| d.address == *a) else {
            continue;
        };
        let desc = inputs.describe(d);
        let mut refuse = |reason: String, flag: Option<&'static str>| {
            refusals.push(Refusal {
                address: Some(*a),
                reason,
                override_flag: flag,
            });
        };
        if crate::list::is_platform_function(d.class) {
            refuse(
                format!("{desc} is part of the chipset's platform controller"),
                None,
            );
        }
        if d.boot_vga == Some(true) && !o.boot_display {
            refuse(
                format!("{desc} is the host's boot display: the host would boot without a screen"),
                Some("--allow-boot-display"),
            );
        }
        if f.host.root_disks.iter().any(|r| r.address == *a) && !o.root_disk {
            refuse(
                format!("{desc} holds your root filesystem"),
                Some("--allow-root-disk"),
            );
        }
        if f.host.route_nics.iter().any(|r| r.address == *a) && !o.default_route {
            refuse(
                format!("{desc} carries your default network route"),
                Some("--allow-default-route"),
            );
        }
    }
    if named.iter().any(|a| {
        f.devices
            .iter()
            .any(|d| d.address == *a && crate::list::is_host_side_bridge(d.class))
    }) {
        refusals.push(Refusal {
            address: None,
            reason: "a PCI bridge is not a device to pass through: name the device behind it"
                .into(),
            override_flag: None,
        });
    }
    if refusals.is_empty() {
        Ok(take.into_iter().collect())
    } else {
        Err(EnableError::Refused(refusals))
    }
}

/// The modules booster must load first, as its own integration test of VFIO lists them.
pub const BOOSTER_FORCE_LOAD: &[&str] = &["vfio_pci", "vfio", "vfio_iommu_type1"];

/// The image Arch's booster package builds for `release`: `/boot/booster-<pkgbase>.img`,
/// the package base read from `/usr/lib/modules/<release>/pkgbase` (`linux`,
/// `linux-lts`, …), as its `regenerate_images` script names them.
fn booster_image(f: &EnableFacts, release: &str) -> String {
    let pkgbase = f
        .read(&format!("usr/lib/modules/{release}/pkgbase"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| "linux".into());
    format!("/boot/booster-{pkgbase}.img")
}

/// Adds `modules` to booster's `modules_force_load` (a comma-separated string) in
/// `/etc/booster.yaml`, in front of the modules listed there and skipping those
/// present; every other line — keys, comments — stays as it is. The last top-level
/// assignment is edited (YAML keeps the last), or one is appended.
pub fn edit_booster_yaml(text: &str, modules: &[&str]) -> String {
    const KEY: &str = "modules_force_load:";
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(i) = lines.iter().rposition(|l| l.starts_with(KEY)) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{KEY} {}\n", modules.join(",")));
        return out;
    };
    let line = lines[i].trim_end_matches('\n');
    let rest = &line[KEY.len()..];
    // A trailing comment stays; the value is the part before it.
    let (value, comment) = match rest.find(" #") {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let value = value.trim();
    let quote = value
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'') && value.len() > 1 && value.ends_with(*c));
    let inner = quote.map_or(value, |_| &value[1..value.len() - 1]);
    let present: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let normal = |m: &str| m.replace('-', "_");
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !present.iter().any(|p| normal(p) == normal(m)))
        .collect();
    if missing.is_empty() {
        return text.to_string();
    }
    let merged: Vec<&str> = missing.iter().copied().chain(present).collect();
    let q = quote.map(String::from).unwrap_or_default();
    let mut out: String = lines[..i].concat();
    out.push_str(&format!("{KEY} {q}{}{q}{comment}\n", merged.join(",")));
    out.push_str(&lines[i + 1..].concat());
    out
}

/// The image `dracut --regenerate-all` writes for `release`: Fedora's dracut writes
/// `/boot/initramfs-<release>.img`, Debian's (patched) `/boot/initrd.img-<release>`
/// beside the kernel. The one that exists wins; Fedora's name otherwise.
fn dracut_image(f: &EnableFacts, release: &str) -> String {
    let debian = format!("boot/initrd.img-{release}");
    let fedora = format!("boot/initramfs-{release}.img");
    if !f.root.exists(&fedora) && f.root.exists(&debian) {
        format!("/{debian}")
    } else {
        format!("/{fedora}")
    }
}

/// The kernel command lines grubby manages, as configured: the `options` line of every
/// BLS entry in `/boot/loader/entries` (passthru's own "(without VFIO)" copies aside);
/// without entries `/etc/kernel/cmdline`, then `GRUB_CMDLINE_LINUX` of
/// `/etc/default/grub`, then the running kernel's command line.
fn grubby_configured(f: &EnableFacts) -> Vec<String> {
    let entries: Vec<String> = f
        .root
        .list_dir_optional("boot/loader/entries")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".conf") && !n.ends_with("-without-vfio.conf"))
        .filter_map(|n| f.read(&format!("boot/loader/entries/{n}")))
        .map(|text| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("options")
                        .filter(|r| r.starts_with([' ', '\t']))
                        .map(|r| r.trim().to_string())
                })
                .unwrap_or_default()
        })
        .collect();
    if !entries.is_empty() {
        return entries;
    }
    if let Some(line) = f.read("etc/kernel/cmdline") {
        return vec![line.trim().to_string()];
    }
    if let Some(v) = f
        .read("etc/default/grub")
        .and_then(|t| boot::shell_var(&t, "GRUB_CMDLINE_LINUX"))
    {
        return vec![v];
    }
    vec![f
        .facts
        .cmdline
        .as_ref()
        .map(|c| c.raw.clone())
        .unwrap_or_default()]
}

/// The kernel options kernelstub writes, from its `/etc/kernelstub/configuration`
/// (JSON): the `user` section's `kernel_options` (a list; older releases kept one
/// string), as one command line. `None` when the file cannot be read as such.
pub fn kernelstub_options(text: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    match &doc.get("user")?.get("kernel_options")? {
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Files grubby may rewrite.
fn grubby_files(f: &EnableFacts) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "etc/default/grub",
        "etc/kernel/cmdline",
        "boot/grub2/grubenv",
    ]
    .iter()
    .filter(|p| f.root.exists(p))
    .map(PathBuf::from)
    .collect();
    out.extend(
        f.root
            .list_dir_optional("boot/loader/entries")
            .unwrap_or_default()
            .into_iter()
            .map(|n| PathBuf::from(format!("boot/loader/entries/{n}"))),
    );
    out
}

/// Edits `GRUB_CMDLINE_LINUX_DEFAULT` in `/etc/default/grub` (and drops contradicting
/// arguments from `GRUB_CMDLINE_LINUX`), keeping every other line as it is.
pub fn edit_grub_default(text: &str, add: &[String], remove: &[String]) -> String {
    let mut out = String::new();
    let mut done = false;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // The last assignment wins in a shell file: edit that one.
    let last_default = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("GRUB_CMDLINE_LINUX_DEFAULT="));
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_default = Some(i) == last_default;
        let is_linux = trimmed.starts_with("GRUB_CMDLINE_LINUX=");
        if is_default || is_linux {
            let key = if is_default {
                "GRUB_CMDLINE_LINUX_DEFAULT"
            } else {
                "GRUB_CMDLINE_LINUX"
            };
            let value = boot::shell_var(trimmed, key).unwrap_or_default();
            let new = if is_default {
                done = true;
                cmdline_edit::edit(&value, add, remove)
            } else {
                cmdline_edit::edit(&value, &[], remove)
            };
            if new == value && !is_default {
                out.push_str(line);
                continue;
            }
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}{key}={}\n", boot::double_quoted(&new)));
            continue;
        }
        out.push_str(line);
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"{}\"\n",
            add.join(" ")
        ));
    }
    out
}

/// A map from a root-relative path to its content, for tests and previews.
pub type Files = BTreeMap<PathBuf, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn grub_default_is_edited_in_place() {
        let text = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=off\"\n";
        let out = edit_grub_default(
            text,
            &s(&["intel_iommu=on", "iommu=pt"]),
            &s(&["intel_iommu=off"]),
        );
        assert_eq!(
            out,
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\"\nGRUB_CMDLINE_LINUX=\"\"\n"
        );
        assert_eq!(
            edit_grub_default(
                &out,
                &s(&["intel_iommu=on", "iommu=pt"]),
                &s(&["intel_iommu=off"])
            ),
            out
        );
    }

    #[test]
    fn grub_default_keeps_quotes_inside_the_value() {
        // The user's `acpi_osi="Windows 2015"` survives the edit, still escaped.
        let text = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\"\"\n";
        let out = edit_grub_default(text, &s(&["iommu=pt"]), &[]);
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" iommu=pt\"\n"
        );
        assert_eq!(edit_grub_default(&out, &s(&["iommu=pt"]), &[]), out);
        // A value in single quotes that holds a double quote is written escaped.
        let out = edit_grub_default(
            "GRUB_CMDLINE_LINUX_DEFAULT='a\"b'\n",
            &s(&["iommu=pt"]),
            &[],
        );
        assert_eq!(out, "GRUB_CMDLINE_LINUX_DEFAULT=\"a\\\"b iommu=pt\"\n");
        assert_eq!(
            boot::shell_var(&out, "GRUB_CMDLINE_LINUX_DEFAULT").as_deref(),
            Some("a\"b iommu=pt")
        );
    }

    #[test]
    fn modules_are_appended_once() {
        let before = "# List of modules that you want to include in your initramfs.\n#\n# Syntax:  module_name [args ...]\nvfio\n";
        let after = append_modules(Some(before), VFIO_MODULES);
        assert!(after.starts_with(before));
        assert!(after.ends_with(
            "# VFIO for PCI passthrough (added by passthru enable)\nvfio_iommu_type1\nvfio_pci\n"
        ));
        assert_eq!(append_modules(Some(&after), VFIO_MODULES), after);
        // vfio-pci written with a dash counts as present
        assert_eq!(
            append_modules(Some("vfio\nvfio_iommu_type1\nvfio-pci\n"), VFIO_MODULES),
            "vfio\nvfio_iommu_type1\nvfio-pci\n"
        );
    }

    #[test]
    fn bash_arrays_get_vfio_first() {
        let conf = "# MODULES\n#     MODULES=(usbhid xhci_hcd)\nMODULES=(nvidia nvidia_modeset)\n\nFILES=()\n";
        let out = edit_bash_array(conf, "MODULES", VFIO_MODULES, true);
        assert_eq!(out, "# MODULES\n#     MODULES=(usbhid xhci_hcd)\nMODULES=(vfio vfio_iommu_type1 vfio_pci nvidia nvidia_modeset)\n\nFILES=()\n");
        assert_eq!(edit_bash_array(&out, "MODULES", VFIO_MODULES, true), out);
        let out = edit_bash_array(
            &out,
            "FILES",
            &["/etc/modprobe.d/passthru-vfio.conf"],
            false,
        );
        assert!(
            out.ends_with("FILES=(/etc/modprobe.d/passthru-vfio.conf)\n"),
            "{out}"
        );
    }

    #[test]
    fn booster_yaml_keeps_the_rest() {
        // booster's manpage sample, abridged, with a force-loaded module of the user's.
        let yaml = "network:\n  dhcp: on\nuniversal: false\nmodules: -*,hid_apple,kernel/fs/btrfs/btrfs.ko\ncompression: zstd\nmodules_force_load: usbhid # keyboard for the LUKS prompt\n";
        let out = edit_booster_yaml(yaml, BOOSTER_FORCE_LOAD);
        assert_eq!(
            out,
            yaml.replace(
                "modules_force_load: usbhid",
                "modules_force_load: vfio_pci,vfio,vfio_iommu_type1,usbhid"
            )
        );
        assert_eq!(edit_booster_yaml(&out, BOOSTER_FORCE_LOAD), out);
        // quoted, with one of them written with a dash
        assert_eq!(
            edit_booster_yaml(
                "modules_force_load: \"vfio-pci, nvme\"\n",
                BOOSTER_FORCE_LOAD
            ),
            "modules_force_load: \"vfio,vfio_iommu_type1,vfio-pci,nvme\"\n"
        );
        // absent (or no file): appended
        assert_eq!(
            edit_booster_yaml("compression: lz4", BOOSTER_FORCE_LOAD),
            "compression: lz4\nmodules_force_load: vfio_pci,vfio,vfio_iommu_type1\n"
        );
        // an indented key belongs to another mapping: not booster's
        assert!(
            edit_booster_yaml("network:\n  modules_force_load: x\n", BOOSTER_FORCE_LOAD).ends_with(
                "  modules_force_load: x\nmodules_force_load: vfio_pci,vfio,vfio_iommu_type1\n"
            )
        );
    }

    #[test]
    fn loader_entry_options_line() {
        // An Arch systemd-boot entry.
        let entry = "title   Arch Linux\nlinux   /vmlinuz-linux\ninitrd  /amd-ucode.img\ninitrd  /initramfs-linux.img\noptions root=PARTUUID=1f3a-... rw rootfstype=ext4\n";
        let out = edit_loader_entry(entry, &s(&["iommu=pt"]), &[]);
        assert!(
            out.ends_with("options root=PARTUUID=1f3a-... rw rootfstype=ext4 iommu=pt\n"),
            "{out}"
        );
        assert_eq!(edit_loader_entry(&out, &s(&["iommu=pt"]), &[]), out);
    }
}
