//! The runtime executor of `vm run`: a VM run by QEMU directly, in the foreground,
//! for hosts without libvirt. What to run (QEMU's and swtpm's argv, the threads'
//! affinity) is planned in [`crate::vm::run`] and [`crate::vm::render`]; this module
//! does it.
//!
//! What libvirt would do around QEMU, done here in order, and undone in reverse
//! whatever happens to QEMU:
//!
//! 1. the plan's blockers and the bind refusals stop everything before any change;
//! 2. missing disk images are created, the UEFI variable store is copied from its
//!    template, hugepages are reserved when the pool is short (and checked: the kernel
//!    reserves only what it finds contiguous), swtpm is started for a TPM;
//! 3. the devices (whole IOMMU groups) go to `vfio-pci` with the same machinery and
//!    journal as `passthru bind` — a device already on vfio-pci is left as it is and
//!    not given back afterwards;
//! 4. QEMU starts from [`qemu_argv`] (an argv, never a shell) in a process group of its
//!    own, so a Ctrl-C in the terminal reaches passthru, not QEMU; through QMP
//!    ([`super::qmp`]) each vCPU thread is pinned to its host CPU and QEMU's other
//!    threads to the emulator CPUs;
//! 5. when QEMU exits — the guest powered off, QEMU failed or was killed — or when
//!    passthru gets SIGINT/SIGTERM/SIGHUP (it then presses the guest's power button
//!    through QMP, and tells QEMU to quit after a timeout), the devices go back to
//!    their previous drivers, swtpm stops and reserved hugepages are released.
//!
//! Each device's previous driver is journaled under `/run/passthru/bound` before it
//! is touched: should passthru itself die, `passthru unbind --all` gives them back.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::qmp::Qmp;
use super::sys::{self, own_affinity, set_affinity};
use super::{Applier, ApplyError};
use crate::host::cpu::parse_cpu_list;
use crate::host::pci::PciAddress;
use crate::host::root::HostRoot;
use crate::host::snapshot::{HostSnapshot, Needs};
use crate::plan::bind::{self, Overrides, Refusal, VFIO_PCI};
use crate::vm::disk::{self, DiskError};
use crate::vm::hugepages::{pool_dir, HugepagePlan};
use crate::vm::plan::VmPlan;
use crate::vm::qmp::{QmpError, VcpuThread};
use crate::vm::render::qemu_argv;
use crate::vm::resolve::Resolution;
use crate::vm::run::{pin_plan, swtpm_argv, swtpm_blocker};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// The host lock this command holds (see [`crate::apply::lock`]), let go while
    /// the guest runs — other VMs may start and stop meanwhile — and taken back
    /// before the devices are given back.
    pub host_lock: Option<&'a crate::apply::lock::HostLock>,
    /// Risks accepted, as for `passthru bind`.
    pub overrides: Overrides,
    /// How long each driver write may take before it is called stuck.
    pub sysfs_timeout: Duration,
    /// How long the guest has to power down after a stop request before QEMU is told
    /// to quit.
    pub shutdown_timeout: Duration,
    /// The passthru binary (driver writes run in a child process of it).
    pub exe: PathBuf,
}

/// Why the VM could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plan cannot start on this host.
    #[error("the VM cannot start: {}", .0.join("; "))]
    Blocked(Vec<String>),
    /// Binding the devices was refused (see [`Refusal::override_flag`]).
    #[error("binding the VM's devices was refused: {}", .0.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Refusal>),
    /// The host's devices could not be read.
    #[error("cannot read the PCI devices: {0}")]
    Pci(#[from] crate::host::pci::device::PciError),
    /// A file of the VM could not be prepared.
    #[error("cannot prepare {}: {source}", path.display())]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A disk could not be created.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Hugepages could not be reserved.
    #[error("{0}")]
    Hugepages(String),
    /// swtpm did not start.
    #[error("{0}")]
    Swtpm(String),
    /// A device could not be bound.
    #[error("binding the VM's devices failed: {0}")]
    Bind(#[source] ApplyError),
    /// QEMU could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A stop was requested (Ctrl-C) before QEMU started.
    #[error("interrupted before QEMU started")]
    Interrupted,
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuExit {
    /// It exited with this code (0 after the guest powered off or `quit`).
    Code(i32),
    /// A signal killed it (9: SIGKILL, e.g. the OOM killer or `kill -9`).
    Signal(i32),
}

impl QemuExit {
    /// The exit code for passthru: QEMU's own, or 128 + the signal as a shell says.
    pub fn code(self) -> u8 {
        match self {
            Self::Code(c) => u8::try_from(c).unwrap_or(1),
            Self::Signal(s) => u8::try_from(128 + s).unwrap_or(255),
        }
    }
}

impl std::fmt::Display for QemuExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "QEMU exited with code {c}"),
            Self::Signal(s) => write!(f, "QEMU was killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// How QEMU ended.
    pub exit: QemuExit,
    /// QEMU's process id.
    pub pid: u32,
    /// The signal passthru received that stopped the VM, if any.
    pub stopped_by: Option<i32>,
    /// What could not be undone (a device not given back, …), each with its remedy.
    pub cleanup_failures: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Signals: SIGINT, SIGTERM and SIGHUP are recorded, never fatal, while a VM runs.

/// Asks a running [`run`] to stop the VM, as SIGTERM would (for embedding and tests).
pub fn request_stop() {
    sys::record_signal(libc::SIGTERM);
}

/// Catches the stop signals while alive; restores the previous handlers on drop.
struct SignalGuard {
    old: sys::PreviousActions,
}

impl SignalGuard {
    fn install() -> Self {
        Self {
            old: sys::catch_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]),
        }
    }

    fn received() -> (i32, usize) {
        sys::signals_received()
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        sys::restore_signals(&self.old);
    }
}

// ---------------------------------------------------------------------------------------
// Pinning: the affinity [`pin_plan`] decides, set on QEMU's threads.

/// Pins QEMU's threads; returns the line to print.
fn pin(root: &HostRoot, plan: &VmPlan, pid: u32, threads: &[VcpuThread]) -> String {
    let online = root
        .read_to_string("sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t).ok())
        .unwrap_or_default();
    let tasks: Vec<i32> = root
        .list_dir_optional(format!("proc/{pid}/task"))
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    let p = &plan.pinning;
    match pin_plan(
        &p.vcpus,
        &p.emulator,
        threads,
        &tasks,
        &online,
        &own_affinity(),
    ) {
        Err(why) => format!("not pinning: {why}"),
        Ok(pins) => {
            let failed: Vec<String> = pins
                .threads
                .iter()
                .filter_map(|(tid, cpus)| {
                    set_affinity(*tid, cpus)
                        .err()
                        .map(|e| format!("thread {tid}: {e}"))
                })
                .collect();
            if failed.is_empty() {
                format!("pinned {}", pins.summary)
            } else {
                format!("pinned {} (failed: {})", pins.summary, failed.join(", "))
            }
        }
    }
}

/// A child's stdout that goes to passthru's stderr.
fn to_stderr() -> Stdio {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

/// Ends a helper process: SIGTERM, then SIGKILL after `grace`.
fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // Our own child's pid; one that already exited is what the wait below sees.
        let _ = sys::send_signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------
// The session: what was changed, undone in reverse.

/// A hugepage pool grown for the VM.
#[derive(Debug)]
struct Reserved {
    file: PathBuf,
    before: u64,
}

struct Session<'a> {
    root: &'a HostRoot,
    applier: Applier,
    /// Devices this run moved to vfio-pci (not those already there).
    bound: Vec<PciAddress>,
    hugepages: Option<Reserved>,
    swtpm: Option<Child>,
    done: bool,
}

impl Session<'_> {
    fn read_u64(&self, rel: &Path) -> Option<u64> {
        self.root
            .read_to_string(rel)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    fn reserve_hugepages(
        &mut self,
        h: &HugepagePlan,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), RunError> {
        if h.to_reserve == 0 {
            return Ok(());
        }
        let file = PathBuf::from(pool_dir(h.size_kib)).join("nr_hugepages");
        let free_file = PathBuf::from(pool_dir(h.size_kib)).join("free_hugepages");
        let before = self.read_u64(&file).unwrap_or(0);
        let want = before + h.to_reserve;
        progress(&format!(
            "reserving {} more hugepages of {} KiB (nr_hugepages {before} → {want})",
            h.to_reserve, h.size_kib
        ));
        let written = self.applier.write_sysfs(&file, &want.to_string());
        self.hugepages = Some(Reserved {
            file: file.clone(),
            before,
        });
        let got = self.read_u64(&file).unwrap_or(before);
        let free = self.read_u64(&free_file).unwrap_or(0);
        if let Err(e) = written {
            return Err(RunError::Hugepages(format!(
                "cannot reserve hugepages: {}",
                crate::error::error_chain(&e)
            )));
        }
        if free < h.pages {
            let size = if h.size_kib >= 1024 * 1024 {
                "1G"
            } else {
                "2M"
            };
            return Err(RunError::Hugepages(format!(
                "the kernel reserved only {} of the {} hugepages of {} KiB asked for ({free} free, {} needed): \
                 memory is too fragmented; reserve them at boot with `hugepagesz={size} hugepages={}` \
                 on the kernel command line, or set hugepages = false",
                got.saturating_sub(before),
                h.to_reserve,
                h.size_kib,
                h.pages,
                h.pages
            )));
        }
        Ok(())
    }

    fn start_swtpm(
        &mut self,
        plan: &VmPlan,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), RunError> {
        let dir = plan.tpm_state_dir();
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Prepare {
            path: dir.clone(),
            source,
        })?;
        let sock = plan.swtpm_path();
        let _ = std::fs::remove_file(&sock);
        let argv = swtpm_argv(plan);
        progress(&format!("starting swtpm (TPM state in {})", dir.display()));
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(to_stderr())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                RunError::Swtpm(format!(
                    "cannot start swtpm (install swtpm; Debian: swtpm, swtpm-tools): {e}"
                ))
            })?;
        self.swtpm = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            let exited = self
                .swtpm
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(plan.state_dir.join("swtpm.log")).unwrap_or_default();
                return Err(RunError::Swtpm(format!(
                    "swtpm did not open {}{}",
                    sock.display(),
                    if log.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", log.trim())
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Undoes everything, in reverse; returns what could not be undone.
    fn cleanup(&mut self, progress: &mut dyn FnMut(&str)) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut failures = Vec::new();
        if !self.bound.is_empty() {
            progress("giving devices back");
            failures.extend(self.give_back(progress));
        }
        if let Some(mut c) = self.swtpm.take() {
            progress("stopping swtpm");
            stop_child(&mut c, Duration::from_secs(5));
        }
        if let Some(r) = self.hugepages.take() {
            progress(&format!(
                "releasing reserved hugepages (nr_hugepages back to {})",
                r.before
            ));
            if let Err(e) = self.applier.write_sysfs(&r.file, &r.before.to_string()) {
                failures.push(format!(
                    "hugepages not released: {} (write {} to /{} yourself)",
                    crate::error::error_chain(&e),
                    r.before,
                    r.file.display()
                ));
            }
        }
        failures
    }

    fn give_back(&mut self, progress: &mut dyn FnMut(&str)) -> Vec<String> {
        let addrs: Vec<String> = self.bound.iter().map(ToString::to_string).collect();
        let remedy = format!("run `passthru unbind {}`", addrs.join(" "));
        let g = match HostSnapshot::gather(self.root, Needs::BIND) {
            Ok(g) => g,
            Err(e) => return vec![format!("devices not given back: {e}; {remedy}")],
        };
        let inputs = g.bind_inputs();
        let plan = match bind::plan_unbind(&inputs, &self.bound) {
            Ok(mut p) => {
                // Only what this run took: the rest of a group that was on vfio-pci
                // before stays there.
                p.steps.retain(|s| self.bound.contains(&s.address));
                p
            }
            Err(refusals) => {
                return refusals
                    .iter()
                    .map(|r| format!("not given back: {}; then {remedy}", r.reason))
                    .collect()
            }
        };
        let failures = self.applier.unbind(&plan, progress);
        failures
            .into_iter()
            .map(|(a, e)| {
                format!(
                    "could not give {a} back: {} (`passthru unbind {a}` tries again)",
                    crate::error::error_chain(&e)
                )
            })
            .collect()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A panic or an early return: never leave devices, swtpm or hugepages behind.
        let mut say = |l: &str| eprintln!("passthru: {l}");
        for f in self.cleanup(&mut say) {
            eprintln!("passthru: {f}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// Copies the UEFI variable template to the VM's NVRAM file when it has none yet.
fn prepare_nvram(plan: &VmPlan, progress: &mut dyn FnMut(&str)) -> Result<(), RunError> {
    let (true, Some(ovmf)) = (plan.spec.firmware.uefi, &plan.ovmf) else {
        return Ok(());
    };
    let nvram = plan.nvram_path();
    if nvram.exists() {
        return Ok(());
    }
    progress(&format!(
        "creating the UEFI variable store {} from {}",
        nvram.display(),
        ovmf.vars_template.display()
    ));
    std::fs::copy(&ovmf.vars_template, &nvram).map_err(|source| RunError::Prepare {
        path: nvram,
        source,
    })?;
    Ok(())
}

/// Waits for QEMU's QMP socket and connects, unless QEMU exits first.
fn connect_qmp(plan: &VmPlan, child: &mut Child) -> Option<Result<Qmp, QmpError>> {
    let sock = plan.qmp_path();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return None;
        }
        if sock.exists() {
            // Under TCG QEMU may take long to set up devices before its greeting.
            return Some(Qmp::connect(
                &sock,
                Duration::from_secs(5),
                Duration::from_secs(60),
            ));
        }
        if Instant::now() >= deadline {
            return Some(Qmp::connect(
                &sock,
                Duration::from_millis(1),
                Duration::from_secs(1),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the resolved VM in the foreground until QEMU exits, then undoes what it set
/// up. `progress` receives one line per step. Errors are returned only when QEMU did
/// not run; everything set up before is undone by then.
pub fn run(
    root: &HostRoot,
    resolution: &Resolution,
    options: &RunOptions<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<RunOutcome, RunError> {
    let mut blockers = resolution.blockers();
    let plan = &resolution.plan;
    if let Some(b) = swtpm_blocker(plan) {
        blockers.push(b);
    }
    if !blockers.is_empty() {
        return Err(RunError::Blocked(blockers));
    }
    // Refusals first: nothing changes on a host that says no.
    let bind_plan = if plan.devices.is_empty() {
        None
    } else {
        let snapshot = HostSnapshot::gather(root, Needs::BIND)?;
        let request = bind::BindRequest {
            named: plan.devices.clone(),
            overrides: options.overrides,
        };
        Some(bind::plan(&snapshot, &request).map_err(RunError::Refused)?)
    };
    let signals = SignalGuard::install();
    let mut session = Session {
        root,
        applier: Applier::new(root.clone(), options.sysfs_timeout, options.exe.clone()),
        bound: Vec::new(),
        hugepages: None,
        swtpm: None,
        done: false,
    };
    let interrupted = || SignalGuard::received().1 > 0;

    std::fs::create_dir_all(&plan.state_dir).map_err(|source| RunError::Prepare {
        path: plan.state_dir.clone(),
        source,
    })?;
    for d in disk::missing(&plan.spec) {
        progress(&format!("creating disk {}", d.path.display()));
    }
    // Checked before the disks are created: a new image is blank too.
    let iso_first = !plan.spec.isos.is_empty() && disk::boot_iso_first(&plan.spec)?;
    super::disk::create_missing(&plan.spec)?;
    prepare_nvram(plan, progress)?;
    if let Some(Ok(h)) = &resolution.hugepages {
        session.reserve_hugepages(h, progress)?;
    }
    if plan.spec.firmware.tpm {
        session.start_swtpm(plan, progress)?;
    }
    if interrupted() {
        return Err(RunError::Interrupted);
    }
    if let Some(bp) = &bind_plan {
        for s in &bp.steps {
            if s.noop {
                progress(&format!(
                    "{} is already on {VFIO_PCI}: left as it is",
                    s.address
                ));
            } else {
                progress(&format!(
                    "binding {} to {VFIO_PCI} (from {})",
                    s.address,
                    s.from.as_deref().unwrap_or("no driver")
                ));
                // Recorded before the change: a failure half-way gives back what moved.
                session.bound.push(s.address);
            }
        }
        // The applier's own per-device lines repeat the ones above.
        let said: Vec<String> = bp.steps.iter().map(|s| format!("{}:", s.address)).collect();
        let mut rest = |l: &str| {
            if !said.iter().any(|p| l.starts_with(p.as_str())) {
                progress(l);
            }
        };
        session
            .applier
            .bind(bp, &mut rest)
            .map_err(RunError::Bind)?;
    }
    if interrupted() {
        return Err(RunError::Interrupted);
    }

    // The installer boots first only while no OS is on the disks, as `vm define` does.
    let mut plan = plan.clone();
    plan.boot_iso_first = iso_first;
    if iso_first {
        progress("the disks are blank: booting the installer ISO first");
    }
    let plan = &plan;
    let argv = qemu_argv(plan);
    for stale in [plan.qmp_path(), plan.console_path()] {
        let _ = std::fs::remove_file(stale);
    }
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        // passthru's stdout carries `--json`; whatever QEMU prints goes to stderr.
        .stdout(to_stderr())
        // Its own process group: Ctrl-C in the terminal goes to passthru, which stops
        // the guest properly, instead of killing QEMU under the devices.
        .process_group(0)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
    let pid = child.id();
    progress(&format!(
        "QEMU started (pid {pid}), console log: {}",
        plan.console_log_path().display()
    ));
    let mut qmp = match connect_qmp(plan, &mut child) {
        None => None,
        Some(Ok(mut q)) => {
            match q.vcpu_threads() {
                Ok(threads) => progress(&pin(root, plan, pid, &threads)),
                Err(e) => progress(&format!("not pinning: query-cpus-fast failed: {e}")),
            }
            Some(q)
        }
        Some(Err(e)) => {
            progress(&format!("no QMP connection ({e}): not pinning"));
            None
        }
    };

    // The host is set up: while the guest runs, other commands may change it.
    if let Some(lock) = options.host_lock {
        lock.release();
    }
    let status = wait(&mut child, qmp.as_mut(), options.shutdown_timeout, progress);
    let stopped_by = match SignalGuard::received() {
        (s, n) if n > 0 => Some(s),
        _ => None,
    };
    drop(qmp);
    let exit = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => QemuExit::Code(c),
            (None, Some(sig)) => QemuExit::Signal(sig),
            (None, None) => QemuExit::Code(1),
        },
        Err(_) => QemuExit::Code(1),
    };
    progress(&exit.to_string());
    if let Some(lock) = options.host_lock {
        if let Err(e) = lock.retake(progress) {
            progress(&format!("{e}: giving the devices back all the same"));
        }
    }
    let cleanup_failures = session.cleanup(progress);
    drop(signals);
    Ok(RunOutcome {
        exit,
        pid,
        stopped_by,
        cleanup_failures,
    })
}

/// Waits for QEMU; on a stop signal, presses the power button, then quits QEMU after
/// `shutdown_timeout` (at once on a second signal), then kills it 10 s later.
fn wait(
    child: &mut Child,
    mut qmp: Option<&mut Qmp>,
    shutdown_timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> std::io::Result<std::process::ExitStatus> {
    #[derive(PartialEq)]
    enum Stage {
        Running,
        PoweringDown(Instant, usize),
        Quitting(Instant),
        Killed,
    }
    let mut stage = Stage::Running;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let (sig, count) = SignalGuard::received();
        let now = Instant::now();
        stage = match stage {
            Stage::Running if count > 0 => {
                let asked = qmp.as_mut().map(|q| q.system_powerdown());
                match asked {
                    Some(Ok(())) => {
                        progress(&format!(
                            "{}: asking the guest to power down (QEMU quits in {} s; Ctrl-C again to quit now)",
                            signal_name(sig),
                            shutdown_timeout.as_secs()
                        ));
                        Stage::PoweringDown(now + shutdown_timeout, count)
                    }
                    _ => {
                        progress(&format!("{}: stopping QEMU (SIGTERM)", signal_name(sig)));
                        // Our child's pid; the stage below waits for it to go.
                        let _ = sys::send_signal(pid, libc::SIGTERM);
                        Stage::Quitting(now + Duration::from_secs(10))
                    }
                }
            }
            Stage::PoweringDown(deadline, seen) if now >= deadline || count > seen => {
                progress("the guest did not power down: telling QEMU to quit");
                let quit = qmp.as_mut().map(|q| q.quit());
                if !matches!(quit, Some(Ok(()))) {
                    let _ = sys::send_signal(pid, libc::SIGTERM);
                }
                Stage::Quitting(now + Duration::from_secs(10))
            }
            Stage::Quitting(deadline) if now >= deadline => {
                progress("QEMU did not quit: killing it");
                let _ = child.kill();
                Stage::Killed
            }
            other => other,
        };
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_qemu_and_the_shell() {
        assert_eq!(QemuExit::Code(0).code(), 0);
        assert_eq!(QemuExit::Code(1).code(), 1);
        assert_eq!(QemuExit::Signal(9).code(), 137);
        assert_eq!(
            QemuExit::Signal(9).to_string(),
            "QEMU was killed by signal 9 (SIGKILL)"
        );
    }

    fn options() -> RunOptions<'static> {
        RunOptions {
            host_lock: None,
            overrides: Overrides::default(),
            sysfs_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(1),
            exe: PathBuf::from("/nonexistent"),
        }
    }

    /// Runs `spec` with its state directory at `state` (under a fresh root): the run
    /// must be blocked, and nothing created. Returns the blockers.
    fn blocked_run(spec: &str, state: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::vm::spec::VmSpec::parse(spec).unwrap();
        let state = dir.path().join(state);
        let resolution = Resolution {
            plan: crate::vm::run::test_plan(spec, &state),
            hugepages: None,
            notes: Vec::new(),
            qemu_blockers: Vec::new(),
            host_blockers: Vec::new(),
        };
        let err = run(
            &HostRoot::new(dir.path()),
            &resolution,
            &options(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(!state.exists(), "nothing was created");
        match err {
            RunError::Blocked(b) => b,
            other => panic!("not blocked: {other}"),
        }
    }

    #[test]
    fn swtpm_is_never_given_a_comma() {
        let b = blocked_run(
            "name = \"u\"\nmemory = \"1G\"\ncpus = 1\n[firmware]\nuefi = false\ntpm = true\n",
            "a,b",
        );
        assert!(b[0].contains("which swtpm cannot take"), "{b:?}");
    }

    #[test]
    fn a_blocked_plan_changes_nothing() {
        // UEFI asked for, no OVMF found on the host.
        let b = blocked_run("name = \"u\"\nmemory = \"1G\"\ncpus = 1\n", "u");
        assert!(b[0].contains("no UEFI firmware"), "{b:?}");
    }

    /// QEMU's edu device (1234:11e8, class 00ff00) on a host whose IOMMU is off: no
    /// `iommu_group` link, so `bind` refuses it, and so does `vm run`, before any change.
    #[test]
    fn bind_refusals_stop_the_run_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let real = r.join("sys/devices/pci0000:00/0000:00:05.0");
        crate::testing::mkdir(&real);
        for (f, v) in [
            ("vendor", "0x1234\n"),
            ("device", "0x11e8\n"),
            ("class", "0x00ff00\n"),
            ("revision", "0x10\n"),
        ] {
            crate::testing::write(real.join(f), v);
        }
        crate::testing::mkdir(r.join("sys/bus/pci/devices"));
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:05.0",
            r.join("sys/bus/pci/devices/0000:00:05.0"),
        )
        .unwrap();
        let spec = crate::vm::spec::VmSpec::parse(
            "name = \"e\"\nmemory = \"1G\"\ncpus = 1\ndevices = [\"00:05.0\"]\n[firmware]\nuefi = false\n",
        )
        .unwrap();
        let state = r.join("state/e");
        let mut plan = crate::vm::run::test_plan(spec, &state);
        plan.devices = vec!["0000:00:05.0".parse().unwrap()];
        let resolution = Resolution {
            plan,
            hugepages: None,
            notes: Vec::new(),
            qemu_blockers: Vec::new(),
            host_blockers: Vec::new(),
        };
        let err = run(&HostRoot::new(r), &resolution, &options(), &mut |_| {}).unwrap_err();
        let RunError::Refused(refusals) = err else {
            panic!("not refused: {err}")
        };
        assert!(
            refusals[0].reason.contains("has no IOMMU group"),
            "{refusals:?}"
        );
        assert!(!state.exists(), "nothing was created");
        assert!(!r.join("run/passthru").exists(), "no bind record");
    }

    /// Growing a hugepage pool gets what the kernel finds contiguous, often less than
    /// asked ("due to fragmentation, it normally allocates much less memory", as the
    /// kernel's vm-scalability `case-hugetlb` notes). Simulated here by a stand-in for
    /// the `__sysfs-write` child that caps the pool at 100 pages: vm run refuses with
    /// the boot-time remedy and gives the pages back.
    #[test]
    fn a_short_hugepage_reservation_is_refused_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join(pool_dir(2048));
        crate::testing::mkdir(&pool);
        crate::testing::write(pool.join("nr_hugepages"), "0\n");
        crate::testing::write(pool.join("free_hugepages"), "0\n");
        let writer = dir.path().join("sysfs-write");
        crate::testing::write(
            &writer,
            "#!/bin/sh\n# __sysfs-write FILE VALUE, as a kernel that finds only 100 pages\n\
             v=$3; [ \"$v\" -gt 100 ] && v=100\n\
             echo $v > \"$2\"; echo $v > \"$(dirname \"$2\")/free_hugepages\"\n",
        );
        crate::testing::chmod(&writer, 0o755);
        let root = HostRoot::new(dir.path());
        let mut session = Session {
            root: &root,
            applier: Applier::new(root.clone(), Duration::from_secs(5), writer),
            bound: Vec::new(),
            hugepages: None,
            swtpm: None,
            done: false,
        };
        let plan = HugepagePlan {
            size_kib: 2048,
            pages: 128,
            to_reserve: 128,
            reason: String::new(),
        };
        let mut lines = Vec::new();
        let err = session
            .reserve_hugepages(&plan, &mut |l: &str| lines.push(l.to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reserved only 100 of the 128 hugepages of 2048 KiB")
                && err.contains("hugepagesz=2M hugepages=128"),
            "{err}"
        );
        assert_eq!(
            lines,
            ["reserving 128 more hugepages of 2048 KiB (nr_hugepages 0 → 128)"]
        );
        assert!(session.cleanup(&mut |_| {}).is_empty());
        let left = std::fs::read_to_string(pool.join("nr_hugepages")).unwrap();
        assert_eq!(left.trim(), "0", "the pages reserved are given back");
    }

    /// The real QEMU (when installed) run by [`run`] without devices, as any user: it
    /// starts, is found on QMP, a stop request presses the power button, the firmware
    /// ignores it, and QEMU is told to quit after the timeout. Where OVMF and swtpm are
    /// installed, the VM boots UEFI (its NVRAM copied from the template) with a TPM.
    #[test]
    fn runs_the_real_qemu_and_stops_it_on_request() {
        if Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED runs_the_real_qemu_and_stops_it_on_request: no qemu-system-x86_64");
            return;
        }
        let ovmf = crate::vm::resolve::find_ovmf(&HostRoot::system(), false);
        let tpm = Command::new("swtpm").arg("--version").output().is_ok();
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::vm::spec::VmSpec::parse(&format!(
            "name = \"t\"\nmemory = \"256M\"\ncpus = 1\nnetwork = \"none\"\n\
             [firmware]\nuefi = {}\ntpm = {tpm}\n",
            ovmf.is_some()
        ))
        .unwrap();
        let mut plan = crate::vm::run::test_plan(spec, &dir.path().join("t"));
        plan.ovmf = ovmf.clone();
        let resolution = Resolution {
            plan,
            hugepages: None,
            notes: Vec::new(),
            qemu_blockers: Vec::new(),
            host_blockers: Vec::new(),
        };
        let options = options();
        let stopper = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            request_stop();
        });
        let mut lines = Vec::new();
        let out = run(
            &HostRoot::system(),
            &resolution,
            &options,
            &mut |l: &str| lines.push(l.to_string()),
        )
        .unwrap();
        stopper.join().unwrap();
        let text = lines.join("\n");
        assert_eq!(out.exit, QemuExit::Code(0), "{text}");
        assert_eq!(out.stopped_by, Some(libc::SIGTERM));
        assert!(out.cleanup_failures.is_empty(), "{text}");
        assert!(
            text.contains(&format!("QEMU started (pid {})", out.pid)),
            "{text}"
        );
        assert!(text.contains("asking the guest to power down"), "{text}");
        assert!(text.contains("telling QEMU to quit"), "{text}");
        assert!(
            text.contains("pinned vCPU 0") || text.contains("not pinning"),
            "{text}"
        );
        assert!(dir.path().join("t/console.log").exists(), "{text}");
        if let Some(o) = &ovmf {
            let nvram = resolution.plan.nvram_path();
            assert_eq!(
                std::fs::metadata(&nvram).unwrap().len(),
                std::fs::metadata(&o.vars_template).unwrap().len(),
                "{text}"
            );
            assert!(text.contains("creating the UEFI variable store"), "{text}");
        } else {
            eprintln!(
                "no OVMF: the UEFI part of runs_the_real_qemu_and_stops_it_on_request was skipped"
            );
        }
        if tpm {
            assert!(
                text.contains("starting swtpm") && text.contains("stopping swtpm"),
                "{text}"
            );
            // QEMU talked to the TPM: swtpm keeps its state in the VM's directory.
            let state = std::fs::read_dir(resolution.plan.tpm_state_dir())
                .unwrap()
                .count();
            assert!(state > 0, "{text}");
        } else {
            eprintln!(
                "no swtpm: the TPM part of runs_the_real_qemu_and_stops_it_on_request was skipped"
            );
        }
    }
}
