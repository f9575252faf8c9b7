//! `--root` trees that fight back: links that lead out of the tree, FIFOs and device
//! nodes where files should be, and a `passthru report` written among planted links.
//! passthru reads such a tree as root, so it must read nothing outside it, never block
//! or read without end, and never write through a link.
//!
//! Every command runs under a time limit and an address-space limit, so that a
//! regression fails the test instead of hanging it or eating the machine's memory.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::fs::File;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Fixture;

/// What one run of the binary left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs passthru with `args` and `envs`, at most `LIMIT` long and with at most 2 GiB
/// of address space (`ulimit -v`); a run that exceeds the time is killed and fails
/// the test.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Run {
    const LIMIT: Duration = Duration::from_secs(30);
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -v 2097152 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_passthru"))
        .args(args)
        .env_remove("PASSTHRU_ROOT")
        .env_remove("PASSTHRU_PCI_IDS")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "passthru {args:?} did not finish within {LIMIT:?}; stderr so far:\n{}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&std::fs::read(&o).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&e).unwrap()).into_owned(),
    }
}

/// `passthru <args> --json --root <root>`.
fn run_on(root: &Path, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--json", "--root", root.to_str().unwrap()]);
    run(&all, &[])
}

/// A secret on this machine, outside every fixture root: a file in `/etc` (for
/// absolute links) and a directory elsewhere with a file and a subdirectory (for
/// `../` links). Each holds a unique marker, shaped like a kernel argument and a
/// grub setting so that any command that reads it would show it. Removed on drop.
struct Secret {
    marker: String,
    etc_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Secret {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let id = format!("{}_{nanos}", std::process::id());
        // Only the files hold the marker: their names may show in link targets,
        // which are the tree's own content.
        let marker = format!("hunter2_{id}");
        let content = format!(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet {marker}=1\"\noptions vfio-pci ids={marker}\n"
        );
        let etc_file = PathBuf::from(format!("/etc/passthru-test-secret-{id}"));
        std::fs::write(&etc_file, &content).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), &content).unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/secret.conf"), &content).unwrap();
        Self {
            marker,
            etc_file,
            dir,
        }
    }

    /// A relative link target from `link` (inside `root`) that climbs out of the
    /// root with `../` and down to `rel` in the secret directory.
    fn climbing(&self, root: &Path, link: &str, rel: &str) -> String {
        let depth = root.join(link).components().count();
        let outside = self.dir.path().join(rel);
        format!(
            "{}{}",
            "../".repeat(depth + 2),
            outside.strip_prefix("/").unwrap().display()
        )
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.etc_file);
    }
}

/// Replaces whatever is at `rel` in `root` with a symlink to `target`.
fn plant_link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).unwrap(),
        Ok(_) => std::fs::remove_file(&p).unwrap(),
        Err(_) => {}
    }
    symlink(target, &p).unwrap();
}

/// Everything in a `.tar.gz`, decompressed (names and contents).
fn archive_bytes(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn links_out_of_the_root_read_nothing_outside_it() {
    let secret = Secret::new();
    let f = Fixture::new("debian-grub");
    let root = f.root();
    enable_files(root, "01:00.0");
    // Absolute links: inside the root they mean <root>/etc/<marker>, which holds a
    // harmless command line, so the link is seen to work relative to the root.
    let abs = secret.etc_file.to_str().unwrap().to_string();
    f.write(
        abs.trim_start_matches('/'),
        "BOOT_IMAGE=/vmlinuz-6.1.0-13-amd64 root=/dev/sda2 ro quiet intel_iommu=on iommu=pt\n",
    );
    plant_link(root, "proc/cmdline", &abs);
    plant_link(root, "dev/kmsg", &abs);
    // Relative links that climb out: inside the root they end in nothing.
    for (link, target) in [
        ("etc/default/grub", "secret"),
        ("etc/os-release", "secret"),
        ("etc/initramfs-tools/modules", "secret"),
        ("proc/cpuinfo", "secret"),
        ("etc/modprobe.d", "conf.d"),
        ("etc/default/grub.d", "conf.d"),
    ] {
        plant_link(root, link, &secret.climbing(root, link, target));
    }
    // The kernel's own kind of links, made absolute and roundabout: they must keep
    // working, resolved inside the root.
    plant_link(
        root,
        "sys/bus/pci/devices/0000:01:00.0",
        "/sys/devices/pci0000:00/0000:00:01.0/../0000:00:01.0/0000:01:00.0",
    );
    plant_link(
        root,
        "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/iommu_group",
        "/../../../sys/kernel/iommu_groups/1",
    );

    let report = tempfile::tempdir().unwrap();
    let archive = report.path().join("r.tar.gz");
    let runs = [
        ("check", run_on(root, &["check"])),
        ("list", run_on(root, &["list"])),
        (
            "report",
            run_on(root, &["report", "-o", archive.to_str().unwrap()]),
        ),
        ("enable", run_on(root, &["enable", "01:00.0", "--dry-run"])),
        ("verify", run_on(root, &["verify"])),
    ];
    for (name, r) in &runs {
        assert!(
            !r.stdout.contains(&secret.marker) && !r.stderr.contains(&secret.marker),
            "{name} read a file outside the root:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        assert_ne!(r.code, 2, "{name} failed: {}", r.stderr);
    }
    assert!(
        !contains(&archive_bytes(&archive), &secret.marker),
        "the report archived a file outside the root"
    );

    // The links inside the tree worked, relative to the root.
    let list: serde_json::Value = serde_json::from_str(&runs[1].1.stdout).unwrap();
    let gpu = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["devices"].as_array().unwrap())
        .find(|d| d["address"] == "0000:01:00.0")
        .unwrap_or_else(|| panic!("no 01:00.0 in {list:#}"));
    assert_eq!(gpu["iommu_group"], 1, "{gpu:#}");
    let check: serde_json::Value = serde_json::from_str(&runs[0].1.stdout).unwrap();
    let cmdline = check["kernel_cmdline"].to_string() + &check.to_string();
    assert!(cmdline.contains("intel_iommu=on"), "{check:#}");
}

/// Writes the files of `passthru enable <device>` into the tree (the commands are not
/// run), so that `verify` has a setup to compare with.
fn enable_files(root: &Path, device: &str) {
    let host = passthru::host::root::HostRoot::new(root);
    let snapshot = passthru::host::snapshot::HostSnapshot::gather(
        &host,
        passthru::host::snapshot::Needs::ENABLE,
    )
    .unwrap();
    let request = passthru::plan::enable::EnableRequest {
        named: vec![device.parse().unwrap()],
        overrides: passthru::plan::bind::Overrides::default(),
    };
    let plan = passthru::plan::enable::plan(&snapshot, &request).unwrap();
    passthru::apply::Applier::new(
        host,
        Duration::from_secs(10),
        env!("CARGO_BIN_EXE_passthru").into(),
    )
    .apply_files(&plan)
    .unwrap();
}

/// Makes a FIFO at `rel` (replacing what is there).
fn plant_fifo(root: &Path, rel: &str) {
    let p = root.join(rel);
    let _ = std::fs::remove_file(&p);
    let st = Command::new("mkfifo").arg(&p).status().unwrap();
    assert!(st.success());
}

/// Makes a character device like `/dev/zero` (1:5) at `rel`; false when this
/// machine does not allow it (not root).
fn plant_zero(root: &Path, rel: &str) -> bool {
    let p = root.join(rel);
    let _ = std::fs::remove_file(&p);
    Command::new("mknod")
        .arg(&p)
        .args(["c", "1", "5"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn fifos_and_devices_in_the_tree_neither_hang_nor_eat_memory() {
    let f = Fixture::new("intel-desktop");
    let root = f.root();
    plant_fifo(root, "proc/cpuinfo");
    plant_fifo(root, "proc/sys/kernel/osrelease");
    let nodes = plant_zero(root, "proc/cmdline") && plant_zero(root, "dev/kmsg");
    if !nodes {
        plant_fifo(root, "proc/cmdline");
        plant_fifo(root, "dev/kmsg");
    }
    // A link to the machine's own /dev/zero: in the root that is <root>/dev/zero.
    plant_link(root, "boot/config-6.1.0-13-amd64", "/dev/zero");
    plant_link(root, "proc/config.gz", "../../../../../../../../dev/zero");

    let check = run_on(root, &["check"]);
    assert_ne!(check.code, 2, "{}\n{}", check.stdout, check.stderr);
    let doc: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    // What cannot be read is unknown, and the evidence says why.
    let kind = if nodes { "character device" } else { "FIFO" };
    for (path, why) in [
        ("proc/cpuinfo", "FIFO"),
        ("proc/cmdline", kind),
        ("dev/kmsg", kind),
    ] {
        let found = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["evidence"].to_string().contains(path))
            .unwrap_or_else(|| panic!("no finding names {path}: {doc:#}"));
        assert_eq!(found["status"], "unknown", "{found:#}");
        assert!(found["evidence"].to_string().contains(why), "{found:#}");
    }

    let list = run_on(root, &["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);

    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("r.tar.gz");
    let report = run_on(root, &["report", "-o", archive.to_str().unwrap()]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    assert!(archive_bytes(&archive).len() < 16 << 20);
}

#[test]
fn a_fifo_as_a_device_attribute_fails_fast_and_names_the_file() {
    let f = Fixture::new("intel-desktop");
    let root = f.root();
    plant_fifo(root, "sys/devices/pci0000:00/0000:00:14.2/vendor");
    for args in [&["list"][..], &["report", "-o", "/dev/null/x"][..]] {
        let r = run_on(root, args);
        assert_eq!(r.code, 2, "{args:?}: {}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("0000:00:14.2/vendor"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let check = run_on(root, &["check"]);
    assert_ne!(check.code, 2, "{}", check.stderr);
}

#[test]
fn a_pci_ids_file_that_is_not_a_file_is_not_read() {
    let f = Fixture::new("intel-desktop");
    let fifo = tempfile::tempdir().unwrap();
    let fifo = fifo.path().join("pci.ids");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let root = f.root().to_str().unwrap();
    for ids in ["/dev/zero", fifo.to_str().unwrap()] {
        let r = run(
            &["list", "--json", "--root", root],
            &[("PASSTHRU_PCI_IDS", ids)],
        );
        assert_eq!(r.code, 0, "PASSTHRU_PCI_IDS={ids}: {}", r.stderr);
        // The embedded database names the devices instead.
        assert!(r.stdout.contains("GeForce RTX 3070"), "{}", r.stdout);
    }
}

#[test]
fn report_writes_through_no_planted_link_and_is_private() {
    let f = Fixture::new("intel-desktop");
    let out = tempfile::tempdir().unwrap();
    let victim = out.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let archive = out.path().join("r.tar.gz");
    // The old fixed temporary name, and the final name, both links to the victim.
    symlink(&victim, out.path().join(".r.tar.gz.partial")).unwrap();
    symlink(&victim, &archive).unwrap();
    let r = run_on(f.root(), &["report", "-o", archive.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&archive).unwrap();
    assert!(meta.is_file(), "the archive replaced the link");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!archive_bytes(&archive).is_empty());
    // Nothing is left beside it but the planted link and the victim.
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".r.tar.gz.partial", "r.tar.gz", "victim"]);
}
