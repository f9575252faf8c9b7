//! `enable` and `undo` for real in a chroot of the Debian root, killed at random
//! points: much faster than booting it, and the real `update-initramfs` and
//! `update-grub` (`grub-mkconfig`) run.
//!
//! A [`Chroot`] is a writable copy of the prepared image ([`super::debian`]), mounted
//! in a mount namespace of its own (`unshare -m`, kept alive by a `sleep`), with the
//! host's `/proc` and `/dev`, the `sys` tree of the `debian-grub` fixture as its
//! `/sys` (an NVIDIA GPU at 01:00.0 to plan for), a fresh tmpfs on `/run` (the host
//! lock) and the freshly built `passthru` in `/usr/local/bin`. Commands enter it with
//! `nsenter` and `chroot`; its files are read from the test through
//! `/proc/<holder>/root`. What the tools need there:
//!
//! - `grub-probe` must find the device of `/`: the image is a loop device whose
//!   backing file is outside the chroot, which `grub-mkconfig` would follow for a
//!   device named `/dev/loop[0-9]`; a second loop device on top of the first (its
//!   backing file is then a `/dev/` path) is taken as the disk itself;
//! - passthru reads the kernel release from `/proc/sys/kernel/osrelease` and the
//!   command line from `/proc/cmdline`: both (and `/proc/config.gz`, if the host has
//!   one) are bind-mounted with the root's own kernel's values;
//! - `MODULES=dep` needs the real sysfs of a booted machine, `MODULES=most` takes
//!   long: the copy's `initramfs.conf` says `MODULES=list` (what
//!   `/etc/initramfs-tools/modules` names, passthru's `vfio_pci` among it), so an
//!   `update-initramfs -u -k all` takes a few seconds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::debian::DebianRoot;

/// The setup script, run by `unshare -m`: `M IMG SYS STAGE RELEASE`.
const SETUP: &str = r#"set -e
M=$1 IMG=$2 SYS=$3 STAGE=$4 REL=$5
L0=$(losetup -f --show "$IMG")
L=$(losetup -f --show "$L0")
mount "$L" "$M"
# Detached now, cleared by the kernel when the namespace (and its mount) goes.
losetup -d "$L" "$L0"
mount --bind /proc "$M/proc"
mount --bind /dev "$M/dev"
mount --bind "$SYS" "$M/sys"
mount -t tmpfs -o mode=0755 tmpfs "$M/run"
echo "$REL" > "$STAGE/osrelease"
echo "BOOT_IMAGE=/boot/vmlinuz-$REL root=$L ro quiet" > "$STAGE/cmdline"
mount --bind "$STAGE/osrelease" "$M/proc/sys/kernel/osrelease"
mount --bind "$STAGE/cmdline" "$M/proc/cmdline"
if [ -e /proc/config.gz ]; then
    gzip -c "$M/boot/config-$REL" > "$STAGE/config.gz"
    mount --bind "$STAGE/config.gz" "$M/proc/config.gz"
fi
echo ready
exec sleep 1000000
"#;

/// A mounted copy of the Debian root (see the module's documentation); unmounted
/// and removed when dropped.
pub struct Chroot {
    holder: Child,
    mnt: PathBuf,
    _disk: super::debian::DebianDisk,
    _stage: tempfile::TempDir,
    _sys: super::super::support::Fixture,
}

impl Chroot {
    /// Mounts a fresh copy of `root`'s image.
    pub fn new(root: &DebianRoot, name: &str) -> Chroot {
        let disk = root.disk(name).expect("copy the Debian image");
        let sys = super::super::support::Fixture::new("debian-grub");
        let stage = tempfile::tempdir().unwrap();
        let mnt = stage.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", SETUP, "setup"])
            .arg(&mnt)
            .arg(disk.image())
            .arg(sys.root().join("sys"))
            .arg(stage.path())
            .arg(root.release.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the chroot's setup failed");
        let c = Chroot {
            holder,
            mnt,
            _disk: disk,
            _stage: stage,
            _sys: sys,
        };
        std::fs::copy(super::passthru_bin(), c.path("usr/local/bin/passthru")).unwrap();
        let conf = c.path("etc/initramfs-tools/initramfs.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(
            &conf,
            super::debian::set_config_var(&text, "MODULES", "list"),
        )
        .unwrap();
        c
    }

    /// `rel` inside the chroot, as the test sees it.
    pub fn path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(self.mnt.strip_prefix("/").unwrap())
            .join(rel)
    }

    /// A command run inside the chroot.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("chroot")
            .arg(&self.mnt)
            .args(argv)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    /// Runs `argv` inside the chroot to the end.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().unwrap()
    }

    /// Runs `argv`, which must succeed; returns its standard output.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Every file, directory and symlink under the chroot's `rel`: bytes or target, mode
/// and owner.
fn snapshot(c: &Chroot, rels: &[&str]) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for rel in rels {
        let base = c.path(rel);
        let mut stack = vec![base.clone()];
        while let Some(p) = stack.pop() {
            let Ok(meta) = p.symlink_metadata() else {
                continue;
            };
            let below = p.strip_prefix(&base).unwrap();
            let mut key = std::path::Path::new("/").join(rel);
            if !below.as_os_str().is_empty() {
                key.push(below);
            }
            let key = key.display().to_string();
            let value = if meta.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
                format!("dir {:o} {}:{}", meta.mode(), meta.uid(), meta.gid())
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {}:{} {:016x}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    fnv(&bytes)
                )
            };
            out.insert(key, value);
        }
    }
    out
}

/// Asserts two snapshots are equal, naming the paths that differ and how.
fn assert_same(
    before: &std::collections::BTreeMap<String, String>,
    now: &std::collections::BTreeMap<String, String>,
    ctx: &str,
) {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != now.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), now.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{ctx}: these paths differ:\n{}",
        differ.join("\n")
    );
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `enable` and `undo` may change, compared byte for byte.
const WATCHED: &[&str] = &[
    "etc",
    "usr/local/sbin",
    "var/lib/passthru",
    "boot/grub/grub.cfg",
];

/// The VFIO setup's traces in the generated boot files: the kernel arguments in
/// `grub.cfg`, vfio-pci and passthru's modprobe.d file in the initramfs.
fn vfio_traces(c: &Chroot, release: &str) -> Vec<String> {
    let mut found = Vec::new();
    let cfg = std::fs::read_to_string(c.path("boot/grub/grub.cfg")).unwrap();
    if cfg.contains("iommu=pt") {
        found.push("grub.cfg has iommu=pt".to_string());
    }
    let listing = c.ok(&["lsinitramfs", &format!("/boot/initrd.img-{release}")]);
    for needle in ["vfio-pci.ko", "vfio_pci.ko", "passthru-vfio.conf"] {
        if listing.contains(needle) {
            found.push(format!("the initramfs has {needle}"));
        }
    }
    found
}

/// A small seeded generator (xorshift64*), so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Starts `argv` in the chroot and kills it with SIGKILL after `delay` (if it still
/// runs then). Returns whether it was killed.
fn kill_after(c: &Chroot, argv: &[&str], delay: Duration) -> bool {
    let mut child = c
        .command(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // nsenter execs chroot, which execs passthru: the child is passthru itself.
    let _ = child.kill();
    let _ = child.wait();
    true
}

/// `enable` then `undo` for real, with `/etc/default/grub` and
/// `/etc/initramfs-tools/modules` symlinks; a second `enable` while the first runs
/// is refused naming it; then `enable` and `undo` are killed at random points
/// (`PASSTHRU_CHROOT_SEED` repeats a run), and after each kill `undo` brings back
/// every file byte for byte (modes, owners, links) and boot files free of the VFIO
/// setup.
#[test]
fn chroot_enable_and_undo_survive_kills_at_random_points() {
    const TEST: &str = "chroot_enable_and_undo_survive_kills_at_random_points";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {TEST}: needs root (loop devices, mount namespaces, chroot)");
        return;
    }
    for program in ["unshare", "nsenter", "losetup"] {
        if super::kernel::require_program(program, "util-linux").is_err() {
            eprintln!("SKIPPED {TEST}: no {program} (util-linux)");
            return;
        }
    }
    let Some(root) = super::debian::root_or_skip(TEST) else {
        return;
    };
    let started = Instant::now();
    let c = Chroot::new(root, "chroot");
    let rel = root.release.as_str();
    // Links passthru must write through, and keep.
    for file in ["etc/default/grub", "etc/initramfs-tools/modules"] {
        let p = c.path(file);
        let real = p.with_file_name(format!("{}.real", p.file_name().unwrap().to_string_lossy()));
        std::fs::rename(&p, &real).unwrap();
        std::os::unix::fs::symlink(real.file_name().unwrap(), &p).unwrap();
    }
    // The baseline boot files, generated here as undo will regenerate them.
    c.ok(&["update-initramfs", "-u", "-k", "all"]);
    c.ok(&["update-grub"]);
    let before = snapshot(&c, WATCHED);
    assert_eq!(vfio_traces(&c, rel), Vec::<String>::new(), "before enable");

    // A second enable while the first runs its update-initramfs: refused, naming it.
    let mut first = c
        .command(&["passthru", "enable", "--yes", "01:00.0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = c.path("var/lib/passthru/logs/running.json");
    let wait_start = Instant::now();
    while !running.exists() {
        assert!(first.try_wait().unwrap().is_none(), "enable ended early");
        assert!(wait_start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_pid = first.id();
    let second = c.run(&["passthru", "enable", "--yes", "01:00.0"]);
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It waited for the first (naming it), then found nothing left to change; had
    // the first run longer than the wait, it would have been refused (exit 1).
    assert!(
        stderr.contains(&format!(
            "waiting for process {first_pid} (`passthru enable --yes 01:00.0`)"
        )),
        "the second enable did not wait for the first: {stderr}"
    );
    assert!(
        second.status.code() == Some(0)
            || (second.status.code() == Some(1)
                && stderr.contains("another passthru is changing this host")),
        "{second:?}"
    );
    for file in ["etc/default/grub", "etc/initramfs-tools/modules"] {
        assert!(
            c.path(file).symlink_metadata().unwrap().is_symlink(),
            "{file} is still a link"
        );
    }
    let traces = vfio_traces(&c, rel);
    assert!(
        traces.iter().any(|t| t.contains("iommu=pt")) && traces.iter().any(|t| t.contains(".ko")),
        "enable left no VFIO setup in the boot files: {traces:?}"
    );
    let undo_started = Instant::now();
    c.ok(&["passthru", "undo", "--yes"]);
    let undo_time = undo_started.elapsed();
    assert_same(&before, &snapshot(&c, WATCHED), "after undo");
    assert_eq!(vfio_traces(&c, rel), Vec::<String>::new(), "after undo");

    // Kills at random points of enable or undo, then undo to recover.
    let seed = std::env::var("PASSTHRU_CHROOT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{TEST}: seed {seed} (PASSTHRU_CHROOT_SEED={seed} repeats this run)");
    let mut rng = Rng(seed);
    let limit = undo_time.as_millis() as u64 + 500;
    for round in 0..12 {
        let kill_undo = round % 2 == 1;
        if kill_undo {
            c.ok(&["passthru", "enable", "--yes", "01:00.0"]);
        }
        let delay = Duration::from_millis(rng.below(limit));
        let argv: &[&str] = if kill_undo {
            &["passthru", "undo", "--yes"]
        } else {
            &["passthru", "enable", "--yes", "01:00.0"]
        };
        let killed = kill_after(&c, argv, delay);
        eprintln!(
            "{TEST}: round {round}: {} {} after {delay:?}",
            argv[1],
            if killed { "killed" } else { "finished" }
        );
        let out = c.run(&["passthru", "undo", "--yes"]);
        assert!(
            out.status.success(),
            "round {round} (seed {seed}): undo after the kill failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(
            &before,
            &snapshot(&c, WATCHED),
            &format!(
                "round {round} (seed {seed}, {} killed after {delay:?})",
                argv[1]
            ),
        );
        assert_eq!(
            vfio_traces(&c, rel),
            Vec::<String>::new(),
            "round {round} (seed {seed}, {} killed after {delay:?})",
            argv[1]
        );
    }
    eprintln!("{TEST}: done in {:.1?}", started.elapsed());
}

/// A regenerator that fails is passthru failing — exit code 2, not the 1 of a
/// refusal or of problems found — for `enable` (also with `--json`) and for `undo`
/// alike; the journal keeps what `undo` needs, so once the tool works again `undo`
/// restores every file. `undo --json` without `--yes` changes nothing.
#[test]
fn chroot_a_failing_regenerator_exits_2() {
    const TEST: &str = "chroot_a_failing_regenerator_exits_2";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {TEST}: needs root (loop devices, mount namespaces, chroot)");
        return;
    }
    for program in ["unshare", "nsenter", "losetup"] {
        if super::kernel::require_program(program, "util-linux").is_err() {
            eprintln!("SKIPPED {TEST}: no {program} (util-linux)");
            return;
        }
    }
    let Some(root) = super::debian::root_or_skip(TEST) else {
        return;
    };
    let c = Chroot::new(root, "chroot-fail");
    c.ok(&["update-initramfs", "-u", "-k", "all"]);
    c.ok(&["update-grub"]);
    let before = snapshot(&c, WATCHED);
    let tool = c.path("usr/sbin/update-initramfs");
    let real = c.path("usr/sbin/update-initramfs.real");
    let break_tool = || {
        std::fs::rename(&tool, &real).unwrap();
        std::fs::write(
            &tool,
            "#!/bin/sh\necho 'update-initramfs: the disk is full' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    let mend_tool = || std::fs::rename(&real, &tool).unwrap();
    let text = |out: &Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    break_tool();
    let out = c.run(&["passthru", "enable", "--yes", "01:00.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("passthru: enable failed: ")
            && stderr.contains("update-initramfs")
            && stderr.contains("`passthru undo` restores the previous setup"),
        "{stderr}"
    );

    // `undo --json` has no one to ask: it needs --yes, and changes nothing without.
    let journaled = snapshot(&c, WATCHED);
    let out = c.run(&["passthru", "undo", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--json needs --yes"),
        "{}",
        text(&out)
    );
    assert_same(
        &journaled,
        &snapshot(&c, WATCHED),
        "after undo --json without --yes",
    );

    // The files are in place but the initramfs was not rebuilt: `enable` again is no
    // "nothing to change" — it runs the regenerators again, failing while they fail …
    let out = c.run(&["passthru", "enable", "--yes", "01:00.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("update-initramfs: the disk is full"),
        "{}",
        text(&out)
    );
    // … and finishing the setup once they work; only then is there nothing to change.
    mend_tool();
    let out = c.run(&["passthru", "enable", "--yes", "01:00.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("running `update-initramfs")
            && !text(&out).contains("Nothing to change"),
        "{}",
        text(&out)
    );
    let out = c.run(&["passthru", "enable", "--yes", "01:00.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Nothing to change"), "{}", text(&out));
    break_tool();

    let out = c.run(&["passthru", "undo", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passthru: undo failed: "),
        "{}",
        text(&out)
    );
    mend_tool();
    c.ok(&["passthru", "undo", "--yes"]);
    assert_same(
        &before,
        &snapshot(&c, WATCHED),
        "after the undo that succeeded",
    );

    // With --json the document says the change was not applied, and why.
    break_tool();
    let out = c.run(&["passthru", "enable", "--yes", "--json", "01:00.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["applied"], false, "{doc:#}");
    assert!(
        doc["error"].as_str().unwrap().contains("update-initramfs"),
        "{doc:#}"
    );
    mend_tool();
    c.ok(&["passthru", "undo", "--yes"]);
    assert_same(&before, &snapshot(&c, WATCHED), "after the second undo");
}
