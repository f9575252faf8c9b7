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
//! The planner reads nothing itself: it plans from a [`HostSnapshot`] gathered with
//! [`crate::host::snapshot::Needs::ENABLE`] (the files it needs are [`files_to_read`]), and produces an
//! [`EnablePlan`]: the new content of every file, the commands to regenerate the
//! initramfs and the bootloader configuration, and what to look for inside the
//! regenerated image. Files passthru owns are generated whole, so planning again
//! with the same devices gives the same bytes: re-running `enable` changes nothing.

pub mod by_address;
pub mod cmdline_edit;
pub mod shell;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::check::{CheckReport, IommuKind, Provision};
use crate::host::boot::{BootSetup, Bootloader, Initramfs};
use crate::host::facts::HostFacts;
use crate::host::kernel::config::ConfigValue;
use crate::host::kernel::modules::normalize;
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::records::BindRecord;
use crate::host::snapshot::{FileView, HostSnapshot, NotGathered, Want};
use crate::host::usage::HostUse;
use crate::plan::bind::{self, Overrides, Refusal};

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

/// The journal's manifest (written by [`crate::apply::journal`]): an `enable` whose
/// regenerators did not all succeed — one failed, or passthru was killed while they
/// ran — marks it `"enable": "regenerating"` until they did.
pub const JOURNAL_MANIFEST: &str = "var/lib/passthru/journal/journal.json";

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
    /// An edit of the existing (or missing) file at `path`, written before the
    /// plan's commands, with its mode kept.
    pub fn edit(path: &str, before: Option<String>, after: String) -> Self {
        Self {
            path: path.into(),
            before,
            after: Some(after),
            mode: None,
            after_commands: false,
        }
    }

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

/// What `enable` is asked for: the devices named and the risks accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnableRequest {
    /// The devices named (with those enabled before, when adding to them).
    pub named: Vec<PciAddress>,
    /// The risks accepted.
    pub overrides: Overrides,
}

/// The files and directories the planner reads, for [`HostSnapshot::gather`] to read
/// beforehand: passthru's own files, every file it may edit for each initramfs
/// generator and bootloader, the boot entries, the modprobe.d files (for `install`
/// and `softdep` lines that would defeat a hook), and the `module` link of each PCI
/// driver in `drivers` (which module a driver is). `release` is the running kernel's.
pub fn files_to_read(release: Option<&str>, drivers: &BTreeSet<String>) -> Vec<Want> {
    let mut wants: Vec<Want> = [
        MODPROBE_FILE,
        OVERRIDE_SCRIPT,
        INITRAMFS_TOOLS_HOOK,
        DRACUT_DROPIN,
        MKINITCPIO_DROPIN,
        GRUB_DROPIN,
        GRUB_WAY_BACK,
        ENABLED_STATE,
        JOURNAL_MANIFEST,
        "etc/initramfs-tools/modules",
        "etc/mkinitcpio.conf",
        "etc/booster.yaml",
        "etc/default/grub",
        "etc/kernel/cmdline",
        "etc/kernelstub/configuration",
    ]
    .iter()
    .map(|p| Want::Read((*p).to_string()))
    .collect();
    wants.extend(
        [
            "etc/mkinitcpio.conf.d",
            "etc/grub.d/10_linux",
            "boot/grub2/grubenv",
            BOOSTER_REGENERATE,
        ]
        .iter()
        .map(|p| Want::Exists((*p).to_string())),
    );
    wants.extend(
        [
            "etc/default/grub.d",
            "boot/loader/entries",
            "boot/efi/loader/entries",
            "efi/loader/entries",
        ]
        .iter()
        .chain(by_address::MODPROBE_DIRS)
        .map(|p| Want::ReadDir((*p).to_string())),
    );
    let r = release.unwrap_or_default();
    wants.push(Want::Read(format!("usr/lib/modules/{r}/pkgbase")));
    wants.push(Want::Exists(format!("boot/initramfs-{r}.img")));
    wants.push(Want::Exists(format!("boot/initrd.img-{r}")));
    wants.extend(
        by_address::softdep_files(release)
            .into_iter()
            .map(Want::Read),
    );
    for drv in drivers {
        wants.push(Want::Exists(format!("sys/bus/pci/drivers/{drv}")));
        wants.push(Want::Link(format!("sys/bus/pci/drivers/{drv}/module")));
    }
    wants
}

/// booster's own script that rebuilds every image.
const BOOSTER_REGENERATE: &str = "usr/lib/booster/regenerate_images";

/// What a previous `enable` set up, from the snapshot's copy of [`ENABLED_STATE`]
/// (`None`: nothing, or a file that does not parse).
pub fn previous(snapshot: &HostSnapshot) -> Option<Enabled> {
    let text = snapshot.boot.as_ref()?.files.text(ENABLED_STATE)?;
    serde_json::from_str(&text).ok()
}

/// Whether an earlier `enable` wrote its files but its regenerators did not all
/// succeed (see [`JOURNAL_MANIFEST`]): then the files are in place but the initramfs
/// and the bootloader's configuration may not carry them, and the commands run again.
fn regeneration_unfinished(snapshot: &HostSnapshot) -> bool {
    #[derive(serde::Deserialize)]
    struct Phase {
        #[serde(default)]
        enable: Option<String>,
    }
    snapshot
        .boot
        .as_ref()
        .and_then(|b| b.files.text(JOURNAL_MANIFEST))
        .and_then(|text| serde_json::from_str::<Phase>(&text).ok())
        .is_some_and(|p| p.enable.is_some())
}

/// The planner's view of the snapshot.
struct EnableFacts<'a> {
    /// check's facts (IOMMU kind, kernel config, modules).
    facts: &'a HostFacts,
    /// check's verdicts on them, judged once.
    report: CheckReport,
    /// PCI devices.
    devices: &'a [PciDevice],
    /// How the host boots.
    boot: &'a BootSetup,
    /// The files read for the plan.
    files: &'a FileView,
    /// Root disk and default route.
    host: &'a HostUse,
    /// Runtime bind records (a device passthru holds now had another driver).
    records: &'a [BindRecord],
    /// What a previous `enable` set up.
    previous: Option<Enabled>,
    /// See [`regeneration_unfinished`].
    regeneration_unfinished: bool,
    /// The snapshot is of the running system.
    is_system: bool,
}

impl<'a> EnableFacts<'a> {
    fn of(snapshot: &'a HostSnapshot) -> Result<Self, NotGathered> {
        let facts = snapshot.facts()?;
        let boot = snapshot.boot()?;
        Ok(Self {
            report: crate::check::run(facts),
            facts,
            devices: &snapshot.devices,
            boot: &boot.setup,
            files: &boot.files,
            host: &snapshot.usage,
            records: &snapshot.records,
            previous: previous(snapshot),
            regeneration_unfinished: regeneration_unfinished(snapshot),
            is_system: snapshot.is_system,
        })
    }

    fn read(&self, path: &str) -> Option<String> {
        self.files.text(path)
    }

    /// A file of the user's that passthru edits, exactly as it is: `Ok(None)` when it
    /// does not exist. A file that is not UTF-8 or cannot be read is an error, never
    /// lossy text or an empty file: an edit made from either would rewrite bytes
    /// passthru never meant to touch.
    fn read_editable(&self, path: &str) -> Result<Option<String>, EditError> {
        match self.files.bytes(path) {
            Ok(Some(bytes)) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| EditError::NotUtf8(e.utf8_error().valid_up_to())),
            Ok(None) => Ok(None),
            Err(why) => Err(EditError::Unreadable(why.to_string())),
        }
    }
}

/// Why passthru leaves a file of the user's as it is, and makes its edit a step by
/// hand: what it would have to guess to edit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// Not UTF-8: passthru edits text, and would have to change bytes to edit this.
    #[error(
        "it is not UTF-8 text (byte {0} is not), and passthru changes no bytes it cannot read"
    )]
    NotUtf8(usize),
    /// It exists but cannot be read.
    #[error("it cannot be read ({0})")]
    Unreadable(String),
    /// A shell file that is more than plain assignments.
    #[error("{0}")]
    Shell(#[from] shell::ShellError),
    /// A kernel command line that does not split into arguments.
    #[error(transparent)]
    Cmdline(#[from] cmdline_edit::CmdlineError),
    /// Anything else passthru would have to guess.
    #[error("{0}")]
    Unsupported(String),
}

/// The step by hand for a file passthru leaves as it is.
fn by_hand(path: &str, e: &EditError, what: &str) -> String {
    format!("passthru leaves /{path} as it is: {e}. {what}")
}

/// The kernel arguments for this host: `(add, remove)`.
fn kernel_args(f: &EnableFacts, ids: &[String]) -> (Vec<String>, Vec<String>) {
    let summary = &f.report;
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
    /// The snapshot lacks a part the planner needs.
    Snapshot(NotGathered),
}

impl From<NotGathered> for EnableError {
    fn from(e: NotGathered) -> Self {
        Self::Snapshot(e)
    }
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
    match f.files.link(format!("{dir}/module")) {
        Some(target) => match target.file_name() {
            Some(m) => HostDriver::Module(normalize(&m.to_string_lossy())),
            None => HostDriver::Builtin(drv.to_string()),
        },
        None if f.is_system && f.files.exists(&dir) => HostDriver::Builtin(drv.to_string()),
        None => {
            let builtin = matches!(&f.facts.modules, Ok(Some(index)) if index.builtin.contains(&normalize(drv)));
            if builtin {
                HostDriver::Builtin(drv.to_string())
            } else {
                HostDriver::Module(normalize(drv))
            }
        }
    }
}

/// Refuses a host module whose name is no module name (sysfs names a driver and its
/// module by links, a previous `enable` recorded it in a file, and a captured or
/// tampered tree can hold anything there): passthru writes these names into
/// `/etc/modprobe.d` lines, which a newline or a space would rewrite.
fn hostile_driver_names(
    f: &EnableFacts,
    inputs: &bind::Inputs<'_>,
    drivers: &BTreeMap<PciAddress, HostDriver>,
) -> Result<(), EnableError> {
    let refusals: Vec<Refusal> = drivers
        .iter()
        .filter_map(|(a, d)| {
            // A built-in driver's name goes into no file, only into messages.
            let name = d.module()?;
            if by_address::is_module_name(name) {
                return None;
            }
            let desc = f
                .devices
                .iter()
                .find(|d| d.address == *a)
                .map_or_else(|| a.to_string(), |d| inputs.describe(d));
            Some(Refusal {
                address: Some(*a),
                reason: format!(
                    "the driver of {desc} is named {name:?}, which is not a kernel module's \
                     name (letters, digits, `_` and `-`): passthru writes no such name into \
                     /etc/modprobe.d"
                ),
                override_flag: None,
            })
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(EnableError::Refused(refusals))
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
        // The planner refuses any other name; a name that is not one is never written.
        for d in softdeps.iter().filter(|d| by_address::is_module_name(d)) {
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
    let conflicts = by_address::conflicts(f.files, f.facts.release.as_deref());
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
/// `/etc/mkinitcpio.conf`, at the front or the back, skipping those present (module
/// names with `-` and `_` alike); the last assignment is edited, or one is appended.
/// The array may span lines and hold comments: the items are inserted beside its
/// first or last element, and every other byte stays. A file that is more than
/// assignments, or a variable that is a string rather than an array, is refused.
pub fn edit_bash_array(
    text: &str,
    name: &str,
    items: &[&str],
    front: bool,
) -> Result<String, EditError> {
    let list = shell::assignments(text)?;
    let Some(a) = list.iter().rev().find(|a| a.name == name && !a.append) else {
        return Ok(shell::append(
            text,
            name,
            &format!("{name}=({})", items.join(" ")),
        )?);
    };
    let shell::Assigned::Array { open, close, words } = &a.value else {
        return Err(EditError::Unsupported(format!(
            "line {}: {name} is a string, not the array `{name}=(…)` passthru adds to",
            a.line
        )));
    };
    // `NAME+=word` after the array appends to its first element (bash): with an item
    // put in front, it would change that item's name.
    let after = list.iter().skip_while(|b| !std::ptr::eq(*b, a)).skip(1);
    if let Some(b) = after
        .filter(|b| b.name == name && b.append)
        .find(|b| matches!(b.value, shell::Assigned::Scalar(_)))
    {
        return Err(EditError::Unsupported(format!(
            "line {}: {name}+= appends a string to the first element of the array",
            b.line
        )));
    }
    let module = |m: &str| {
        if m.contains('/') {
            m.to_string()
        } else {
            normalize(m)
        }
    };
    // Every assignment after the one edited adds to it (`+=`): those count as present.
    let present: Vec<String> = list
        .iter()
        .filter(|b| b.name == name && b.line >= a.line)
        .flat_map(|b| match &b.value {
            shell::Assigned::Array { words, .. } => words.clone(),
            shell::Assigned::Scalar(w) => vec![w.clone()],
        })
        .filter_map(|w| w.value.ok())
        .map(|w| module(&w))
        .collect();
    let missing: Vec<String> = items
        .iter()
        .filter(|it| !present.contains(&module(it)))
        .map(|it| shell::quote_like("x", it))
        .collect();
    if missing.is_empty() {
        return Ok(text.to_string());
    }
    let joined = missing.join(" ");
    let edit = match (words.first(), words.last()) {
        (Some(first), _) if front => (first.span.start..first.span.start, format!("{joined} ")),
        (_, Some(last)) => (last.span.end..last.span.end, format!(" {joined}")),
        _ => (open + 1..*close, joined),
    };
    Ok(shell::splice(text, vec![edit]))
}

/// For every systemd-boot entry, a copy that boots without VFIO: `title … (without
/// VFIO)`, passthru's arguments removed, the way-back argument added. Entries that
/// are themselves such copies are skipped; an entry passthru cannot edit gets no copy,
/// and a step by hand says so.
fn way_back_entries(
    f: &EnableFacts,
    entries: &[String],
    add: &[String],
    manual: &mut Vec<String>,
) -> Vec<FileChange> {
    let mut out = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !e.ends_with("-without-vfio.conf"))
    {
        let copy = f.read_editable(e).and_then(|text| {
            let Some(text) = text else { return Ok(None) };
            let mut copy = String::new();
            for line in text.split_inclusive('\n') {
                match line.strip_prefix("title") {
                    Some(title) if title.starts_with([' ', '\t']) => {
                        let end = &line[line.trim_end().len()..];
                        copy.push_str(&format!("title {} (without VFIO){end}", title.trim()));
                    }
                    _ => copy.push_str(line),
                }
            }
            edit_loader_entry(&copy, &[WAY_BACK_ARG.to_string()], add).map(Some)
        });
        let path = format!("{}-without-vfio.conf", e.trim_end_matches(".conf"));
        match copy {
            Ok(Some(text)) => out.push(change(f, &path, Some(text))),
            Ok(None) => {}
            Err(err) => manual.push(format!(
                "passthru makes no copy of /{e} that boots without VFIO: {err}. If a binding \
                 locks you out, {WAY_BACK_BY_HAND}"
            )),
        }
    }
    out
}

/// [`way_back_entries`] for every entry in `dir`, written after the plan's commands
/// ran: for tools (grubby, kernelstub) that rewrite the entries themselves.
fn way_back_after_commands(
    f: &EnableFacts,
    dir: &str,
    add: &[String],
    manual: &mut Vec<String>,
) -> Vec<FileChange> {
    let entries: Vec<String> = f
        .files
        .entries(dir)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    way_back_entries(f, &entries, add, manual)
        .into_iter()
        .map(|c| FileChange {
            after_commands: true,
            ..c
        })
        .collect()
}

/// Every systemd-boot entry with its `options` lines edited; an entry passthru
/// cannot edit is left as it is, with a step by hand.
fn entry_changes(
    f: &EnableFacts,
    entries: &[String],
    add: &[String],
    remove: &[String],
    manual: &mut Vec<String>,
) -> Vec<FileChange> {
    let mut out = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !e.ends_with("-without-vfio.conf"))
    {
        let edited = f.read_editable(e).and_then(|before| {
            let after = before
                .as_deref()
                .map(|t| edit_loader_entry(t, add, remove))
                .transpose()?;
            Ok((before, after))
        });
        match edited {
            Ok((before, after)) => out.push(FileChange {
                path: e.into(),
                before,
                after,
                mode: None,
                after_commands: false,
            }),
            Err(err) => manual.push(by_hand(
                e,
                &err,
                &args_by_hand("its `options` line", add, remove),
            )),
        }
    }
    out
}

/// What to add and remove by hand, in words.
fn args_by_hand(place: &str, add: &[String], remove: &[String]) -> String {
    let mut s = format!("Add `{}` to {place}", add.join(" "));
    if !remove.is_empty() {
        s.push_str(&format!(
            ", and make sure none of `{}` is there",
            remove.join(" ")
        ));
    }
    s
}

/// Edits the `options` lines of a systemd-boot entry. The boot loader joins every
/// `options` line of an entry (Boot Loader Specification), so an argument counts as
/// present on any of them, a contradiction is dropped from each, and the missing
/// arguments go on the last one; an entry without one gets one. Every other byte —
/// other keys, comments, the spacing after `options` — stays.
pub fn edit_loader_entry(
    text: &str,
    add: &[String],
    remove: &[String],
) -> Result<String, EditError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // (line index, where its value starts, where it ends)
    let mut options = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("options") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let body = line.trim_end();
        let start = body.len() - body["options".len()..].trim_start().len();
        options.push((i, start.max("options".len()), body.len().max(start)));
    }
    if options.is_empty() {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("options {}\n", add.join(" ")));
        return Ok(out);
    }
    let values: Vec<&str> = options.iter().map(|&(i, a, b)| &lines[i][a..b]).collect();
    let edited = cmdline_edit::edit_lines(&values, add, remove)?;
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    for ((i, a, b), new) in options.into_iter().zip(edited) {
        if new != lines[i][a..b] {
            let line = lines[i];
            let sep = if a == "options".len() { " " } else { "" };
            out[i] = format!("{}{sep}{new}{}", &line[..a], &line[b..]);
        }
    }
    Ok(out.concat())
}

/// What GRUB's other drop-ins (`/etc/default/grub.d/*.cfg`, which grub-mkconfig
/// sources after `/etc/default/grub`, in name order) do to passthru's arguments, as
/// steps by hand: one that sets an argument passthru removes (passthru edits no
/// file of another package's), one read after passthru's own that sets
/// `GRUB_CMDLINE_LINUX_DEFAULT` without building on it (passthru's arguments would be
/// lost), and one passthru cannot read.
fn grub_dropin_notes(f: &EnableFacts, remove: &[String]) -> Vec<String> {
    const VARS: [&str; 2] = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];
    let mut names = f.files.entries("etc/default/grub.d");
    names.sort();
    let ours = GRUB_DROPIN.rsplit('/').next().unwrap_or_default();
    let mut notes = Vec::new();
    for name in names
        .iter()
        .filter(|n| n.ends_with(".cfg") && n.as_str() != ours)
    {
        let path = format!("etc/default/grub.d/{name}");
        let Some(text) = f.read(&path) else { continue };
        let list = match shell::assignments(&text) {
            Ok(list) => list,
            Err(e) => {
                // Only a file that may assign the arguments matters (Ubuntu's
                // init-select.cfg only tests them).
                if VARS
                    .iter()
                    .any(|v| text.contains(&format!("{v}=")) || text.contains(&format!("{v}+=")))
                {
                    notes.push(format!(
                        "passthru cannot read /{path} ({e}): make sure it sets none of `{}` \
                         and keeps the arguments of /{GRUB_DROPIN}",
                        remove.join(" ")
                    ));
                }
                continue;
            }
        };
        for a in list.iter().filter(|a| VARS.contains(&a.name.as_str())) {
            let shell::Assigned::Scalar(w) = &a.value else {
                continue;
            };
            let raw = &text[w.span.clone()];
            let flat = raw.replace(['"', '\''], " ");
            let found: Vec<&str> = remove
                .iter()
                .filter(|r| cmdline_edit::has_arg(&flat, r))
                .map(String::as_str)
                .collect();
            if !found.is_empty() {
                notes.push(format!(
                    "/{path} (line {}) sets `{}` in {}, against the VFIO arguments: remove it there",
                    a.line,
                    found.join(" "),
                    a.name
                ));
            }
            let builds_on =
                raw.contains(&format!("${}", a.name)) || raw.contains(&format!("${{{}}}", a.name));
            if a.name == VARS[1] && name.as_str() > ours && !builds_on && !a.append {
                notes.push(format!(
                    "/{path} (line {}) is read after /{GRUB_DROPIN} and sets {} anew, which drops \
                     passthru's arguments: make it add to the value (`{}=\"${} …\"`) or rename it \
                     to sort before passthru.cfg",
                    a.line, a.name, a.name, a.name
                ));
            }
        }
    }
    notes
}

/// passthru's GRUB drop-in, adding `args` to what `/etc/default/grub` sets (none:
/// the drop-in goes, or is not written).
fn grub_dropin(f: &EnableFacts, args: &[String]) -> Option<FileChange> {
    let text = (!args.is_empty()).then(|| {
        format!(
            "{HEADER}GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT {}\"\n",
            args.join(" ")
        )
    });
    Some(change(f, GRUB_DROPIN, text)).filter(FileChange::is_change)
}

/// The bind planner's view for a binding at boot: no process holds a device open
/// yet, and the boot display drives the console.
pub fn boot_inputs(snapshot: &HostSnapshot) -> bind::Inputs<'_> {
    bind::Inputs {
        console_on_framebuffer: true,
        ..snapshot.bind_inputs()
    }
}

/// Plans `enable` for the named devices.
///
/// `snapshot` must hold check's facts and the boot files ([`crate::host::snapshot::Needs::ENABLE`]); the
/// planner reads nothing else.
pub fn plan(snapshot: &HostSnapshot, request: &EnableRequest) -> Result<EnablePlan, EnableError> {
    let f = &EnableFacts::of(snapshot)?;
    let (named, overrides) = (request.named.as_slice(), request.overrides);
    // The same group logic as a runtime bind; the host drivers and the boot display
    // matter even more at boot, when nothing can be closed first.
    let inputs = boot_inputs(snapshot);
    if f.report.host.iommu.state == crate::check::IommuState::Absent {
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
    let builtin = f.report.host.vfio_pci == Provision::Builtin;
    let drivers = host_drivers(f, &devices);
    hostile_driver_names(f, &inputs, &drivers)?;
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
                .filter(|p| f.files.exists(p))
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
    let mut by_hand_initramfs = Vec::new();
    match initramfs {
        _ if builtin && script.is_none() => {}
        Initramfs::InitramfsTools => {
            let path = "etc/initramfs-tools/modules";
            if !vfio_modules.is_empty() {
                match f.read_editable(path) {
                    Ok(before) => {
                        let after = append_modules(before.as_deref(), &vfio_modules);
                        files.push(FileChange::edit(path, before, after));
                    }
                    Err(e) => by_hand_initramfs.push(by_hand(
                        path,
                        &e,
                        &format!(
                            "Add {} to it, one a line, then run `update-initramfs -u -k all`",
                            vfio_modules.join(", ")
                        ),
                    )),
                }
            }
            if script.is_some() {
                files.push(FileChange {
                    mode: Some(0o755),
                    ..change(f, INITRAMFS_TOOLS_HOOK, Some(initramfs_tools_hook()))
                });
            }
            // Options only (`-k all` is one): nothing a `--` would protect.
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
                    argv: vec![
                        "lsinitramfs".into(),
                        "--".into(),
                        format!("/boot/initrd.img-{release}"),
                    ],
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
            // Options only: nothing a `--` would protect.
            let cmd = PlannedCommand {
                argv: vec!["dracut".into(), "-f".into(), "--regenerate-all".into()],
                why: rebuild_why("every initramfs"),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            if !release.is_empty() {
                inspections.push(Inspection {
                    argv: vec!["lsinitrd".into(), "--".into(), dracut_image(f, &release)],
                    must_contain: image_must(),
                });
            }
        }
        Initramfs::Mkinitcpio => {
            let mut extra_files = vec![format!("/{MODPROBE_FILE}")];
            extra_files.extend(script.clone());
            if f.files.exists("etc/mkinitcpio.conf.d") {
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
                let extra: Vec<&str> = extra_files.iter().map(String::as_str).collect();
                let edited = f.read_editable(path).and_then(|before| {
                    let before = before.unwrap_or_default();
                    let modules = edit_bash_array(&before, "MODULES", &vfio_modules, true)?;
                    Ok((before, edit_bash_array(&modules, "FILES", &extra, false)?))
                });
                match edited {
                    Ok((before, after)) => files.push(FileChange {
                        before: f.files.exists(path).then_some(before),
                        ..change(f, path, Some(after))
                    }),
                    Err(e) => {
                        let mut what = String::new();
                        if !vfio_modules.is_empty() {
                            what.push_str(&format!(
                                "Put {} first in MODULES, ",
                                vfio_modules.join(" ")
                            ));
                        }
                        what.push_str(&format!(
                            "add {} to FILES, then run `mkinitcpio -P`",
                            extra.join(" ")
                        ));
                        by_hand_initramfs.push(by_hand(path, &e, &what));
                    }
                }
            }
            // Options only: nothing a `--` would protect.
            let cmd = PlannedCommand {
                argv: vec!["mkinitcpio".into(), "-P".into()],
                why: rebuild_why("every preset's initramfs"),
            };
            commands.push(cmd.clone());
            regenerate.push(cmd);
            inspections.push(Inspection {
                argv: vec![
                    "lsinitcpio".into(),
                    "--".into(),
                    "/boot/initramfs-linux.img".into(),
                ],
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
            let edited = f.read_editable(path).and_then(|before| {
                let after = edit_booster_yaml(before.as_deref().unwrap_or(""), BOOSTER_FORCE_LOAD)?;
                Ok((before, after))
            });
            match edited {
                Ok((before, after)) => files.push(FileChange::edit(path, before, after)),
                Err(e) => by_hand_initramfs.push(by_hand(
                    path,
                    &e,
                    &format!(
                        "Add {} to the front of its modules_force_load, then rebuild the booster images",
                        BOOSTER_FORCE_LOAD.join(",")
                    ),
                )),
            }
            let argv = if f.files.exists(BOOSTER_REGENERATE) {
                vec![format!("/{BOOSTER_REGENERATE}")]
            } else {
                vec![
                    "booster".into(),
                    "build".into(),
                    "--force".into(),
                    format!("--kernel-version={release}"),
                    "--".into(),
                    booster_image(f, &release),
                ]
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
                    argv: vec![
                        "booster".into(),
                        "ls".into(),
                        "--".into(),
                        booster_image(f, &release),
                    ],
                    must_contain: vec!["vfio_pci.ko".into()],
                });
                if !ids.is_empty() {
                    inspections.push(Inspection {
                        argv: vec![
                            "booster".into(),
                            "cat".into(),
                            "--".into(),
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

    // An initramfs configuration left to the user: the image is rebuilt all the same
    // (it carries the modprobe.d file), but what is inside it is the user's to make
    // right, so it is not looked into.
    if !by_hand_initramfs.is_empty() {
        inspections.clear();
        manual.append(&mut by_hand_initramfs);
    }

    // The bootloader.
    let args_text = add.join(" ");
    match &f.boot.bootloader {
        Bootloader::Grub { dropin, update } => {
            let path = "etc/default/grub";
            let update_text = update.join(" ");
            // What the file sets, or why passthru cannot know.
            let main = f.read_editable(path);
            let current = main.clone().and_then(|t| {
                let (linux, default) = grub_cmdlines(t.as_deref().unwrap_or(""))?;
                Ok(format!("{linux} {default}"))
            });
            match (&current, *dropin) {
                (Ok(current), true) if !remove.iter().any(|r| cmdline_edit::has_arg(current, r)) => {
                    let missing: Vec<String> = add
                        .iter()
                        .filter(|a| !cmdline_edit::has_arg(current, a))
                        .cloned()
                        .collect();
                    files.extend(grub_dropin(f, &missing));
                }
                (Err(e), true) => {
                    // The drop-in adds to whatever the file sets; what it may contradict
                    // is for the user to check.
                    files.extend(grub_dropin(f, &add));
                    manual.push(format!(
                        "passthru cannot read the kernel arguments /{path} sets: {e}. Make sure \
                         GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT have none of `{}` \
                         (then run `{update_text}`)",
                        remove.join(" ")
                    ));
                }
                _ => match main.and_then(|t| {
                    let t = t.unwrap_or_default();
                    let after = edit_grub_default(&t, &add, &remove)?;
                    Ok((f.files.exists(path).then_some(t), after))
                }) {
                    Ok((before, after)) => files.push(FileChange {
                        path: path.into(),
                        before,
                        after: Some(after),
                        mode: None,
                        after_commands: false,
                    }),
                    Err(e) => manual.push(by_hand(
                        path,
                        &e,
                        &format!(
                            "Add `{}` to GRUB_CMDLINE_LINUX_DEFAULT, make sure neither it nor \
                             GRUB_CMDLINE_LINUX has any of `{}`, then run `{update_text}`",
                            add.join(" "),
                            remove.join(" ")
                        ),
                    )),
                },
            }
            if *dropin {
                manual.extend(grub_dropin_notes(f, &remove));
            }
            // The way back: a second set of menu entries, made by GRUB's own 10_linux.
            if f.files.exists("etc/grub.d/10_linux") {
                files.push(FileChange {
                    mode: Some(0o755),
                    ..change(f, GRUB_WAY_BACK, Some(grub_way_back_script(&add)))
                });
                way_back = WAY_BACK_ENTRIES.into();
            }
            // `update-grub` takes nothing, `grub-mkconfig -o FILE` an option's value:
            // no positional argument for a `--` to protect.
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
                // Every value in `--opt=value` form (grubby's popt reads it so): no
                // value can be taken for an option, and there are no positionals.
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
            let copies = way_back_after_commands(f, "boot/loader/entries", &add, &mut manual);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
        }
        Bootloader::Kernelstub => {
            snapshots.push("etc/kernelstub/configuration".into());
            snapshots.extend(
                f.files.entries("boot/efi/loader/entries")
                    .into_iter()
                    .map(|n| PathBuf::from(format!("boot/efi/loader/entries/{n}"))),
            );
            let config = "etc/kernelstub/configuration";
            let configured = kernelstub_options(f.read(config).as_deref().unwrap_or(""));
            if configured.is_none() {
                // kernelstub adds the options all the same; what they contradict in a
                // configuration passthru cannot read is for the user to check.
                manual.push(format!(
                    "passthru cannot read `user.kernel_options` in /{config} (JSON): make sure \
                     they have none of `{}` (`kernelstub --print-config` shows them)",
                    remove.join(" ")
                ));
            }
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
            // `--opt=value`, so that no value can be read as an option of its own.
            if !missing.is_empty() {
                commands.push(PlannedCommand {
                    argv: vec!["kernelstub".into(), format!("--add-options={}", missing.join(" "))],
                    why: "add the kernel arguments to the boot entry".into(),
                });
            }
            if !drop.is_empty() {
                commands.push(PlannedCommand {
                    argv: vec!["kernelstub".into(), format!("--delete-options={}", drop.join(" "))],
                    why: "drop the kernel arguments that contradict them".into(),
                });
            }
            // The way back: kernelstub writes systemd-boot entries on the ESP
            // (`Pop_OS-current.conf`, `Pop_OS-oldkern.conf`) that point at kernels it
            // copies to stable paths there, so a copy of each without the VFIO
            // arguments stays bootable across kernel updates. Written after kernelstub
            // ran, which rewrites only its own entries.
            let copies = way_back_after_commands(f, "boot/efi/loader/entries", &add, &mut manual);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
        }
        Bootloader::KernelCmdline { refresh, entries } => {
            let path = "etc/kernel/cmdline";
            let edited = f.read_editable(path).and_then(|before| {
                let text = before.as_deref().unwrap_or("");
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines.len() > 1 {
                    return Err(EditError::Unsupported(format!(
                        "it has {} lines, and the tools that read it do not agree on what a \
                         second line means",
                        lines.len()
                    )));
                }
                let after = cmdline_edit::edit(text.trim(), &add, &remove)? + "\n";
                Ok((before, after))
            });
            match edited {
                Ok((before, after)) => files.push(FileChange {
                    path: path.into(),
                    before,
                    after: Some(after),
                    mode: None,
                    after_commands: false,
                }),
                Err(e) => manual.push(by_hand(path, &e, &args_by_hand("it", &add, &remove))),
            }
            files.extend(entry_changes(f, entries, &add, &remove, &mut manual));
            let copies = way_back_entries(f, entries, &add, &mut manual);
            if !copies.is_empty() {
                way_back = WAY_BACK_ENTRIES.into();
            }
            files.extend(copies);
            if let Some(r) = refresh {
                // `proxmox-boot-tool refresh`: a fixed subcommand, nothing for a `--`
                // to protect.
                let cmd = PlannedCommand {
                    argv: r.clone(),
                    why: "copy the new command line to the boot entries".into(),
                };
                commands.push(cmd.clone());
                regenerate.push(cmd);
            }
        }
        Bootloader::LoaderEntries { entries } => {
            files.extend(entry_changes(f, entries, &add, &remove, &mut manual));
            let copies = way_back_entries(f, entries, &add, &mut manual);
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
    // Nothing to write means nothing to regenerate: running `enable` again is a no-op —
    // unless the last one's regenerators did not finish.
    if files.is_empty() && f.previous.as_ref() == Some(&enabled) && !f.regeneration_unfinished {
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
            if crate::host::usage::is_host_side_bridge(d.class) {
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
        if crate::host::usage::is_platform_function(d.class) {
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
        refusals.extend(bind::storage_refusal(inputs, d, o));
    }
    if named.iter().any(|a| {
        f.devices
            .iter()
            .any(|d| d.address == *a && crate::host::usage::is_host_side_bridge(d.class))
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
/// assignment is edited (YAML keeps the last), or one is appended. A value that is
/// not a one-line string without escapes (a block, a flow sequence, a value that
/// goes on on the next lines) is refused: passthru would have to guess what YAML
/// makes of it.
pub fn edit_booster_yaml(text: &str, modules: &[&str]) -> Result<String, EditError> {
    const KEY: &str = "modules_force_load:";
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(i) = lines.iter().rposition(|l| {
        l.strip_prefix(KEY.trim_end_matches(':'))
            .is_some_and(|r| r.trim_start_matches([' ', '\t']).starts_with(':'))
    }) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{KEY} {}\n", modules.join(",")));
        return Ok(out);
    };
    let refuse = |why: &str| {
        Err(EditError::Unsupported(format!(
            "line {}: modules_force_load {why}",
            i + 1
        )))
    };
    let line = lines[i].trim_end_matches('\n').trim_end_matches('\r');
    let Some(rest) = line.strip_prefix(KEY) else {
        return refuse("has a space before its colon");
    };
    // A following line that is indented (or a bare continuation) belongs to this value.
    if lines[i + 1..]
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .is_some_and(|l| l.starts_with([' ', '\t']))
    {
        return refuse("goes on over several lines");
    }
    // A trailing comment stays; the value is the part before it.
    let (value, comment) = match rest.find(" #") {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let value = value.trim();
    let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''));
    let inner = match quote {
        Some(q) => {
            if value.len() < 2 || !value.ends_with(q) {
                return refuse("has a quote that does not close on its line");
            }
            let inner = &value[1..value.len() - 1];
            if (q == '"' && inner.contains(['\\', '"'])) || (q == '\'' && inner.contains('\'')) {
                return refuse("has escapes in its quotes");
            }
            inner
        }
        None => {
            if value.starts_with(['[', '{', '|', '>', '&', '*', '!', '%', '@', '`']) {
                return refuse("is not a plain comma-separated string");
            }
            value
        }
    };
    let present: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !present.iter().any(|p| normalize(p) == normalize(m)))
        .collect();
    if missing.is_empty() {
        return Ok(text.to_string());
    }
    let merged: Vec<&str> = missing.iter().copied().chain(present).collect();
    let q = quote.map(String::from).unwrap_or_default();
    let mut out: String = lines[..i].concat();
    out.push_str(&format!("{KEY} {q}{}{q}{comment}", merged.join(",")));
    out.push_str(&lines[i][line.len()..]);
    out.push_str(&lines[i + 1..].concat());
    Ok(out)
}

/// The image `dracut --regenerate-all` writes for `release`: Fedora's dracut writes
/// `/boot/initramfs-<release>.img`, Debian's (patched) `/boot/initrd.img-<release>`
/// beside the kernel. The one that exists wins; Fedora's name otherwise.
fn dracut_image(f: &EnableFacts, release: &str) -> String {
    let debian = format!("boot/initrd.img-{release}");
    let fedora = format!("boot/initramfs-{release}.img");
    if !f.files.exists(&fedora) && f.files.exists(&debian) {
        format!("/{debian}")
    } else {
        format!("/{fedora}")
    }
}

/// The kernel command lines grubby manages, as configured: the `options` lines of
/// every BLS entry in `/boot/loader/entries` (passthru's own "(without VFIO)" copies
/// aside), joined as the boot loader joins them; without entries
/// `/etc/kernel/cmdline`, then `GRUB_CMDLINE_LINUX` of `/etc/default/grub`, then the
/// running kernel's command line.
fn grubby_configured(f: &EnableFacts) -> Vec<String> {
    let entries: Vec<String> = f
        .files
        .entries("boot/loader/entries")
        .into_iter()
        .filter(|n| n.ends_with(".conf") && !n.ends_with("-without-vfio.conf"))
        .filter_map(|n| f.read(&format!("boot/loader/entries/{n}")))
        .map(|text| {
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("options")
                        .filter(|r| r.starts_with([' ', '\t']))
                        .map(str::trim)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    if !entries.is_empty() {
        return entries;
    }
    if let Some(line) = f.read("etc/kernel/cmdline") {
        return vec![line.trim().to_string()];
    }
    if let Some(v) = f.read("etc/default/grub").and_then(|t| {
        let list = shell::assignments(&t).ok()?;
        let (_, v) = shell::last(&list, "GRUB_CMDLINE_LINUX")?.scalar().ok()?;
        Some(v.to_string())
    }) {
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
    .filter(|p| f.files.exists(p))
    .map(PathBuf::from)
    .collect();
    out.extend(
        f.files
            .entries("boot/loader/entries")
            .into_iter()
            .map(|n| PathBuf::from(format!("boot/loader/entries/{n}"))),
    );
    out
}

/// The kernel command lines `/etc/default/grub` sets, as the shell reads them:
/// `(GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT)`, empty when unset. An error
/// when the file is more than plain assignments or a value is not plain text.
pub fn grub_cmdlines(text: &str) -> Result<(String, String), EditError> {
    let list = shell::assignments(text)?;
    let value = |name: &str| -> Result<String, EditError> {
        match shell::last(&list, name) {
            None => Ok(String::new()),
            Some(a) => a
                .scalar()
                .map(|(_, v)| v.to_string())
                .map_err(EditError::Unsupported),
        }
    };
    Ok((
        value("GRUB_CMDLINE_LINUX")?,
        value("GRUB_CMDLINE_LINUX_DEFAULT")?,
    ))
}

/// Edits `GRUB_CMDLINE_LINUX_DEFAULT` in `/etc/default/grub` (and drops contradicting
/// arguments from `GRUB_CMDLINE_LINUX`): the last assignment of each, the one the
/// shell keeps, gets its new value in the quoting it had; every other byte stays.
/// Refused when the file is more than plain assignments, or when a value refers to a
/// variable or runs a command (passthru cannot know what it is).
pub fn edit_grub_default(
    text: &str,
    add: &[String],
    remove: &[String],
) -> Result<String, EditError> {
    let list = shell::assignments(text)?;
    let mut edits = Vec::new();
    let mut seen_default = false;
    for (name, add) in [
        ("GRUB_CMDLINE_LINUX_DEFAULT", add),
        ("GRUB_CMDLINE_LINUX", &[][..]),
    ] {
        let Some(a) = shell::last(&list, name) else {
            continue;
        };
        seen_default |= name == "GRUB_CMDLINE_LINUX_DEFAULT";
        let (word, value) = a.scalar().map_err(EditError::Unsupported)?;
        let new = cmdline_edit::edit(value, add, remove)?;
        if new != value {
            let raw = &text[word.span.clone()];
            edits.push((word.span.clone(), shell::quote_like(raw, &new)));
        }
    }
    let mut out = shell::splice(text, edits);
    if !seen_default {
        out = shell::append(
            &out,
            "GRUB_CMDLINE_LINUX_DEFAULT",
            &format!(
                "GRUB_CMDLINE_LINUX_DEFAULT={}",
                shell::quote_like("\"\"", &add.join(" "))
            ),
        )?;
    }
    Ok(out)
}

/// A map from a root-relative path to its content, for tests and previews.
pub type Files = BTreeMap<PathBuf, String>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    fn request(named: &[&str]) -> EnableRequest {
        EnableRequest {
            named: named.iter().map(|a| a.parse().unwrap()).collect(),
            overrides: Overrides::default(),
        }
    }

    fn after<'a>(plan: &'a EnablePlan, path: &str) -> &'a str {
        plan.files
            .iter()
            .find(|f| f.path == std::path::Path::new(path))
            .and_then(|f| f.after.as_deref())
            .unwrap_or_else(|| panic!("no {path} in {:?}", plan.files))
    }

    #[test]
    fn a_snapshot_built_in_memory_plans_the_boot_setup() {
        let snapshot = crate::host::snapshot::in_memory::desktop();
        let plan = plan(&snapshot, &request(&["0000:01:00.0"])).unwrap();
        assert_eq!(plan.enabled.ids, s(&["10de:228b", "10de:2484"]));
        let modprobe = after(&plan, MODPROBE_FILE);
        assert!(
            modprobe.contains("options vfio-pci ids=10de:228b,10de:2484\n"),
            "{modprobe}"
        );
        assert!(
            modprobe.contains("softdep nvidia pre: vfio-pci\n"),
            "{modprobe}"
        );
        // VT-d from the ACPI tables, and a kernel config that does not say it is on.
        let dropin = after(&plan, GRUB_DROPIN);
        assert!(dropin.contains("intel_iommu=on iommu=pt"), "{dropin}");
        assert!(after(&plan, "etc/initramfs-tools/modules")
            .ends_with("vfio\nvfio_iommu_type1\nvfio_pci\n"));
        // GRUB's own 10_linux is there: the way back is a second set of entries.
        assert!(plan
            .files
            .iter()
            .any(|f| f.path == std::path::Path::new(GRUB_WAY_BACK)));
        let argv: Vec<&str> = plan.commands.iter().map(|c| c.argv[0].as_str()).collect();
        assert_eq!(argv, ["update-initramfs", "update-grub"]);
    }

    #[test]
    fn a_snapshot_built_in_memory_refuses_the_boot_display() {
        let snapshot = crate::host::snapshot::in_memory::desktop();
        match plan(&snapshot, &request(&["0000:00:02.0"])) {
            Err(EnableError::Refused(r)) => assert!(
                r.iter()
                    .any(|r| r.override_flag == Some("--allow-boot-display")),
                "{r:?}"
            ),
            other => panic!("{other:?}"),
        }
        // No ACPI IOMMU table and no groups: no kernel argument can help.
        let mut bare = crate::host::snapshot::in_memory::desktop();
        if let Some(f) = bare.facts.as_mut() {
            f.acpi.dmar = false;
            f.groups = Ok(Default::default());
        }
        assert!(matches!(
            plan(&bare, &request(&["0000:01:00.0"])),
            Err(EnableError::Refused(_))
        ));
        // A snapshot gathered without the boot files cannot be planned from.
        bare.boot = None;
        assert!(matches!(
            plan(&bare, &request(&["0000:01:00.0"])),
            Err(EnableError::Snapshot(_))
        ));
    }

    #[test]
    fn grub_default_is_edited_in_place() {
        let text = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=off\"\n";
        let out = edit_grub_default(
            text,
            &s(&["intel_iommu=on", "iommu=pt"]),
            &s(&["intel_iommu=off"]),
        )
        .unwrap();
        assert_eq!(
            out,
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\"\nGRUB_CMDLINE_LINUX=\"\"\n"
        );
        assert_eq!(
            edit_grub_default(
                &out,
                &s(&["intel_iommu=on", "iommu=pt"]),
                &s(&["intel_iommu=off"])
            )
            .unwrap(),
            out
        );
    }

    #[test]
    fn grub_default_keeps_quotes_inside_the_value() {
        // The user's `acpi_osi="Windows 2015"` survives the edit, still escaped.
        let text = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\"\"\n";
        let out = edit_grub_default(text, &s(&["iommu=pt"]), &[]).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" iommu=pt\"\n"
        );
        assert_eq!(
            edit_grub_default(&out, &s(&["iommu=pt"]), &[]).unwrap(),
            out
        );
        // A value in single quotes that holds a lone double quote: the kernel would
        // read everything after it as one quoted argument, so it is not edited.
        assert!(edit_grub_default(
            "GRUB_CMDLINE_LINUX_DEFAULT='a\"b'\n",
            &s(&["iommu=pt"]),
            &[],
        )
        .is_err());
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
        let out = edit_bash_array(conf, "MODULES", VFIO_MODULES, true).unwrap();
        assert_eq!(out, "# MODULES\n#     MODULES=(usbhid xhci_hcd)\nMODULES=(vfio vfio_iommu_type1 vfio_pci nvidia nvidia_modeset)\n\nFILES=()\n");
        assert_eq!(
            edit_bash_array(&out, "MODULES", VFIO_MODULES, true).unwrap(),
            out
        );
        let out = edit_bash_array(
            &out,
            "FILES",
            &["/etc/modprobe.d/passthru-vfio.conf"],
            false,
        )
        .unwrap();
        assert!(
            out.ends_with("FILES=(/etc/modprobe.d/passthru-vfio.conf)\n"),
            "{out}"
        );
    }

    #[test]
    fn booster_yaml_keeps_the_rest() {
        // booster's manpage sample, abridged, with a force-loaded module of the user's.
        let yaml = "network:\n  dhcp: on\nuniversal: false\nmodules: -*,hid_apple,kernel/fs/btrfs/btrfs.ko\ncompression: zstd\nmodules_force_load: usbhid # keyboard for the LUKS prompt\n";
        let out = edit_booster_yaml(yaml, BOOSTER_FORCE_LOAD).unwrap();
        assert_eq!(
            out,
            yaml.replace(
                "modules_force_load: usbhid",
                "modules_force_load: vfio_pci,vfio,vfio_iommu_type1,usbhid"
            )
        );
        assert_eq!(edit_booster_yaml(&out, BOOSTER_FORCE_LOAD).unwrap(), out);
        // quoted, with one of them written with a dash
        assert_eq!(
            edit_booster_yaml(
                "modules_force_load: \"vfio-pci, nvme\"\n",
                BOOSTER_FORCE_LOAD
            )
            .unwrap(),
            "modules_force_load: \"vfio,vfio_iommu_type1,vfio-pci,nvme\"\n"
        );
        // absent (or no file): appended
        assert_eq!(
            edit_booster_yaml("compression: lz4", BOOSTER_FORCE_LOAD).unwrap(),
            "compression: lz4\nmodules_force_load: vfio_pci,vfio,vfio_iommu_type1\n"
        );
        // an indented key belongs to another mapping: not booster's
        assert!(
            edit_booster_yaml("network:\n  modules_force_load: x\n", BOOSTER_FORCE_LOAD)
                .unwrap()
                .ends_with(
                    "  modules_force_load: x\nmodules_force_load: vfio_pci,vfio,vfio_iommu_type1\n"
                )
        );
    }

    #[test]
    fn loader_entry_options_line() {
        // An Arch systemd-boot entry.
        let entry = "title   Arch Linux\nlinux   /vmlinuz-linux\ninitrd  /amd-ucode.img\ninitrd  /initramfs-linux.img\noptions root=PARTUUID=1f3a-... rw rootfstype=ext4\n";
        let out = edit_loader_entry(entry, &s(&["iommu=pt"]), &[]).unwrap();
        assert!(
            out.ends_with("options root=PARTUUID=1f3a-... rw rootfstype=ext4 iommu=pt\n"),
            "{out}"
        );
        assert_eq!(
            edit_loader_entry(&out, &s(&["iommu=pt"]), &[]).unwrap(),
            out
        );
    }

    /// Ubuntu 22.04's /etc/default/grub (abridged), with a quoted value in the user's
    /// arguments: `splash` stays, the quotes stay escaped, every other byte stays.
    #[test]
    fn grub_default_keeps_escaped_quotes() {
        let text = "# If you change this file, run 'update-grub' afterwards to update\n\
            # /boot/grub/grub.cfg.\n\
            GRUB_DEFAULT=0\n\
            GRUB_TIMEOUT_STYLE=hidden\n\
            GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
            GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" splash\"\n\
            GRUB_CMDLINE_LINUX=\"\"\n\
            #GRUB_TERMINAL=console\n";
        let out = edit_grub_default(text, &s(&["iommu=pt"]), &s(&["intel_iommu=off"])).unwrap();
        assert_eq!(out, text.replace("splash\"\n", "splash iommu=pt\"\n"));
        assert!(out.contains(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" splash iommu=pt\"\n"
        ));
        // single quotes and bare words keep their style
        assert_eq!(
            edit_grub_default(
                "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\n",
                &s(&["iommu=pt"]),
                &[]
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'\n"
        );
        assert_eq!(
            edit_grub_default(
                "GRUB_CMDLINE_LINUX_DEFAULT=quiet # x\n",
                &s(&["iommu=pt"]),
                &[]
            )
            .unwrap(),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet iommu=pt\" # x\n"
        );
        // absent: appended
        assert_eq!(
            edit_grub_default("GRUB_DEFAULT=0", &s(&["iommu=pt"]), &[]).unwrap(),
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"iommu=pt\"\n"
        );
        // `+=` (bash) builds on a value set elsewhere
        assert!(matches!(
            edit_grub_default(
                "GRUB_CMDLINE_LINUX_DEFAULT+=\" x\"\n",
                &s(&["iommu=pt"]),
                &[]
            ),
            Err(EditError::Unsupported(_))
        ));
    }

    /// mkinitcpio v39's default MODULES, written over several lines by a user.
    /// Found by the fuzzer: `NAME+=word` after the array changes its first element.
    #[test]
    fn a_string_appended_to_an_array_is_left_by_hand() {
        let text = "MODULES=(nvidia)\nMODULES+=_drm\n";
        let e = edit_bash_array(text, "MODULES", &["vfio_pci"], true).unwrap_err();
        assert!(e.to_string().contains("line 2: MODULES+="), "{e}");
        // Arrays appended to are fine: their elements are elements.
        let text = "MODULES=(nvidia)\nMODULES+=(nvidia_drm)\n";
        assert_eq!(
            edit_bash_array(text, "MODULES", &["vfio_pci"], true).unwrap(),
            "MODULES=(vfio_pci nvidia)\nMODULES+=(nvidia_drm)\n"
        );
    }

    #[test]
    fn bash_arrays_over_lines_and_strings() {
        let conf = "MODULES=(\n  # GPU first\n  amdgpu\n)\n";
        assert_eq!(
            edit_bash_array(conf, "MODULES", VFIO_MODULES, true).unwrap(),
            "MODULES=(\n  # GPU first\n  vfio vfio_iommu_type1 vfio_pci amdgpu\n)\n"
        );
        // present with a dash, or in a later `+=`: not added again
        let conf = "MODULES=(vfio-pci)\nMODULES+=(vfio vfio_iommu_type1)\n";
        assert_eq!(
            edit_bash_array(conf, "MODULES", VFIO_MODULES, true).unwrap(),
            conf
        );
        // an empty array, an array with a quoted path
        assert_eq!(
            edit_bash_array("FILES=(\"/etc/a b\")\n", "FILES", &["/etc/c"], false).unwrap(),
            "FILES=(\"/etc/a b\" /etc/c)\n"
        );
        assert!(matches!(
            edit_bash_array("MODULES=\"amdgpu\"\n", "MODULES", VFIO_MODULES, true),
            Err(EditError::Unsupported(_))
        ));
        assert!(matches!(
            edit_bash_array("MODULES=(amdgpu\n", "MODULES", VFIO_MODULES, true),
            Err(EditError::Shell(_))
        ));
    }

    #[test]
    fn loader_entry_every_options_line() {
        let entry = "title Fedora\noptions root=UUID=1 ro\noptions intel_iommu=off rhgb quiet\n";
        assert_eq!(
            edit_loader_entry(
                entry,
                &s(&["intel_iommu=on", "iommu=pt"]),
                &s(&["intel_iommu=off"])
            )
            .unwrap(),
            "title Fedora\noptions root=UUID=1 ro\noptions rhgb quiet intel_iommu=on iommu=pt\n"
        );
        // present on the first line: nothing to add anywhere
        let entry = "options iommu=pt\noptions quiet\n";
        assert_eq!(
            edit_loader_entry(entry, &s(&["iommu=pt"]), &[]).unwrap(),
            entry
        );
    }

    #[test]
    fn booster_yaml_refuses_what_it_cannot_read() {
        for yaml in [
            "modules_force_load: usbhid,\n  hid_generic\n",
            "modules_force_load:\n  - usbhid\n",
            "modules_force_load: [usbhid]\n",
            "modules_force_load: \"a\\tb\"\n",
            "modules_force_load: 'it''s'\n",
            "modules_force_load: \"usbhid\n",
        ] {
            assert!(
                matches!(
                    edit_booster_yaml(yaml, BOOSTER_FORCE_LOAD),
                    Err(EditError::Unsupported(_))
                ),
                "{yaml}"
            );
        }
        // a comment line after it is no continuation
        assert_eq!(
            edit_booster_yaml(
                "modules_force_load: usbhid\n  # note\nstrip: true\n",
                &["vfio"]
            )
            .unwrap(),
            "modules_force_load: vfio,usbhid\n  # note\nstrip: true\n"
        );
    }
}
