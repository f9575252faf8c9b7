//! `passthru vm new`, `list`, `rm` and `edit`: the VM specs; and the loading and
//! resolving of a spec that the other `vm` commands share.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::output::{keys_sorted, print_json};
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::vm::new::{NewVm, NewVmHost};
use crate::vm::plan::Accel;
use crate::vm::resolve::{self, Resolution, ResolveOptions};
use crate::vm::spec::{Cpus, Display, IdPair, OsType, VmSpec};
use crate::vm::store;

/// Loads the spec named or pointed at by `arg` and resolves it on `root`.
pub(super) fn load(
    root: &HostRoot,
    arg: &Path,
    accel: Accel,
    allow_host_disks: bool,
) -> anyhow::Result<Resolution> {
    let (_, spec) = store::load(arg)?;
    let options = ResolveOptions {
        accel,
        state_dir: store::state_dir(&spec.name),
        allow_host_disks,
    };
    let snapshot = HostSnapshot::gather_for_vm(root, Needs::VM, &spec)?;
    Ok(resolve::resolve(&snapshot, spec, &options)?)
}

/// [`load`], for a command that starts the VM on this host (`vm run`, `vm define`,
/// `vm start`): on the live system QEMU is asked what it offers, and what it lacks
/// for the VM becomes a blocker with its remedy, as `vm check` reports it.
///
/// As root, the VM's state directory (where NVRAM, sockets, TPM state and the domain
/// XML are written) must be root's alone, like the spec.
pub(super) fn load_to_start(
    root: &HostRoot,
    arg: &Path,
    accel: Accel,
    allow_host_disks: bool,
) -> anyhow::Result<Resolution> {
    let mut r = load(root, arg, accel, allow_host_disks)?;
    store::check_trusted(&r.plan.state_dir)?;
    if root.is_system() {
        r.qemu_blockers = crate::vm::check::qemu_blockers(root, &r.plan);
    }
    Ok(r)
}

/// `vm new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The VM's name.
    name: String,
    /// A device to pass through (repeatable; its IOMMU group comes along). It is written
    /// with its IDs, so the VM finds it again if the bus numbers change.
    #[arg(long = "device", value_name = "ADDRESS")]
    devices: Vec<PciAddress>,
    /// vCPUs.
    #[arg(long, default_value_t = 4)]
    cpus: u32,
    /// Memory, e.g. 16G. Default: 8G, or half of the host's memory on a host with less
    /// than 16G.
    #[arg(long)]
    memory: Option<String>,
    /// An installer (or driver) ISO (repeatable).
    #[arg(long = "iso", value_name = "FILE")]
    isos: Vec<PathBuf>,
    /// Size of the new disk image, e.g. 128G; `none` for a VM without a disk.
    #[arg(long, value_name = "SIZE", default_value = "64G")]
    disk: String,
    /// Legacy BIOS (SeaBIOS) instead of UEFI (OVMF).
    #[arg(long)]
    bios: bool,
    /// The guest's display: none (the passed GPU is the display), or spice (an emulated
    /// display, for installing). Default: spice without a passed device, else none.
    #[arg(long, value_enum)]
    display: Option<Display>,
    /// No network for the guest (default: user-mode NAT; --bridge for a host bridge).
    #[arg(long, conflicts_with = "bridge")]
    no_network: bool,
    /// Boot this Linux kernel directly (no boot loader in the guest).
    #[arg(long, value_name = "VMLINUZ")]
    kernel: Option<PathBuf>,
    /// The initramfs for --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line for --kernel.
    #[arg(long, value_name = "ARGS", requires = "kernel")]
    cmdline: Option<String>,
    /// The guest OS (windows turns on Secure Boot and a TPM, as Windows 11 needs).
    #[arg(long, value_enum, default_value_t = OsType::Other)]
    os: OsType,
    /// Back the memory with hugepages.
    #[arg(long)]
    hugepages: bool,
    /// A USB device to give the guest, as vendor:product (repeatable; see `lsusb`).
    #[arg(long = "usb", value_name = "ID")]
    usb: Vec<IdPair>,
    /// A keyboard or mouse to give the guest through evdev (repeatable), e.g.
    /// /dev/input/by-id/usb-…-event-kbd.
    #[arg(long = "evdev", value_name = "DEVICE")]
    evdev: Vec<PathBuf>,
    /// Put the guest on this host bridge instead of user-mode networking.
    #[arg(long, value_name = "BRIDGE")]
    bridge: Option<String>,
    /// Replace an existing spec of that name.
    #[arg(long)]
    force: bool,
}

/// A path given on the command line as the spec holds it: absolute (relative to the
/// current directory), so it means the same wherever the VM is started from.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `passthru vm new`.
pub(super) fn new(root: &HostRoot, args: &NewArgs) -> anyhow::Result<u8> {
    let name = args.name.as_str();
    let dir = store::spec_dir();
    let request = NewVm {
        name: args.name.clone(),
        devices: args.devices.clone(),
        cpus: args.cpus,
        memory: args.memory.clone(),
        isos: args.isos.iter().map(|p| absolute(p)).collect(),
        disk: (!args.disk.eq_ignore_ascii_case("none")).then(|| args.disk.clone()),
        bios: args.bios,
        display: args.display,
        no_network: args.no_network,
        bridge: args.bridge.clone(),
        kernel: args.kernel.as_deref().map(absolute),
        initrd: args.initrd.as_deref().map(absolute),
        cmdline: args.cmdline.clone(),
        os: args.os,
        hugepages: args.hugepages,
        usb: args.usb.clone(),
        evdev: args.evdev.iter().map(|p| absolute(p)).collect(),
    };
    let devices = crate::host::pci::device::read_all(root)?;
    let host = NewVmHost {
        devices: &devices,
        mem_total_mib: crate::vm::hostdisk::mem_total_mib(root),
        data_dir: &store::data_dir(),
    };
    let spec = crate::vm::new::new_spec(&request, &host)?;
    spec.validate()?;
    // A VM larger than the host could never start here (`vm check` would fail it).
    if let Some(why) = crate::vm::hostdisk::memory_blocker(root, &spec) {
        anyhow::bail!("{why}: give the VM less (--memory)");
    }
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !args.force {
        anyhow::bail!("{} exists already (--force replaces it)", path.display());
    }
    let text = spec.to_toml();
    crate::apply::spec::write_new(&dir, &path, &text)?;
    println!("# {}\n{text}", path.display());
    eprintln!(
        "passthru: wrote {}; see where it runs with `passthru vm plan {name}`",
        path.display()
    );
    Ok(0)
}

/// The `--json` document of `vm list` (its keys in alphabetical order, as schema 1
/// has them).
#[derive(Debug, Serialize)]
struct VmListReport<'a> {
    dir: &'a Path,
    schema_version: u32,
    vms: Vec<VmRow<'a>>,
}

/// One spec file of `vm list --json`: the spec, or why it is not valid.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum VmRow<'a> {
    Spec {
        path: &'a Path,
        #[serde(serialize_with = "keys_sorted")]
        spec: &'a VmSpec,
    },
    Invalid {
        error: String,
        path: &'a Path,
    },
}

/// `passthru vm list`.
pub(super) fn list(json: bool) -> anyhow::Result<u8> {
    let dir = store::spec_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|e| e.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    paths.sort();
    let specs: Vec<(PathBuf, anyhow::Result<VmSpec>)> = paths
        .into_iter()
        .map(|p| {
            let parsed = std::fs::read_to_string(&p)
                .map_err(anyhow::Error::from)
                .and_then(|t| VmSpec::parse(&t).map_err(anyhow::Error::from));
            (p, parsed)
        })
        .collect();
    if json {
        let vms = specs
            .iter()
            .map(|(path, s)| match s {
                Ok(spec) => VmRow::Spec { path, spec },
                Err(e) => VmRow::Invalid {
                    error: crate::error::error_chain(e.as_ref()),
                    path,
                },
            })
            .collect();
        print_json(&VmListReport {
            dir: &dir,
            schema_version: 1,
            vms,
        })?;
        return Ok(0);
    }
    if specs.is_empty() {
        println!(
            "No VMs in {} (create one with `passthru vm new NAME`).",
            dir.display()
        );
    }
    for (p, s) in &specs {
        match s {
            Ok(s) => {
                let cpus = match &s.cpus {
                    Cpus::Count(n) => n.to_string(),
                    Cpus::Host(l) => format!("host CPUs {l}"),
                };
                let devs: Vec<String> = s.devices.iter().map(ToString::to_string).collect();
                let devs = if devs.is_empty() {
                    "none".into()
                } else {
                    devs.join(" ")
                };
                println!(
                    "{:<16} {:>6} memory, {cpus} vCPUs, devices: {devs}",
                    s.name, s.memory
                );
            }
            Err(e) => println!(
                "{}: invalid spec: {}",
                p.display(),
                crate::error::error_chain(e.as_ref())
            ),
        }
    }
    Ok(0)
}

/// `passthru vm rm`: removes a spec of the spec directory, and nothing else.
pub(super) fn rm(name: &str) -> anyhow::Result<u8> {
    let (path, spec) = crate::apply::spec::remove_spec(Path::new(name), &store::spec_dir())?;
    println!(
        "Removed {} (its disks stay where they are).",
        path.display()
    );
    println!(
        "If it was defined in libvirt (`passthru vm define`), the domain stays too: \
         `virsh undefine --nvram {}` removes it with its UEFI variables.",
        spec.name
    );
    Ok(0)
}

/// `passthru vm edit`: the spec in the user's editor, checked before it is saved.
pub(super) fn edit(arg: &Path) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let path = store::spec_path(arg);
    let original = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (see `passthru vm list`, or create it with `passthru vm new`)",
            path.display()
        )
    })?;
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    let again = |problem: &str| -> anyhow::Result<bool> {
        eprintln!("passthru: the edited spec is not valid: {problem}");
        Ok(std::io::stdin().is_terminal() && super::output::confirm("Edit it again?")?)
    };
    match crate::apply::spec::edit(&path, &original, &editor, again)? {
        crate::apply::spec::Edited::Unchanged => println!("No changes to {}.", path.display()),
        crate::apply::spec::Edited::Saved => println!("Saved {}.", path.display()),
    }
    Ok(0)
}
