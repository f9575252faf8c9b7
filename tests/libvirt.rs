//! `vm define / start / stop` against a real libvirt, with a real install:
//!
//! 1. A tiny installer ISO is built (and cached under `target/testbed/libvirt/`, keyed
//!    by its inputs): `grub-mkrescue` with the testbed's Debian kernel and a busybox
//!    initramfs whose `/init` (`tests/libvirt/init.sh`), in stage `install`, writes a
//!    bootable disk onto `/dev/vda` — a GPT image with an EFI system partition holding
//!    `EFI/BOOT/BOOTX64.EFI`, a `grub-mkstandalone` image that embeds its grub.cfg,
//!    the kernel and an initramfs booting with `passthru.stage=disk` — plus a marker,
//!    and powers off.
//! 2. A spec (UEFI without Secure Boot, a TPM so swtpm runs too, no display, no
//!    network, one new 256 MiB qcow2 disk, the ISO) is defined with
//!    `passthru vm define --accel tcg` and started: the blank disk makes the ISO boot
//!    first. After the guest powers off, the marker is read back from the qcow2.
//! 3. `passthru vm start` again re-defines the domain: the disk now boots first, OVMF
//!    runs the installed GRUB, whose system checks the install marker and writes a
//!    second one.
//! 4. `vm stop` (ACPI, timing out), `vm stop --force` on a running domain, and the
//!    error for an unknown domain.
//!
//! libvirtd and virtlogd are started by the test when none runs (and stopped again);
//! the test needs root and is skipped (with "SKIPPED" on stderr) without root or
//! libvirt, unless `CI` is set, where that is a failure.

#![allow(unsafe_code)] // this test calls libc itself (geteuid, …), outside the crate
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "testbed/kernel.rs"]
#[allow(dead_code)]
mod kernel;

use kernel::{find_program, fnv1a, module_closure, testbed_dir};

const URI: &str = "qemu:///system";
const INIT: &str = include_str!("libvirt/init.sh");
/// Modules the installer and the installed system load to reach `/dev/vda`.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk"];
const INSTALL_DOMAIN: &str = "passthru-test-install";
const STOP_DOMAIN: &str = "passthru-test-stop";
/// The GPT type of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Skips (or, under CI, fails) the test.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "libvirt test cannot run: {why}"
    );
    eprintln!("SKIPPED libvirt test: {why}");
}

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// libvirtd and virtlogd as children of the test, when none ran before.
struct Daemons {
    children: Vec<Child>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

fn process_running(comm: &str) -> bool {
    fs::read_dir("/proc").is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
    })
}

/// A libvirt daemon answering on `qemu:///system`, or why there is none.
fn libvirt() -> Result<Daemons, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (libvirt's system daemon)".into());
    }
    for (prog, package) in [
        ("virsh", "libvirt-clients"),
        ("libvirtd", "libvirt-daemon-system"),
        ("virtlogd", "libvirt-daemon-system"),
        ("swtpm", "swtpm"),
        ("swtpm_setup", "swtpm-tools"),
        ("grub-mkrescue", "grub-common"),
        ("grub-mkstandalone", "grub-common"),
        ("xorriso", "xorriso"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("sfdisk", "fdisk"),
        ("qemu-img", "qemu-utils"),
    ] {
        if find_program(prog).is_none() {
            return Err(format!("`{prog}` is missing (install {package})"));
        }
    }
    if !Path::new("/usr/lib/grub/x86_64-efi").is_dir() {
        return Err("GRUB's x86_64-efi modules are missing (install grub-efi-amd64-bin)".into());
    }
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file() {
        return Err("OVMF is missing (install ovmf)".into());
    }
    let mut daemons = Daemons {
        children: Vec::new(),
    };
    if virsh(&["version"]).status.success() {
        return Ok(daemons);
    }
    let sbin = |p: &str| find_program(p).unwrap();
    if !process_running("virtlogd") {
        eprintln!("libvirt test: starting virtlogd");
        daemons.children.push(
            Command::new(sbin("virtlogd"))
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start virtlogd: {e}"))?,
        );
    }
    eprintln!("libvirt test: starting libvirtd");
    daemons.children.push(
        libvirtd_command(&sbin("libvirtd"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start libvirtd: {e}"))?,
    );
    let start = Instant::now();
    while !virsh(&["version"]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "libvirtd did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(daemons)
}

/// How to start libvirtd. Where `/dev/kvm` is root's alone (mode 0600, as on this
/// project's test machines), libvirt 9.0 never keeps its QEMU capabilities: the probe
/// runs QEMU as root and finds KVM, then the cache check asks whether the QEMU user
/// (libvirt-qemu) may open `/dev/kvm`, finds it may not, calls the cache stale and
/// probes again — for every lookup (its debug log: "KVM was enabled when probing
/// '/usr/bin/qemu-system-x86_64', but it is not available now"), which made each
/// `virsh define` take about a minute. Then libvirtd runs in a private mount
/// namespace where `/dev/kvm` is the same device node with mode 0660 and group `kvm`
/// (as Debian's udev rules make it), so both views agree. The host's own node is not
/// touched, and these tests run TCG guests only.
fn libvirtd_command(libvirtd: &Path) -> Command {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kvm = Path::new("/dev/kvm");
    let Ok(meta) = fs::metadata(kvm) else {
        return Command::new(libvirtd);
    };
    if !meta.file_type().is_char_device() || meta.mode() & 0o060 == 0o060 {
        return Command::new(libvirtd);
    }
    let dir = testbed_dir().join("libvirt");
    fs::create_dir_all(&dir).unwrap();
    let node = dir.join("kvm-node");
    let _ = fs::remove_file(&node);
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    run(Command::new("mknod").args(["-m", "0660"]).arg(&node).args([
        "c",
        &major.to_string(),
        &minor.to_string(),
    ]));
    run(Command::new("chgrp").arg("kvm").arg(&node));
    eprintln!(
        "libvirt test: libvirtd sees /dev/kvm as {} (mode 0660, group kvm)",
        node.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /dev/kvm && exec \"$1\"")
        .arg(&node)
        .arg(libvirtd);
    cmd
}

/// The installer ISO, built once per set of inputs, with the newer of the testbed's kernels
/// (the one closest to what users of QEMU 10 and libvirt 11 run).
fn installer_iso() -> Result<PathBuf, String> {
    let k = match kernel::prepare(kernel::GuestKernel::Backports) {
        Ok(k) => k,
        Err(kernel::PrepareError::Missing(why)) => return Err(why),
        Err(e) => panic!("the testbed kernel cannot be prepared: {e}"),
    };
    let tree = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|p| k.layer.join(p).join(&k.release))
        .find(|p| p.is_dir())
        .expect("module tree");
    let busybox = fs::read("/bin/busybox").unwrap();
    assert!(
        kernel::is_static_elf(&busybox),
        "/bin/busybox must be static (busybox-static)"
    );
    let grub = run(Command::new("grub-mkstandalone").arg("--version"));
    let hash = fnv1a(&[
        INIT.as_bytes(),
        k.release.as_bytes(),
        MODULES.join(",").as_bytes(),
        grub.as_bytes(),
        &busybox,
        b"v1",
    ]);
    let dir = testbed_dir().join("libvirt");
    fs::create_dir_all(&dir).unwrap();
    let iso = dir.join(format!("installer-{hash:016x}.iso"));
    let _lock = kernel::lock(&dir.join("build.lock")).ok();
    if iso.is_file() {
        return Ok(iso);
    }
    let t = Instant::now();
    let work = dir.join(format!("build-{hash:016x}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();

    // The initramfs of the installed system: busybox, init, virtio modules.
    let staging = work.join("initramfs");
    for d in ["bin", "dev", "proc", "sys"] {
        fs::create_dir_all(staging.join(d)).unwrap();
    }
    fs::write(staging.join("bin/busybox"), &busybox).unwrap();
    fs::write(staging.join("init"), INIT).unwrap();
    for f in ["bin/busybox", "init"] {
        fs::set_permissions(staging.join(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let builtin = fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let dep = fs::read_to_string(tree.join("modules.dep")).unwrap();
    let staged_tree = staging.join("lib/modules").join(&k.release);
    for module in module_closure(&dep, &builtin, MODULES).unwrap() {
        kernel::copy_module(Path::new("/bin/busybox"), &tree, &staged_tree, &module).unwrap();
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if tree.join(f).is_file() {
            fs::copy(tree.join(f), staged_tree.join(f)).unwrap();
        }
    }
    run(Command::new(find_program("depmod").unwrap())
        .arg("-b")
        .arg(&staging)
        .arg(&k.release));
    let disk_cpio = work.join("disk.cpio");
    cpio(&staging, &disk_cpio);

    // The installed system's boot loader: GRUB with grub.cfg, kernel and initramfs
    // in its memdisk, at the removable-media path OVMF boots without NVRAM entries.
    let cfg = work.join("disk-grub.cfg");
    fs::write(
        &cfg,
        "set timeout=0\nlinux /vmlinuz console=ttyS0 panic=0 passthru.stage=disk\ninitrd /initrd.cpio\nboot\n",
    )
    .unwrap();
    let efi = work.join("BOOTX64.EFI");
    run(Command::new("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "--locales=", "--fonts=", "--themes="])
        .arg("-o")
        .arg(&efi)
        .arg(format!("boot/grub/grub.cfg={}", cfg.display()))
        .arg(format!("vmlinuz={}", k.vmlinuz.display()))
        .arg(format!("initrd.cpio={}", disk_cpio.display())));

    // The EFI system partition and the GPT disk around it.
    let esp_mib = fs::metadata(&efi).unwrap().len() / (1 << 20) + 4;
    let esp = work.join("esp.img");
    run(Command::new(find_program("mkfs.vfat").unwrap())
        .arg("-C")
        .arg(&esp)
        .arg((esp_mib * 1024).to_string()));
    let img = |p: &Path| format!("{}", p.display());
    run(Command::new("mmd").args(["-i", &img(&esp), "::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy")
        .args(["-i", &img(&esp)])
        .arg(&efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI"));
    let disk = work.join("disk.img");
    let f = fs::File::create(&disk).unwrap();
    f.set_len((esp_mib + 2) << 20).unwrap();
    drop(f);
    let mut sfdisk = Command::new(find_program("sfdisk").unwrap())
        .arg("--quiet")
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        sfdisk.stdin.as_mut().unwrap(),
        format!(
            "label: gpt\nstart=2048, size={}, type={ESP_TYPE}, name=\"EFI system partition\"\n",
            esp_mib * 2048
        )
        .as_bytes(),
    )
    .unwrap();
    drop(sfdisk.stdin.take());
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    run(Command::new("dd")
        .arg(format!("if={}", esp.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));

    // The installer's initramfs: the same plus the disk image to write.
    let gz = fs::File::create(staging.join("disk.img.gz")).unwrap();
    let status = Command::new("gzip")
        .args(["-c", "-1"])
        .arg(&disk)
        .stdout(gz)
        .status()
        .unwrap();
    assert!(status.success());
    let isodir = work.join("iso");
    fs::create_dir_all(isodir.join("boot/grub")).unwrap();
    cpio(&staging, &isodir.join("install.cpio"));
    fs::copy(&k.vmlinuz, isodir.join("vmlinuz")).unwrap();
    fs::write(
        isodir.join("boot/grub/grub.cfg"),
        "set timeout=0\nset default=0\nmenuentry \"passthru test installer\" {\n  linux /vmlinuz console=ttyS0 panic=0 passthru.stage=install\n  initrd /install.cpio\n}\n",
    )
    .unwrap();
    let tmp = iso.with_extension("iso.tmp");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&tmp)
        .arg(&isodir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-mkrescue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&tmp, &iso).unwrap();
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "libvirt test: built {} ({} MiB) in {:.1} s",
        iso.display(),
        fs::metadata(&iso).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    Ok(iso)
}

fn cpio(staging: &Path, out: &Path) {
    let file = fs::File::create(out).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet")
        .current_dir(staging)
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
}

/// The test's VM directories (reachable by libvirt's QEMU user), its domains
/// undefined at the end.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        // /var/tmp, not the checkout: QEMU runs as libvirt-qemu and must reach the
        // files, and a checkout under /root is not reachable.
        let dir = tempfile::Builder::new()
            .prefix("passthru-libvirt-")
            .tempdir_in("/var/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["specs", "state"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let env = Self { dir };
        env.cleanup();
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn passthru(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_passthru"))
            .args(args)
            .env("PASSTHRU_VM_DIR", self.path("specs"))
            .env("PASSTHRU_VM_STATE_DIR", self.path("state"))
            .env_remove("LIBVIRT_DEFAULT_URI")
            .env_remove("PASSTHRU_ROOT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!("libvirt test: passthru {} → {}", args.join(" "), out.status);
        out
    }

    fn passthru_ok(&self, args: &[&str]) -> String {
        let out = self.passthru(args);
        assert!(
            out.status.success(),
            "passthru {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cleanup(&self) {
        for name in [INSTALL_DOMAIN, STOP_DOMAIN] {
            let _ = virsh(&["destroy", name]);
            if !virsh(&["undefine", "--nvram", "--tpm", name])
                .status
                .success()
            {
                let _ = virsh(&["undefine", "--nvram", name]);
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Copies what the guest prints on its serial console (the pty libvirt made) into a
/// buffer, for the failure message.
fn console_log(name: &str) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let out = virsh(&["ttyconsole", name]);
    let pty = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if pty.is_empty() {
        return log;
    }
    let _ = Command::new("stty")
        .args(["-F", &pty, "raw", "-echo"])
        .status();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let Ok(mut f) = fs::File::open(&pty) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

fn state(name: &str) -> String {
    String::from_utf8_lossy(&virsh(&["domstate", name]).stdout)
        .trim()
        .to_string()
}

/// Waits until the domain is shut off, logging progress.
fn wait_shut_off(name: &str, timeout: Duration, console: &Arc<Mutex<String>>) -> Duration {
    let start = Instant::now();
    let mut next_log = Duration::from_secs(20);
    loop {
        let s = state(name);
        if s == "shut off" {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let _ = virsh(&["destroy", name]);
            panic!(
                "{name} still '{s}' after {} s; its console:\n{}",
                timeout.as_secs(),
                console.lock().unwrap()
            );
        }
        if start.elapsed() > next_log {
            let c = console.lock().unwrap();
            let last = c.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            eprintln!(
                "libvirt test: {name} {s} for {} s; console: {last}",
                start.elapsed().as_secs()
            );
            next_log += Duration::from_secs(20);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads `len` bytes at `mib` MiB of a qcow2 image.
fn read_disk(image: &Path, mib: u64, out: &Path) -> Vec<u8> {
    let _ = fs::remove_file(out);
    run(Command::new("qemu-img")
        .args(["dd", "-f", "qcow2", "-O", "raw", "bs=1M"])
        .arg(format!("skip={mib}"))
        .arg(format!("count={}", mib + 1))
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.display())));
    let mut bytes = fs::read(out).unwrap();
    bytes.truncate(64);
    bytes
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn installs_from_the_iso_then_boots_from_the_disk_under_libvirt() {
    let daemons = match libvirt() {
        Ok(d) => d,
        Err(why) => return skip(&why),
    };
    let total = Instant::now();
    let iso_cached = match installer_iso() {
        Ok(iso) => iso,
        Err(why) => return skip(&why),
    };
    let env = Env::new();
    let iso = env.path("installer.iso");
    fs::copy(&iso_cached, &iso).unwrap();
    let disk = env.path("state/install.qcow2");
    fs::write(
        env.path(&format!("specs/{INSTALL_DOMAIN}.toml")),
        format!(
            "name = \"{INSTALL_DOMAIN}\"\nmemory = \"512M\"\ncpus = 1\ndisplay = \"none\"\nnetwork = \"none\"\nisos = [\"{}\"]\n\n[[disks]]\npath = \"{}\"\nsize = \"256M\"\n\n[firmware]\nuefi = true\nsecure_boot = false\ntpm = true\n",
            iso.display(),
            disk.display()
        ),
    )
    .unwrap();

    // An unknown domain: the error names the remedy.
    let out = env.passthru(&["vm", "start", "passthru-test-nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("no VM named passthru-test-nosuch")
            && err.contains("passthru vm define passthru-test-nosuch"),
        "{err}"
    );

    // Define: the disk is created, blank, so the ISO boots first.
    let t = Instant::now();
    let defined =
        json(&env.passthru_ok(&["vm", "define", INSTALL_DOMAIN, "--accel", "tcg", "--json"]));
    assert_eq!(defined["first_boot"], "cdrom", "{defined}");
    assert_eq!(defined["updated"], false, "{defined}");
    assert_eq!(defined["disks_created"][0], disk.display().to_string());
    let xml = String::from_utf8_lossy(&virsh(&["dumpxml", "--inactive", INSTALL_DOMAIN]).stdout)
        .into_owned();
    assert!(xml.contains("<domain type='qemu'>"), "{xml}");
    assert!(
        xml.contains("<backend type='emulator' version='2.0'"),
        "{xml}"
    );
    let uuid = String::from_utf8_lossy(&virsh(&["domuuid", INSTALL_DOMAIN]).stdout)
        .trim()
        .to_string();
    // Defining again updates the domain, keeping its UUID.
    let again =
        json(&env.passthru_ok(&["vm", "define", INSTALL_DOMAIN, "--accel", "tcg", "--json"]));
    assert_eq!(again["updated"], true, "{again}");
    assert_eq!(
        String::from_utf8_lossy(&virsh(&["domuuid", INSTALL_DOMAIN]).stdout).trim(),
        uuid
    );
    eprintln!(
        "libvirt test: defined twice in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Install: start (re-defines from the spec, TCG kept), wait for the power-off.
    let t = Instant::now();
    let started = json(&env.passthru_ok(&["vm", "start", INSTALL_DOMAIN, "--json"]));
    assert_eq!(started["defined"]["first_boot"], "cdrom", "{started}");
    assert_eq!(started["defined"]["accel"], "tcg", "{started}");
    let console = console_log(INSTALL_DOMAIN);
    assert!(
        process_running("swtpm"),
        "libvirt started no swtpm for the TPM"
    );
    let took = wait_shut_off(INSTALL_DOMAIN, Duration::from_secs(600), &console);
    eprintln!(
        "libvirt test: install boot took {:.1} s (start {:.1} s)",
        took.as_secs_f64(),
        t.elapsed().as_secs_f64() - took.as_secs_f64()
    );
    let marker = read_disk(&disk, 200, &env.path("marker"));
    assert!(
        marker.starts_with(b"PASSTHRU-INSTALLED"),
        "no install marker on the disk ({:?}); console:\n{}",
        String::from_utf8_lossy(&marker),
        console.lock().unwrap()
    );

    // Boot the installed system: the disk is no longer blank, so it boots first.
    let t = Instant::now();
    let started = json(&env.passthru_ok(&["vm", "start", INSTALL_DOMAIN, "--json"]));
    assert_eq!(started["defined"]["first_boot"], "disk", "{started}");
    assert_eq!(started["defined"]["updated"], true, "{started}");
    let console = console_log(INSTALL_DOMAIN);
    let took = wait_shut_off(INSTALL_DOMAIN, Duration::from_secs(600), &console);
    eprintln!(
        "libvirt test: boot from disk took {:.1} s (start {:.1} s)",
        took.as_secs_f64(),
        t.elapsed().as_secs_f64() - took.as_secs_f64()
    );
    let marker = read_disk(&disk, 201, &env.path("marker"));
    assert!(
        marker.starts_with(b"PASSTHRU-BOOTED-FROM-DISK"),
        "the installed system did not boot from the disk ({:?}); console:\n{}",
        String::from_utf8_lossy(&marker),
        console.lock().unwrap()
    );

    // A Windows-style VM (Secure Boot with Microsoft's keys enrolled, a TPM, an
    // installer and a driver ISO — here two data-only ISOs): libvirt and QEMU accept
    // it, and with nothing bootable it stays in the firmware, which ignores the ACPI
    // shutdown request; --force ends it.
    let t = Instant::now();
    let data = env.path("isodata");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("README.TXT"), "not bootable\n").unwrap();
    for iso in ["win-installer.iso", "virtio-win.iso"] {
        run(Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(env.path(iso))
            .arg(&data));
    }
    fs::write(
        env.path(&format!("specs/{STOP_DOMAIN}.toml")),
        format!(
            "name = \"{STOP_DOMAIN}\"\nmemory = \"256M\"\ncpus = 1\nos = \"windows\"\ndisplay = \"none\"\nnetwork = \"none\"\nisos = [\"{}\", \"{}\"]\n\n[[disks]]\npath = \"{}\"\nsize = \"16M\"\n\n[firmware]\nsecure_boot = true\ntpm = true\n",
            env.path("win-installer.iso").display(),
            env.path("virtio-win.iso").display(),
            env.path("state/stop.qcow2").display()
        ),
    )
    .unwrap();
    env.passthru_ok(&["vm", "define", STOP_DOMAIN, "--accel", "tcg"]);
    let xml = String::from_utf8_lossy(&virsh(&["dumpxml", "--inactive", STOP_DOMAIN]).stdout)
        .into_owned();
    assert!(
        xml.contains("secure='yes'") && xml.contains("<smm state='on'/>"),
        "{xml}"
    );
    assert_eq!(xml.matches("device='cdrom'").count(), 2, "{xml}");
    assert!(
        xml.contains("virtio-win.iso") && xml.contains("<tpm model='tpm-crb'>"),
        "{xml}"
    );
    env.passthru_ok(&["vm", "start", STOP_DOMAIN]);
    assert_eq!(state(STOP_DOMAIN), "running");
    let out = env.passthru_ok(&["vm", "start", STOP_DOMAIN]);
    assert!(out.contains("already running"), "{out}");
    let out = env.passthru(&["vm", "stop", STOP_DOMAIN, "--timeout", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    let stopped = json(&env.passthru_ok(&["vm", "stop", STOP_DOMAIN, "--force", "--json"]));
    assert_eq!(stopped["action"], "destroy", "{stopped}");
    assert_eq!(stopped["state"], "shut off", "{stopped}");
    assert_eq!(state(STOP_DOMAIN), "shut off");
    eprintln!(
        "libvirt test: stop checks took {:.1} s",
        t.elapsed().as_secs_f64()
    );

    drop(env);
    for name in [INSTALL_DOMAIN, STOP_DOMAIN] {
        assert!(
            !virsh(&["domstate", name]).status.success(),
            "{name} is still defined"
        );
    }
    drop(daemons);
    eprintln!("libvirt test: total {:.1} s", total.elapsed().as_secs_f64());
}
