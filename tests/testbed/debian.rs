//! A real Debian system for the testbed: a bookworm root that boots from its own disk,
//! with its own kernel, its own initramfs and the kernel arguments its own GRUB
//! configuration generates — for tests of persistent setup (`passthru enable`), which
//! edits `/etc/initramfs-tools/modules`, `/etc/modprobe.d`, `/etc/default/grub(.d)` and
//! runs `update-initramfs` and `update-grub`. The busybox guests of [`super::kernel`]
//! cannot show that: their userland is the host's `/` and their initramfs is ours.
//!
//! [`DebianRoot::prepare`] builds, once, a raw ext4 image (cached under
//! `target/testbed/debian/<hash of the recipe>/root.ext4`, an exclusive `flock` on
//! `target/testbed/debian/prepare.lock` making the work happen once):
//!
//! 1. `debootstrap --variant=minbase --include=<PACKAGES> bookworm ROOT <mirror>`;
//! 2. in a chroot (with `/proc /sys /dev` bind-mounted): `grub-pc/install_devices_empty`
//!    preseeded true, then `apt-get install grub-pc` (it brings `/etc/default/grub`;
//!    `grub-pc-bin` alone has none), with no disk to install GRUB to;
//! 3. `/etc/initramfs-tools/initramfs.conf` set to `MODULES=dep` and `COMPRESS=lz4`:
//!    Debian's default `MODULES=most` makes `update-initramfs` run past 15 minutes under
//!    TCG; with `dep` it takes well under a minute here;
//! 4. `virtio_pci virtio_blk ext4` listed in `/etc/initramfs-tools/modules`, so every
//!    initramfs of this root can mount `/dev/vda` whatever `MODULES=dep` detects;
//! 5. one `update-initramfs -u -k all` in the chroot — with `MODULES=list` for that run
//!    only (a `conf.d` file removed afterwards): `MODULES=dep` in a chroot cannot find the
//!    device of `/` ("mkinitramfs: failed to determine device for /") or, worse, would
//!    detect the HOST's disk drivers. Inside the guest, `dep` detects the real virtio disk;
//! 6. one `update-grub` in the chroot: there `grub-probe` sees the host's root device,
//!    so that first `grub.cfg` names the host's disk (`root=` is ignored by
//!    [`grub_linux_args`], and the guest's own `update-grub` rewrites it). Where
//!    `grub-probe` fails (e.g. an overlay `/` in a container) the image simply has no
//!    `grub.cfg` until the guest runs `update-grub`;
//! 7. `debian-init.sh` installed as [`GUEST_INIT`], booted with `init=`: it stands in
//!    for systemd, serves the testbed's command protocol and powers off cleanly;
//! 8. `mkfs.ext4 -q -d ROOT root.ext4 2G` (no loop device, no mount).
//!
//! The [`Flavour::Dracut`] root ([`flavour_or_skip`]) follows the same recipe, except
//! that steps 3 to 5 install bookworm's `dracut` (which removes initramfs-tools), write
//! [`DRACUT_CONF`] (host-only, lz4) and build a first image `--no-hostonly`. Debian's
//! dracut names its images `/boot/initrd.img-<release>` as initramfs-tools did, so the
//! disks of both flavours boot the same way.
//!
//! Per test, [`DebianRoot::disk`] makes a sparse writable copy of the image (a
//! [`DebianDisk`]); [`DebianDisk::builder`] describes a VM of a [`Layout`] that boots it
//! with the kernel and initramfs read out of the image's `/boot` with `debugfs` — so
//! after the guest regenerated them and powered off, the next boot uses the new ones.
//!
//! The guest's disk is `/dev/vda` at root-bus slot `0x8` (see [`super::vm::DISK_SLOT`]);
//! the shared directory is at `/tmp/testbed` as in every testbed guest, and the
//! `passthru` under test gets there through [`super::TestVm::install_passthru`] (the
//! glibc of bookworm runs the host's build).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::kernel::{
    failed, find_program, fnv1a, io_failed, lock, require_program, run, testbed_dir, GuestKernel,
    PrepareError,
};
use super::layouts::Layout;
use super::vm::{TestVm, VmBuilder, VmError};

/// The Debian release of the root.
pub const SUITE: &str = "bookworm";

/// The default mirror (the one of this machine's apt sources); `$PASSTHRU_TESTBED_MIRROR`
/// overrides it.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Packages `debootstrap` installs beyond `minbase`: the kernel and the initramfs
/// tooling under test, `lz4` for `COMPRESS=lz4`, `busybox` for the init and for the
/// initramfs (as on a standard install), `udev` (which runs in the initramfs and loads
/// drivers there, as on a real boot), `e2fsprogs` (the initramfs checks `/` with fsck),
/// `mount` and `pciutils` for the tests' commands, `man-db` and `bash-completion` for
/// the test of the Debian package (its man pages and completions, as a user reads and
/// uses them).
pub const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "lz4",
    "busybox",
    "udev",
    "e2fsprogs",
    "mount",
    "pciutils",
    "man-db",
    "bash-completion",
];

/// Installed after the preseed, from inside the chroot.
pub const GRUB_PACKAGE: &str = "grub-pc";

/// Which initramfs generator the root has: the same bookworm root otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Debian's default, initramfs-tools (`update-initramfs`).
    InitramfsTools,
    /// dracut: bookworm's `dracut` package, installed in the chroot after debootstrap
    /// (it replaces initramfs-tools), configured by [`DRACUT_CONF`].
    Dracut,
}

/// The dracut root's `/etc/dracut.conf.d/` file: host-only images (only the drivers
/// this machine needs, which keeps a rebuild under TCG short), lz4, no root= baked in
/// (the testbed passes its own), and the drivers that mount `/dev/vda` whatever the
/// host-only detection finds.
pub const DRACUT_CONF: &str = "# passthru testbed: small, fast images for a TCG guest.\n\
hostonly=\"yes\"\n\
hostonly_cmdline=\"no\"\n\
compress=\"lz4\"\n\
add_drivers+=\" virtio_pci virtio_blk ext4 \"\n";

/// Where the dracut root has [`DRACUT_CONF`].
pub const DRACUT_CONF_PATH: &str = "etc/dracut.conf.d/10-testbed.conf";

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::InitramfsTools => "initramfs-tools",
            Flavour::Dracut => "dracut",
        }
    }
}

/// The guest's init, installed in the root at [`GUEST_INIT`].
const INIT_SCRIPT: &str = include_str!("debian-init.sh");

/// Where the root has the testbed's init (passed as `init=`).
pub const GUEST_INIT: &str = "/usr/local/sbin/testbed-init";

/// Modules every initramfs of the root must have to mount `/dev/vda`.
pub const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

/// The image's size (sparse: about 750 MB are used).
const IMAGE_SIZE: &str = "2G";

/// Kernel arguments of every boot of the root, after the test's own: its disk, writable,
/// the testbed's init instead of systemd, and `no_timer_check` (the boots run with
/// interrupt remapping on, where QEMU 10 under TCG fails the kernel's timer test: see
/// [`Layout::kernel_args`]).
pub fn root_args() -> Vec<String> {
    vec![
        "root=/dev/vda".into(),
        "rw".into(),
        format!("init={GUEST_INIT}"),
        "no_timer_check".into(),
    ]
}

/// Bumped when the recipe changes in a way the hash of its parts does not see.
const RECIPE_VERSION: &str = "1";

/// Why reading or booting a disk image failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Command(String),
    #[error("{path} is not in the image {image}")]
    NotInImage { image: PathBuf, path: String },
    #[error("no `linux` line in the image's /boot/grub/grub.cfg")]
    NoLinuxLine,
    #[error("{0}")]
    Vm(#[from] VmError),
}

fn disk_io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The prepared Debian image, shared (read-only) by all tests.
#[derive(Debug, Clone)]
pub struct DebianRoot {
    /// The cache directory, `target/testbed/debian/<hash>/`.
    pub dir: PathBuf,
    /// The pristine image, `<dir>/root.ext4`; never booted, only copied.
    pub image: PathBuf,
    /// The release of the root's kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
}

/// A sparse, writable copy of the image for one test; removed when dropped.
#[derive(Debug)]
pub struct DebianDisk {
    dir: tempfile::TempDir,
    image: PathBuf,
    release: String,
    qemu: PathBuf,
    boots: std::sync::atomic::AtomicU32,
}

/// The prepared root (initramfs-tools), once per process; `None` after printing
/// `SKIPPED` when a prerequisite is missing outside CI. Panics in CI, and on any other
/// failure.
pub fn root_or_skip(test: &str) -> Option<&'static DebianRoot> {
    flavour_or_skip(Flavour::InitramfsTools, test)
}

/// The prepared root of `flavour`, as [`root_or_skip`].
pub fn flavour_or_skip(flavour: Flavour, test: &str) -> Option<&'static DebianRoot> {
    static ROOTS: [OnceLock<Result<DebianRoot, PrepareError>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let slot = match flavour {
        Flavour::InitramfsTools => &ROOTS[0],
        Flavour::Dracut => &ROOTS[1],
    };
    let root = slot.get_or_init(|| {
        let started = Instant::now();
        let root = DebianRoot::prepare(flavour);
        if let Ok(root) = &root {
            eprintln!(
                "testbed: Debian root ({}, {}) ready in {:.1?}: {}",
                flavour.name(),
                root.release,
                started.elapsed(),
                root.image.display()
            );
        }
        root
    });
    match root {
        Ok(root) => Some(root),
        Err(PrepareError::Missing(why)) if !super::in_ci() => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
        Err(PrepareError::Missing(why)) => {
            panic!("testbed prerequisite missing (CI=true makes this a failure): {why}")
        }
        Err(PrepareError::Failed(why)) => panic!("Debian root preparation failed: {why}"),
    }
}

impl DebianRoot {
    /// Checks the prerequisites and builds (or finds cached) the image.
    pub fn prepare(flavour: Flavour) -> Result<DebianRoot, PrepareError> {
        let qemu = require_program("qemu-system-x86_64", "qemu-system-x86")?;
        for (program, package) in [
            ("mkfs.ext4", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("e2fsck", "e2fsprogs"),
        ] {
            require_program(program, package)?;
        }
        let base = testbed_dir().join("debian");
        let dir = base.join(format!("{:016x}", recipe_hash(flavour)));
        let image = dir.join("root.ext4");
        let release_file = dir.join("release");
        // The root as cached, if it is complete (its release file is written last).
        let cached = || {
            let release = fs::read_to_string(&release_file).ok()?;
            image.is_file().then(|| DebianRoot {
                dir: dir.clone(),
                image: image.clone(),
                release: release.trim().to_owned(),
                qemu: qemu.clone(),
            })
        };
        if let Some(root) = cached() {
            return Ok(root);
        }
        let debootstrap = require_program("debootstrap", "debootstrap")?;
        if !nix_is_root() {
            return Err(PrepareError::Missing(
                "building the Debian root needs root (debootstrap, chroot)".into(),
            ));
        }
        fs::create_dir_all(&dir).map_err(|err| io_failed(&dir, &err))?;
        let _lock = lock(&base.join("prepare.lock"))?;
        // Another test may have built it while this one waited for the lock.
        if let Some(root) = cached() {
            return Ok(root);
        }
        let release = build(&debootstrap, &dir, &image, flavour)?;
        fs::write(&release_file, format!("{release}\n"))
            .map_err(|err| io_failed(&release_file, &err))?;
        Ok(DebianRoot {
            dir,
            image,
            release,
            qemu,
        })
    }

    /// A writable copy of the image for one test (sparse: it costs little space and
    /// about a second), in a directory of its own under `target/testbed/run/`.
    pub fn disk(&self, name: &str) -> Result<DebianDisk, DiskError> {
        let runs = testbed_dir().join("run");
        fs::create_dir_all(&runs).map_err(disk_io(&runs))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("debian-{name}-{}-", std::process::id()))
            .tempdir_in(&runs)
            .map_err(disk_io(&runs))?;
        let image = dir.path().join("disk.ext4");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.image)
            .arg(&image))
        .map_err(DiskError::Command)?;
        Ok(DebianDisk {
            dir,
            image,
            release: self.release.clone(),
            qemu: self.qemu.clone(),
            boots: 0.into(),
        })
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

impl DebianDisk {
    /// The image file (raw ext4, the guest's `/dev/vda`).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The release of the root's kernel.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Reads a file of the image (the VM must be off). See [`read_file`].
    pub fn read_file(&self, path: &str) -> Result<String, DiskError> {
        read_file(&self.image, path)
    }

    /// The arguments of the first `linux` line of the image's `grub.cfg`. See
    /// [`grub_linux_args`].
    pub fn grub_linux_args(&self) -> Result<Vec<String>, DiskError> {
        grub_linux_args(&self.image)
    }

    /// Copies the image's `/boot/vmlinuz-<release>` and `/boot/initrd.img-<release>` out
    /// (fresh names at each call, as the guest may have regenerated them).
    pub fn boot_files(&self) -> Result<(PathBuf, PathBuf), DiskError> {
        let n = self
            .boots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let vmlinuz = self.dir.path().join(format!("vmlinuz.{n}"));
        let initrd = self.dir.path().join(format!("initrd.img.{n}"));
        dump(
            &self.image,
            &format!("/boot/vmlinuz-{}", self.release),
            &vmlinuz,
        )?;
        dump(
            &self.image,
            &format!("/boot/initrd.img-{}", self.release),
            &initrd,
        )?;
        Ok((vmlinuz, initrd))
    }

    /// A VM of `layout`'s machine and devices booting this disk with the kernel and
    /// initramfs now in its `/boot`, and the kernel arguments `args` — instead of the
    /// layout's own (pass [`Layout::kernel_args`] to keep them, or the arguments of the
    /// guest's `grub.cfg`) — followed by [`root_args`]. `name` names the log files.
    pub fn builder(
        &self,
        layout: Layout,
        name: &str,
        args: &[String],
    ) -> Result<VmBuilder, DiskError> {
        let (vmlinuz, initrd) = self.boot_files()?;
        // The disk brings its own kernel: the layout's kernel only names logs, and
        // `renamed` replaces that name.
        let mut builder = layout
            .builder(GuestKernel::Stable)
            .renamed(name)
            .clear_kernel_args()
            .disk(&self.image)
            .kernel_initrd(&vmlinuz, &initrd)
            .boot_timeout(Duration::from_secs(300));
        for arg in args {
            builder = builder.kernel_arg(arg);
        }
        Ok(builder.append_root_args(root_args()))
    }

    /// Boots a VM described by [`DebianDisk::builder`].
    pub fn boot(&self, builder: VmBuilder) -> Result<TestVm, DiskError> {
        Ok(builder.boot_disk(&self.qemu)?)
    }

    /// Boots a VM described by [`DebianDisk::builder`]; panics with the console log
    /// when it does not come up.
    pub fn boot_or_panic(&self, builder: VmBuilder) -> TestVm {
        let console = testbed_dir()
            .join("logs")
            .join(format!("{}.console.log", builder.name()));
        let name = builder.name().to_owned();
        match self.boot(builder) {
            Ok(vm) => vm,
            Err(err) => {
                let log = fs::read_to_string(&console).unwrap_or_default();
                panic!(
                    "Debian VM {name} failed to boot: {err}\n===== console log ({}) =====\n{log}",
                    console.display()
                )
            }
        }
    }

    /// `e2fsck -fn`: whether the image is clean (after a [`TestVm::power_off`]).
    pub fn fsck(&self) -> Result<(), DiskError> {
        let e2fsck = find_program("e2fsck").unwrap_or_else(|| PathBuf::from("e2fsck"));
        run(Command::new(e2fsck).arg("-fn").arg(&self.image))
            .map(drop)
            .map_err(DiskError::Command)
    }
}

/// Copies `path` of the ext4 `image` to the host file `out` with `debugfs` (no mount,
/// no loop device). `debugfs` exits 0 even when the file is missing, so the result is
/// checked by the output file's existence.
pub fn dump(image: &Path, path: &str, out: &Path) -> Result<(), DiskError> {
    if path.contains(['"', '\n']) || out.to_string_lossy().contains(['"', '\n']) {
        return Err(DiskError::Command(format!(
            "debugfs cannot take the path {path:?}"
        )));
    }
    let _ = fs::remove_file(out);
    let debugfs = find_program("debugfs").unwrap_or_else(|| PathBuf::from("debugfs"));
    run(Command::new(debugfs)
        .arg("-R")
        .arg(format!("dump \"{path}\" \"{}\"", out.display()))
        .arg(image))
    .map_err(DiskError::Command)?;
    if out.is_file() {
        Ok(())
    } else {
        Err(DiskError::NotInImage {
            image: image.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Reads `path` of the ext4 `image` (text, lossily decoded) with `debugfs`.
pub fn read_file(image: &Path, path: &str) -> Result<String, DiskError> {
    let tmp = tempfile::NamedTempFile::new().map_err(disk_io(Path::new("(temp file)")))?;
    let out = tmp.path().with_extension("dump");
    let result = dump(image, path, &out).and_then(|()| {
        fs::read(&out)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(disk_io(&out))
    });
    let _ = fs::remove_file(&out);
    result
}

/// The kernel arguments GRUB would boot the image with: those of the first `linux`
/// line of its `/boot/grub/grub.cfg` (the default entry), without `BOOT_IMAGE=` and
/// `root=` (the testbed boots `/dev/vda` itself). See [`linux_args_from_grub_cfg`].
pub fn grub_linux_args(image: &Path) -> Result<Vec<String>, DiskError> {
    let cfg = read_file(image, "/boot/grub/grub.cfg")?;
    linux_args_from_grub_cfg(&cfg).ok_or(DiskError::NoLinuxLine)
}

/// The arguments of the first `linux` line of a `grub.cfg`, without the kernel path,
/// `BOOT_IMAGE=` and `root=`. GRUB's `10_linux` writes lines such as
/// `linux<TAB>/boot/vmlinuz-6.1.0-50-amd64 root=UUID=c01e… ro  quiet`.
pub fn linux_args_from_grub_cfg(cfg: &str) -> Option<Vec<String>> {
    let line = cfg.lines().find(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("linux") && words.next().is_some()
    })?;
    Some(
        line.split_whitespace()
            .skip(2)
            .filter(|arg| !arg.starts_with("BOOT_IMAGE=") && !arg.starts_with("root="))
            .map(str::to_owned)
            .collect(),
    )
}

/// What names the cached image: every input of the recipe (the initramfs-tools
/// flavour's hash is the one of the recipe before flavours existed).
fn recipe_hash(flavour: Flavour) -> u64 {
    let packages = PACKAGES.join(",");
    let modules = BOOT_MODULES.join(",");
    let mut parts: Vec<&[u8]> = vec![
        RECIPE_VERSION.as_bytes(),
        SUITE.as_bytes(),
        packages.as_bytes(),
        GRUB_PACKAGE.as_bytes(),
        modules.as_bytes(),
        INIT_SCRIPT.as_bytes(),
        IMAGE_SIZE.as_bytes(),
    ];
    if flavour == Flavour::Dracut {
        parts.extend([flavour.name().as_bytes(), DRACUT_CONF.as_bytes()]);
    }
    fnv1a(&parts)
}

fn mirror() -> String {
    std::env::var("PASSTHRU_TESTBED_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned())
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mountinfo`, whose
/// fifth field is the mount point).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    // mountinfo names canonical paths: `target/testbed` may be a symlink.
    let dir = &fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    found
}

/// Unmounts everything below `dir` (debootstrap may leave `/proc` mounted on failure).
fn unmount_all(dir: &Path) {
    for mount in mounts_under(dir) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .stdin(Stdio::null())
            .status();
    }
}

/// Removes a root tree, never crossing into a mounted file system (a bind-mounted
/// `/dev` left behind must not cost the host its device nodes).
fn remove_root(dir: &Path) -> Result<(), PrepareError> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_all(dir);
    if !mounts_under(dir).is_empty() {
        return Err(failed(format!(
            "{} still has mounts below it; not removing it",
            dir.display()
        )));
    }
    run(Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg(dir))
    .map(drop)
    .map_err(failed)
}

/// `/proc /sys /dev` bind-mounted into a root for a chroot; unmounted when dropped.
struct ChrootMounts<'a>(&'a Path);

impl<'a> ChrootMounts<'a> {
    fn new(root: &'a Path) -> Result<Self, PrepareError> {
        let mounts = ChrootMounts(root);
        for dir in ["proc", "sys", "dev"] {
            let target = root.join(dir);
            fs::create_dir_all(&target).map_err(|err| io_failed(&target, &err))?;
            run(Command::new("mount")
                .arg("--bind")
                .arg(Path::new("/").join(dir))
                .arg(&target))
            .map_err(failed)?;
        }
        Ok(mounts)
    }
}

impl Drop for ChrootMounts<'_> {
    fn drop(&mut self) {
        unmount_all(self.0);
    }
}

/// Runs a command in the chroot, with a clean environment; its output goes to `log`.
fn chroot(root: &Path, log: &Path, script: &str, stdin: &str) -> Result<(), PrepareError> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|err| io_failed(log, &err))?;
    let log_err = log_file.try_clone().map_err(|err| io_failed(log, &err))?;
    let mut child = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-ec", script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|err| failed(format!("cannot run chroot: {err}")))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let status = child
        .wait()
        .map_err(|err| failed(format!("chroot: {err}")))?;
    if status.success() {
        Ok(())
    } else {
        let tail = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        Err(failed(format!(
            "`{script}` in the chroot failed ({status}); log {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    }
}

/// Whether a debootstrap log says the mirror could not be reached (then the root
/// "cannot be had": a skip outside CI) rather than something else going wrong.
pub fn debootstrap_offline(log: &str) -> bool {
    [
        "Failed getting release file",
        "Temporary failure resolving",
        "Could not resolve",
        "Couldn't download",
        "Network is unreachable",
        "Connection refused",
    ]
    .iter()
    .any(|needle| log.contains(needle))
}

/// Sets `KEY=value` in a shell-style config, replacing the first `KEY=` line or
/// appending one.
pub fn set_config_var(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut done = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|line| {
            if !done && line.starts_with(&prefix) {
                done = true;
                format!("{key}={value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !done {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

fn write(path: &Path, text: &str) -> Result<(), PrepareError> {
    fs::write(path, text).map_err(|err| io_failed(path, &err))
}

/// Builds the root and the image; returns the kernel release.
fn build(
    debootstrap: &Path,
    dir: &Path,
    image: &Path,
    flavour: Flavour,
) -> Result<String, PrepareError> {
    let root = dir.join("root.tmp");
    let log = dir.join("build.log");
    remove_root(&root)?;
    let _ = fs::remove_file(&log);
    let step = |what: &str, started: Instant| {
        eprintln!("testbed: Debian root: {what} in {:.1?}", started.elapsed());
    };

    // 1. debootstrap.
    let started = Instant::now();
    let log_file = fs::File::create(&log).map_err(|err| io_failed(&log, &err))?;
    let log_err = log_file.try_clone().map_err(|err| io_failed(&log, &err))?;
    let status = Command::new(debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&root)
        .arg(mirror())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(|err| failed(format!("cannot run debootstrap: {err}")))?;
    if !status.success() {
        unmount_all(&root);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        let why = format!(
            "debootstrap {SUITE} from {} failed ({status}); log {}:\n{}",
            mirror(),
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        return Err(if debootstrap_offline(&text) {
            PrepareError::Missing(format!("the Debian root cannot be had: {why}"))
        } else {
            failed(why)
        });
    }
    step("debootstrap", started);

    let boot = root.join("boot");
    let release = super::kernel::kernel_release_in(&boot)?;

    {
        let _mounts = ChrootMounts::new(&root)?;
        // apt in the chroot resolves the mirror with the host's resolver.
        let resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        let chroot_resolv = root.join("etc/resolv.conf");
        let _ = fs::remove_file(&chroot_resolv);
        fs::write(&chroot_resolv, resolv).map_err(|err| io_failed(&chroot_resolv, &err))?;

        // 2. grub-pc, with no disk to install to.
        let started = Instant::now();
        chroot(
            &root,
            &log,
            "debconf-set-selections",
            "grub-pc grub-pc/install_devices_empty boolean true\n",
        )?;
        chroot(
            &root,
            &log,
            &format!("apt-get install -y -q --no-install-recommends {GRUB_PACKAGE}"),
            "",
        )?;
        step("grub-pc", started);

        match flavour {
            Flavour::InitramfsTools => initramfs_tools_first_image(&root, &log)?,
            Flavour::Dracut => dracut_first_image(&root, &log, &release)?,
        }

        // 6. A first grub.cfg, if grub-probe can make sense of the chroot.
        let started = Instant::now();
        if let Err(err) = chroot(&root, &log, "update-grub", "") {
            eprintln!("testbed: update-grub in the chroot failed; the image has no grub.cfg until the guest runs it: {err}");
        }
        step("update-grub", started);
        chroot(&root, &log, "apt-get clean", "")?;
        write(&chroot_resolv, "")?;
    }

    // 7. The testbed's init.
    let init = root.join(GUEST_INIT.trim_start_matches('/'));
    if let Some(parent) = init.parent() {
        fs::create_dir_all(parent).map_err(|err| io_failed(parent, &err))?;
    }
    write(&init, INIT_SCRIPT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))
        .map_err(|err| io_failed(&init, &err))?;
    write(&root.join("etc/hostname"), "testbed\n")?;

    // 8. The image.
    let started = Instant::now();
    let tmp = image.with_extension("ext4.tmp");
    let _ = fs::remove_file(&tmp);
    let mkfs = require_program("mkfs.ext4", "e2fsprogs")?;
    run(Command::new(mkfs)
        .args(["-q", "-L", "testbed", "-d"])
        .arg(&root)
        .arg(&tmp)
        .arg(IMAGE_SIZE))
    .map_err(failed)?;
    fs::rename(&tmp, image).map_err(|err| io_failed(&tmp, &err))?;
    step("mkfs.ext4", started);
    remove_root(&root)?;
    Ok(release)
}

/// Steps 3 to 5 for initramfs-tools: `MODULES=dep`, `COMPRESS=lz4`, the boot modules,
/// and the first image.
fn initramfs_tools_first_image(root: &Path, log: &Path) -> Result<(), PrepareError> {
    // 3., 4. initramfs-tools' configuration.
    let conf = root.join("etc/initramfs-tools/initramfs.conf");
    let text = fs::read_to_string(&conf).map_err(|err| io_failed(&conf, &err))?;
    let text = set_config_var(&text, "MODULES", "dep");
    write(&conf, &set_config_var(&text, "COMPRESS", "lz4"))?;
    let modules = root.join("etc/initramfs-tools/modules");
    let mut text = fs::read_to_string(&modules).unwrap_or_default();
    text.push_str(
        "# passthru testbed: the root is /dev/vda (virtio-blk, ext4) whatever\n\
         # MODULES=dep detects.\n",
    );
    for module in BOOT_MODULES {
        text.push_str(module);
        text.push('\n');
    }
    write(&modules, &text)?;

    // 5. The first initramfs: MODULES=list for this run only.
    let started = Instant::now();
    let build_conf = root.join("etc/initramfs-tools/conf.d/zz-testbed-build");
    write(&build_conf, "MODULES=list\n")?;
    let result = chroot(root, log, "update-initramfs -u -k all", "");
    let _ = fs::remove_file(&build_conf);
    result?;
    eprintln!(
        "testbed: Debian root: update-initramfs in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// The dracut flavour's steps 3 to 5: `apt-get install dracut` (which removes
/// initramfs-tools), [`DRACUT_CONF`], and a first image built `--no-hostonly` — in the
/// chroot, host-only detection would see the host's root device, not `/dev/vda`.
/// Inside the guest the configured host-only mode applies.
fn dracut_first_image(root: &Path, log: &Path, release: &str) -> Result<(), PrepareError> {
    let started = Instant::now();
    chroot(
        root,
        log,
        "apt-get install -y -q --no-install-recommends dracut",
        "",
    )?;
    eprintln!(
        "testbed: Debian root: dracut installed in {:.1?}",
        started.elapsed()
    );
    let conf = root.join(DRACUT_CONF_PATH);
    if let Some(parent) = conf.parent() {
        fs::create_dir_all(parent).map_err(|err| io_failed(parent, &err))?;
    }
    write(&conf, DRACUT_CONF)?;
    let started = Instant::now();
    chroot(
        root,
        log,
        &format!("dracut -f --no-hostonly --kver {release}; ls -l /boot"),
        "",
    )?;
    eprintln!(
        "testbed: Debian root: first dracut image in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `grub.cfg` as `update-grub` wrote it in a bookworm guest of this testbed
    /// (abridged: the header and the other scripts' sections are cut).
    const GRUB_CFG: &str = "\
### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
\tset gfxpayload=\"${1}\"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-c01e0194-b6e0-4450-b605-6224b785c45d' {
\tload_video
\tinsmod gzio
\tinsmod ext2
\techo\t'Loading Linux 6.1.0-50-amd64 ...'
\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=UUID=c01e0194-b6e0-4450-b605-6224b785c45d ro  quiet intel_iommu=on iommu=pt
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-6.1.0-50-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-c01e0194' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1.0-50-amd64 (recovery mode)' {
\t\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=UUID=c01e0194-b6e0-4450-b605-6224b785c45d ro single
\t}
}
### END /etc/grub.d/10_linux ###
";

    #[test]
    fn grub_args_are_the_first_linux_line_without_root() {
        assert_eq!(
            linux_args_from_grub_cfg(GRUB_CFG).unwrap(),
            ["ro", "quiet", "intel_iommu=on", "iommu=pt"]
        );
        // `linux_gfx_mode` and `export linux_gfx_mode` are not `linux` lines.
        assert_eq!(linux_args_from_grub_cfg("set linux_gfx_mode=\n"), None);
        assert_eq!(
            linux_args_from_grub_cfg("linux /vmlinuz BOOT_IMAGE=/vmlinuz root=/dev/vda ro"),
            Some(vec!["ro".to_owned()])
        );
    }

    #[test]
    fn config_vars_are_replaced_or_appended() {
        // Lines of bookworm's /etc/initramfs-tools/initramfs.conf.
        let conf = "# MODULES: [ most | netboot | dep | list ]\nMODULES=most\nBUSYBOX=auto\n";
        let out = set_config_var(conf, "MODULES", "dep");
        assert_eq!(
            out,
            "# MODULES: [ most | netboot | dep | list ]\nMODULES=dep\nBUSYBOX=auto\n"
        );
        assert!(set_config_var(&out, "COMPRESS", "lz4").ends_with("BUSYBOX=auto\nCOMPRESS=lz4\n"));
    }

    #[test]
    fn offline_debootstrap_is_told_apart() {
        // debootstrap's wording when the mirror cannot be reached.
        assert!(debootstrap_offline(
            "I: Retrieving InRelease \nI: Retrieving Release \nE: Failed getting release file http://deb.debian.org/debian/dists/bookworm/Release"
        ));
        assert!(!debootstrap_offline(
            "E: Couldn't find these debs: linux-image-nonesuch"
        ));
    }
}
