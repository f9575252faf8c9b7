//! The command line: a thin layer over the library.
//!
//! Exit codes: 0 success (and `check` found nothing failing); 1 problems found or
//! refused (a failing check, a refusal with its reason, the host lock held by another
//! passthru, a question answered no, `verify` or `vm check` finding what does not
//! hold, devices not given back); 2 the tool itself failed (bad arguments, an
//! unreadable host, a change that failed while it was applied: a driver write, a
//! regenerator, a journal record).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::host::root::HostRoot;
use crate::plan::bind::Overrides;

mod binding;
mod check;
mod completions;
mod list;
mod man;
mod output;
mod persistent;
mod report;
mod vm;
mod vm_check;
mod vm_libvirt;
mod vm_plan;
mod vm_run;

use list::ClassFilter;
use output::{print_json, Style};

use crate::vm::plan::Accel;

/// How a command that changes the host runs: `bind`, `unbind`, `enable`, `disable`,
/// `undo`.
#[derive(Debug, Clone, Copy)]
struct ChangeOptions {
    /// Only print the plan.
    dry_run: bool,
    /// Do not ask before applying.
    yes: bool,
}

/// Exit code when a command finds problems or refuses.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code when the tool itself fails, also while applying a change.
pub const EXIT_ERROR: u8 = 2;

/// Check a Linux host for PCI passthrough, set up VFIO reversibly, and run VMs with real
/// devices.
///
/// passthru reads the CPU, the kernel, the IOMMU and the PCI devices, explains what
/// stands between this machine and near-native VMs with real devices (VFIO), and
/// says what to do about it. `check`, `list` and `report` only read the host; `bind`
/// and `enable` change it, show their plan first with `--dry-run`, and are undone
/// exactly by `unbind` and `undo`; `vm` runs guests with the devices. Commands that
/// change the host run one at a time: a second one waits up to 10 seconds, then
/// refuses (exit code 1), naming the process that holds `/run/passthru/lock`.
#[derive(Debug, Parser)]
#[command(
    name = "passthru",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Read the host from DIR instead of / (an extracted `passthru report`, or any
    /// tree laid out like a host: sys/, proc/, dev/kmsg, etc/, boot/).
    #[arg(long, global = true, value_name = "DIR", env = "PASSTHRU_ROOT")]
    root: Option<PathBuf>,

    /// Print JSON (a documented, stable schema; see the README) instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// When to colour the output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is not set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every readiness check: CPU virtualization, KVM, IOMMU (firmware, kernel,
    /// arguments, interrupt remapping, ACS override), kernel VFIO support, tools.
    ///
    /// Each check prints its status, the evidence it read (file and line) and a remedy.
    /// Exit code 0 when nothing fails, 1 when a check fails, 2 when passthru itself
    /// could not run.
    Check {
        /// Show the evidence of passing checks too.
        #[arg(short, long)]
        verbose: bool,
        /// Also write the kernel config fragment this host needs (for
        /// scripts/kconfig/merge_config.sh) to FILE ("-" for standard output).
        #[arg(long, value_name = "FILE")]
        kernel_config: Option<PathBuf>,
    },
    /// List PCI devices by IOMMU group, with a verdict per group: can the group be
    /// given to a VM as a whole, and if not, which other devices are in the way.
    ///
    /// Marks the host's boot display, the controller of the root filesystem's disk
    /// and the NIC carrying the default route.
    List {
        /// Only groups holding a GPU (same as --class gpu).
        #[arg(long)]
        gpu: bool,
        /// Only groups holding a device of this class (repeatable).
        #[arg(long, value_enum, value_name = "CLASS")]
        class: Vec<ClassFilter>,
        /// Only this IOMMU group.
        #[arg(long, value_name = "N")]
        group: Option<u32>,
    },
    /// Capture what passthru reads (sysfs/proc subset, kernel log, kernel config,
    /// boot and initramfs configuration) into a .tar.gz that `--root` can read.
    ///
    /// Extract it with `mkdir r && tar xzf FILE -C r` and analyse it anywhere with
    /// `passthru check --root r` or `passthru list --root r`. Nothing personal is
    /// read: no home directories, no credentials.
    Report {
        /// Where to write the archive.
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "passthru-report.tar.gz"
        )]
        output: PathBuf,
    },
    /// Hand devices to vfio-pci now, for a VM: each device's whole IOMMU group (its
    /// other functions, and the group's other endpoints; bridges stay with the host).
    ///
    /// DEVICE is an address (01:00.0), a group (group:14), or text matched against
    /// device names (confirmed before anything changes). passthru prints each device's
    /// driver change first, and refuses — saying why and which flag accepts the risk —
    /// when the group holds devices you did not name that the host uses, when a device
    /// is the boot display still in use, holds the root filesystem or carries the
    /// default route, or when a process holds it open (named, instead of hanging in
    /// the kernel). What each device had before is recorded under /run/passthru, so
    /// `passthru unbind` gives it back, even after a crash. Binding twice is a no-op.
    Bind {
        /// Devices: 01:00.0, 0000:01:00.0, group:14, or a name ("RTX 3070").
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before binding devices matched by name.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        risks: RiskArgs,
        /// Seconds to wait for each driver write before calling it stuck (at most a day).
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(..=vm_run::MAX_WAIT_SECS))]
        timeout: u64,
    },
    /// Give devices bound by `passthru bind` back to the drivers they had before.
    ///
    /// Clears `driver_override` and re-probes, so the original driver takes the
    /// device back; reports any device it cannot restore. Works after a crash of
    /// passthru (it reads the records under /run/passthru).
    Unbind {
        /// Devices (address or group:N); the rest of each group that passthru took
        /// comes back too.
        #[arg(value_name = "DEVICE", required_unless_present = "all")]
        devices: Vec<String>,
        /// Every device passthru holds.
        #[arg(long, conflicts_with = "devices")]
        all: bool,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for each driver write before calling it stuck (at most a day).
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(..=vm_run::MAX_WAIT_SECS))]
        timeout: u64,
    },
    /// Make the passthrough setup persistent: kernel arguments, early binding of the
    /// devices to vfio-pci, the initramfs and the bootloader — previewed, journaled
    /// and reversible with `passthru undo`.
    ///
    /// Prints every file change as a unified diff and every command it will run, then
    /// asks. Devices are taken as `bind` takes them (whole groups, with the same
    /// refusals). Each file is written atomically, keeping mode, owner and SELinux
    /// label, after its previous bytes were saved under /var/lib/passthru/journal/.
    /// After regenerating the initramfs, passthru looks inside it and fails loudly if
    /// vfio-pci or its modprobe.d file is missing. Running it again with the same
    /// devices changes nothing; naming more devices adds them.
    Enable {
        /// Devices: 01:00.0, 0000:01:00.0, group:14, or a name ("RTX 3070").
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before applying.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        risks: RiskArgs,
    },
    /// Remove devices from the persistent setup (`undo` when none is left).
    Disable {
        /// Devices to remove (address or group:N).
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before applying.
        #[arg(short, long)]
        yes: bool,
    },
    /// Restore every file `enable` changed, byte for byte, remove the files it created,
    /// and regenerate the initramfs and bootloader configuration. Works after a crash.
    Undo {
        /// Only print what would be restored.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before applying.
        #[arg(short, long)]
        yes: bool,
    },
    /// After the reboot: compare the running system with what `enable` set up (IOMMU
    /// on, kernel arguments present, each device on vfio-pci), saying what did not
    /// take effect and the likely cause. Exit code 1 when something did not.
    Verify,
    /// Virtual machines from a small spec (a TOML file): create, check, plan and render
    /// them, define and start them in libvirt, or run them with QEMU directly.
    Vm {
        #[command(subcommand)]
        action: VmAction,
    },
    /// Print the shell completion script for SHELL, generated from passthru's own
    /// command line (so it always matches this version).
    ///
    /// The Debian package installs the scripts for bash, zsh and fish where those
    /// shells look. After `cargo install`, write them there yourself (creating the
    /// directory first). For bash, where bash-completion loads it on first use:
    ///
    /// passthru completions bash > ~/.local/share/bash-completion/completions/passthru
    ///
    /// For zsh, with `fpath+=~/.zfunc` before `compinit` in ~/.zshrc:
    ///
    /// passthru completions zsh > ~/.zfunc/_passthru
    ///
    /// For fish:
    ///
    /// passthru completions fish > ~/.config/fish/completions/passthru.fish
    ///
    /// For elvish, `eval (passthru completions elvish | slurp)` in rc.elv; for
    /// PowerShell, `passthru completions powershell | Out-String | Invoke-Expression` in
    /// the profile. A new shell then completes commands, flags and their values.
    Completions(completions::CompletionsArgs),
    /// Write the man pages (one per command: passthru.1, passthru-enable.1,
    /// passthru-vm-run.1, …) into DIR, creating it, and print what was written.
    ///
    /// The pages are generated from passthru's own command line, as `--help` is. The
    /// Debian package installs them already; after `cargo install`, write them where
    /// `man` finds them on its own, next to the binary's directory on PATH:
    /// `passthru man ~/.cargo/share/man/man1`, then `man passthru-enable`. Pages of the
    /// same name in DIR are replaced, nothing else there is touched.
    Man(man::ManArgs),
}

/// The flags that accept a risk `bind` and `enable` refuse by default.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(super) struct RiskArgs {
    /// Take the whole IOMMU group even when it holds other devices the host uses.
    #[arg(long)]
    whole_group: bool,
    /// Take the boot display although the console or a display server drives it (the
    /// host is left without a screen).
    #[arg(long)]
    allow_boot_display: bool,
    /// Take the controller of the disk that holds the root filesystem.
    #[arg(long)]
    allow_root_disk: bool,
    /// Take the network card carrying the default route.
    #[arg(long)]
    allow_default_route: bool,
    /// Take the controller of a disk the host uses besides `/`: a mounted filesystem
    /// (`/home`, `/boot`), swap, an LVM / dm-crypt / md RAID member, a device node a
    /// process holds open. Unmount it, `swapoff` it or stop the array first instead:
    /// taken away, its reads and writes fail and unwritten data is lost. For `vm run`
    /// it also accepts such a block device as one of the VM's disks.
    #[arg(long)]
    allow_disk_in_use: bool,
}

impl From<RiskArgs> for Overrides {
    fn from(r: RiskArgs) -> Self {
        Self {
            whole_group: r.whole_group,
            boot_display: r.allow_boot_display,
            root_disk: r.allow_root_disk,
            default_route: r.allow_default_route,
            disk_in_use: r.allow_disk_in_use,
        }
    }
}

/// `passthru vm …`.
#[derive(Debug, Subcommand)]
enum VmAction {
    /// Write a new VM spec with good defaults and print it (as root in
    /// /etc/passthru/vms/, else in ~/.config/passthru/vms/; PASSTHRU_VM_DIR overrides).
    New(Box<vm::NewArgs>),
    /// List the VM specs.
    List,
    /// Remove a VM spec (not its disks).
    Rm {
        /// The VM's name.
        name: String,
    },
    /// Explain where the VM's vCPUs, its emulator threads and its memory go, and which
    /// devices (whole IOMMU groups) it gets.
    Plan {
        /// The VM's name, or the path of a spec file.
        spec: PathBuf,
    },
    /// Print the libvirt domain XML for the VM (or, with --qemu, the QEMU command
    /// line, one argument per line).
    Render {
        /// The VM's name, or the path of a spec file.
        spec: PathBuf,
        /// Print the QEMU command line instead of libvirt XML.
        #[arg(long)]
        qemu: bool,
        /// kvm, or tcg (software emulation) where KVM is not usable.
        #[arg(long, value_enum, default_value_t = Accel::Kvm)]
        accel: Accel,
    },
    /// Open the VM's spec in $VISUAL / $EDITOR, and check it before saving: an
    /// invalid spec is never written.
    Edit {
        /// The VM's name, or the path of a spec file.
        spec: PathBuf,
    },
    /// Check that the VM can start on this host: devices present and bindable,
    /// hugepages, firmware, disks and ISOs, QEMU and its devices. Each problem comes
    /// with its remedy; exit code 1 when there is one.
    Check {
        /// The VM's name, or the path of a spec file.
        spec: PathBuf,
        /// kvm, or tcg (software emulation).
        #[arg(long, value_enum, default_value_t = Accel::Kvm)]
        accel: Accel,
    },
    /// Define the VM in libvirt (qemu:///system), creating its disks.
    Define(vm_libvirt::DefineArgs),
    /// Start a VM defined in libvirt.
    Start(vm_libvirt::StartArgs),
    /// Stop a VM running in libvirt (ACPI shutdown; --force pulls the plug).
    Stop(vm_libvirt::StopArgs),
    /// Attach to the serial console of a VM running in libvirt.
    Console(vm_libvirt::ConsoleArgs),
    /// Run the VM with QEMU directly, without libvirt: bind its devices to vfio-pci,
    /// start QEMU, pin the vCPU threads, and give the devices back when it exits.
    Run(vm_run::RunArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Behave like other Unix filters when the reader goes away (`passthru list | head`):
    // end quietly instead of reporting a broken pipe.
    crate::apply::sys::default_sigpipe();
    let args: Vec<OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::apply::SYSFS_WRITE_ARG)
    {
        // The child of `Applier::write_sysfs`: its standard error is what the kernel said.
        return match crate::apply::sysfs_child::run(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("passthru: error: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        };
    }
    if crate::apply::sys::is_root() {
        // Tools run by name as root are found only where no one else can write (see
        // `apply::safe_path`). Single-threaded still: nothing reads the environment
        // concurrently.
        let path = crate::apply::safe_path::sanitise(std::env::var_os("PATH").as_deref());
        std::env::set_var("PATH", path);
    }
    let cli = Cli::parse_from(args);
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("passthru: error: {}", crate::error::error_chain(e.as_ref()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn host_root(cli: &Cli) -> anyhow::Result<HostRoot> {
    match &cli.root {
        None => Ok(HostRoot::system()),
        Some(dir) => {
            let meta = std::fs::metadata(dir)
                .with_context(|| format!("--root {}: cannot open", dir.display()))?;
            if !meta.is_dir() {
                anyhow::bail!(
                    "--root {} is not a directory (extract a report first: mkdir r && tar xzf {} -C r)",
                    dir.display(),
                    dir.display()
                );
            }
            if !dir.join("sys").is_dir() && !dir.join("proc").is_dir() {
                anyhow::bail!(
                    "--root {} does not look like a host: it has neither sys/ nor proc/ \
                     (give the directory a report was extracted into)",
                    dir.display()
                );
            }
            Ok(HostRoot::new(dir))
        }
    }
}

/// Refuses `--root` for a command that acts on this machine's libvirt domains, which
/// another host tree cannot have.
fn this_machine_only(root: &HostRoot, command: &str) -> anyhow::Result<()> {
    if root.is_system() {
        Ok(())
    } else {
        anyhow::bail!(
            "`passthru {command}` acts on this machine's libvirt, so --root (or PASSTHRU_ROOT) \
             does not apply to it; `passthru vm render --root DIR` resolves a spec against \
             another host tree"
        )
    }
}

/// Whether the command changes the host (and so takes the host lock): every one of
/// `bind`, `unbind`, `enable`, `disable`, `undo` on this host (with `--root` they only
/// read a tree, or refuse), unless it only shows its plan (`--dry-run`), and the `vm`
/// commands that write specs or act on VMs.
fn changes_host(command: &Command, system_root: bool) -> bool {
    match command {
        Command::Bind { dry_run, .. }
        | Command::Unbind { dry_run, .. }
        | Command::Enable { dry_run, .. }
        | Command::Disable { dry_run, .. }
        | Command::Undo { dry_run, .. } => system_root && !dry_run,
        Command::Vm { action } => matches!(
            action,
            VmAction::New(_)
                | VmAction::Edit { .. }
                | VmAction::Rm { .. }
                | VmAction::Define(_)
                | VmAction::Start(_)
                | VmAction::Stop(_)
                | VmAction::Run(_)
        ),
        _ => false,
    }
}

/// Takes the host lock for a command that changes the host, run as root (anyone
/// else cannot change it; `bind` and `enable` refuse them). `Ok(Err(_))` is a
/// refusal: another passthru holds the lock.
fn host_lock(
    cli: &Cli,
    root: &HostRoot,
) -> anyhow::Result<Result<Option<crate::apply::lock::HostLock>, crate::apply::lock::LockError>> {
    use crate::apply::lock::{HostLock, LockError, WAIT};
    if !changes_host(&cli.command, root.is_system()) || !crate::apply::sys::is_root() {
        return Ok(Ok(None));
    }
    let command: Vec<String> = std::env::args()
        .map(|a| a.chars().filter(|c| !c.is_control()).collect())
        .collect();
    let json = cli.json;
    match HostLock::acquire(&HostRoot::system(), &command.join(" "), WAIT, &mut |m| {
        if !json {
            eprintln!("passthru: {m}");
        }
    }) {
        Ok(lock) => Ok(Ok(Some(lock))),
        Err(e @ LockError::Held { .. }) => Ok(Err(e)),
        Err(e) => Err(e.into()),
    }
}

/// Runs the parsed command — the host root, the host lock, then the command's own
/// function (one file each) — and returns its exit code.
fn run(cli: &Cli) -> anyhow::Result<u8> {
    // These two describe passthru itself, not a host: --root does not apply to them.
    match &cli.command {
        Command::Completions(args) => return completions::completions(cli.json, args),
        Command::Man(args) => return man::man(cli.json, args),
        _ => {}
    }
    let root = host_root(cli)?;
    // Held until passthru exits (see `apply::lock`); `vm run` lets go of it while its
    // guest runs.
    let lock = match host_lock(cli, &root)? {
        Ok(lock) => lock,
        Err(refusal) => {
            eprintln!("passthru: {refusal}");
            return Ok(EXIT_PROBLEMS);
        }
    };
    let json = cli.json;
    match &cli.command {
        Command::Check {
            verbose,
            kernel_config,
        } => check::check(
            json,
            &root,
            *verbose,
            kernel_config.as_deref(),
            &Style::new(cli.color),
        ),
        Command::List { gpu, class, group } => list::list(json, &root, *gpu, class, *group),
        Command::Report { output } => report::report(json, &root, output),
        Command::Bind {
            devices,
            dry_run,
            yes,
            risks,
            timeout,
        } => {
            let opts = ChangeOptions {
                dry_run: *dry_run,
                yes: *yes,
            };
            binding::bind(
                json,
                &root,
                devices,
                Overrides::from(*risks),
                opts,
                *timeout,
            )
        }
        Command::Unbind {
            devices,
            all,
            dry_run,
            timeout,
        } => {
            let opts = ChangeOptions {
                dry_run: *dry_run,
                yes: true,
            };
            binding::unbind(json, &root, devices, *all, opts, *timeout)
        }
        Command::Enable {
            devices,
            dry_run,
            yes,
            risks,
        } => {
            let opts = ChangeOptions {
                dry_run: *dry_run,
                yes: *yes,
            };
            persistent::enable(json, &root, devices, Overrides::from(*risks), opts)
        }
        Command::Disable {
            devices,
            dry_run,
            yes,
        } => {
            let opts = ChangeOptions {
                dry_run: *dry_run,
                yes: *yes,
            };
            persistent::disable(json, &root, devices, opts)
        }
        Command::Undo { dry_run, yes } => {
            let opts = ChangeOptions {
                dry_run: *dry_run,
                yes: *yes,
            };
            persistent::undo(json, &root, opts)
        }
        Command::Verify => persistent::verify(json, &root),
        Command::Vm { action } => vm_command(json, &root, action, lock.as_ref()),
        Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
    }
}

/// `passthru vm …`.
fn vm_command(
    json: bool,
    root: &HostRoot,
    action: &VmAction,
    lock: Option<&crate::apply::lock::HostLock>,
) -> anyhow::Result<u8> {
    match action {
        VmAction::New(args) => vm::new(root, args),
        VmAction::List => vm::list(json),
        VmAction::Rm { name } => vm::rm(name),
        VmAction::Plan { spec } => vm_plan::plan(json, root, spec),
        VmAction::Render { spec, qemu, accel } => vm_plan::render(root, spec, *qemu, *accel),
        VmAction::Edit { spec } => vm::edit(spec),
        VmAction::Check { spec, accel } => vm_check::check(json, root, spec, *accel),
        VmAction::Define(args) => vm_libvirt::define(json, root, args),
        VmAction::Start(args) => {
            this_machine_only(root, "vm start")?;
            vm_libvirt::start(json, args)
        }
        VmAction::Stop(args) => {
            this_machine_only(root, "vm stop")?;
            vm_libvirt::stop(json, args)
        }
        VmAction::Console(args) => {
            this_machine_only(root, "vm console")?;
            vm_libvirt::console(args)
        }
        VmAction::Run(args) => vm_run::run(json, root, args, lock),
    }
}
