//! The real testbed: `passthru` inside QEMU guests with Debian's kernel, an emulated
//! IOMMU (Intel, AMD, off, none) and desktop-like PCI devices (see
//! `tests/testbed/layouts.rs` for the exact machines).
//!
//! Every layout boots with each of the testbed's two kernels (Debian 12's 6.1 and
//! bookworm-backports' 6.12, see `tests/testbed/kernel.rs`). Run it alone with `cargo
//! test --test testbed` (one kernel: `… -- backports::`, one layout: `… -- ::intel`, one
//! check: `… -- passthru_list`); plain `cargo test` runs it too. One VM boots per layout
//! and kernel (under TCG, ~10 s) and serves all of that pair's tests; tests are named
//! `check::kernel::layout`. `fixture_*` checks look at the machine and the fixture with
//! plain shell commands in the guest; `passthru_*` checks judge `passthru`'s verdicts
//! against what the kernel itself shows. A failing test prints the guest's console log;
//! the logs stay in `target/testbed/logs/`.
//!
//! Needs `qemu-system-x86`, `busybox-static`, `cpio`, `kmod` and, the first time, apt
//! access for `linux-image-amd64` of bookworm and of bookworm-backports (cached in
//! `target/testbed/kernel/`). Without them the tests print SKIPPED and pass — unless
//! `CI=true`, where that is a failure. The `debian_*` tests boot a real Debian bookworm
//! root from its own disk, with its own initramfs and GRUB configuration
//! (`tests/testbed/debian.rs`): they need `debootstrap`, `e2fsprogs`, root, and the
//! first time a Debian mirror (`PASSTHRU_TESTBED_MIRROR`, default
//! `http://deb.debian.org/debian`); the image is cached in
//! `target/testbed/debian/<hash>/root.ext4`. `debian_deb_installs_and_removes` also
//! builds the Debian package with `packaging/build-deb`, which needs `dpkg-dev` and
//! `binutils` (`tests/testbed/package.rs`). Environment: `PASSTHRU_TESTBED_KERNEL_DEB`
//! and `PASSTHRU_TESTBED_KERNEL_DEB_BACKPORTS` (a `linux-image-*.deb` to use instead of
//! apt for either kernel), `PASSTHRU_TESTBED_BUSYBOX` (a static busybox),
//! `PASSTHRU_TESTBED_BIN` (the binary to test instead of the fresh debug build, e.g. a
//! release build).

#![allow(unsafe_code)] // this test calls libc itself (geteuid, …), outside the crate
#![allow(clippy::unwrap_used)]

mod support;

// The fixture is an API for tests to come (builder options, paths) beyond what these use.
#[allow(dead_code)]
#[path = "testbed/mod.rs"]
mod testbed;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use testbed::layouts::{self, Layout};
use testbed::{passthru_bin, Output, TestVm};

// Every layout boots with both kernels. What does not depend on the kernel (the
// fixture's own command channel, the TCG CPU) and the longest check (a nested guest
// under TCG inside TCG, about 4 minutes) run on the newer kernel only, to keep the
// suite's time well under CI's limit on 2 cores.
testbed_tests! {
    fixture_boots: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    fixture_devices: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    fixture_firmware_and_kernel_log: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    fixture_iommu_groups: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    fixture_reset_methods: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    fixture_cpu_under_tcg: [intel, amd, iommu_off, no_iommu] on [backports],
    fixture_commands: [intel] on [backports],
    passthru_check: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    passthru_list: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    passthru_report_roundtrip: [intel, amd, iommu_off, no_iommu] on [stable, backports],
    passthru_bind_unbind: [intel_bind] on [stable, backports],
    passthru_vm_run: [intel_run] on [backports],
    passthru_disk_in_use: [intel_disk] on [backports],
}

// ---------------------------------------------------------------------------------------
// What the kernel shows, read with plain shell commands in the guest (never passthru).

/// One PCI device as sysfs shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SysDevice {
    vendor: String,
    device: String,
    class: String,
    driver: Option<String>,
    group: Option<u32>,
    /// `reset_method`'s words; empty when the file is absent or empty.
    reset_methods: Vec<String>,
    boot_vga: Option<String>,
}

/// The kernel's PCI devices and IOMMU groups.
#[derive(Debug, Default)]
struct KernelView {
    devices: BTreeMap<String, SysDevice>,
    /// Group number → member addresses, from `/sys/kernel/iommu_groups/*/devices/*`.
    groups: BTreeMap<u32, BTreeSet<String>>,
}

impl KernelView {
    fn group_of(&self, address: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(_, members)| members.contains(address))
            .map(|(n, _)| *n)
    }

    fn members_of_group_of(&self, address: &str) -> BTreeSet<String> {
        self.group_of(address)
            .and_then(|n| self.groups.get(&n).cloned())
            .unwrap_or_default()
    }
}

fn last_component(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// Reads devices and groups in three commands (forks are slow under TCG).
fn kernel_view(vm: &TestVm) -> KernelView {
    let mut view = KernelView::default();
    let attrs = vm.sh("cd /sys/bus/pci/devices && \
         grep -H . */vendor */device */class */reset_method */boot_vga 2>/dev/null; true");
    for line in attrs.lines() {
        // "0000:00:05.0/vendor:0x1234", "0000:03:00.0/reset_method:flr bus"
        let Some((address, rest)) = line.split_once('/') else {
            continue;
        };
        let Some((attr, value)) = rest.split_once(':') else {
            continue;
        };
        let dev = view.devices.entry(address.to_owned()).or_default();
        let hex = value.trim().trim_start_matches("0x").to_owned();
        match attr {
            "vendor" => dev.vendor = hex,
            "device" => dev.device = hex,
            "class" => dev.class = hex,
            "reset_method" => {
                dev.reset_methods = value.split_whitespace().map(str::to_owned).collect();
            }
            "boot_vga" => dev.boot_vga = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let links = vm
        .sh("cd /sys/bus/pci/devices && stat -c '%n|%N' */driver */iommu_group 2>/dev/null; true");
    for line in links.lines() {
        // "0000:00:05.0/iommu_group|'0000:00:05.0/iommu_group' -> '../../../kernel/iommu_groups/3'"
        let Some((name, pretty)) = line.split_once('|') else {
            continue;
        };
        let Some((address, attr)) = name.split_once('/') else {
            continue;
        };
        let target = pretty
            .rsplit_once(" -> ")
            .map(|(_, t)| t.trim_matches(|c| c == '\'' || c == '"'))
            .unwrap_or("");
        let dev = view.devices.entry(address.to_owned()).or_default();
        match attr {
            "driver" => dev.driver = Some(last_component(target).to_owned()),
            "iommu_group" => dev.group = last_component(target).parse().ok(),
            _ => {}
        }
    }
    let groups = vm.sh("find /sys/kernel/iommu_groups -mindepth 3 -maxdepth 3 -path '*/devices/*'");
    for line in groups.lines() {
        // "/sys/kernel/iommu_groups/12/devices/0000:01:00.0"
        let parts: Vec<&str> = line.split('/').collect();
        if let [.., "iommu_groups", n, "devices", address] = parts.as_slice() {
            if let Ok(n) = n.parse() {
                view.groups
                    .entry(n)
                    .or_default()
                    .insert((*address).to_owned());
            }
        }
    }
    view
}

/// The kernel's log, through `dmesg` in the guest.
fn dmesg(vm: &TestVm) -> String {
    vm.sh("dmesg")
}

/// Whether the kernel's log says interrupt remapping was enabled (VT-d's
/// "DMAR-IR: Enabled IRQ remapping in x2apic mode", AMD-Vi's "AMD-Vi: Interrupt
/// remapping enabled").
fn kernel_says_interrupt_remapping(log: &str) -> bool {
    log.lines().any(|l| {
        l.contains("DMAR-IR: Enabled IRQ remapping")
            || l.contains("AMD-Vi: Interrupt remapping enabled")
    })
}

// ---------------------------------------------------------------------------------------
// Fixture tests: the machine is what the layout says, the fixture works.

fn fixture_boots(vm: &TestVm, _layout: Layout) {
    let cmdline = vm.sh("cat /proc/cmdline");
    assert_eq!(cmdline.trim(), vm.kernel_cmdline());
    let kernel = vm.kernel();
    assert_eq!(vm.sh("uname -r").trim(), kernel.release);
    // The kernel layer lies over the host's /: its modules and config are where a
    // distribution puts them.
    vm.sh("test -s /lib/modules/$(uname -r)/modules.dep && test -s /boot/config-$(uname -r)");
    // The guest's root is writable (a tmpfs over the read-only host /), and the host
    // never sees the writes.
    let probe = format!("/etc/passthru-testbed-probe-{}", std::process::id());
    vm.sh(&format!("echo guest > {probe} && test -s {probe}"));
    assert!(
        !std::path::Path::new(&probe).exists(),
        "a write in the guest reached the host's {probe}"
    );
    // The fresh passthru binary is there.
    vm.sh(&format!("test -x {}", passthru_bin()));
}

fn fixture_devices(vm: &TestVm, layout: Layout) {
    let view = kernel_view(vm);
    let mut problems = Vec::new();
    for want in layouts::DEVICES {
        let Some(dev) = view.devices.get(want.address) else {
            problems.push(format!("{} missing", want.address));
            continue;
        };
        let id = format!("{}:{}", dev.vendor, dev.device);
        if id != want.id {
            problems.push(format!("{}: id {id}, want {}", want.address, want.id));
        }
        if dev.driver.as_deref() != want.driver {
            problems.push(format!(
                "{}: driver {:?}, want {:?}",
                want.address, dev.driver, want.driver
            ));
        }
    }
    let vga = view
        .devices
        .get(layouts::BOOT_VGA)
        .and_then(|d| d.boot_vga.clone());
    if vga.as_deref() != Some("1") {
        problems.push(format!("{}: boot_vga {vga:?}, want 1", layouts::BOOT_VGA));
    }
    let gpu_vga = view
        .devices
        .get(layouts::GPU)
        .and_then(|d| d.boot_vga.clone());
    if gpu_vga.as_deref() == Some("1") {
        problems.push(format!(
            "{}: is boot_vga, want the std VGA to be",
            layouts::GPU
        ));
    }
    // The AMD IOMMU is itself a PCI function (1022:0020 in QEMU) at 00:02.0.
    let slot2 = view.devices.get(layouts::AMD_IOMMU_SLOT);
    match (layout, slot2) {
        (Layout::AmdDesktop, Some(dev))
            if dev.vendor == "1022" && dev.class.starts_with("0806") => {}
        (Layout::AmdDesktop, other) => {
            problems.push(format!("00:02.0 should be the AMD IOMMU, found {other:?}"));
        }
        (_, Some(dev)) => problems.push(format!("00:02.0 should be empty, found {dev:?}")),
        (_, None) => {}
    }
    assert!(
        problems.is_empty(),
        "layout differs:\n{}\nkernel view: {view:#?}",
        problems.join("\n")
    );
}

fn fixture_firmware_and_kernel_log(vm: &TestVm, layout: Layout) {
    let tables = vm.sh("ls /sys/firmware/acpi/tables");
    let tables: BTreeSet<&str> = tables.split_whitespace().collect();
    let (dmar, ivrs) = match layout {
        Layout::IntelDesktop
        | Layout::IntelBind
        | Layout::IntelRun
        | Layout::IntelDisk
        | Layout::IommuOff => (true, false),
        Layout::AmdDesktop => (false, true),
        Layout::NoIommu => (false, false),
    };
    assert_eq!(
        tables.contains("DMAR"),
        dmar,
        "DMAR table; tables: {tables:?}"
    );
    assert_eq!(
        tables.contains("IVRS"),
        ivrs,
        "IVRS table; tables: {tables:?}"
    );

    let log = dmesg(vm);
    let has = |needle: &str| log.contains(needle);
    match layout {
        Layout::IntelDesktop | Layout::IntelBind | Layout::IntelRun | Layout::IntelDisk => {
            assert!(has("DMAR: IOMMU enabled"), "VT-d not enabled");
            // With `eim=on` the remapping covers x2APIC and the kernel keeps that mode.
            assert!(
                has("DMAR-IR: Enabled IRQ remapping in x2apic mode"),
                "interrupt remapping not in x2apic mode"
            );
            assert!(
                has("DMAR-IR: Enabled IRQ remapping"),
                "no interrupt remapping"
            );
            assert!(has("Adding to iommu group"), "no IOMMU groups");
        }
        Layout::AmdDesktop => {
            assert!(has("AMD-Vi: "), "no AMD-Vi lines");
            assert!(has("Adding to iommu group"), "no IOMMU groups");
            assert!(!has("DMAR: IOMMU enabled"));
        }
        Layout::IommuOff => {
            assert!(has("DMAR: IOMMU disabled"), "intel_iommu=off not honoured");
            assert!(
                !has("Adding to iommu group"),
                "groups despite intel_iommu=off"
            );
        }
        Layout::NoIommu => {
            assert!(!has("DMAR:"), "DMAR lines without an IOMMU");
            // The one AMD-Vi line a kernel prints on an AMD CPU without any IOMMU
            // (also with intel_iommu=off on Intel's DMAR): not a sign of AMD-Vi.
            let amd_vi: Vec<&str> = log.lines().filter(|l| l.contains("AMD-Vi:")).collect();
            assert!(
                amd_vi
                    .iter()
                    .all(|l| l.contains("AMD IOMMUv2 functionality not available")),
                "AMD-Vi lines without an IOMMU: {amd_vi:?}"
            );
            assert!(!has("Adding to iommu group"));
        }
    }
}

fn fixture_iommu_groups(vm: &TestVm, layout: Layout) {
    let view = kernel_view(vm);
    if !layout.iommu_on() {
        assert!(
            view.groups.is_empty(),
            "groups without an IOMMU: {:?}",
            view.groups
        );
        let grouped: Vec<_> = view
            .devices
            .iter()
            .filter(|(_, d)| d.group.is_some())
            .collect();
        assert!(
            grouped.is_empty(),
            "iommu_group links without an IOMMU: {grouped:?}"
        );
        return;
    }
    assert!(!view.groups.is_empty());
    // Both views of the kernel agree: the group directories and the devices' links.
    for (address, dev) in &view.devices {
        assert_eq!(
            dev.group,
            view.group_of(address),
            "{address}: link vs group directory"
        );
        // Every function has a group — except the AMD IOMMU's own function.
        if address != layouts::AMD_IOMMU_SLOT {
            assert!(dev.group.is_some(), "{address} has no group");
        }
    }
    let set = |addrs: &[&str]| {
        addrs
            .iter()
            .map(|a| (*a).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        view.members_of_group_of(layouts::GPU),
        set(&[layouts::GPU, layouts::GPU_AUDIO]),
        "the GPU and its audio form one group by themselves"
    );
    assert_eq!(
        view.members_of_group_of(layouts::PCI_BRIDGE),
        set(&[
            layouts::PCI_BRIDGE,
            layouts::BEHIND_BRIDGE[0],
            layouts::BEHIND_BRIDGE[1]
        ]),
        "the conventional PCI bridge shares one group with the two devices behind it"
    );
    for alone in [layouts::EDU, layouts::XHCI, layouts::NVME, layouts::NIC] {
        assert_eq!(
            view.members_of_group_of(alone),
            set(&[alone]),
            "{alone} alone in its group"
        );
    }
}

fn fixture_reset_methods(vm: &TestVm, _layout: Layout) {
    let view = kernel_view(vm);
    let resets = |a: &str| {
        view.devices
            .get(a)
            .map(|d| d.reset_methods.clone())
            .unwrap_or_default()
    };
    // edu sits on the root bus: no FLR, no PM reset, and no parent bridge to reset.
    assert_eq!(
        resets(layouts::EDU),
        Vec::<String>::new(),
        "edu must have no reset method"
    );
    // The others behind root ports can be reset (and the read works at all).
    assert_eq!(resets(layouts::NVME), ["flr", "bus"]);
    assert_eq!(resets(layouts::NIC), ["pm", "bus"]);
    assert_eq!(resets(layouts::XHCI), ["bus"]);
}

fn fixture_cpu_under_tcg(vm: &TestVm, _layout: Layout) {
    let cpuinfo = vm.sh("cat /proc/cpuinfo");
    assert!(
        cpuinfo.contains("vendor_id\t: AuthenticAMD"),
        "TCG's -cpu max is AMD-flavoured"
    );
    let flags: BTreeSet<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert!(
        flags.contains("svm") && flags.contains("hypervisor"),
        "flags: {flags:?}"
    );
    assert!(!flags.contains("vmx"));
    // KVM is a module that nothing loaded, so there is no /dev/kvm.
    vm.sh("test ! -e /dev/kvm && ! grep -q '^kvm' /proc/modules && modinfo -n kvm_amd");
}

fn fixture_commands(vm: &TestVm, _layout: Layout) {
    let out = vm.run("echo out; echo err >&2; exit 7").expect("run");
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    assert!(!out.timed_out && !out.success());

    // Multi-line scripts with quotes, stdin at end-of-file, the working directory.
    let out = vm.sh("x='a \"b\" c'\nprintf '%s|' \"$x\"\ncat\npwd");
    assert_eq!(out, "a \"b\" c|/\n");

    // The shared directory carries files both ways.
    std::fs::write(vm.shared_dir().join("from-host"), "hello\n").expect("write");
    let out = vm.sh("cat /tmp/testbed/from-host; echo back > /tmp/testbed/from-guest");
    assert_eq!(out, "hello\n");
    let back = std::fs::read_to_string(vm.shared_dir().join("from-guest")).expect("read");
    assert_eq!(back, "back\n");

    // A command that outlives its timeout is killed with its children, and the VM
    // goes on serving.
    let out = vm
        .run_with_timeout(
            "echo before; sleep 600 & sleep 600; echo after",
            Duration::from_secs(2),
        )
        .expect("run");
    assert!(out.timed_out, "{out}");
    assert_eq!(out.stdout, "before\n");
    assert!(out.elapsed < Duration::from_secs(30), "{out}");
    assert_eq!(
        vm.sh("pgrep -c -x -f 'sleep 600' || true").trim(),
        "0",
        "children survived the timeout"
    );
    assert_eq!(vm.sh("echo alive"), "alive\n");
}

// ---------------------------------------------------------------------------------------
// passthru in the guest, judged against the kernel's own view.

fn passthru(vm: &TestVm, args: &str) -> (Output, Value) {
    let out = vm
        .run(&format!("{} {args}", passthru_bin()))
        .expect("run passthru");
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("`passthru {args}` did not print JSON ({err}):\n{out}"));
    (out, json)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn finding<'a>(check: &'a Value, id: &str) -> &'a Value {
    check["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no finding {id} in {check:#}"))
}

fn passthru_check(vm: &TestVm, layout: Layout) {
    let (out, check) = passthru(vm, "check --json");
    let ctx = format!("{out}");
    let host = &check["host"];
    assert_eq!(check["schema_version"], 1, "{ctx}");

    // Exit code and status agree with the findings.
    let statuses: Vec<&str> = check["findings"]
        .as_array()
        .map(|f| f.iter().map(|f| s(&f["status"])).collect())
        .unwrap_or_default();
    for id in [
        "cpu.virtualization",
        "kvm",
        "iommu.firmware",
        "iommu.kernel",
        "iommu.cmdline",
        "iommu.interrupt_remapping",
        "iommu.acs_override",
        "kernel.vfio",
        "vfio.modules",
    ] {
        finding(&check, id);
    }
    let fails = statuses.iter().filter(|s| **s == "fail").count();
    assert_eq!(check["counts"]["fail"], fails, "{ctx}");
    let expect_code = if fails > 0 { 1 } else { 0 };
    assert_eq!(out.code, expect_code, "exit code vs findings: {ctx}");
    assert_eq!(s(&check["status"]) == "fail", fails > 0, "{ctx}");

    // The CPU under TCG is AMD-flavoured with svm, whatever the IOMMU.
    assert_eq!(host["cpu_vendor"], "amd", "{ctx}");
    assert_eq!(
        finding(&check, "cpu.virtualization")["status"],
        "ok",
        "{ctx}"
    );
    // KVM: the module is not loaded, so no /dev/kvm — and the remedy names kvm_amd.
    assert_eq!(host["kvm"], "no_device", "{ctx}");
    let kvm = finding(&check, "kvm");
    assert_eq!(kvm["status"], "fail", "{ctx}");
    let kvm_text = format!("{} {}", s(&kvm["summary"]), s(&kvm["remedy"]));
    assert!(
        kvm_text.contains("kvm_amd"),
        "kvm finding should name kvm_amd: {kvm:#}"
    );
    // Debian builds vfio-pci as a module.
    assert_eq!(host["vfio_pci"], "module", "{ctx}");

    // The IOMMU verdict comes from ACPI and the kernel, not from the CPU vendor.
    let groups = vm.sh("ls /sys/kernel/iommu_groups | wc -l");
    let groups: u64 = groups.trim().parse().expect("a count");
    assert_eq!(host["iommu"]["groups"], groups, "{ctx}");
    let log = dmesg(vm);
    let remap = host["interrupt_remapping"].clone();
    match layout {
        Layout::IntelDesktop
        | Layout::IntelBind
        | Layout::IntelRun
        | Layout::IntelDisk
        | Layout::AmdDesktop => {
            let kind = if layout != Layout::AmdDesktop {
                "intel"
            } else {
                "amd"
            };
            assert_eq!(host["iommu"]["state"], "on", "{ctx}");
            assert_eq!(host["iommu"]["kind"], kind, "{ctx}");
            assert_eq!(finding(&check, "iommu.firmware")["status"], "ok", "{ctx}");
            assert_eq!(finding(&check, "iommu.kernel")["status"], "ok", "{ctx}");
            assert!(
                kernel_says_interrupt_remapping(&log),
                "the kernel should remap interrupts"
            );
            assert_eq!(remap, "on", "{ctx}");
        }
        Layout::IommuOff => {
            assert_eq!(host["iommu"]["state"], "off", "{ctx}");
            assert_eq!(
                finding(&check, "iommu.firmware")["status"],
                "ok",
                "DMAR is there: {ctx}"
            );
            assert_eq!(finding(&check, "iommu.kernel")["status"], "fail", "{ctx}");
            let cmdline = finding(&check, "iommu.cmdline");
            let evidence = cmdline["evidence"].to_string();
            assert!(
                evidence.contains("intel_iommu=off"),
                "evidence: {cmdline:#}"
            );
            let want = if kernel_says_interrupt_remapping(&log) {
                "on"
            } else {
                "off"
            };
            assert_eq!(remap, want, "as the kernel log says: {ctx}");
            assert_eq!(out.code, 1);
        }
        Layout::NoIommu => {
            assert_eq!(host["iommu"]["state"], "absent", "{ctx}");
            assert_eq!(host["iommu"]["kind"], Value::Null, "{ctx}");
            assert_eq!(finding(&check, "iommu.firmware")["status"], "fail", "{ctx}");
            assert_ne!(remap, "on", "{ctx}");
            assert_eq!(out.code, 1);
        }
    }
}

/// The addresses of a list of DEVICE objects.
fn addresses(devices: &Value) -> BTreeSet<String> {
    devices
        .as_array()
        .map(|d| d.iter().map(|d| s(&d["address"]).to_owned()).collect())
        .unwrap_or_default()
}

fn passthru_list(vm: &TestVm, layout: Layout) {
    let (out, list) = passthru(vm, "list --json");
    let ctx = format!("{out}");
    let view = kernel_view(vm);
    assert_eq!(list["schema_version"], 1, "{ctx}");
    assert_eq!(out.code, 0, "{ctx}");
    assert_eq!(list["iommu_groups"], layout.iommu_on(), "{ctx}");

    // Exactly the kernel's groups.
    let groups = list["groups"].as_array().cloned().unwrap_or_default();
    let listed: BTreeMap<u32, BTreeSet<String>> = groups
        .iter()
        .map(|g| {
            let n = g["group"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .expect("group number");
            (n, addresses(&g["devices"]))
        })
        .collect();
    assert_eq!(
        listed, view.groups,
        "passthru's groups vs /sys/kernel/iommu_groups"
    );
    let ungrouped = addresses(&list["ungrouped"]);
    let kernel_ungrouped: BTreeSet<String> = view
        .devices
        .iter()
        .filter(|(_, d)| d.group.is_none())
        .map(|(a, _)| a.clone())
        .collect();
    assert_eq!(ungrouped, kernel_ungrouped, "ungrouped devices");
    if !layout.iommu_on() {
        assert!(
            list["note"].is_string(),
            "a note says why there are no groups: {ctx}"
        );
    }

    // Every device as the kernel has it.
    let all: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["devices"].as_array().into_iter().flatten())
        .chain(list["ungrouped"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(all.len(), view.devices.len(), "every PCI device once");
    let mut problems = Vec::new();
    for dev in &all {
        let address = s(&dev["address"]);
        let Some(k) = view.devices.get(address) else {
            problems.push(format!("{address}: not a kernel device"));
            continue;
        };
        let checks = [
            ("vendor_id", dev["vendor_id"] == k.vendor.as_str()),
            ("device_id", dev["device_id"] == k.device.as_str()),
            (
                "class",
                k.class.starts_with(s(&dev["class"])) && !s(&dev["class"]).is_empty(),
            ),
            ("driver", dev["driver"].as_str() == k.driver.as_deref()),
            (
                "iommu_group",
                dev["iommu_group"].as_u64() == k.group.map(u64::from),
            ),
            (
                "reset_methods",
                dev["reset_methods"]
                    .as_array()
                    .map(|m| m.iter().map(|m| s(m).to_owned()).collect::<Vec<_>>())
                    .unwrap_or_default()
                    == k.reset_methods,
            ),
            ("has_reset", dev["has_reset"] == !k.reset_methods.is_empty()),
            (
                "boot_vga",
                dev["boot_vga"].as_bool() == k.boot_vga.as_deref().map(|v| v == "1"),
            ),
        ];
        for (field, ok) in checks {
            if !ok {
                problems.push(format!(
                    "{address}: {field} = {} but kernel: {k:?}",
                    dev[field]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "devices differ from sysfs:\n{}\n{ctx}",
        problems.join("\n")
    );

    // The edu device has no reset method.
    let edu = all
        .iter()
        .find(|d| d["address"] == layouts::EDU)
        .expect("edu listed");
    assert_eq!(edu["has_reset"], false, "{edu:#}");
    assert_eq!(edu["vendor_id"], "1234");
    assert_eq!(edu["device_id"], "11e8");

    if !layout.iommu_on() {
        return;
    }
    let group_of = |address: &str| {
        groups
            .iter()
            .find(|g| addresses(&g["devices"]).contains(address))
            .unwrap_or_else(|| panic!("no group holds {address}: {ctx}"))
    };
    // The bridge's two devices share a group that cannot be passed alone, and the
    // reasons name the other devices.
    let bridge_group = group_of(layouts::BEHIND_BRIDGE[0]);
    assert!(addresses(&bridge_group["devices"]).contains(layouts::BEHIND_BRIDGE[1]));
    assert_eq!(bridge_group["passable"], false, "{bridge_group:#}");
    let reasons = bridge_group["reasons"].to_string();
    assert!(
        layouts::BEHIND_BRIDGE.iter().all(|a| reasons.contains(a)),
        "reasons should name the devices sharing the group: {reasons}"
    );
    // The GPU and its audio are one unit, and their group is passable.
    let gpu_group = group_of(layouts::GPU);
    assert_eq!(gpu_group["passable"], true, "{gpu_group:#}");
    let units = gpu_group["units"].as_array().cloned().unwrap_or_default();
    assert_eq!(units.len(), 1, "{gpu_group:#}");
    assert_eq!(units[0]["role"], "gpu_with_audio", "{gpu_group:#}");
    assert_eq!(units[0]["slot"], "0000:01:00");
    assert_eq!(
        units[0]["functions"],
        serde_json::json!([layouts::GPU, layouts::GPU_AUDIO])
    );
    // Single-device groups behind their own root ports are passable.
    for alone in [layouts::NVME, layouts::NIC, layouts::XHCI, layouts::EDU] {
        assert_eq!(
            group_of(alone)["passable"],
            true,
            "{alone}: {:#}",
            group_of(alone)
        );
    }
}

fn passthru_report_roundtrip(vm: &TestVm, _layout: Layout) {
    let archive = "/tmp/testbed/report.tar.gz";
    let out = vm
        .run_with_timeout(
            &format!("{} report -o {archive}", passthru_bin()),
            Duration::from_secs(300),
        )
        .expect("run");
    assert!(out.success(), "report failed:\n{out}");
    let (_, inside) = passthru(vm, "list --json");

    let tree = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::open(vm.shared_dir().join("report.tar.gz")).expect("the report");
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(tree.path())
        .expect("unpack the report");
    // The archive may hold the root directly or under one top directory.
    let entries: Vec<_> = std::fs::read_dir(tree.path())
        .expect("read tree")
        .filter_map(Result::ok)
        .collect();
    let root = if entries.len() == 1 && entries[0].path().join("sys").is_dir() {
        entries[0].path()
    } else {
        tree.path().to_owned()
    };
    let outside = std::process::Command::new(passthru_bin())
        .args(["list", "--json", "--root"])
        .arg(&root)
        .output()
        .expect("run passthru on the host");
    let stdout = String::from_utf8_lossy(&outside.stdout);
    let outside: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "host-side list --root did not print JSON ({err}): {stdout}\n{}",
            String::from_utf8_lossy(&outside.stderr)
        )
    });
    assert_eq!(
        outside, inside,
        "list --json of the report differs from the guest's own"
    );
}

// ---------------------------------------------------------------------------------------
// bind / unbind against the kernel's own vfio-pci (a VM of its own: drivers change).

/// The driver the kernel has bound to `address`, read from sysfs (not by passthru).
fn driver_of(vm: &TestVm, address: &str) -> String {
    vm.sh(&format!(
        "d=/sys/bus/pci/devices/{address}/driver; [ -e $d ] && basename $(readlink $d) || echo none"
    ))
    .trim()
    .to_owned()
}

fn group_of(vm: &TestVm, address: &str) -> u32 {
    vm.sh(&format!(
        "basename $(readlink /sys/bus/pci/devices/{address}/iommu_group)"
    ))
    .trim()
    .parse()
    .expect("a group number")
}

/// Runs passthru with `args` and `--json`; returns the exit code and the document.
fn change(vm: &TestVm, args: &str) -> (i32, Value) {
    let out = vm
        .run_with_timeout(
            &format!("{} {args} --json", passthru_bin()),
            Duration::from_secs(120),
        )
        .expect("run passthru");
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("`passthru {args}` did not print JSON ({err}):\n{out}"));
    (out.code, json)
}

fn refusal_text(doc: &Value) -> String {
    doc["refusals"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| format!("{} [{}]", s(&r["reason"]), s(&r["override_flag"])))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Starts a process (`sleep`) that holds `file` open, until [`release`].
fn hold(vm: &TestVm, file: &str) {
    vm.sh(&format!(
        "setsid sh -c 'echo $$ > /run/holder.pid; exec 3<>{file}; exec sleep 600' </dev/null >/dev/null 2>&1 & \
         while [ ! -s /run/holder.pid ]; do sleep 0.1; done; sleep 0.3"
    ));
}

fn release(vm: &TestVm) {
    vm.sh("kill $(cat /run/holder.pid); rm /run/holder.pid; sleep 0.3");
}

/// The NVMe device and the host's use of its disk in `list --json`: its roles and
/// what uses it (`kind`, `user`).
fn disk_use_listed(vm: &TestVm, address: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (out, list) = passthru(vm, "list --json");
    assert_eq!(out.code, 0, "{out}");
    let d = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["devices"].as_array().unwrap().iter())
        .find(|d| d["address"] == address)
        .unwrap_or_else(|| panic!("{address} not listed: {out}"))
        .clone();
    let roles = d["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(r).to_owned())
        .collect();
    let uses = d["storage_in_use"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (s(&u["kind"]).to_owned(), s(&u["user"]).to_owned()))
        .collect();
    (roles, uses)
}

/// `bind` of the NVMe drive while the host uses its disk: refused with the reason,
/// nothing changed; `list` marks it. The disk is really used, by the guest's kernel:
/// a mounted ext4 filesystem (at a path with a space, which mountinfo escapes), swap,
/// a device-mapper device on it (a holder), a process holding the node open. Once
/// nothing uses it, bind and unbind work.
fn passthru_disk_in_use(vm: &TestVm, _layout: Layout) {
    use layouts::NVME;
    assert_eq!(driver_of(vm, NVME), "nvme");
    let disk = "/dev/nvme0n1";
    vm.sh(&format!(
        "for i in $(seq 100); do [ -b {disk} ] && break; sleep 0.1; done; test -b {disk}"
    ));
    // With native NVMe multipath (Debian's kernels: nvme_core.multipath=Y) the
    // namespace lives under the virtual nvme-subsystem, not under the PCI device.
    eprintln!(
        "testbed: {disk} is {}",
        vm.sh("readlink -f /sys/block/nvme0n1").trim()
    );
    let unchanged = |why: &str| {
        assert_eq!(
            driver_of(vm, NVME),
            "nvme",
            "{why}: the driver is unchanged"
        );
        vm.sh(&format!(
            "test -b {disk} && test ! -e /run/passthru/bound/{NVME}.json"
        ));
    };
    let refused = |what: &str| {
        let (code, doc) = change(vm, &format!("bind {NVME}"));
        assert_eq!(code, 1, "{what}: {doc:#}");
        let why = refusal_text(&doc);
        assert!(why.contains("holds a disk the host uses"), "{what}: {why}");
        assert!(why.contains("[--allow-disk-in-use]"), "{what}: {why}");
        unchanged(what);
        why
    };

    // A mounted filesystem.
    vm.sh(&format!(
        "modprobe ext4 && mkfs.ext4 -q -F {disk} && mkdir -p '/mnt/my data' && mount {disk} '/mnt/my data' && \
         echo kept > '/mnt/my data/file'"
    ));
    let why = refused("mounted");
    assert!(why.contains("nvme0n1 is mounted at /mnt/my data"), "{why}");
    let (roles, uses) = disk_use_listed(vm, NVME);
    assert_eq!(roles, ["disk_in_use"]);
    assert_eq!(uses, [("mount".to_owned(), "/mnt/my data".to_owned())]);
    let text = vm.sh(&format!("{} list", passthru_bin()));
    let line = text.lines().find(|l| l.contains(NVME)).unwrap_or_default();
    assert!(line.contains("disk-in-use"), "{text}");
    assert_eq!(vm.sh("cat '/mnt/my data/file'").trim(), "kept");
    vm.sh("umount '/mnt/my data'");

    // Swap.
    vm.sh(&format!(
        "mkswap -q {disk} >/dev/null && swapon {disk} && grep -q '^{disk} ' /proc/swaps"
    ));
    let why = refused("swap");
    assert!(why.contains(&format!("nvme0n1 is swap ({disk})")), "{why}");
    let (_, uses) = disk_use_listed(vm, NVME);
    assert_eq!(uses, [("swap".to_owned(), disk.to_owned())]);
    vm.sh(&format!("swapoff {disk}"));

    // A device-mapper device built on it: the kernel's holders/ link.
    vm.sh(&format!(
        "modprobe dm_mod && echo \"0 $(blockdev --getsz {disk}) linear {disk} 0\" | \
         dmsetup create --noudevsync testbed-lin && ls /sys/block/nvme0n1/holders | grep -q dm-"
    ));
    let why = refused("held by device-mapper");
    assert!(
        why.contains("nvme0n1 is held by dm-") && why.contains("testbed-lin"),
        "{why}"
    );
    vm.sh("dmsetup remove --noudevsync testbed-lin");

    // A process holding the device node open.
    hold(vm, disk);
    let why = refused("open");
    assert!(why.contains("nvme0n1 is open in sleep (pid"), "{why}");
    release(vm);

    // Nothing uses it now: no mark, and bind and unbind work.
    let (roles, uses) = disk_use_listed(vm, NVME);
    assert!(roles.is_empty() && uses.is_empty(), "{roles:?} {uses:?}");
    let (code, doc) = change(vm, &format!("bind {NVME}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, NVME), "vfio-pci");
    vm.sh(&format!("test ! -e {disk}"));
    let (code, doc) = change(vm, &format!("unbind {NVME}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, NVME), "nvme");
    vm.sh(&format!(
        "for i in $(seq 100); do [ -b {disk} ] && break; sleep 0.1; done; test -b {disk}"
    ));
}

fn passthru_bind_unbind(vm: &TestVm, _layout: Layout) {
    use layouts::{BEHIND_BRIDGE, BOOT_VGA, EDU, NIC};
    assert_eq!(driver_of(vm, EDU), "none");
    assert_eq!(driver_of(vm, NIC), "e1000e");
    let nic_if = vm.sh(&format!("ls /sys/bus/pci/devices/{NIC}/net"));
    assert!(
        !nic_if.trim().is_empty(),
        "the e1000e has a network interface"
    );

    // The edu device: vfio-pci is loaded on demand, the group node appears.
    let edu_group = group_of(vm, EDU);
    let (code, doc) = change(vm, &format!("bind {EDU}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, EDU), "vfio-pci");
    assert_eq!(doc["nodes"][0]["node"], format!("/dev/vfio/{edu_group}"));
    vm.sh(&format!(
        "test -c /dev/vfio/{edu_group} && test -d /sys/module/vfio_iommu_type1"
    ));
    let record = vm.sh(&format!("cat /run/passthru/bound/{EDU}.json"));
    assert!(record.contains("\"original_driver\": null"), "{record}");
    // Since 6.1 every VFIO device is also a `vfio-dev` class device (`vfioN` in its
    // sysfs directory); its character node `/dev/vfio/devices/vfioN`, opened through
    // `/dev/iommu`, exists only where the kernel was built with it: Debian's 6.1 and
    // 6.12 leave CONFIG_IOMMUFD unset, other distributions' 6.x kernels set it.
    let config = vm.sh("cat /boot/config-$(uname -r)");
    let cdev = config.lines().any(|l| l == "CONFIG_VFIO_DEVICE_CDEV=y");
    let iommufd = config
        .lines()
        .any(|l| l == "CONFIG_IOMMUFD=y" || l == "CONFIG_IOMMUFD=m");
    let vfio_dev = vm.sh(&format!("ls /sys/bus/pci/devices/{EDU}/vfio-dev"));
    let vfio_dev = vfio_dev.trim();
    assert!(vfio_dev.starts_with("vfio"), "vfio-dev: {vfio_dev:?}");
    let node = vm
        .run(&format!("test -c /dev/vfio/devices/{vfio_dev}"))
        .expect("run");
    assert_eq!(node.success(), cdev, "/dev/vfio/devices/{vfio_dev}: {node}");
    if !iommufd {
        vm.sh("test ! -e /dev/iommu");
    }

    // A second bind is a no-op that changes nothing.
    let (code, doc) = change(vm, &format!("bind {EDU}"));
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["noop"] == true),
        "{doc:#}"
    );
    assert_eq!(
        vm.sh(&format!("cat /run/passthru/bound/{EDU}.json")),
        record
    );

    // The NIC: its host driver lets go, and `list` shows who holds it.
    let (code, doc) = change(vm, &format!("bind {NIC}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, NIC), "vfio-pci");
    let (_, list) = passthru(vm, "list --json");
    let held: Vec<String> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["devices"].as_array().unwrap().iter())
        .filter(|d| d["held_by_passthru_since"].is_string())
        .map(|d| s(&d["address"]).to_owned())
        .collect();
    assert_eq!(held, [EDU.to_owned(), NIC.to_owned()]);

    // A program holding the NIC's resource file blocks unbind, named.
    hold(vm, &format!("/sys/bus/pci/devices/{NIC}/resource0"));
    let (code, doc) = change(vm, &format!("unbind {NIC}"));
    assert_eq!(code, 1, "{doc:#}");
    let why = refusal_text(&doc);
    assert!(
        why.contains("sleep (pid") && why.contains("resource0"),
        "{why}"
    );
    assert_eq!(
        driver_of(vm, NIC),
        "vfio-pci",
        "a refused unbind changes nothing"
    );
    release(vm);

    // unbind gives the NIC back to e1000e and the interface returns.
    let (code, doc) = change(vm, &format!("unbind {NIC}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, NIC), "e1000e");
    assert_eq!(vm.sh(&format!("ls /sys/bus/pci/devices/{NIC}/net")), nic_if);
    vm.sh(&format!("test ! -e /run/passthru/bound/{NIC}.json"));

    // passthru killed half-way (-9 once its record is written): unbind still restores.
    vm.sh(&format!(
        "{bin} bind {NIC} >/dev/null 2>&1 & pid=$!; \
         while [ ! -e /run/passthru/bound/{NIC}.json ]; do :; done; kill -9 $pid; wait $pid; true",
        bin = passthru_bin()
    ));
    let (code, doc) = change(vm, &format!("unbind {NIC}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, NIC), "e1000e");
    vm.sh(&format!(
        "test \"$(cat /sys/bus/pci/devices/{NIC}/driver_override)\" = '(null)'"
    ));

    // A device whose original driver cannot take it back is reported, not hidden.
    let (code, doc) = change(vm, &format!("bind {NIC}"));
    assert_eq!(code, 0, "{doc:#}");
    vm.sh("rmmod e1000e");
    let (code, doc) = change(vm, &format!("unbind {NIC}"));
    assert_eq!(code, 1, "{doc:#}");
    let failure = s(&doc["failures"][0]["error"]);
    assert!(
        failure.contains("instead of its original driver e1000e"),
        "{doc:#}"
    );
    assert_eq!(doc["failures"][0]["address"], NIC);
    vm.sh("modprobe e1000e; sleep 0.5");
    assert_eq!(
        driver_of(vm, NIC),
        "e1000e",
        "with the override cleared, e1000e takes it again"
    );

    // The devices behind the conventional PCI bridge share a group: naming one is
    // refused while the other is in use, and --whole-group takes both (bridge aside).
    let (code, doc) = change(vm, &format!("bind {}", BEHIND_BRIDGE[0]));
    assert_eq!(code, 1, "{doc:#}");
    let why = refusal_text(&doc);
    assert!(
        why.contains(BEHIND_BRIDGE[1]) && why.contains("--whole-group"),
        "{why}"
    );
    assert_eq!(driver_of(vm, BEHIND_BRIDGE[0]), "e1000");
    let (code, doc) = change(vm, &format!("bind {} --whole-group", BEHIND_BRIDGE[0]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, BEHIND_BRIDGE[0]), "vfio-pci");
    assert_eq!(driver_of(vm, BEHIND_BRIDGE[1]), "vfio-pci");
    assert_eq!(
        driver_of(vm, layouts::PCI_BRIDGE),
        "none",
        "the bridge stays as it was"
    );
    let (code, doc) = change(vm, &format!("unbind {}", BEHIND_BRIDGE[1]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, BEHIND_BRIDGE[0]), "e1000");
    assert_eq!(driver_of(vm, BEHIND_BRIDGE[1]), "ohci-pci");

    // The boot display, driven by the console, is refused.
    let (code, doc) = change(vm, &format!("bind {BOOT_VGA}"));
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        refusal_text(&doc).contains("--allow-boot-display"),
        "{doc:#}"
    );
    assert_eq!(driver_of(vm, BOOT_VGA), "bochs-drm");

    // The strongest proof: a nested QEMU takes the edu device through VFIO.
    let qmp = vm
        .run_with_timeout(
            &format!(
                "printf '%s\\n' '{{\"execute\":\"qmp_capabilities\"}}' '{{\"execute\":\"query-pci\"}}' '{{\"execute\":\"quit\"}}' \
                 | qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -display none -S -m 64 \
                   -device vfio-pci,host={EDU},id=edu -qmp stdio"
            ),
            Duration::from_secs(120),
        )
        .expect("run nested QEMU");
    assert!(qmp.success(), "nested QEMU failed:\n{qmp}");
    assert!(
        qmp.stdout.contains("\"qdev_id\": \"edu\"")
            && qmp
                .stdout
                .contains("\"device\": 4584, \"subsystem-vendor\"")
            && qmp.stdout.contains("\"vendor\": 4660"),
        "the nested VM has no 1234:11e8 device:\n{qmp}"
    );

    // Once per run, the nested guest boots and reads the edu device through BAR0.
    nested_guest_reads_edu(vm);

    // A VM holding the group's node blocks unbind, named.
    hold(vm, &format!("/dev/vfio/{edu_group}"));
    let (code, doc) = change(vm, &format!("unbind {EDU}"));
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        refusal_text(&doc).contains(&format!("holds /dev/vfio/{edu_group}")),
        "{doc:#}"
    );
    release(vm);

    // unbind --all gives back everything.
    let (code, doc) = change(vm, "unbind --all");
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(driver_of(vm, EDU), "none");
    vm.sh("test -z \"$(ls /run/passthru/bound)\"");
}

/// The nested guest's `/init`: find the edu device (1234:11e8), read its
/// identification register at BAR0 + 0 and exercise its liveness register at
/// BAR0 + 4 (it returns the bitwise inverse of what was written), then power off.
const EDU_PROBE_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ]; then
        echo 1 > $d/enable
        bar0=$(head -n 1 $d/resource | cut -d ' ' -f 1)
        echo "edu-id: $(devmem $bar0 32)"
        devmem $((bar0 + 4)) 32 0x12345678
        echo "edu-liveness: $(devmem $((bar0 + 4)) 32)"
    fi
done
echo edu-probe-done
poweroff -f
"#;

/// Boots the testbed's kernel as a nested guest (TCG inside TCG, about two minutes)
/// with the edu device passed through by VFIO, and reads the device from inside.
fn nested_guest_reads_edu(vm: &TestVm) {
    let kernel = vm.kernel();
    let initrd = vm.shared_dir().join("edu-probe.cpio");
    testbed::kernel::build_probe_initramfs(EDU_PROBE_INIT, &initrd).expect("probe initramfs");
    let out = vm
        .run_with_timeout(
            &format!(
                "qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 256 -nodefaults \
                 -display none -no-reboot -serial stdio -kernel {} -initrd /tmp/testbed/edu-probe.cpio \
                 -append 'console=ttyS0 panic=-1 quiet' -device vfio-pci,host={}",
                kernel.vmlinuz.display(),
                layouts::EDU
            ),
            Duration::from_secs(600),
        )
        .expect("run the nested guest");
    assert!(
        out.stdout.contains("edu-probe-done"),
        "the nested guest did not finish its probe:\n{out}"
    );
    assert!(
        out.stdout.contains("edu-id: 0x010000ED"),
        "the nested guest did not read the edu identification register:\n{out}"
    );
    assert!(
        out.stdout.contains("edu-liveness: 0xEDCBA987"),
        "the edu liveness register did not invert 0x12345678:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// vm run: passthru binds the edu device, runs a nested QEMU with it, and gives it back.

/// Where `vm run`'s spec and the VM's state live in the guest (a tmpfs: QEMU's unix
/// sockets cannot live on the 9p shared directory).
const RUN_DIR: &str = "/run/vmrun";

/// A `vm run` spec for a nested guest that gets the edu device and boots the
/// testbed's kernel straight into `initrd`.
fn edu_spec(name: &str, vmlinuz: &str, initrd: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nmemory = \"256M\"\ncpus = 1\ndevices = [\"{edu}\"]\n\
         network = \"none\"\ndisplay = \"none\"\n{extra}\n[firmware]\nuefi = false\n\n\
         [kernel]\npath = \"{vmlinuz}\"\ninitrd = \"{initrd}\"\ncmdline = \"console=ttyS0 quiet\"\n",
        edu = layouts::EDU
    )
}

/// `passthru vm run` in the guest with the state under [`RUN_DIR`]; stderr goes to
/// `{RUN_DIR}/{log}`.
fn vm_run_command(spec: &str, extra: &str, log: &str) -> String {
    format!(
        "PASSTHRU_VM_STATE_DIR={RUN_DIR}/state {bin} vm run {RUN_DIR}/{spec} --accel tcg {extra} 2>{RUN_DIR}/{log}",
        bin = passthru_bin()
    )
}

/// The edu device is unbound (no driver, no record, no override) as at boot.
fn assert_edu_as_at_boot(vm: &TestVm, why: &str) {
    use layouts::EDU;
    assert_eq!(driver_of(vm, EDU), "none", "{why}");
    vm.sh(&format!(
        "test ! -e /run/passthru/bound/{EDU}.json && \
         test \"$(cat /sys/bus/pci/devices/{EDU}/driver_override)\" = '(null)'"
    ));
}

fn passthru_vm_run(vm: &TestVm, _layout: Layout) {
    use layouts::EDU;
    let kernel = vm.kernel();
    let vmlinuz = kernel.vmlinuz.display().to_string();
    testbed::kernel::build_probe_initramfs(
        EDU_PROBE_INIT,
        &vm.shared_dir().join("vm-run-probe.cpio"),
    )
    .expect("probe initramfs");
    let initrd = "/tmp/testbed/vm-run-probe.cpio";
    vm.sh(&format!("mkdir -p {RUN_DIR}"));
    vm.sh(&format!(
        "cat > {RUN_DIR}/edu.toml <<'EOF'\n{}EOF\ncat > {RUN_DIR}/broken.toml <<'EOF'\n{}EOF\n\
         cat > {RUN_DIR}/huge.toml <<'EOF'\n{}EOF",
        edu_spec("edu", &vmlinuz, initrd, ""),
        edu_spec("broken", &vmlinuz, "/nonexistent/initrd.cpio", ""),
        edu_spec("huge", &vmlinuz, initrd, "hugepages = true\n"),
    ));
    assert_edu_as_at_boot(vm, "edu has no driver at boot");

    // 1. A device already on vfio-pci (`passthru bind`) is used and left as it was, and
    //    QEMU failing to start is reported with QEMU's own exit code.
    let (code, doc) = change(vm, &format!("bind {EDU}"));
    assert_eq!(code, 0, "{doc:#}");
    let record = vm.sh(&format!("cat /run/passthru/bound/{EDU}.json"));
    let out = vm
        .run_with_timeout(
            &format!(
                "{}; rc=$?; cat {RUN_DIR}/broken.err; exit $rc",
                vm_run_command("broken.toml", "", "broken.err")
            ),
            Duration::from_secs(180),
        )
        .expect("run vm run");
    assert_eq!(out.code, 1, "QEMU's exit code:\n{out}");
    assert!(
        out.stdout
            .contains(&format!("{EDU} is already on vfio-pci: left as it is"))
            && out.stdout.contains("QEMU exited with code 1")
            && out.stdout.contains("initrd"),
        "{out}"
    );
    assert!(!out.stdout.contains("giving devices back"), "{out}");
    assert_eq!(
        driver_of(vm, EDU),
        "vfio-pci",
        "a device bound before stays bound"
    );
    assert_eq!(
        vm.sh(&format!("cat /run/passthru/bound/{EDU}.json")),
        record
    );
    let (code, doc) = change(vm, &format!("unbind {EDU}"));
    assert_eq!(code, 0, "{doc:#}");
    assert_edu_as_at_boot(vm, "unbind after the failed run");

    // 2. QEMU killed (-9) while the VM runs: the device comes back all the same, and
    //    vm run says what happened and fails. Before the kill, the device is on
    //    vfio-pci and QEMU's threads are pinned (the guest has CPUs 0 and 1: the vCPU
    //    goes to CPU 1, QEMU's other threads stay on CPU 0 with the host). This VM's
    //    memory is backed by hugepages: vm run reserves the 128 pages of 2 MiB the
    //    empty pool lacks, and releases them afterwards.
    let pool = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    assert_eq!(vm.sh(&format!("cat {pool}")).trim(), "0");
    vm.sh("mkdir -p /dev/hugepages && mount -t hugetlbfs hugetlbfs /dev/hugepages");
    let started = std::time::Instant::now();
    let out = vm
        .run_with_timeout(
            &format!(
                "{run} & p=$!; \
                 while ! grep -q 'pinned\\|not pinning' {RUN_DIR}/crash.err 2>/dev/null; do \
                   kill -0 $p 2>/dev/null || break; sleep 0.2; done; \
                 q=$(sed -n 's/.*QEMU started (pid \\([0-9]*\\)).*/\\1/p' {RUN_DIR}/crash.err); \
                 echo \"driver: $(basename $(readlink /sys/bus/pci/devices/{EDU}/driver))\"; \
                 test -e /run/passthru/bound/{EDU}.json && echo recorded; \
                 echo \"hugepages: $(cat {pool})\"; \
                 vcpu=$(sed -n 's/.*vCPU 0 (thread \\([0-9]*\\)).*/\\1/p' {RUN_DIR}/crash.err); \
                 echo \"vcpu: $(grep Cpus_allowed_list: /proc/$q/task/$vcpu/status | cut -f2)\"; \
                 for t in /proc/$q/task/*; do [ \"${{t##*/}}\" = \"$vcpu\" ] || \
                   echo \"other: $(grep Cpus_allowed_list: $t/status | cut -f2)\"; done; \
                 kill -9 $q; wait $p; rc=$?; cat {RUN_DIR}/crash.err; exit $rc",
                run = vm_run_command("huge.toml", "", "crash.err")
            ),
            Duration::from_secs(300),
        )
        .expect("run vm run");
    note(&format!("vm run, QEMU killed: {:.1?}", started.elapsed()));
    assert!(
        out.stdout
            .contains("driver: vfio-pci\nrecorded\nhugepages: 128\n"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("reserving 128 more hugepages of 2048 KiB (nr_hugepages 0 → 128)")
            && out.stdout.contains("releasing reserved hugepages"),
        "{out}"
    );
    assert_eq!(vm.sh(&format!("cat {pool}")).trim(), "0", "released");
    assert!(
        out.stdout
            .contains(&format!("binding {EDU} to vfio-pci (from no driver)")),
        "{out}"
    );
    assert!(
        out.stdout.contains("vcpu: 1\n"),
        "the vCPU thread is on CPU 1:\n{out}"
    );
    let others: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("other: "))
        .collect();
    assert!(
        !others.is_empty() && others.iter().all(|c| *c == "0"),
        "QEMU's other threads are on CPU 0:\n{out}"
    );
    assert_eq!(out.code, 137, "128 + SIGKILL:\n{out}");
    assert!(
        out.stdout.contains(
            "QEMU was killed by signal 9 (SIGKILL) while the VM ran; its devices were given back"
        ) && out.stdout.contains("giving devices back"),
        "{out}"
    );
    assert_edu_as_at_boot(vm, "vm run gives the device back after QEMU was killed");

    // 3. SIGTERM to passthru (as Ctrl-C): the guest is asked to power down through
    //    QMP; this init ignores the power button, so QEMU is told to quit after the
    //    shutdown timeout; QEMU exits 0 and the device comes back.
    let out = vm
        .run_with_timeout(
            &format!(
                "{run} & p=$!; \
                 while ! grep -q 'pinned\\|not pinning' {RUN_DIR}/term.err 2>/dev/null; do \
                   kill -0 $p 2>/dev/null || break; sleep 0.2; done; \
                 kill -TERM $p; wait $p; rc=$?; cat {RUN_DIR}/term.err; exit $rc",
                run = vm_run_command("edu.toml", "--shutdown-timeout 2", "term.err")
            ),
            Duration::from_secs(300),
        )
        .expect("run vm run");
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("SIGTERM: asking the guest to power down")
            && out.stdout.contains("telling QEMU to quit")
            && out.stdout.contains("QEMU exited with code 0")
            && out.stdout.contains("giving devices back"),
        "{out}"
    );
    assert_edu_as_at_boot(vm, "vm run gives the device back when stopped by SIGTERM");

    // 4. The user's whole path: `vm new` writes the spec (edu by its identity),
    //    `vm check` finds nothing in the way (the real IOMMU group, bind planner and
    //    QEMU's device list), and `vm run` starts the nested guest, which reads edu's
    //    identification and liveness registers through VFIO and powers off; vm run
    //    exits 0 and gives the device back.
    let bin = passthru_bin();
    let env = format!("PASSTHRU_VM_DIR={RUN_DIR}/specs PASSTHRU_VM_STATE_DIR={RUN_DIR}/state");
    let out = vm
        .run_with_timeout(
            &format!(
                "{env} {bin} vm new nested --device {EDU} --cpus 1 --memory 256M --bios \
                 --no-network --display none --disk none --kernel {vmlinuz} --initrd {initrd} \
                 --cmdline 'console=ttyS0 quiet' && {env} {bin} vm check nested --accel tcg"
            ),
            Duration::from_secs(120),
        )
        .expect("run vm new and vm check");
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("id = \"1234:11e8\"")
            && out.stdout.contains("ok    binding")
            && out.stdout.contains("ok    qemu")
            && out.stdout.contains("VM nested is ready to start."),
        "{out}"
    );
    let started = std::time::Instant::now();
    let out = vm
        .run_with_timeout(
            &format!(
                "{env} {bin} vm run nested --accel tcg 2>{RUN_DIR}/run.err; rc=$?; \
                 cat {RUN_DIR}/run.err; exit $rc"
            ),
            Duration::from_secs(600),
        )
        .expect("run vm run");
    note(&format!(
        "vm run, nested guest booted and powered off: {:.1?}",
        started.elapsed()
    ));
    let console = vm.sh(&format!("cat {RUN_DIR}/state/nested/console.log"));
    assert_eq!(out.code, 0, "{out}\n--- nested console ---\n{console}");
    assert!(
        console.contains("edu-id: 0x010000ED") && console.contains("edu-liveness: 0xEDCBA987"),
        "the nested guest did not read the edu device:\n{console}\n{out}"
    );
    assert!(
        out.stdout.contains("QEMU started (pid ")
            && out
                .stdout
                .contains("console log: /run/vmrun/state/nested/console.log")
            && out.stdout.contains("QEMU exited with code 0")
            && out.stdout.contains("giving devices back"),
        "{out}"
    );
    assert_edu_as_at_boot(
        vm,
        "vm run gives the device back after the guest powered off",
    );
}

// ---------------------------------------------------------------------------------------
// A real Debian system booting from its own disk (tests/testbed/debian.rs): the fixture
// for persistent setup. Each test has a writable copy of the cached image and VMs of its
// own; they are not part of `testbed_tests!`, which shares one VM per layout.

/// Prints a line even when the harness captures the test's output (timings).
fn note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "testbed: {text}");
}

/// The driver bound to a PCI device in the guest, if any.
fn bound_driver(vm: &TestVm, address: &str) -> Option<String> {
    let link = vm.sh(&format!(
        "readlink /sys/bus/pci/devices/{address}/driver || true"
    ));
    let link = link.trim();
    (!link.is_empty()).then(|| last_component(link).to_owned())
}

/// The Debian root boots from `/dev/vda` with its own kernel and initramfs, serves
/// commands, binds the desktop devices' drivers, runs the fresh `passthru`, and powers
/// off leaving a clean file system.
#[test]
fn debian_boots_from_its_disk() {
    let Some(root) = testbed::debian::root_or_skip("debian_boots_from_its_disk") else {
        return;
    };
    let layout = Layout::IntelDesktop;
    let disk = root.disk("boots").expect("a copy of the Debian image");
    let args: Vec<String> = layout
        .kernel_args()
        .iter()
        .map(ToString::to_string)
        .collect();
    let builder = disk
        .builder(layout, "debian-boots", &args)
        .expect("the image's kernel and initramfs");
    let vm = disk.boot_or_panic(builder);
    let _logs = testbed::LogsOnFailure(&vm);
    note(&format!("Debian VM booted in {:.1?}", vm.boot_time()));

    assert_eq!(
        vm.sh("findmnt -n -o SOURCE,FSTYPE /").trim(),
        "/dev/vda ext4"
    );
    assert_eq!(vm.sh("uname -r").trim(), root.release);
    let cmdline = vm.sh("cat /proc/cmdline");
    assert!(
        cmdline.contains("init=/usr/local/sbin/testbed-init") && cmdline.contains("intel_iommu=on"),
        "{cmdline}"
    );
    // The root's own initramfs-tools initramfs brought `/` up (its banner), and the
    // userland is Debian's, not the host's.
    assert!(vm.console_log().contains("Loading, please wait..."));
    assert!(vm
        .sh("cat /etc/os-release")
        .contains("VERSION_CODENAME=bookworm"));
    assert_eq!(
        vm.sh("grep -E '^(MODULES|COMPRESS)=' /etc/initramfs-tools/initramfs.conf"),
        "MODULES=dep\nCOMPRESS=lz4\n"
    );

    for expected in layouts::DEVICES {
        let ids = vm.sh(&format!(
            "cd /sys/bus/pci/devices/{} && cat vendor device",
            expected.address
        ));
        let ids: Vec<&str> = ids.lines().map(|l| l.trim_start_matches("0x")).collect();
        assert_eq!(ids.join(":"), expected.id, "{}", expected.address);
        assert_eq!(
            bound_driver(&vm, expected.address).as_deref(),
            expected.driver,
            "driver of {}",
            expected.address
        );
    }
    assert_ne!(vm.sh("ls /sys/kernel/iommu_groups | wc -l").trim(), "0");

    // The init's watchdog works with the root's own tools too.
    let out = vm
        .run_with_timeout("sleep 60", Duration::from_secs(2))
        .expect("the guest answers");
    assert!(out.timed_out, "{out}");
    assert_eq!(vm.sh("echo alive"), "alive\n");

    let passthru = vm.install_passthru().expect("copy passthru into the guest");
    let out = vm
        .run(&format!("{passthru} list --json"))
        .expect("run passthru");
    assert!(out.success(), "{out}");
    let list: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("`passthru list --json` did not print JSON ({err}):\n{out}"));
    assert!(list.to_string().contains(layouts::EDU), "{list:#}");

    let took = vm.power_off(Duration::from_secs(60)).expect("power off");
    note(&format!("Debian VM powered off in {took:.1?}"));
    disk.fsck().expect("a clean file system after power-off");
}

/// Completes the command line `line` in bash as a user's shell does: bash-completion
/// (`/usr/share/bash-completion/bash_completion`, what `~/.bashrc` sources) finds the
/// script for `passthru` on demand (`__load_completion`, called by its loader on the
/// first Tab), and the completion function it registered is called the way bash calls
/// it. Prints what it offers, one per line; exit code 3 when bash-completion finds no
/// completion for `passthru`.
fn bash_complete_script(line: &str) -> String {
    format!(
        r#"bash --norc --noprofile <<'BASH'
set -e
. /usr/share/bash-completion/bash_completion
__load_completion passthru || {{ echo "bash-completion found no completion for passthru" >&2; exit 3; }}
spec=$(complete -p passthru)
echo "$spec" >&2
fn=${{spec#* -F }}
fn=${{fn%% *}}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
read -r -a COMP_WORDS <<< "$COMP_LINE"
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
"$fn" passthru "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
BASH"#
    )
}

/// Every file and directory below passthru's state and configuration directories, with
/// the checksum of each file: to show that removing the package leaves them alone.
const STATE_FINGERPRINT: &str = "for d in /var/lib/passthru /etc/passthru; do \
     [ -e $d ] && find $d -printf '%y %m %p\\n' && find $d -type f -exec sha256sum {} +; done | sort";

/// The Debian package, built by `packaging/build-deb` from the binary under test, in the
/// booted Debian root: `dpkg -i` installs it; the installed `/usr/bin/passthru` runs
/// `check`; `man passthru-enable` renders the packaged page; bash completes `passthru
/// en` to `enable` through bash-completion's own loader; `dpkg -r` removes the binary,
/// the completions and every page but leaves passthru's state and the VM specs alone;
/// `dpkg --purge` removes passthru's logs but keeps the journal of a setup still in
/// place and the VMs' files, and with neither left, `/var/lib/passthru` itself.
#[test]
fn debian_deb_installs_and_removes() {
    let test = "debian_deb_installs_and_removes";
    let Some(root) = testbed::debian::root_or_skip(test) else {
        return;
    };
    let Some(deb) = testbed::package::deb_or_skip(test) else {
        return;
    };
    note(&format!(
        "packaging/build-deb built {} in {:.1?}",
        deb.path.display(),
        deb.took
    ));
    let version = std::process::Command::new(passthru_bin())
        .arg("--version")
        .output()
        .expect("passthru --version");
    let version = String::from_utf8(version.stdout).unwrap();
    let number = version.split_whitespace().nth(1).unwrap().to_owned();

    let layout = Layout::IntelDesktop;
    let disk = root.disk("deb").expect("a copy of the Debian image");
    let args: Vec<String> = layout
        .kernel_args()
        .iter()
        .map(ToString::to_string)
        .collect();
    let vm = disk.boot_or_panic(disk.builder(layout, "debian-deb", &args).unwrap());
    let _logs = testbed::LogsOnFailure(&vm);
    note(&format!("Debian VM booted in {:.1?}", vm.boot_time()));
    let name = deb.path.file_name().unwrap().to_str().unwrap();
    let guest_deb = vm.copy_in(&deb.path, name).expect("copy the .deb in");
    // The pages the binary under test writes, to compare with the packaged ones.
    let pages = vm.shared_dir().join("pages");
    let out = std::process::Command::new(passthru_bin())
        .arg("man")
        .arg(&pages)
        .output()
        .expect("passthru man");
    assert!(out.status.success(), "{out:?}");
    let mut expected_pages: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| format!("{}.gz", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    expected_pages.sort();
    assert!(expected_pages.len() > 20, "{expected_pages:?}");

    assert_eq!(vm.sh("command -v passthru || echo none"), "none\n");

    // dpkg -i.
    let out = vm
        .run_with_timeout(&format!("dpkg -i {guest_deb}"), Duration::from_secs(300))
        .expect("run dpkg -i");
    assert!(
        out.success()
            && out
                .stdout
                .contains(&format!("Setting up passthru ({number})")),
        "{out}"
    );
    note(&format!("dpkg -i took {:.1?}", out.elapsed));
    assert_eq!(
        vm.sh("dpkg-query -W -f '${Status} ${Version}' passthru"),
        format!("install ok installed {number}")
    );
    let files: Vec<String> = vm
        .sh("dpkg -L passthru | while read -r f; do [ -f \"$f\" ] && echo \"$f\"; done; true")
        .lines()
        .map(str::to_owned)
        .collect();
    for expected in [
        "/usr/bin/passthru",
        "/usr/share/bash-completion/completions/passthru",
        "/usr/share/zsh/vendor-completions/_passthru",
        "/usr/share/fish/vendor_completions.d/passthru.fish",
        "/usr/share/doc/passthru/copyright",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected}: {files:?}");
    }
    let mut installed_pages: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("/usr/share/man/man1/"))
        .map(str::to_owned)
        .collect();
    installed_pages.sort();
    assert_eq!(installed_pages, expected_pages);
    // Each packaged page is, uncompressed, the page `passthru man` writes.
    vm.sh(
        "cd /tmp/testbed/pages && for p in *.1; do zcat /usr/share/man/man1/$p.gz | cmp - $p; done",
    );
    // clap's scripts, each where its shell looks for it.
    for (file, line) in [
        (
            "/usr/share/bash-completion/completions/passthru",
            "^_passthru() {$",
        ),
        (
            "/usr/share/fish/vendor_completions.d/passthru.fish",
            "^complete -c passthru ",
        ),
        (
            "/usr/share/zsh/vendor-completions/_passthru",
            "^#compdef passthru$",
        ),
    ] {
        vm.sh(&format!("grep -q '{line}' {file}"));
    }

    // The installed binary.
    assert_eq!(vm.sh("command -v passthru"), "/usr/bin/passthru\n");
    assert_eq!(vm.sh("passthru --version"), version);
    let out = vm.run("passthru check --json").expect("run passthru check");
    assert!(matches!(out.code, 0 | 1), "{out}");
    let check: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("`passthru check --json` did not print JSON ({err}):\n{out}"));
    assert_eq!(finding(&check, "iommu.kernel")["status"], "ok", "{check:#}");
    assert_eq!(
        finding(&check, "iommu.firmware")["status"],
        "ok",
        "{check:#}"
    );

    // man, as a reader runs it.
    let out = vm.run("MANWIDTH=80 man passthru-enable").expect("run man");
    assert!(out.success(), "{out}");
    for needle in [
        "passthru-enable - Make the passthrough setup persistent",
        "SYNOPSIS",
        "passthru enable",
        "--dry-run",
        "SEE ALSO",
        "passthru(1)",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} not in\n{out}");
    }
    assert_eq!(
        vm.sh("man -w passthru-vm-run"),
        "/usr/share/man/man1/passthru-vm-run.1.gz\n"
    );

    // bash completion, loaded by bash-completion from where the package put it.
    for (line, offered) in [("passthru en", "enable\n"), ("passthru vm ru", "run\n")] {
        let out = vm.run(&bash_complete_script(line)).expect("run bash");
        assert!(out.success(), "{out}");
        assert!(out.stderr.contains("-F _passthru"), "{out}");
        assert_eq!(out.stdout, offered, "{out}");
    }

    // passthru's state: a VM spec written by the installed passthru, and by hand what
    // a setup of `enable` (its journal and logs) and a VM's files leave.
    vm.sh("passthru vm new demo --disk none --no-network --display none >/dev/null");
    vm.sh(
        "test -f /etc/passthru/vms/demo.toml
         mkdir -p /var/lib/passthru/journal /var/lib/passthru/logs /var/lib/passthru/vms/demo
         echo '{\"entries\":[],\"created_dirs\":[],\"regenerate\":[]}' > /var/lib/passthru/journal/journal.json
         echo 'update-initramfs: Generating /boot/initrd.img' > /var/lib/passthru/logs/update-initramfs.log
         head -c 65536 /dev/urandom > /var/lib/passthru/vms/demo/disk.raw",
    );
    let state = vm.sh(STATE_FINGERPRINT);

    // dpkg -r: the package's files go, the state stays.
    let out = vm.run("dpkg -r passthru").expect("run dpkg -r");
    assert!(out.success(), "{out}");
    assert!(
        out.stderr.contains("`passthru undo`") && out.stderr.contains("stays in place"),
        "the note on the setup left in place: {out}"
    );
    let left = vm.sh(&format!(
        "for f in {}; do [ -e \"$f\" ] && echo \"$f\"; done; true",
        files.join(" ")
    ));
    assert_eq!(left, "", "files of the removed package");
    assert_eq!(
        vm.sh("dpkg-query -W -f '${Status}' passthru"),
        "deinstall ok config-files"
    );
    assert_eq!(vm.sh("command -v passthru || echo none"), "none\n");
    let out = vm.run("man -w passthru-enable").expect("run man");
    assert!(!out.success(), "{out}");
    let out = vm
        .run(&bash_complete_script("passthru en"))
        .expect("run bash");
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(vm.sh(STATE_FINGERPRINT), state, "dpkg -r changed the state");

    // dpkg --purge: the logs go; the journal of the setup and the VM's disk stay.
    let out = vm.run("dpkg --purge passthru").expect("run dpkg --purge");
    assert!(out.success(), "{out}");
    assert!(
        out.stderr.contains("keeping /var/lib/passthru/journal")
            && out.stderr.contains("keeping /var/lib/passthru/vms"),
        "{out}"
    );
    assert!(
        !vm.run("dpkg-query -W passthru").unwrap().success(),
        "passthru is still known to dpkg"
    );
    let expected: String = state
        .lines()
        .filter(|l| !l.contains("/var/lib/passthru/logs"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(vm.sh(STATE_FINGERPRINT), expected);

    // With the setup undone and the VM's files deleted, a purge leaves nothing of
    // passthru in /var/lib; the user's VM spec in /etc stays.
    vm.sh(&format!(
        "rm -r /var/lib/passthru/journal /var/lib/passthru/vms
         dpkg -i {guest_deb} >/dev/null
         mkdir -p /var/lib/passthru/logs && echo x > /var/lib/passthru/logs/x.log"
    ));
    let out = vm.run("dpkg --purge passthru").expect("run dpkg --purge");
    assert!(out.success() && !out.stderr.contains("keeping"), "{out}");
    assert_eq!(
        vm.sh("ls -d /var/lib/passthru 2>&1 || true"),
        "ls: cannot access '/var/lib/passthru': No such file or directory\n"
    );
    assert_eq!(vm.sh("ls /etc/passthru/vms"), "demo.toml\n");

    vm.power_off(Duration::from_secs(60)).expect("power off");
}

/// The template of the persistent-setup tests: configure the root inside the guest,
/// regenerate its initramfs and grub.cfg there, power off, and boot again with what the
/// guest generated — the kernel and initrd from the image's /boot and the arguments of
/// its grub.cfg. The configuration (vfio-pci in the initramfs with the edu device's ID,
/// the IOMMU on through GRUB) takes effect from boot, and the NIC keeps its driver.
#[test]
fn debian_regenerated_initramfs_and_grub_cfg_boot() {
    let Some(root) =
        testbed::debian::root_or_skip("debian_regenerated_initramfs_and_grub_cfg_boot")
    else {
        return;
    };
    let layout = Layout::IntelDesktop;
    let disk = root.disk("regen").expect("a copy of the Debian image");

    // First boot: as installed, no IOMMU argument.
    let vm = disk.boot_or_panic(disk.builder(layout, "debian-regen-1", &[]).unwrap());
    let logs = testbed::LogsOnFailure(&vm);
    note(&format!("Debian VM booted in {:.1?}", vm.boot_time()));
    // Debian's 6.1 kernel (CONFIG_INTEL_IOMMU_DEFAULT_ON_INTGPU_OFF=y) turns the Intel
    // IOMMU on without any argument: the groups are there already. What GRUB's
    // `iommu=pt` changes is the default domain type, which the kernel logs.
    assert!(
        vm.sh("dmesg")
            .contains("iommu: Default domain type: Translated"),
        "the first boot should translate DMA"
    );
    assert_eq!(bound_driver(&vm, layouts::EDU), None);
    vm.sh(
        "echo 'options vfio-pci ids=1234:11e8' > /etc/modprobe.d/vfio.conf
         echo vfio-pci >> /etc/initramfs-tools/modules
         echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=on iommu=pt\"' \
             > /etc/default/grub.d/testbed-iommu.cfg",
    );
    for command in ["update-initramfs -u -k all", "update-grub"] {
        let out = vm
            .run_with_timeout(command, Duration::from_secs(900))
            .expect("run in the guest");
        assert!(out.success(), "{out}");
        note(&format!(
            "`{command}` in the guest took {:.1?}",
            out.elapsed
        ));
    }
    let initramfs = vm.sh(&format!("lsinitramfs /boot/initrd.img-{}", root.release));
    assert!(initramfs.contains("vfio-pci.ko"), "{initramfs}");
    assert!(
        initramfs.contains("etc/modprobe.d/vfio.conf"),
        "{initramfs}"
    );
    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);
    disk.fsck().expect("a clean file system after power-off");

    // On the host: what the guest generated.
    let args = disk.grub_linux_args().expect("the guest's grub.cfg");
    assert!(
        args.iter().any(|a| a == "intel_iommu=on") && args.iter().any(|a| a == "iommu=pt"),
        "{args:?}"
    );
    assert_eq!(
        disk.read_file("/etc/modprobe.d/vfio.conf").unwrap(),
        "options vfio-pci ids=1234:11e8\n"
    );

    // Second boot: the regenerated initrd, GRUB's arguments and nothing else.
    let vm = disk.boot_or_panic(disk.builder(layout, "debian-regen-2", &args).unwrap());
    let _logs = testbed::LogsOnFailure(&vm);
    note(&format!("Debian VM booted again in {:.1?}", vm.boot_time()));
    let cmdline = vm.sh("cat /proc/cmdline");
    assert!(cmdline.contains("intel_iommu=on"), "{cmdline}");
    assert!(
        vm.sh("dmesg")
            .contains("iommu: Default domain type: Passthrough"),
        "GRUB's iommu=pt did not take effect"
    );
    assert_ne!(vm.sh("ls /sys/kernel/iommu_groups | wc -l").trim(), "0");
    assert_eq!(bound_driver(&vm, layouts::EDU).as_deref(), Some("vfio-pci"));
    assert_eq!(bound_driver(&vm, layouts::NIC).as_deref(), Some("e1000e"));
    vm.power_off(Duration::from_secs(60)).expect("power off");
}

/// The configuration `enable` may touch, as `sha256sum` lines (and directories), to
/// compare a root before `enable` and after `undo`.
const CONFIG_FINGERPRINT: &str = "for d in /etc/modprobe.d /etc/initramfs-tools /etc/default /etc/grub.d /usr/local /var/lib/passthru; do \
     [ -e $d ] && find $d -type d -printf 'dir %p\\n' && find $d -type f -exec sha256sum {} +; done | sort";

/// Boots `disk` with the kernel arguments of the `grub.cfg` its guest generated, after
/// checking that they carry passthru's `iommu=pt` (`enabled`) or not.
fn boot_from_grub_cfg(
    disk: &testbed::debian::DebianDisk,
    layout: Layout,
    name: &str,
    enabled: bool,
) -> TestVm {
    let args = disk.grub_linux_args().expect("the guest's grub.cfg");
    assert_eq!(
        args.iter().any(|a| a == "iommu=pt"),
        enabled,
        "{name}: {args:?}"
    );
    disk.boot_or_panic(disk.builder(layout, name, &args).unwrap())
}

/// The edu device driverless and the GPU-like pair on its host drivers: no VFIO binding.
fn assert_host_drivers(vm: &TestVm) {
    assert_eq!(bound_driver(vm, layouts::EDU), None);
    assert_eq!(bound_driver(vm, layouts::GPU).as_deref(), Some("bochs-drm"));
    assert_eq!(
        bound_driver(vm, layouts::GPU_AUDIO).as_deref(),
        Some("snd_hda_intel")
    );
}

/// Runs `passthru enable --yes DEVICES` in `vm` and asserts it had nothing to change.
fn enable_changes_nothing(vm: &TestVm, bin: &str, devices: &[&str]) {
    let again = vm
        .run_with_timeout(
            &format!("{bin} enable --yes {}", devices.join(" ")),
            Duration::from_secs(300),
        )
        .expect("run enable again");
    assert!(
        again.success() && again.stdout.contains("Nothing to change"),
        "{again}"
    );
}

/// Starts `passthru enable --yes DEVICES` in the background of `vm` and kills it with
/// `kill -9` three seconds after its `update-initramfs` started. Returns what the guest
/// printed: `orphan PID` for each `update-initramfs` left running, then the killed
/// run's own output.
fn kill_enable_during_update_initramfs(vm: &TestVm, bin: &str, devices: &str) -> Output {
    vm.run_with_timeout(
        &format!(
            "{bin} enable --yes {devices} >/tmp/killed-enable.log 2>&1 </dev/null &
             pid=$!
             i=0
             until grep -q update-initramfs /var/lib/passthru/logs/running.json 2>/dev/null; do
                 i=$((i + 1)); [ $i -lt 1200 ] || {{ echo 'update-initramfs never started'; cat /tmp/killed-enable.log; exit 1; }}
                 sleep 0.1
             done
             sleep 3
             kill -9 $pid
             sleep 1
             kill -0 $pid 2>/dev/null && {{ echo 'passthru survived kill -9'; exit 1; }}
             for p in /proc/[0-9]*; do grep -q 'update-initramf[s]' $p/cmdline 2>/dev/null && echo \"orphan ${{p#/proc/}}\"; done
             cat /tmp/killed-enable.log"
        ),
        Duration::from_secs(300),
    )
    .expect("run the killed enable")
}

/// The real proof of `passthru enable`: a Debian system configures itself with the real
/// `update-initramfs` and `update-grub`, boots with what they generated, and has the
/// devices on vfio-pci from boot; `undo` brings back every file and the normal drivers.
#[test]
fn debian_enable_verify_undo() {
    let Some(root) = testbed::debian::root_or_skip("debian_enable_verify_undo") else {
        return;
    };
    let layout = Layout::IntelDesktop;
    let disk = root.disk("enable").expect("a copy of the Debian image");
    let gpu_pair = [layouts::GPU, layouts::GPU_AUDIO];

    // Boot 1: as installed. Enable the edu device and the GPU-like pair. The display
    // function has the ids of the boot VGA (1234:1111), which stays with the host: it
    // must be bound by address.
    let vm = disk.boot_or_panic(disk.builder(layout, "debian-enable-1", &[]).unwrap());
    let logs = testbed::LogsOnFailure(&vm);
    let bin = vm.install_passthru().expect("copy passthru in");
    let original = vm.sh(CONFIG_FINGERPRINT);
    let original_boot = vm.sh("ls -A /boot");
    assert_eq!(
        bound_driver(&vm, layouts::GPU).as_deref(),
        Some("bochs-drm")
    );
    // The very first `enable`, killed with `kill -9` while its `update-initramfs`
    // runs: `undo` stops the orphan and removes every file the killed run created.
    let killed = kill_enable_during_update_initramfs(&vm, &bin, layouts::EDU);
    assert!(
        killed.success() && killed.stdout.contains("orphan "),
        "the kill should leave update-initramfs running:\n{killed}"
    );
    let out = vm
        .run_with_timeout(&format!("{bin} undo --yes"), Duration::from_secs(1200))
        .expect("run undo after the killed first enable");
    assert!(out.success(), "undo failed:\n{out}");
    assert_eq!(
        vm.sh(CONFIG_FINGERPRINT),
        original,
        "undo after the killed first enable left the configuration different"
    );
    assert_eq!(vm.sh("ls -A /boot"), original_boot);
    let out = vm
        .run_with_timeout(
            &format!("{bin} enable --yes {} {}", layouts::EDU, layouts::GPU),
            Duration::from_secs(1200),
        )
        .expect("run enable");
    assert!(out.success(), "enable failed:\n{out}");
    note(&format!(
        "`passthru enable` in the guest took {:.1?}",
        out.elapsed
    ));
    assert!(out.stdout.contains("update-initramfs -u -k all"), "{out}");
    let modprobe = vm.sh("cat /etc/modprobe.d/passthru-vfio.conf");
    assert!(
        modprobe.contains("options vfio-pci ids=1234:11e8,8086:293e"),
        "{modprobe}"
    );
    // The display function is claimed by address from a hook on its host driver's
    // module (bochs), which modprobe runs whenever bochs loads.
    assert!(
        modprobe
            .contains("install bochs /usr/local/sbin/passthru-vfio-override bochs $CMDLINE_OPTS"),
        "{modprobe}"
    );
    assert!(!modprobe.contains("install vfio-pci"), "{modprobe}");
    // kmod would ignore the hook of a module with a softdep: the hook loads vfio-pci.
    assert!(!modprobe.contains("softdep bochs"), "{modprobe}");
    assert!(
        modprobe.contains("softdep snd_hda_intel pre: vfio-pci"),
        "{modprobe}"
    );
    // Running it again changes nothing.
    enable_changes_nothing(&vm, &bin, &[layouts::EDU, layouts::GPU]);
    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);
    disk.fsck().expect("a clean file system after power-off");

    // Boot 2: with the kernel arguments of the grub.cfg the guest generated.
    let vm = boot_from_grub_cfg(&disk, layout, "debian-enable-2", true);
    let logs = testbed::LogsOnFailure(&vm);
    let bin = vm.install_passthru().expect("copy passthru in");
    assert_eq!(bound_driver(&vm, layouts::EDU).as_deref(), Some("vfio-pci"));
    for a in gpu_pair {
        assert_eq!(bound_driver(&vm, a).as_deref(), Some("vfio-pci"), "{a}");
    }
    assert_eq!(
        bound_driver(&vm, layouts::BOOT_VGA).as_deref(),
        Some("bochs-drm"),
        "the twin stays"
    );
    assert_eq!(bound_driver(&vm, layouts::NIC).as_deref(), Some("e1000e"));
    let verify = vm.run(&format!("{bin} verify")).expect("run verify");
    assert!(verify.success(), "verify failed:\n{verify}");
    assert!(
        verify
            .stdout
            .contains("Everything enable set up is in effect."),
        "{verify}"
    );
    // The hook claimed the display function by address.
    assert_eq!(
        vm.sh(&format!(
            "cat /sys/bus/pci/devices/{}/driver_override",
            layouts::GPU
        ))
        .trim(),
        "vfio-pci"
    );
    // With vfio-pci already registered when the host driver loads — as on kernels that
    // have it built in (Ubuntu), where modprobe.d cannot reach vfio-pci itself — the
    // hook on bochs still claims the display function first: real kmod runs it, and it
    // has the PCI core probe the device for vfio-pci.
    let reload = vm
        .run(&format!(
            "set -e
             echo {gpu} > /sys/bus/pci/drivers/vfio-pci/unbind
             echo > /sys/bus/pci/devices/{gpu}/driver_override
             echo {vga} > /sys/bus/pci/drivers/bochs-drm/unbind
             modprobe -r bochs
             test ! -e /sys/bus/pci/devices/{gpu}/driver
             modprobe bochs",
            gpu = layouts::GPU,
            vga = layouts::BOOT_VGA
        ))
        .expect("reload bochs");
    assert!(reload.success(), "{reload}");
    assert_eq!(
        bound_driver(&vm, layouts::GPU).as_deref(),
        Some("vfio-pci"),
        "the hook claims the display function"
    );
    assert_eq!(
        bound_driver(&vm, layouts::BOOT_VGA).as_deref(),
        Some("bochs-drm"),
        "the twin stays"
    );
    // vfio-pci now holds the devices from boot, hiding their host drivers: enabling
    // the same devices again still changes nothing.
    enable_changes_nothing(&vm, &bin, &[layouts::EDU, layouts::GPU]);

    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);

    // Boot R: the way back. The "(without VFIO)" entry carries no VFIO argument and
    // blacklists vfio-pci: every device stays with its host driver.
    let cfg = disk.read_file("/boot/grub/grub.cfg").expect("grub.cfg");
    let recovery = cfg
        .find("(without VFIO)")
        .and_then(|at| testbed::debian::linux_args_from_grub_cfg(&cfg[at..]))
        .expect("a \"(without VFIO)\" entry in grub.cfg");
    assert!(
        recovery.iter().any(|a| a == "module_blacklist=vfio_pci"),
        "{recovery:?}"
    );
    assert!(!recovery.iter().any(|a| a == "iommu=pt"), "{recovery:?}");
    let vm = disk.boot_or_panic(
        disk.builder(layout, "debian-enable-recovery", &recovery)
            .unwrap(),
    );
    let logs = testbed::LogsOnFailure(&vm);
    let bin = vm.install_passthru().expect("copy passthru in");
    assert_host_drivers(&vm);
    let verify = vm.run(&format!("{bin} verify")).expect("run verify");
    assert_eq!(verify.code, 1, "verify must see the binding off:\n{verify}");

    // A real `kill -9` in the middle of `enable`: enabling one more device (the USB
    // controller) in the background, killed while its `update-initramfs` runs. That
    // regenerator lives on, orphaned; `undo` must stop it, then restore every file.
    let killed = kill_enable_during_update_initramfs(&vm, &bin, layouts::XHCI);
    assert!(killed.success(), "{killed}");
    assert!(
        killed.stdout.contains("orphan ") && killed.stdout.contains("running `update-initramfs"),
        "the kill should leave update-initramfs running:\n{killed}"
    );
    assert_ne!(
        vm.sh(CONFIG_FINGERPRINT),
        original,
        "the killed enable had changed nothing"
    );

    // undo (from the way back): every file back, and the regenerators run again.
    let out = vm
        .run_with_timeout(&format!("{bin} undo --yes"), Duration::from_secs(1200))
        .expect("run undo");
    assert!(out.success(), "undo failed:\n{out}");
    note(&format!(
        "`passthru undo` in the guest took {:.1?}",
        out.elapsed
    ));
    assert!(
        out.stdout
            .contains("from an interrupted run is still running: stopping it")
            || out
                .stderr
                .contains("from an interrupted run is still running: stopping it"),
        "undo should have stopped the orphaned update-initramfs:\n{out}"
    );
    assert_eq!(
        vm.sh("for p in /proc/[0-9]*; do grep -qE '(update-initramf[s]|mkinitramf[s])' $p/cmdline 2>/dev/null && echo $p; done; true"),
        "",
        "a regenerator is still running after undo"
    );
    assert_eq!(
        vm.sh(CONFIG_FINGERPRINT),
        original,
        "undo left the configuration different"
    );
    assert_eq!(
        vm.sh("ls -A /boot"),
        original_boot,
        "undo left /boot different"
    );
    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);

    // Boot 3: the devices are back on their normal drivers.
    let vm = boot_from_grub_cfg(&disk, layout, "debian-enable-3", false);
    let _logs = testbed::LogsOnFailure(&vm);
    assert_host_drivers(&vm);
    vm.power_off(Duration::from_secs(60)).expect("power off");
}

/// What the dracut root's configuration looks like, for comparing before `enable` and
/// after `undo`.
const DRACUT_FINGERPRINT: &str = "for d in /etc/modprobe.d /etc/dracut.conf.d /etc/default /etc/grub.d /usr/local /var/lib/passthru; do \
     [ -e $d ] && find $d -type d -printf 'dir %p\\n' && find $d -type f -exec sha256sum {} +; done | sort";

/// `passthru enable` on a host whose initramfs is dracut's: a bookworm root with the
/// `dracut` package instead of initramfs-tools (host-only, lz4) enables the edu device
/// (by id) and the GPU-like pair (its display function by address, the boot VGA being
/// its twin) with the real `dracut`, boots with the grub.cfg's arguments and those
/// devices on vfio-pci from boot; `undo` restores the files and the next boot has them
/// back with their host drivers.
///
/// Measured here (2 cores shared with other TCG guests): building the dracut root once
/// 183 s (debootstrap 84 s, the first `dracut --no-hostonly` in the chroot 11 s);
/// the test itself 400 s — `enable` 160 s (host-only lz4 `dracut` plus `update-grub`
/// and `lsinitrd`), `undo` 120 s, three boots of about 25 s.
#[test]
fn debian_dracut_enable_verify_undo() {
    let Some(root) = testbed::debian::flavour_or_skip(
        testbed::debian::Flavour::Dracut,
        "debian_dracut_enable_verify_undo",
    ) else {
        return;
    };
    let layout = Layout::IntelDesktop;
    let disk = root.disk("dracut").expect("a copy of the Debian image");
    let image = format!("/boot/initrd.img-{}", root.release);

    // Boot 1: as installed.
    let vm = disk.boot_or_panic(disk.builder(layout, "debian-dracut-1", &[]).unwrap());
    let logs = testbed::LogsOnFailure(&vm);
    note(&format!(
        "Debian (dracut) VM booted in {:.1?}",
        vm.boot_time()
    ));
    assert!(
        vm.sh("command -v update-initramfs || echo none").trim() == "none"
            || vm
                .sh("dpkg -s initramfs-tools 2>&1 || true")
                .contains("not installed"),
        "the dracut root still has initramfs-tools"
    );
    let bin = vm.install_passthru().expect("copy passthru in");
    let original = vm.sh(DRACUT_FINGERPRINT);
    assert_eq!(bound_driver(&vm, layouts::EDU), None);
    // The edu device by id, and the display function of the GPU-like pair by address
    // (it has the ids of the boot VGA, which stays with the host).
    let out = vm
        .run_with_timeout(
            &format!("{bin} enable --yes {} {}", layouts::EDU, layouts::GPU),
            Duration::from_secs(1800),
        )
        .expect("run enable");
    assert!(out.success(), "enable failed:\n{out}");
    note(&format!(
        "`passthru enable` (dracut) in the guest took {:.1?}",
        out.elapsed
    ));
    assert!(out.stdout.contains("dracut -f"), "{out}");
    assert!(out.stdout.contains("lsinitrd"), "{out}");
    // What passthru's drop-in made dracut put into the image.
    let listing = vm.sh(&format!("lsinitrd {image}"));
    assert!(listing.contains("vfio-pci.ko"), "{listing}");
    assert!(listing.contains("vfio_iommu_type1.ko"), "{listing}");
    assert!(
        listing.contains("usr/local/sbin/passthru-vfio-override"),
        "{listing}"
    );
    let options = vm.sh(&format!(
        "lsinitrd -f etc/modprobe.d/passthru-vfio.conf {image}"
    ));
    assert!(
        options.contains("options vfio-pci ids=1234:11e8,8086:293e"),
        "{options}"
    );
    assert!(
        options.contains("install bochs /usr/local/sbin/passthru-vfio-override bochs"),
        "{options}"
    );
    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);
    disk.fsck().expect("a clean file system after power-off");

    // Boot 2: the regenerated image and the grub.cfg's arguments.
    let vm = boot_from_grub_cfg(&disk, layout, "debian-dracut-2", true);
    let logs = testbed::LogsOnFailure(&vm);
    let bin = vm.install_passthru().expect("copy passthru in");
    assert_eq!(bound_driver(&vm, layouts::EDU).as_deref(), Some("vfio-pci"));
    for a in [layouts::GPU, layouts::GPU_AUDIO] {
        assert_eq!(bound_driver(&vm, a).as_deref(), Some("vfio-pci"), "{a}");
    }
    assert_eq!(
        bound_driver(&vm, layouts::BOOT_VGA).as_deref(),
        Some("bochs-drm"),
        "the twin stays"
    );
    assert_eq!(bound_driver(&vm, layouts::NIC).as_deref(), Some("e1000e"));
    let verify = vm.run(&format!("{bin} verify")).expect("run verify");
    assert!(verify.success(), "verify failed:\n{verify}");

    let out = vm
        .run_with_timeout(&format!("{bin} undo --yes"), Duration::from_secs(1800))
        .expect("run undo");
    assert!(out.success(), "undo failed:\n{out}");
    note(&format!(
        "`passthru undo` (dracut) in the guest took {:.1?}",
        out.elapsed
    ));
    assert_eq!(
        vm.sh(DRACUT_FINGERPRINT),
        original,
        "undo left the configuration different"
    );
    vm.power_off(Duration::from_secs(60)).expect("power off");
    drop(logs);
    drop(vm);

    // Boot 3: the edu device is driverless again.
    let vm = boot_from_grub_cfg(&disk, layout, "debian-dracut-3", false);
    let _logs = testbed::LogsOnFailure(&vm);
    assert_host_drivers(&vm);
    vm.power_off(Duration::from_secs(60)).expect("power off");
}
