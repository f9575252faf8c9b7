//! `passthru vm plan` and `passthru vm render`: a VM spec turned into a plan, and the
//! plan into libvirt XML or a QEMU command line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::print_json;
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::vm::render::{self, Accel};
use crate::vm::resolve::{self, Resolution, ResolveOptions};
use crate::vm::spec::{Cpus, Display, IdPair, OsType, VmSpec};
use crate::vm::store;

#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    schema_version: u32,
    name: &'a str,
    devices: &'a [PciAddress],
    pinning: &'a crate::vm::pinning::PinningPlan,
    hugepages: Option<serde_json::Value>,
    notes: &'a [String],
    blockers: Vec<String>,
}

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

/// `passthru vm plan SPEC`.
pub(super) fn plan(json: bool, root: &HostRoot, path: &Path) -> anyhow::Result<u8> {
    let r = load(root, path, Accel::Kvm, false)?;
    let (spec, pinning, devices) = (&r.plan.spec, &r.plan.pinning, &r.plan.devices);
    if json {
        print_json(&PlanReport {
            schema_version: 1,
            name: &spec.name,
            devices,
            pinning,
            hugepages: serde_json::to_value(&r)
                .ok()
                .and_then(|v| v.get("hugepages").cloned()),
            notes: &r.notes,
            blockers: r.blockers(),
        })?;
        return Ok(0);
    }
    let host: Vec<String> = pinning
        .vcpus
        .iter()
        .map(|(v, h)| format!("{v}→{h}"))
        .collect();
    println!(
        "VM {}: {} vCPUs ({} core(s) × {} thread(s))",
        spec.name,
        pinning.vcpus.len(),
        pinning.cores,
        pinning.threads
    );
    println!("  vCPU → host CPU: {}", host.join(" "));
    println!(
        "  QEMU's own threads: {}",
        crate::host::cpu::format_cpu_list(&pinning.emulator)
    );
    println!(
        "  left to the host: {}",
        crate::host::cpu::format_cpu_list(&pinning.host_keeps)
    );
    if let Some(n) = pinning.numa_node {
        println!("  memory from NUMA node {n}");
    }
    let devs: Vec<String> = devices.iter().map(ToString::to_string).collect();
    println!(
        "  devices (whole IOMMU groups): {}",
        if devs.is_empty() {
            "none".into()
        } else {
            devs.join(", ")
        }
    );
    println!("Why:");
    for why in pinning.reasons.iter().chain(&r.notes) {
        println!("  - {why}");
    }
    let blockers = r.blockers();
    if !blockers.is_empty() {
        println!("Before it can start:");
        for b in &blockers {
            println!("  - {b}");
        }
    }
    Ok(0)
}

/// `passthru vm render SPEC [--qemu]`.
pub(super) fn render(root: &HostRoot, path: &Path, qemu: bool, accel: Accel) -> anyhow::Result<u8> {
    let r = load(root, path, accel, false)?;
    let spec = &r.plan.spec;
    if spec.firmware.uefi && r.plan.ovmf.is_none() {
        // The first blocker is the missing firmware, with its remedy.
        anyhow::bail!("{}", r.blockers().remove(0));
    }
    if qemu {
        println!("{}", render::qemu_argv(&r.plan).join("\n"));
    } else {
        print!("{}", render::libvirt_xml(&r.plan));
    }
    Ok(0)
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

/// The memory of a new VM when `--memory` is not given: 8 GiB, but never more than half
/// of what the host has (the host keeps the other half), in steps of 256 MiB.
fn default_memory(host_mib: Option<u64>) -> String {
    const DEFAULT_MIB: u64 = 8 * 1024;
    match host_mib {
        Some(total) if total / 2 < DEFAULT_MIB => format!("{}M", (total / 2 / 256 * 256).max(256)),
        _ => "8G".to_string(),
    }
}

/// `passthru vm new`.
pub(super) fn new(root: &HostRoot, args: &NewArgs) -> anyhow::Result<u8> {
    use crate::vm::spec::{DirectKernel, Disk, Firmware, Network, UsbDevice};
    let name = args.name.as_str();
    let dir = store::spec_dir();
    let data = store::data_dir();
    let windows = args.os == OsType::Windows;
    // Each device is written with its identity (IDs and subsystem), so the spec
    // still finds it after the buses are renumbered.
    let host = crate::host::pci::device::read_all(root)?;
    let devices = args
        .devices
        .iter()
        .map(|a| {
            host.iter()
                .find(|d| d.address == *a)
                .map(crate::vm::identity::identity_of)
                .with_context(|| format!("no PCI device at {a} on this host (see `passthru list`)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let no_device = devices.is_empty();
    let spec = VmSpec {
        name: name.to_string(),
        memory: args
            .memory
            .clone()
            .unwrap_or_else(|| default_memory(crate::vm::hostdisk::mem_total_mib(root))),
        cpus: Cpus::Count(args.cpus),
        devices,
        usb: args.usb.iter().map(|id| UsbDevice { id: *id }).collect(),
        evdev: args.evdev.iter().map(|p| absolute(p)).collect(),
        kernel: args.kernel.as_deref().map(|path| DirectKernel {
            path: absolute(path),
            initrd: args.initrd.as_deref().map(absolute),
            cmdline: args.cmdline.clone().unwrap_or_default(),
        }),
        disks: if args.disk.eq_ignore_ascii_case("none") {
            Vec::new()
        } else {
            vec![Disk {
                path: data.join(name).join(format!("{name}.qcow2")),
                size: Some(args.disk.clone()),
                format: "qcow2".into(),
            }]
        },
        isos: args.isos.iter().map(|p| absolute(p)).collect(),
        firmware: Firmware {
            uefi: !args.bios,
            secure_boot: windows && !args.bios,
            tpm: windows,
        },
        os: args.os,
        // Without a passed device the guest needs an emulated display.
        display: args.display.unwrap_or(if no_device {
            Display::Spice
        } else {
            Display::None
        }),
        network: match (&args.bridge, args.no_network) {
            (Some(br), _) => Network::Bridge(br.clone()),
            (None, true) => Network::None,
            (None, false) => Network::User,
        },
        hugepages: args.hugepages,
    };
    spec.validate()?;
    // A VM larger than the host could never start here (`vm check` would fail it).
    if let Some(why) = crate::vm::hostdisk::memory_blocker(root, &spec) {
        anyhow::bail!("{why}: give the VM less (--memory)");
    }
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !args.force {
        anyhow::bail!("{} exists already (--force replaces it)", path.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = spec.to_toml();
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("# {}\n{text}", path.display());
    eprintln!(
        "passthru: wrote {}; see where it runs with `passthru vm plan {name}`",
        path.display()
    );
    Ok(0)
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
        let rows: Vec<serde_json::Value> = specs
            .iter()
            .map(|(p, s)| match s {
                Ok(s) => serde_json::json!({"path": p, "spec": s}),
                Err(e) => {
                    serde_json::json!({"path": p, "error": crate::host::facts::error_chain(e.as_ref())})
                }
            })
            .collect();
        print_json(&serde_json::json!({"schema_version": 1, "dir": dir, "vms": rows}))?;
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
                crate::host::facts::error_chain(e.as_ref())
            ),
        }
    }
    Ok(0)
}

/// `passthru vm rm`: removes a spec of the spec directory, and nothing else.
pub(super) fn rm(name: &str) -> anyhow::Result<u8> {
    let (path, spec) = store::remove_spec(Path::new(name), &store::spec_dir())?;
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
    let old_name = VmSpec::parse(&original).ok().map(|s| s.name);
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    // The editor works on a copy beside the spec: the spec itself changes only once
    // the copy is valid, by an atomic rename.
    // An absolute directory: the draft's path, given to the editor, never begins
    // with '-'.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::canonicalize(dir.unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot find the directory of {}", path.display()))?;
    let dir = dir.as_path();
    let draft = tempfile::Builder::new()
        .prefix(".passthru-edit-")
        .suffix(".toml")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::fs::write(draft.path(), &original)?;
    loop {
        // $EDITOR may carry arguments (`code --wait`): split on whitespace, as git does
        // for simple values.
        let mut words = editor.split_whitespace();
        let program = words.next().unwrap_or("vi");
        let status = std::process::Command::new(program)
            .args(words)
            .arg(draft.path())
            .status()
            .with_context(|| format!("cannot start the editor '{editor}' (set $EDITOR)"))?;
        if !status.success() {
            anyhow::bail!(
                "the editor exited with {status}; {} is unchanged",
                path.display()
            );
        }
        let text = std::fs::read_to_string(draft.path())?;
        if text == original {
            println!("No changes to {}.", path.display());
            return Ok(0);
        }
        let problem = match VmSpec::parse(&text) {
            Ok(spec) if old_name.as_ref().is_some_and(|n| *n != spec.name) => Some(format!(
                "name: the VM is called '{}'; create a new one with `passthru vm new` to rename",
                old_name.as_deref().unwrap_or_default()
            )),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let Some(problem) = problem else {
            let mode = std::fs::metadata(&path).map(|m| m.permissions())?;
            std::fs::set_permissions(draft.path(), mode)?;
            draft
                .persist(&path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
            println!("Saved {}.", path.display());
            return Ok(0);
        };
        eprintln!("passthru: the edited spec is not valid: {problem}");
        if !std::io::stdin().is_terminal() || !super::binding::confirm("Edit it again?")? {
            anyhow::bail!("{} is unchanged", path.display());
        }
    }
}

#[derive(Debug, Serialize)]
struct CheckReportJson<'a> {
    schema_version: u32,
    vm: &'a str,
    ok: bool,
    findings: &'a [crate::vm::check::VmFinding],
}

/// `passthru vm check`.
pub(super) fn check(json: bool, root: &HostRoot, arg: &Path, accel: Accel) -> anyhow::Result<u8> {
    use crate::check::Status;
    use crate::vm::check::{self as vmcheck, CheckInputs, QemuCaps};
    let (_, spec) = store::load(arg)?;
    let gathered = HostSnapshot::gather_for_vm(root, Needs::BIND, &spec)?;
    for e in &gathered.record_errors {
        eprintln!("passthru: warning: {}", crate::host::facts::error_chain(e));
    }
    let inputs = gathered.bind_inputs();
    // What `passthru bind` would say about the devices that can be found.
    let found: Vec<PciAddress> = spec
        .devices
        .iter()
        .filter_map(|d| crate::vm::identity::find(inputs.devices, d).ok())
        .map(|f| f.address)
        .collect();
    let bind_refusals = if found.is_empty() {
        Vec::new()
    } else {
        match crate::plan::bind::plan_bind(&inputs, &found, crate::plan::bind::Overrides::default())
        {
            Ok(_) => Vec::new(),
            Err(refusals) => refusals
                .into_iter()
                .map(|r| (r.address, r.reason, r.override_flag))
                .collect(),
        }
    };
    let qemu = if root.is_system() {
        match vmcheck::find_qemu(root) {
            Some(q) => QemuCaps::probe(Path::new(&q)),
            None => Err(format!(
                "QEMU is not installed: {}",
                crate::check::platform::install_command(
                    &crate::host::facts::Distro::read(root),
                    &[crate::check::platform::Need::Qemu],
                    None
                )
            )),
        }
    } else {
        Err("QEMU was not run: --root is another host's tree".into())
    };
    // The decisions `vm run` and `vm define` take, for the devices as found.
    let decisions = resolve::decide(&gathered, &spec, found.first().copied(), false)?;
    let findings = vmcheck::check(
        root,
        &spec,
        &CheckInputs {
            devices: inputs.devices,
            bind_refusals,
            qemu,
            accel,
            decisions,
        },
    );
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    if json {
        print_json(&CheckReportJson {
            schema_version: 1,
            vm: &spec.name,
            ok: !failed,
            findings: &findings,
        })?;
    } else {
        for f in &findings {
            println!("{:<5} {:<10} {}", f.status.label(), f.check, f.summary);
            if let Some(r) = &f.remedy {
                println!("{:16} → {r}", "");
            }
        }
        if failed {
            println!(
                "VM {} cannot start yet: fix the FAIL lines above.",
                spec.name
            );
        } else {
            println!("VM {} is ready to start.", spec.name);
        }
    }
    Ok(if failed { super::EXIT_PROBLEMS } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::default_memory;

    #[test]
    fn the_default_memory_leaves_the_host_half() {
        assert_eq!(default_memory(None), "8G");
        assert_eq!(default_memory(Some(32011)), "8G");
        assert_eq!(default_memory(Some(16384)), "8G");
        assert_eq!(default_memory(Some(16000)), "7936M");
        assert_eq!(default_memory(Some(979)), "256M");
        assert_eq!(default_memory(Some(100)), "256M");
    }
}
