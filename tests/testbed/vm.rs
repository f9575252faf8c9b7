//! `TestVm`: one QEMU guest running the Debian kernel over the host's own userland.
//!
//! How a guest is wired (see `init.sh` for the guest's half):
//! - three virtio-9p devices on the root bus at fixed slots ([`FIXTURE_SLOTS`]): the host's
//!   `/` read-only (tag `hostroot`), the kernel layer read-only (tag `kernel`), and a
//!   per-VM temporary directory read-write (tag `testbed`, the guest's `/tmp/testbed`);
//! - the serial console goes to a file, kept under `target/testbed/logs/`;
//! - commands cross through the shared directory: the host writes `N.sh`, then `N.go`
//!   holding the timeout in seconds; the guest runs the script with `/bin/sh` in a
//!   chroot of the host's `/`, writes `N.out`, `N.err`, `N.timedout` when its watchdog
//!   killed it, and last `N.rc`. One command at a time; a VM serves many.
//! - No network (`-nodefaults` and no `-nic`), TCG only (the machines' `/dev/kvm` does
//!   not boot this kernel).
//!
//! QEMU is started through a small `sh` wrapper that holds the read end of a pipe from
//! this process: when the pipe closes — `Drop`, or this process dying in any way — the
//! wrapper kills QEMU. So no guest outlives its test run.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kernel::Kernel;

/// Root-bus slots the fixture's own devices take: the 9p shares.
pub const FIXTURE_SLOTS: [(&str, &str); 3] =
    [("hostroot", "0x8"), ("kernel", "0x9"), ("testbed", "0xa")];

/// The root-bus slot of the boot disk of a disk-booted guest ([`VmBuilder::disk`]): the
/// slot of the `hostroot` share, which such a guest does not have.
pub const DISK_SLOT: &str = "0x8";

/// Where the shared directory appears in the guest (inside the chroot).
pub const GUEST_SHARED_DIR: &str = "/tmp/testbed";

/// Kernel arguments every guest gets.
const BASE_KERNEL_ARGS: &[&str] = &["console=ttyS0", "panic=-1"];

/// Default time a command may take in the guest.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra time the host waits beyond a command's timeout before it gives up on the guest.
const HOST_GRACE: Duration = Duration::from_secs(30);

/// The wrapper QEMU runs under; `$@` is QEMU's command line. fd 3 keeps the pipe from
/// the test process: `cat` returns at its end-of-file and QEMU is killed.
const WRAPPER: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
q=$!
( cat <&3 >/dev/null; kill -KILL "$q" 2>/dev/null ) &
w=$!
exec 3<&-
wait "$q"
rc=$?
kill "$w" 2>/dev/null
exit "$rc"
"#;

/// Which emulated IOMMU the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iommu {
    /// No IOMMU device: no DMAR or IVRS table.
    None,
    /// `intel-iommu` (VT-d): the firmware gets a DMAR table.
    Intel { intremap: bool, caching_mode: bool },
    /// `amd-iommu` (AMD-Vi): the firmware gets an IVRS table; the IOMMU itself is the
    /// PCI function 00:02.0.
    Amd { intremap: bool },
}

/// Describes a guest; [`VmBuilder::boot`] starts it.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    name: String,
    machine: String,
    cpu: String,
    memory_mib: u32,
    cpus: u32,
    iommu: Iommu,
    devices: Vec<String>,
    kernel_args: Vec<String>,
    root_args: Vec<String>,
    disk: Option<PathBuf>,
    boot_files: Option<(PathBuf, PathBuf)>,
    qemu_args: Vec<String>,
    boot_timeout: Duration,
}

/// Why a VM could not be started or answered.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot start QEMU: {0}")]
    Spawn(io::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("QEMU exited ({status}) {when}; its stderr:\n{stderr}")]
    Exited {
        status: String,
        when: String,
        stderr: String,
    },
    #[error("the guest was not ready after {0:?}")]
    BootTimeout(Duration),
    #[error("the guest did not answer command {seq} within {waited:?}")]
    NoAnswer { seq: u64, waited: Duration },
    #[error("the VM is unusable after an earlier failure: {0}")]
    Broken(String),
    #[error("the VM cannot be started: {0}")]
    Incomplete(String),
    #[error("the guest did not power off within {0:?}")]
    PowerOffTimeout(Duration),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VmError + '_ {
    move |source| VmError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a command in the guest did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The script as sent.
    pub script: String,
    /// Exit status (128 + signal when killed, as the shell reports it).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The guest's watchdog killed the command at its timeout.
    pub timed_out: bool,
    /// Wall time on the host, from sending to reading the result.
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0 && !self.timed_out
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n[exit {}{} after {:.1?}]\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.script,
            self.code,
            if self.timed_out { ", timed out" } else { "" },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// `,` separates QEMU's sub-options; a literal one is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

impl VmBuilder {
    /// A q35 machine with `-cpu max`, 1 GiB, 2 vCPUs, no IOMMU and no devices beyond
    /// the fixture's own. `name` names the log files.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            machine: "q35".into(),
            cpu: "max".into(),
            memory_mib: 1024,
            cpus: 2,
            iommu: Iommu::None,
            devices: Vec::new(),
            kernel_args: Vec::new(),
            root_args: Vec::new(),
            disk: None,
            boot_files: None,
            qemu_args: Vec::new(),
            boot_timeout: Duration::from_secs(240),
        }
    }

    /// The same machine under another name (the name of its log files).
    pub fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The `-machine` value, e.g. `q35,kernel-irqchip=split`.
    pub fn machine(mut self, machine: &str) -> Self {
        self.machine = machine.to_owned();
        self
    }

    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.to_owned();
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn iommu(mut self, iommu: Iommu) -> Self {
        self.iommu = iommu;
        self
    }

    /// Adds a `-device` (its value, e.g. `edu,bus=pcie.0,addr=0x5`).
    pub fn device(mut self, spec: &str) -> Self {
        self.devices.push(spec.to_owned());
        self
    }

    /// Adds a kernel argument (after the base `console=ttyS0 panic=-1`).
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_owned());
        self
    }

    /// Drops the kernel arguments added so far (e.g. a layout's `intel_iommu=on`, when
    /// the arguments are to come from the guest's own `grub.cfg` instead).
    pub fn clear_kernel_args(mut self) -> Self {
        self.kernel_args.clear();
        self
    }

    /// Adds kernel arguments that go last on the command line, after the
    /// [`kernel_arg`](Self::kernel_arg)s, so they win over them (the kernel and the
    /// initramfs take the last `root=`, and `rw` after GRUB's `ro`).
    pub fn append_root_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.root_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Boots from a disk image of its own instead of the host's `/`: the raw image
    /// becomes a `virtio-blk-pci` device at root-bus slot [`DISK_SLOT`] (the guest's
    /// `/dev/vda`), and the guest gets only the shared-directory share (slot `0xa`), not
    /// the `hostroot` and `kernel` ones. QEMU writes to the image: give each VM a copy.
    pub fn disk(mut self, image: &Path) -> Self {
        self.disk = Some(image.to_owned());
        self
    }

    /// Boots this kernel and initramfs instead of the testbed's (e.g. the ones inside a
    /// disk image's `/boot`).
    pub fn kernel_initrd(mut self, vmlinuz: &Path, initrd: &Path) -> Self {
        self.boot_files = Some((vmlinuz.to_owned(), initrd.to_owned()));
        self
    }

    /// Adds raw QEMU arguments.
    pub fn qemu_arg(mut self, arg: &str) -> Self {
        self.qemu_args.push(arg.to_owned());
        self
    }

    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        BASE_KERNEL_ARGS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.kernel_args.iter().cloned())
            .chain(self.root_args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// QEMU's arguments for this machine (without the program).
    pub fn qemu_argv(&self, kernel: &Kernel, shared: &Path, console: &Path) -> Vec<String> {
        self.argv(Some(kernel), shared, console)
    }

    /// QEMU's arguments; `kernel` may be `None` only for a disk boot with its own
    /// kernel and initramfs (checked by the callers).
    fn argv(&self, kernel: Option<&Kernel>, shared: &Path, console: &Path) -> Vec<String> {
        let mut argv: Vec<String> = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            "tcg",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut push = |a: &str, b: String| {
            argv.push(a.to_owned());
            argv.push(b);
        };
        push("-machine", self.machine.clone());
        push("-cpu", self.cpu.clone());
        push("-m", self.memory_mib.to_string());
        push("-smp", self.cpus.to_string());
        // The Intel IOMMU comes first: QEMU wants it created before the devices it
        // translates. The AMD IOMMU is itself a PCI function that takes the first free
        // root-bus slot when created, so it comes after the devices (which pin their
        // root-bus slots) and lands in the first slot they left free.
        //
        // Interrupt remapping comes with x2APIC support (`eim` on VT-d, `xtsup` on
        // AMD-Vi, as on today's hosts): without it the kernel leaves x2APIC mode
        // ("IRQ remapping doesn't support X2APIC mode"), and in xAPIC mode QEMU 10's
        // TCG now and then stops delivering a vCPU's local timer — the guest stalls
        // (RCU stalls, on 6.1 and 6.12 alike).
        let iommu = match self.iommu {
            Iommu::None => None,
            Iommu::Intel {
                intremap,
                caching_mode,
            } => Some(format!(
                "intel-iommu,intremap={},eim={},caching-mode={}",
                on_off(intremap),
                on_off(intremap),
                on_off(caching_mode)
            )),
            Iommu::Amd { intremap } => Some(format!(
                "amd-iommu,intremap={},xtsup={}",
                on_off(intremap),
                on_off(intremap)
            )),
        };
        if let (Some(iommu), Iommu::Intel { .. }) = (&iommu, self.iommu) {
            push("-device", iommu.clone());
        }
        let shares: Vec<(&str, &str, &Path, bool, &str)> = match (&self.disk, kernel) {
            (Some(disk), _) => {
                push(
                    "-drive",
                    format!("file={},format=raw,if=none,id=disk0", qemu_escape(disk)),
                );
                push(
                    "-device",
                    format!("virtio-blk-pci,drive=disk0,bus=pcie.0,addr={DISK_SLOT}"),
                );
                let (tag, slot) = FIXTURE_SLOTS[2];
                vec![(tag, slot, shared, false, "")]
            }
            (None, Some(kernel)) => {
                let paths = [
                    (Path::new("/"), true, ",multidevs=remap"),
                    (kernel.layer.as_path(), true, ""),
                    (shared, false, ""),
                ];
                FIXTURE_SLOTS
                    .iter()
                    .zip(paths)
                    .map(|((tag, slot), (path, ro, extra))| (*tag, *slot, path, ro, extra))
                    .collect()
            }
            (None, None) => vec![],
        };
        for (tag, slot, path, readonly, extra) in shares {
            push(
                "-fsdev",
                format!(
                    "local,id=fs-{tag},path={},security_model=none{}{extra}",
                    qemu_escape(path),
                    if readonly { ",readonly=on" } else { "" }
                ),
            );
            push(
                "-device",
                format!("virtio-9p-pci,fsdev=fs-{tag},mount_tag={tag},bus=pcie.0,addr={slot}"),
            );
        }
        for device in &self.devices {
            push("-device", device.clone());
        }
        if let (Some(iommu), Iommu::Amd { .. }) = (iommu, self.iommu) {
            push("-device", iommu);
        }
        push(
            "-chardev",
            format!("file,id=console,path={}", qemu_escape(console)),
        );
        push("-serial", "chardev:console".into());
        let (vmlinuz, initrd) = match (&self.boot_files, kernel) {
            (Some((vmlinuz, initrd)), _) => (vmlinuz.clone(), initrd.clone()),
            (None, Some(kernel)) => (kernel.vmlinuz.clone(), kernel.initramfs.clone()),
            (None, None) => (PathBuf::new(), PathBuf::new()),
        };
        push("-kernel", vmlinuz.display().to_string());
        push("-initrd", initrd.display().to_string());
        push("-append", self.kernel_cmdline());
        argv.extend(self.qemu_args.iter().cloned());
        argv
    }

    /// Starts QEMU and waits until the guest's init says it is ready.
    pub fn boot(self, kernel: &Kernel) -> Result<TestVm, VmError> {
        self.start(&kernel.qemu, Some(kernel))
    }

    /// Boots a guest from its own disk with its own kernel and initramfs (both
    /// [`disk`](Self::disk) and [`kernel_initrd`](Self::kernel_initrd) set), with the
    /// QEMU binary `qemu`; waits until the disk's init (see `debian-init.sh`) is ready.
    pub fn boot_disk(self, qemu: &Path) -> Result<TestVm, VmError> {
        if self.disk.is_none() || self.boot_files.is_none() {
            return Err(VmError::Incomplete(
                "a disk boot needs .disk(image) and .kernel_initrd(vmlinuz, initrd)".into(),
            ));
        }
        self.start(qemu, None)
    }

    fn start(self, qemu: &Path, kernel: Option<&Kernel>) -> Result<TestVm, VmError> {
        let base = super::kernel::testbed_dir();
        let logs = base.join("logs");
        let runs = base.join("run");
        for dir in [&logs, &runs] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        remove_stale_shares(&runs);
        let shared = tempfile::Builder::new()
            .prefix(&format!("{}-{}-", self.name, std::process::id()))
            .tempdir_in(&runs)
            .map_err(io_err(&runs))?;
        let console = logs.join(format!("{}.console.log", self.name));
        let qemu_log = logs.join(format!("{}.qemu.log", self.name));
        let argv = self.argv(kernel, shared.path(), &console);
        let cmdline_file = logs.join(format!("{}.qemu-argv.txt", self.name));
        let _ = fs::write(&cmdline_file, argv.join("\n") + "\n");
        // Start with an empty log: QEMU appends to an existing file.
        let _ = fs::remove_file(&console);

        let stderr = File::create(&qemu_log).map_err(io_err(&qemu_log))?;
        let started = Instant::now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("testbed-qemu")
            .arg(qemu)
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(VmError::Spawn)?;
        let stdin = child.stdin.take();
        let mut vm = TestVm {
            name: self.name.clone(),
            kernel: kernel.cloned(),
            cmdline: self.kernel_cmdline(),
            shared,
            console,
            qemu_log,
            boot_time: Duration::ZERO,
            state: Mutex::new(State {
                child,
                stdin,
                next: 0,
                broken: None,
            }),
        };
        let ready = vm.shared.path().join("ready");
        loop {
            if ready.exists() {
                break;
            }
            vm.check_alive("before the guest was ready")?;
            if started.elapsed() > self.boot_timeout {
                return Err(VmError::BootTimeout(self.boot_timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        vm.boot_time = started.elapsed();
        Ok(vm)
    }
}

/// Removes the shared directories of test processes that are gone (a VM kept for a
/// filtered run, or a killed run, never dropped its `TempDir`). Names are
/// `<vm>-<pid>-<random>`.
fn remove_stale_shares(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[derive(Debug)]
struct State {
    child: Child,
    stdin: Option<ChildStdin>,
    next: u64,
    broken: Option<String>,
}

/// A running guest. Dropping it kills QEMU.
#[derive(Debug)]
pub struct TestVm {
    name: String,
    /// The testbed kernel it booted; `None` for a disk that brings its own.
    kernel: Option<Kernel>,
    cmdline: String,
    shared: tempfile::TempDir,
    console: PathBuf,
    qemu_log: PathBuf,
    boot_time: Duration,
    state: Mutex<State>,
}

impl TestVm {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The testbed kernel the guest runs; panics for a guest booted from its own disk.
    pub fn kernel(&self) -> &Kernel {
        self.kernel
            .as_ref()
            .unwrap_or_else(|| panic!("VM {} booted its own disk's kernel", self.name))
    }

    /// The kernel command line the guest was booted with.
    pub fn kernel_cmdline(&self) -> &str {
        &self.cmdline
    }

    /// From starting QEMU to the guest's init being ready for commands.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The shared directory on the host; the guest sees it at [`GUEST_SHARED_DIR`].
    pub fn shared_dir(&self) -> &Path {
        self.shared.path()
    }

    /// The console log so far (kernel messages and the init's `testbed:` lines).
    pub fn console_log(&self) -> String {
        fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|err| format!("(no console log at {}: {err})", self.console.display()))
    }

    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// QEMU's own stderr (warnings such as "nic e1000e.0 has no peer").
    pub fn qemu_log(&self) -> String {
        fs::read_to_string(&self.qemu_log).unwrap_or_default()
    }

    /// Prints the console log (and QEMU's stderr) to stderr, framed, for a failing test.
    pub fn print_logs(&self, why: &str) {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\n===== console log of VM {} ({why}; file {}) =====",
            self.name,
            self.console.display()
        );
        text.push_str(&self.console_log());
        let _ = writeln!(text, "\n===== QEMU stderr of VM {} =====", self.name);
        text.push_str(&self.qemu_log());
        let _ = writeln!(text, "===== end of logs of VM {} =====", self.name);
        eprintln!("{text}");
    }

    fn check_alive(&mut self, when: &str) -> Result<(), VmError> {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        check_child(&mut state.child, when, &self.qemu_log)
    }

    /// Runs a shell script in the guest (as root, `/bin/sh` of the host's userland in a
    /// chroot) with the default timeout.
    pub fn run(&self, script: &str) -> Result<Output, VmError> {
        self.run_with_timeout(script, DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs a shell script in the guest; the guest kills it (and its process group)
    /// after `timeout`, and the result says `timed_out`.
    pub fn run_with_timeout(&self, script: &str, timeout: Duration) -> Result<Output, VmError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(why) = &state.broken {
            return Err(VmError::Broken(why.clone()));
        }
        let seq = state.next;
        state.next += 1;
        let dir = self.shared.path();
        let file = |ext: &str| dir.join(format!("{seq}.{ext}"));
        let started = Instant::now();
        fs::write(file("sh"), script).map_err(io_err(&file("sh")))?;
        let secs = timeout.as_secs().max(1);
        let go_tmp = file("go.tmp");
        fs::write(&go_tmp, format!("{secs}\n")).map_err(io_err(&go_tmp))?;
        fs::rename(&go_tmp, file("go")).map_err(io_err(&go_tmp))?;

        let limit = Duration::from_secs(secs) + HOST_GRACE;
        let rc_path = file("rc");
        let result = loop {
            if let Ok(text) = fs::read_to_string(&rc_path) {
                if let Ok(code) = text.trim().parse::<i32>() {
                    break Ok(code);
                }
            }
            if let Err(err) = check_child(&mut state.child, "while a command ran", &self.qemu_log) {
                break Err(err);
            }
            if started.elapsed() > limit {
                break Err(VmError::NoAnswer { seq, waited: limit });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let code = match result {
            Ok(code) => code,
            Err(err) => {
                state.broken = Some(err.to_string());
                return Err(err);
            }
        };
        let read = |ext: &str| {
            fs::read(file(ext))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Ok(Output {
            script: script.to_owned(),
            code,
            stdout: read("out"),
            stderr: read("err"),
            timed_out: file("timedout").exists(),
            elapsed: started.elapsed(),
        })
    }

    /// Runs a script that must succeed and returns its stdout; panics with the whole
    /// exchange otherwise.
    pub fn sh(&self, script: &str) -> String {
        match self.run(script) {
            Ok(out) if out.success() => out.stdout,
            Ok(out) => panic!("command failed in VM {}:\n{out}", self.name),
            Err(err) => panic!("VM {} failed running `{script}`: {err}", self.name),
        }
    }
}

impl TestVm {
    /// Copies a host file into the shared directory as `name` (executable bits kept)
    /// and returns the path the guest sees it at, under [`GUEST_SHARED_DIR`]. A guest
    /// booted from its own disk does not see the host's `/`: this is how it gets the
    /// freshly built `passthru`.
    pub fn copy_in(&self, host_file: &Path, name: &str) -> Result<String, VmError> {
        let target = self.shared.path().join(name);
        fs::copy(host_file, &target).map_err(io_err(host_file))?;
        Ok(format!("{GUEST_SHARED_DIR}/{name}"))
    }

    /// Copies the `passthru` under test ([`super::passthru_bin`]) into the shared
    /// directory; returns its path in the guest (`/tmp/testbed/passthru`).
    pub fn install_passthru(&self) -> Result<String, VmError> {
        self.copy_in(Path::new(&super::passthru_bin()), "passthru")
    }

    /// Powers the guest off cleanly and waits for QEMU to exit: the disk init
    /// (`debian-init.sh`) sees the `poweroff` request file, syncs, remounts `/`
    /// read-only (ext4 then writes back its journal, so the host can read the image
    /// with `debugfs`) and powers off. Only disk-booted guests honour the request. The
    /// VM serves no command afterwards. Returns how long the power-off took.
    pub fn power_off(&self, timeout: Duration) -> Result<Duration, VmError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let request = self.shared.path().join("poweroff");
        fs::write(&request, "").map_err(io_err(&request))?;
        loop {
            match state.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(source) => {
                    return Err(VmError::Io {
                        path: PathBuf::from("(QEMU wrapper process)"),
                        source,
                    })
                }
            }
            if started.elapsed() > timeout {
                state.broken = Some("it did not power off".into());
                return Err(VmError::PowerOffTimeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        state.broken = Some("it was powered off".into());
        Ok(started.elapsed())
    }
}

fn check_child(child: &mut Child, when: &str, qemu_log: &Path) -> Result<(), VmError> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(VmError::Exited {
            status: status.to_string(),
            when: when.to_owned(),
            stderr: fs::read_to_string(qemu_log).unwrap_or_default(),
        }),
        Err(err) => Err(VmError::Io {
            path: PathBuf::from("(QEMU wrapper process)"),
            source: err,
        }),
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Closing the pipe makes the wrapper kill QEMU.
        drop(state.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(state.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = state.child.kill();
        let _ = state.child.wait();
    }
}
