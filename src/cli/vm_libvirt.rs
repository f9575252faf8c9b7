//! `passthru vm define / start / stop / console`: VMs run by libvirt
//! (`qemu:///system`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::print_json;
use crate::apply::libvirt::{self as virsh_apply, Defined, FirstBoot, Virsh};
use crate::host::root::HostRoot;
use crate::vm::libvirt::{self, DomainState, LibvirtError};
use crate::vm::plan::{start_step, Accel, StartStep};
use crate::vm::store;

/// `vm define`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Refuses while something on this host blocks the VM (each reason comes with \
its remedy): among them a disk the host itself uses (--allow-disk-in-use) and more memory than the \
host has. Creates missing disk images, writes the domain XML to the VM's state directory and \
runs `virsh define`; defining again updates the domain (same UUID, UEFI variables and TPM kept). \
The spec's ISOs are CD-ROMs: the first one boots first while every disk is blank, afterwards the disk."
)]
pub struct DefineArgs {
    /// The VM's name, or the path of a spec file.
    pub spec: PathBuf,
    /// kvm, or tcg (software emulation) where KVM is not usable.
    #[arg(long, value_enum, default_value_t = Accel::Kvm)]
    pub accel: Accel,
    /// The libvirt connection (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    /// Give the VM a disk the host uses (mounted, swap, an LVM / dm-crypt / md RAID
    /// member, open in a process): as one of its disks, or on the controller of one of
    /// its devices (libvirt takes that from the host when the VM starts). Either way
    /// the host's reads and writes on it fail or the guest overwrites its data.
    #[arg(long)]
    pub allow_disk_in_use: bool,
}

/// `vm start`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "When the VM's spec exists, `vm start` first re-defines the domain from it \
(the spec is the source of truth; missing disks are created): while every disk is still blank \
the installer ISO boots first, afterwards the disk (the ISOs stay attached). \
Without a spec, the domain starts as libvirt has it."
)]
pub struct StartArgs {
    /// The VM's name.
    pub name: String,
    /// kvm or tcg for the re-definition (default: what the defined domain uses, else
    /// kvm).
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// The libvirt connection (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    /// Give the VM a disk the host uses (see `vm define`).
    #[arg(long)]
    pub allow_disk_in_use: bool,
}

/// `vm stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// Pull the plug instead of asking the guest to shut down.
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for the guest to power off after the ACPI request (at most a
    /// day).
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(..=super::vm_run::MAX_WAIT_SECS))]
    pub timeout: u64,
    /// The libvirt connection (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
}

/// `vm console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM's name.
    pub name: String,
    /// The libvirt connection (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
}

fn virsh(connect: Option<&String>) -> Virsh {
    Virsh::new(connect.cloned().unwrap_or_else(libvirt::default_uri))
}

#[derive(Debug, Serialize)]
struct DefineReport<'a> {
    schema_version: u32,
    #[serde(flatten)]
    defined: &'a Defined,
}

fn print_defined(d: &Defined) {
    for disk in &d.disks_created {
        println!("Created disk {}.", disk.display());
    }
    for note in &d.notes {
        println!("Note: {note}");
    }
    println!(
        "{} VM {} in libvirt ({}), from {}.",
        if d.updated { "Updated" } else { "Defined" },
        d.name,
        d.uri,
        d.xml.display()
    );
    match d.first_boot {
        FirstBoot::Cdrom => println!(
            "It boots the installer ISO first (its disks are blank); once the OS is installed, `passthru vm start {}` boots the disk.",
            d.name
        ),
        FirstBoot::Disk => println!("It boots from its disk."),
    }
}

/// Refuses (prints why, gives the exit code) when the host uses a disk on one of the
/// VM's devices: libvirt would take it from the host when the VM starts.
fn refuse_disks_in_use(
    root: &HostRoot,
    what: &str,
    devices: &[crate::host::pci::PciAddress],
    allow: bool,
) -> anyhow::Result<Option<u8>> {
    if devices.is_empty() {
        return Ok(None);
    }
    let o = crate::plan::bind::Overrides {
        disk_in_use: allow,
        ..Default::default()
    };
    let refusals =
        crate::plan::bind::storage_refusals(&super::binding::read_host(root)?, devices, o);
    if refusals.is_empty() {
        return Ok(None);
    }
    super::output::print_refusals(what, &refusals);
    Ok(Some(super::EXIT_PROBLEMS))
}

/// `passthru vm define`.
pub(super) fn define(json: bool, root: &HostRoot, args: &DefineArgs) -> anyhow::Result<u8> {
    // The domain is defined in this machine's libvirt, its disks created here: a spec
    // resolved against another host's tree must not change this one.
    if !root.is_system() {
        anyhow::bail!(
            "`passthru vm define` defines the VM in this machine's libvirt, so --root (or \
             PASSTHRU_ROOT) does not apply to it; `passthru vm render --root DIR` shows the \
             domain XML for another host tree"
        );
    }
    let allow = args.allow_disk_in_use;
    let mut res = super::vm::load_to_start(root, &args.spec, args.accel, allow)?;
    let devices = res.plan.devices.clone();
    if let Some(code) = refuse_disks_in_use(root, "vm define", &devices, allow)? {
        return Ok(code);
    }
    let defined = virsh_apply::define(&mut res, &virsh(args.connect.as_ref()))?;
    if json {
        print_json(&DefineReport {
            schema_version: 1,
            defined: &defined,
        })?;
    } else {
        print_defined(&defined);
    }
    Ok(0)
}

#[derive(Debug, Serialize)]
struct StartReport {
    schema_version: u32,
    name: String,
    uri: String,
    /// The re-definition from the spec, when there is a spec.
    defined: Option<Defined>,
    /// It was running already (nothing was done).
    already_running: bool,
    state: String,
}

/// `passthru vm start`: re-defines the domain from its spec (when the spec exists),
/// so the spec is the source of truth and the boot order follows the disks, then
/// starts it.
pub(super) fn start(json: bool, args: &StartArgs) -> anyhow::Result<u8> {
    let virsh = virsh(args.connect.as_ref());
    let spec_path = store::spec_path(Path::new(&args.name));
    // The spec knows the domain's name when NAME is a path.
    let name = if spec_path.is_file() {
        store::load(&spec_path)?.1.name
    } else {
        args.name.clone()
    };
    let state = virsh.state(&name)?;
    let mut report = StartReport {
        schema_version: 1,
        name: name.clone(),
        uri: virsh.uri.clone(),
        defined: None,
        already_running: false,
        state: String::new(),
    };
    let step = start_step(
        state.as_ref().map(DomainState::is_active),
        spec_path.is_file(),
    );
    match step {
        StartStep::AlreadyRunning => {
            report.already_running = true;
            report.state = state.as_ref().map(ToString::to_string).unwrap_or_default();
        }
        StartStep::UnknownDomain => {
            return Err(LibvirtError::UnknownDomain { name }.into());
        }
        StartStep::Start { redefine } => {
            if redefine {
                let accel = match args.accel {
                    Some(a) => a,
                    None => virsh.defined_accel(&name)?.unwrap_or_default(),
                };
                // `vm start` acts on this host: the spec is resolved against `/`.
                let allow = args.allow_disk_in_use;
                let mut res =
                    super::vm::load_to_start(&HostRoot::system(), &spec_path, accel, allow)?;
                let devices = res.plan.devices.clone();
                if let Some(code) =
                    refuse_disks_in_use(&HostRoot::system(), "vm start", &devices, allow)?
                {
                    return Ok(code);
                }
                report.defined = Some(virsh_apply::define(&mut res, &virsh)?);
            }
            virsh.start(&name)?;
            report.state = virsh
                .state(&name)?
                .unwrap_or(DomainState::Running)
                .to_string();
        }
    }
    if json {
        print_json(&report)?;
    } else if report.already_running {
        println!("VM {name} is already {}.", report.state);
    } else {
        if let Some(d) = &report.defined {
            for disk in &d.disks_created {
                println!("Created disk {}.", disk.display());
            }
            let boot = match d.first_boot {
                FirstBoot::Cdrom => "the installer ISO (its disks are blank)",
                FirstBoot::Disk => "its disk",
            };
            println!("Re-defined VM {name} from its spec; it boots from {boot}.");
        }
        println!(
            "Started VM {name} ({}). Serial console: passthru vm console {name}",
            virsh.uri
        );
    }
    Ok(0)
}

#[derive(Debug, Serialize)]
struct StopReport {
    schema_version: u32,
    name: String,
    uri: String,
    /// `shutdown` (ACPI), `destroy` (forced) or `none` (it was not running).
    action: &'static str,
    state: String,
}

/// `passthru vm stop`.
pub(super) fn stop(json: bool, args: &StopArgs) -> anyhow::Result<u8> {
    let virsh = virsh(args.connect.as_ref());
    let name = &args.name;
    let state = virsh.require_state(name)?;
    let action = if !state.is_active() {
        "none"
    } else if args.force {
        virsh.destroy(name)?;
        "destroy"
    } else {
        virsh.shutdown(name)?;
        if let Err(last) = virsh.wait_inactive(name, Duration::from_secs(args.timeout))? {
            return Err(LibvirtError::Timeout {
                name: name.clone(),
                state: last.to_string(),
                secs: args.timeout,
            }
            .into());
        }
        "shutdown"
    };
    let now = virsh.require_state(name)?.to_string();
    if json {
        print_json(&StopReport {
            schema_version: 1,
            name: name.clone(),
            uri: virsh.uri.clone(),
            action,
            state: now,
        })?;
    } else {
        match action {
            "none" => println!("VM {name} is not running ({state})."),
            "destroy" => println!("VM {name} was powered off (forced)."),
            _ => println!("VM {name} shut down."),
        }
    }
    Ok(0)
}

/// `passthru vm console`: replaces passthru with `virsh console` (Ctrl+] leaves it).
pub(super) fn console(args: &ConsoleArgs) -> anyhow::Result<u8> {
    let virsh = virsh(args.connect.as_ref());
    let state = virsh.require_state(&args.name)?;
    if !state.is_active() {
        return Err(LibvirtError::NotRunningVm {
            name: args.name.clone(),
            state: state.to_string(),
        }
        .into());
    }
    eprintln!(
        "passthru: attaching to the serial console of {} (Ctrl+] leaves it)",
        args.name
    );
    Err(virsh.exec_console(&args.name).into())
}
