//! The fixture of the real testbed: QEMU guests with a real Debian kernel, a real
//! emulated IOMMU and real PCI devices, running this crate's freshly built `passthru`.
//!
//! - [`kernel`]: fetches and caches the kernel, builds the initramfs.
//! - [`vm`]: [`vm::TestVm`] and its builder: boot, run commands, console log, kill on drop.
//! - [`layouts`]: the machine layouts and the addresses of their devices.
//! - [`debian`]: a real Debian root that boots from its own disk, with its own
//!   initramfs and GRUB configuration, for the tests of persistent setup.
//! - [`package`]: the Debian package of the binary under test, built by
//!   `packaging/build-deb`, for the test that installs and removes it in that root.
//!
//! Tests take a shared VM per layout through [`with_vm`]: the first test of a layout
//! boots it, the others reuse it, and the last one to finish drops (kills) it. A test
//! that fails prints the VM's console log.
//!
//! Prerequisites (QEMU, busybox-static, cpio, kmod, and the kernel package through apt)
//! missing: the tests print `SKIPPED` with the reason and pass — unless `CI=true`, where
//! a missing prerequisite fails them.

pub mod chroot;
pub mod debian;
pub mod kernel;
pub mod layouts;
pub mod package;
pub mod vm;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

pub use kernel::{GuestKernel, Kernel, PrepareError};
pub use layouts::Layout;
pub use vm::{Output, TestVm};

/// The `passthru` binary under test: the one cargo just built, or
/// `$PASSTHRU_TESTBED_BIN` (e.g. a release build). It lives on the host's `/`, which the
/// guest sees at the same path.
pub fn passthru_bin() -> String {
    std::env::var("PASSTHRU_TESTBED_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_passthru").to_owned())
}

/// Whether we run in CI, where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The prepared kernel of `line`, once per process (and once across processes, by a
/// lock file).
pub fn kernel(line: GuestKernel) -> Result<&'static Kernel, &'static PrepareError> {
    static KERNELS: [OnceLock<Result<Kernel, PrepareError>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let index = GuestKernel::ALL
        .iter()
        .position(|k| *k == line)
        .expect("every kernel is in ALL");
    KERNELS[index]
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let kernel = kernel::prepare(line);
            if let Ok(k) = &kernel {
                eprintln!(
                    "testbed: kernel {} ready in {:.1?} ({})",
                    k.release,
                    started.elapsed(),
                    k.initramfs.display()
                );
            }
            kernel
        })
        .as_ref()
}

/// The kernel of `line`, or `None` after printing `SKIPPED` when a prerequisite is
/// missing outside CI. Panics in CI, and on any other preparation failure.
pub fn kernel_or_skip(line: GuestKernel, test: &str) -> Option<&'static Kernel> {
    match kernel(line) {
        Ok(kernel) => Some(kernel),
        Err(PrepareError::Missing(why)) if !in_ci() => {
            // Straight to the process's stderr: the test harness captures `eprintln!`
            // and shows it only for failing tests, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
        Err(PrepareError::Missing(why)) => {
            panic!("testbed prerequisite missing (CI=true makes this a failure): {why}")
        }
        Err(PrepareError::Failed(why)) => panic!("testbed preparation failed: {why}"),
    }
}

#[derive(Debug, Default)]
struct Slot {
    vm: Option<Arc<TestVm>>,
    boot_error: Option<String>,
    finished: usize,
}

/// One shared VM: a layout booted with one of the kernels.
type SlotKey = (Layout, GuestKernel);

fn slot(key: SlotKey) -> Arc<Mutex<Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<SlotKey, Arc<Mutex<Slot>>>>> = OnceLock::new();
    let slots = SLOTS.get_or_init(Mutex::default);
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(slots.entry(key).or_default())
}

/// Ends a test's use of a shared VM: prints the logs if the test is failing, counts
/// the test as finished, and drops the VM after the layout's last test.
struct Lease {
    key: SlotKey,
    uses: usize,
    test: String,
    vm: Option<Arc<TestVm>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(vm) = &self.vm {
                vm.print_logs(&format!("test {} failed", self.test));
            }
        }
        let slot = slot(self.key);
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.finished += 1;
        if slot.finished >= self.uses {
            // The last Arc goes with this lease: TestVm::drop kills QEMU.
            slot.vm = None;
        }
    }
}

/// Runs `body` against the shared VM of `layout` booted with the kernel `line`,
/// booting it if needed. `uses` is the number of tests of that pair (counted by
/// [`testbed_tests!`]), so the VM is killed after the last one; if a filter runs fewer,
/// the VM dies with the test process. The VM knows its kernel ([`TestVm::kernel`]).
pub fn with_vm(
    layout: Layout,
    line: GuestKernel,
    uses: usize,
    test: &str,
    body: impl FnOnce(&TestVm, Layout),
) {
    let Some(kernel) = kernel_or_skip(line, test) else {
        return;
    };
    let slot = slot((layout, line));
    let vm = {
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(err) = &guard.boot_error {
            panic!(
                "VM {} ({} kernel) failed to boot earlier: {err}",
                layout.name(),
                line.name()
            );
        }
        match &guard.vm {
            Some(vm) => Arc::clone(vm),
            None => {
                let builder = layout.builder(line);
                let builder_name = builder.name().to_owned();
                let console = kernel::testbed_dir()
                    .join("logs")
                    .join(format!("{builder_name}.console.log"));
                match builder.boot(kernel) {
                    Ok(vm) => {
                        eprintln!("testbed: VM {} booted in {:.1?}", vm.name(), vm.boot_time());
                        let vm = Arc::new(vm);
                        guard.vm = Some(Arc::clone(&vm));
                        vm
                    }
                    Err(err) => {
                        let log = std::fs::read_to_string(&console).unwrap_or_default();
                        guard.boot_error = Some(err.to_string());
                        guard.finished += 1;
                        drop(guard);
                        panic!(
                            "VM {} failed to boot: {err}\n===== console log ({}) =====\n{log}",
                            builder_name,
                            console.display()
                        );
                    }
                }
            }
        }
    };
    let lease = Lease {
        key: (layout, line),
        uses,
        test: test.to_owned(),
        vm: Some(vm),
    };
    if let Some(vm) = &lease.vm {
        body(vm, layout);
    }
}

/// Declares the testbed's tests: each `check: [layouts…] on [kernels…]` line makes a
/// module `check` with a module per kernel and in it one `#[test]` per layout
/// (`check::backports::intel`, `check::stable::amd`, …) that runs the function
/// `check(&TestVm, Layout)` against the shared VM of that layout and kernel.
///
/// Tests are named check-first so that the harness, which runs them in name order on
/// as many threads as there are cores, works on several layouts at once: their VMs
/// boot in parallel instead of one layout's tests queueing behind one VM.
///
/// ```ignore
/// testbed_tests! {
///     fixture_boots: [intel, amd, iommu_off, no_iommu] on [stable, backports],
///     fixture_commands: [intel] on [backports],
/// }
/// ```
#[macro_export]
macro_rules! testbed_tests {
    ($($check:ident: [$($layout:ident),+ $(,)?] on [$($kernel:ident),+ $(,)?]),+ $(,)?) => {
        /// How many tests use the VM of each layout and kernel, so the last one can
        /// stop it.
        fn testbed_uses(layout: &str, kernel: &str) -> usize {
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            $(
                for kernel in [$(stringify!($kernel)),+] {
                    for layout in [$(stringify!($layout)),+] {
                        pairs.push((layout, kernel));
                    }
                }
            )+
            pairs.iter().filter(|p| **p == (layout, kernel)).count()
        }
        $(
            mod $check {
                $crate::testbed_tests!(@kernels $check [$($kernel),+] [$($layout),+]);
            }
        )+
    };
    (@kernels $check:ident [$($kernel:ident),+] $layouts:tt) => {
        $(
            mod $kernel {
                $crate::testbed_tests!(@layouts $check $kernel $layouts);
            }
        )+
    };
    (@layouts $check:ident $kernel:ident [$($layout:ident),+]) => {
        $(
            #[test]
            fn $layout() {
                let layout = $crate::testbed::Layout::by_name(stringify!($layout));
                let kernel = $crate::testbed::GuestKernel::by_name(stringify!($kernel));
                $crate::testbed::with_vm(
                    layout,
                    kernel,
                    super::super::testbed_uses(stringify!($layout), stringify!($kernel)),
                    concat!(
                        stringify!($check), "::", stringify!($kernel), "::", stringify!($layout)
                    ),
                    super::super::$check,
                );
            }
        )+
    };
}

/// Prints a VM's logs when the test holding it fails: `let _logs = LogsOnFailure(&vm);`
/// right after booting a VM of the test's own (shared VMs get this from [`with_vm`]).
pub struct LogsOnFailure<'a>(pub &'a TestVm);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_logs("the test failed");
        }
    }
}
