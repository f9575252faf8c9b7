//! The guest's kernel and initramfs: fetched, unpacked and built once, cached under
//! `target/testbed/`.
//!
//! The testbed boots two kernels (see [`GuestKernel`]): Debian 12's own (6.1) and the
//! newer one of bookworm-backports (6.12), whose IOMMU and interrupt-remapping log
//! wording, `reset_method` and VFIO device nodes differ. Each is Debian's
//! `linux-image-amd64` of its suite (a metapackage: its `Depends` names the real
//! `linux-image-<release>` package), fetched with `apt-get download` and unpacked with
//! `dpkg -x` — never installed, never committed. From the unpacked package we keep
//! a *layer*: `boot/` (vmlinuz, config, System.map) and the module tree with a fresh
//! `depmod`. The guest mounts that layer over the host's `/` (see `init.sh`), so inside
//! the guest `uname -r`, `/lib/modules/$(uname -r)` and `/boot/config-$(uname -r)` agree,
//! as on a real installed system.
//!
//! The initramfs is small: a static busybox, `init.sh` as `/init`, and only the modules
//! needed to reach the host's `/` over 9p (virtio-pci, 9p, overlay) with their
//! dependencies, plus their `modules.dep` from `depmod -b`. Its file name carries a hash
//! of its inputs, so editing `init.sh` rebuilds it.
//!
//! Several test processes may prepare at once (e.g. `cargo test` in two terminals): an
//! exclusive `flock` on `target/testbed/prepare.lock` makes the work happen once.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `/init` of the guest.
const INIT_SCRIPT: &str = include_str!("init.sh");

/// Modules the initramfs loads before it can reach the host's `/`; their dependencies
/// come along (from the kernel's own `modules.dep`).
const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The guest kernels the testbed boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestKernel {
    /// Debian 12's own kernel (6.1), `linux-image-amd64` of bookworm.
    Stable,
    /// The newer kernel of bookworm-backports (6.12), `linux-image-amd64/bookworm-backports`.
    Backports,
}

impl GuestKernel {
    pub const ALL: [GuestKernel; 2] = [GuestKernel::Stable, GuestKernel::Backports];

    /// Short name, used in test names, log files and the cache.
    pub fn name(self) -> &'static str {
        match self {
            GuestKernel::Stable => "stable",
            GuestKernel::Backports => "backports",
        }
    }

    /// The kernel of a [`GuestKernel::name`]; panics on an unknown name (a typo in a
    /// test declaration).
    pub fn by_name(name: &str) -> GuestKernel {
        GuestKernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("no testbed kernel named {name}"))
    }

    /// What `apt-get download` is asked for: the metapackage of the suite.
    fn apt_name(self) -> &'static str {
        match self {
            GuestKernel::Stable => "linux-image-amd64",
            GuestKernel::Backports => "linux-image-amd64/bookworm-backports",
        }
    }

    /// The variable naming a `linux-image-*.deb` to use instead of apt.
    fn deb_variable(self) -> &'static str {
        match self {
            GuestKernel::Stable => "PASSTHRU_TESTBED_KERNEL_DEB",
            GuestKernel::Backports => "PASSTHRU_TESTBED_KERNEL_DEB_BACKPORTS",
        }
    }
}

/// A prepared guest kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which of the testbed's kernels this is.
    pub line: GuestKernel,
    /// The kernel release, e.g. `6.1.0-56-amd64` (what `uname -r` prints in the guest).
    pub release: String,
    /// The bootable image, inside `layer`.
    pub vmlinuz: PathBuf,
    /// The tree the guest lays over the host's `/`: `boot/` and the module tree.
    pub layer: PathBuf,
    /// The initramfs (uncompressed newc cpio).
    pub initramfs: PathBuf,
    /// The QEMU binary to run.
    pub qemu: PathBuf,
}

/// Why the testbed cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A prerequisite is not installed or cannot be had (QEMU, busybox-static, the
    /// kernel package): tests are skipped, unless `CI=true`.
    #[error("{0}")]
    Missing(String),
    /// Preparation went wrong although the prerequisites are there: always a failure.
    #[error("{0}")]
    Failed(String),
}

pub(super) fn failed(what: impl std::fmt::Display) -> PrepareError {
    PrepareError::Failed(what.to_string())
}

pub(super) fn io_failed(path: &Path, err: &io::Error) -> PrepareError {
    PrepareError::Failed(format!("{}: {err}", path.display()))
}

/// `target/testbed`: under `CARGO_TARGET_DIR` when set (at run time or at build time),
/// else under the crate's `target/`.
pub fn testbed_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let target = if target.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(target)
    } else {
        target
    };
    target.join("testbed")
}

/// Finds a program in `PATH`, then in the sbin directories a non-root `PATH` may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub(super) fn require_program(name: &str, package: &str) -> Result<PathBuf, PrepareError> {
    find_program(name).ok_or_else(|| {
        PrepareError::Missing(format!(
            "`{name}` not found (install the `{package}` package)"
        ))
    })
}

/// Whether an ELF file is statically linked (it has no `PT_INTERP` program header).
/// Only 64-bit little-endian ELF is accepted, which is what x86-64 hosts run.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
    };
    let read_u32 = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let read_u64 = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    // "\x7fELF", class 2 (64-bit), data 1 (little-endian).
    if bytes.get(0..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        matches!(read_u32(at), Some(kind) if kind != PT_INTERP)
    })
}

/// A static busybox for the initramfs: `$PASSTHRU_TESTBED_BUSYBOX`, or the one of
/// Debian's `busybox-static` package.
pub fn static_busybox() -> Result<PathBuf, PrepareError> {
    let candidates: Vec<PathBuf> = match std::env::var_os("PASSTHRU_TESTBED_BUSYBOX") {
        Some(path) => vec![PathBuf::from(path)],
        None => [
            "/bin/busybox",
            "/usr/bin/busybox",
            "/usr/lib/initramfs-tools/bin/busybox",
        ]
        .map(PathBuf::from)
        .to_vec(),
    };
    for candidate in &candidates {
        if let Ok(bytes) = fs::read(candidate) {
            if is_static_elf(&bytes) {
                return Ok(candidate.clone());
            }
        }
    }
    Err(PrepareError::Missing(
        "no statically linked busybox found (install the `busybox-static` package)".into(),
    ))
}

/// Runs a command, returning its stdout; a non-zero exit becomes an error with stderr.
pub(super) fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An exclusive advisory lock, released when dropped (or when the process dies).
pub(super) struct FileLock(#[allow(dead_code)] File);

pub(super) fn lock(path: &Path) -> Result<FileLock, PrepareError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|err| io_failed(path, &err))?;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(FileLock(file));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(io_failed(path, &err));
        }
    }
}

/// The package name a metapackage's `Depends` field points at: the first
/// `linux-image-…` alternative, e.g. `linux-image-6.1.0-56-amd64 (= 6.1.192-2)`.
pub fn image_package_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|alt| alt.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-") && *name != "linux-image-amd64")
        .map(str::to_owned)
}

fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads the kernel package of `line` (or takes the one its variable names).
fn fetch_kernel_deb(line: GuestKernel, download: &Path) -> Result<PathBuf, PrepareError> {
    if let Some(deb) = std::env::var_os(line.deb_variable()) {
        let deb = PathBuf::from(deb);
        return if deb.is_file() {
            Ok(deb)
        } else {
            Err(PrepareError::Missing(format!(
                "{}={} is not a file",
                line.deb_variable(),
                deb.display()
            )))
        };
    }
    let apt_get = require_program("apt-get", "apt")?;
    let dpkg_deb = require_program("dpkg-deb", "dpkg")?;
    fs::create_dir_all(download).map_err(|err| io_failed(download, &err))?;
    let cannot = |err: String| {
        PrepareError::Missing(format!(
            "the {} kernel package cannot be had: {err}",
            line.name()
        ))
    };
    // Old downloads go: the newest `linux-image-amd64_*.deb` is taken below.
    if let Ok(entries) = fs::read_dir(download) {
        for entry in entries.filter_map(Result::ok) {
            let _ = fs::remove_file(entry.path());
        }
    }
    run(Command::new(&apt_get)
        .args(["download", line.apt_name()])
        .current_dir(download))
    .map_err(cannot)?;
    let meta = find_deb(download, "linux-image-amd64_")
        .ok_or_else(|| cannot("apt-get download left no linux-image-amd64_*.deb".into()))?;
    let depends =
        run(Command::new(&dpkg_deb).arg("-f").arg(&meta).arg("Depends")).map_err(failed)?;
    let image = image_package_from_depends(&depends).ok_or_else(|| {
        failed(format!(
            "no linux-image-* in the Depends of {}: {depends}",
            meta.display()
        ))
    })?;
    run(Command::new(&apt_get)
        .arg("download")
        .arg(&image)
        .current_dir(download))
    .map_err(cannot)?;
    find_deb(download, &format!("{image}_"))
        .ok_or_else(|| cannot(format!("apt-get download left no {image}_*.deb")))
}

/// Unpacks the kernel package into `kernel_dir/<release>/layer` and runs `depmod`.
/// Returns the release.
fn unpack_kernel(deb: &Path, kernel_dir: &Path) -> Result<String, PrepareError> {
    let dpkg = require_program("dpkg", "dpkg")?;
    let depmod = require_program("depmod", "kmod")?;
    let extract = kernel_dir.join("extract.tmp");
    let _ = fs::remove_dir_all(&extract);
    run(Command::new(&dpkg).arg("-x").arg(deb).arg(&extract)).map_err(failed)?;

    let boot = extract.join("boot");
    let release = kernel_release_in(&boot)?;

    // Newer packages ship usr/lib/modules; depmod -b looks under BASE/lib/modules.
    if !extract.join("lib/modules").is_dir() && extract.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", extract.join("lib"))
            .map_err(|err| io_failed(&extract.join("lib"), &err))?;
    }
    let modules = extract.join("lib/modules").join(&release);
    if !modules.is_dir() {
        return Err(failed(format!("no module tree at {}", modules.display())));
    }
    run(Command::new(&depmod).arg("-b").arg(&extract).arg(&release)).map_err(failed)?;

    // The layer mirrors the host's own layout: on a merged-/usr host `/lib` is a
    // symlink to `usr/lib`, and a real `lib/` directory in an upper overlay layer would
    // hide every library of the host. So the modules go where the host's `/lib` points.
    let modules_parent = if fs::read_link("/lib").is_ok_and(|t| t == Path::new("usr/lib")) {
        "usr/lib/modules"
    } else {
        "lib/modules"
    };
    let layer = kernel_dir.join(&release).join("layer");
    let _ = fs::remove_dir_all(&layer);
    let target_modules = layer.join(modules_parent);
    fs::create_dir_all(&target_modules).map_err(|err| io_failed(&target_modules, &err))?;
    let moves = [
        (boot.clone(), layer.join("boot")),
        (modules.clone(), target_modules.join(&release)),
    ];
    for (from, to) in &moves {
        fs::rename(from, to).map_err(|err| io_failed(from, &err))?;
    }
    let _ = fs::remove_dir_all(&extract);
    Ok(release)
}

/// Normalised module name of a path in `modules.dep`: `kernel/fs/9p/9p.ko` → `9p`,
/// `…/virtio-pci.ko.xz` → `virtio_pci`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// The module paths (relative to the module tree) needed to load `wanted`: the
/// modules themselves and, transitively, what `modules.dep` says they depend on. A
/// wanted module that `modules.builtin` lists is part of the kernel and needs no file
/// (Debian's 6.12 builds `virtio_pci` in; 6.1 has it as a module).
pub fn module_closure(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> Result<BTreeSet<String>, String> {
    let builtin: BTreeSet<String> = modules_builtin.lines().map(module_name).collect();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let needs = rest.split_whitespace().map(str::to_owned).collect();
        deps.insert(module_name(module), (module.to_owned(), needs));
    }
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = wanted
        .iter()
        .map(|m| m.replace('-', "_"))
        .filter(|m| !builtin.contains(m))
        .collect();
    while let Some(name) = todo.pop() {
        let (path, needs) = deps
            .get(&name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        if out.insert(path.clone()) {
            todo.extend(needs.iter().map(|p| module_name(p)));
        }
    }
    Ok(out)
}

/// Copies the module at `module` (a path relative to the module tree `from`, as
/// `modules.dep` names it) into the tree `to`, uncompressed: busybox's `modprobe` hands
/// the file's bytes to `init_module`, which takes no compressed module, and Debian's
/// 6.12 ships `.ko.xz` (6.1 ships plain `.ko`). Returns the path written, relative to
/// `to`; a `depmod -b` over the staged tree then names the `.ko` files.
pub fn copy_module(
    busybox: &Path,
    from: &Path,
    to: &Path,
    module: &str,
) -> Result<String, PrepareError> {
    let source = from.join(module);
    let (plain, decompress) = match module.rsplit_once(".ko.") {
        Some((base, "xz")) => (format!("{base}.ko"), Some("xz")),
        Some((base, "gz")) => (format!("{base}.ko"), Some("gzip")),
        Some((_, other)) => {
            return Err(failed(format!(
                "{}: modules compressed with {other} are not supported",
                source.display()
            )))
        }
        None => (module.to_owned(), None),
    };
    let target = to.join(&plain);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|err| io_failed(parent, &err))?;
    }
    match decompress {
        None => fs::copy(&source, &target)
            .map(drop)
            .map_err(|err| io_failed(&source, &err))?,
        Some(tool) => {
            let out = File::create(&target).map_err(|err| io_failed(&target, &err))?;
            let status = Command::new(busybox)
                .args([tool, "-dc"])
                .arg(&source)
                .stdin(Stdio::null())
                .stdout(out)
                .status()
                .map_err(|err| failed(format!("cannot run {}: {err}", busybox.display())))?;
            if !status.success() {
                return Err(failed(format!(
                    "busybox {tool} -dc {} failed: {status}",
                    source.display()
                )));
            }
        }
    }
    Ok(plain)
}

/// FNV-1a, to name the initramfs after its inputs.
pub(super) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn build_initramfs(
    layer: &Path,
    release: &str,
    busybox: &Path,
    out: &Path,
) -> Result<(), PrepareError> {
    let depmod = require_program("depmod", "kmod")?;
    let cpio = require_program("cpio", "cpio")?;
    let tree = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|p| layer.join(p).join(release))
        .find(|p| p.is_dir())
        .ok_or_else(|| failed(format!("no module tree in {}", layer.display())))?;
    let dep_path = tree.join("modules.dep");
    let dep = fs::read_to_string(&dep_path).map_err(|err| io_failed(&dep_path, &err))?;
    // Older module trees may lack the file: then nothing is built in that matters.
    let builtin = fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let wanted = module_closure(&dep, &builtin, INITRAMFS_MODULES).map_err(failed)?;

    let staging = out.with_extension("d");
    let _ = fs::remove_dir_all(&staging);
    let staged_tree = staging.join("lib/modules").join(release);
    for dir in ["bin", "dev", "proc", "sys", "mnt", "root", "tmp"] {
        let dir = staging.join(dir);
        fs::create_dir_all(&dir).map_err(|err| io_failed(&dir, &err))?;
    }
    let copy = |from: &Path, to: &Path| -> Result<(), PrepareError> {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|err| io_failed(parent, &err))?;
        }
        fs::copy(from, to)
            .map(drop)
            .map_err(|err| io_failed(from, &err))
    };
    copy(busybox, &staging.join("bin/busybox"))?;
    for module in &wanted {
        copy_module(busybox, &tree, &staged_tree, module)?;
    }
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if tree.join(file).is_file() {
            copy(&tree.join(file), &staged_tree.join(file))?;
        }
    }
    let init = staging.join("init");
    fs::write(&init, INIT_SCRIPT).map_err(|err| io_failed(&init, &err))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))
        .map_err(|err| io_failed(&init, &err))?;
    run(Command::new(&depmod).arg("-b").arg(&staging).arg(release)).map_err(failed)?;

    let tmp = out.with_extension("cpio.tmp");
    pack_cpio(&cpio, &staging, &tmp)?;
    fs::rename(&tmp, out).map_err(|err| io_failed(&tmp, &err))
}

/// Packs the tree `staging` into an uncompressed newc cpio archive `out`.
fn pack_cpio(cpio: &Path, staging: &Path, out: &Path) -> Result<(), PrepareError> {
    let file = File::create(out).map_err(|err| io_failed(out, &err))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | \"$0\" -o -H newc --quiet")
        .arg(cpio)
        .current_dir(staging)
        .stdout(file)
        .status()
        .map_err(|err| failed(format!("cannot run cpio: {err}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!("cpio failed: {status}")))
    }
}

/// Builds a minimal initramfs — a static busybox and `init` as `/init` — for a
/// nested guest that runs one probe script and powers off.
pub fn build_probe_initramfs(init: &str, out: &Path) -> Result<(), PrepareError> {
    let busybox = static_busybox()?;
    let cpio = require_program("cpio", "cpio")?;
    let staging = out.with_extension("staging");
    let _ = fs::remove_dir_all(&staging);
    for dir in ["bin", "proc", "sys", "dev"] {
        fs::create_dir_all(staging.join(dir)).map_err(|err| io_failed(&staging, &err))?;
    }
    fs::copy(&busybox, staging.join("bin/busybox")).map_err(|err| io_failed(&busybox, &err))?;
    let init_path = staging.join("init");
    fs::write(&init_path, init).map_err(|err| io_failed(&init_path, &err))?;
    use std::os::unix::fs::PermissionsExt;
    for file in [&init_path, &staging.join("bin/busybox")] {
        fs::set_permissions(file, fs::Permissions::from_mode(0o755))
            .map_err(|err| io_failed(file, &err))?;
    }
    let packed = pack_cpio(&cpio, &staging, out);
    let _ = fs::remove_dir_all(&staging);
    packed
}

/// The release of the newest kernel image (`vmlinuz-RELEASE`) in a `boot` directory.
pub fn kernel_release_in(boot: &Path) -> Result<String, PrepareError> {
    fs::read_dir(boot)
        .map_err(|err| io_failed(boot, &err))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .max()
        .ok_or_else(|| failed(format!("no vmlinuz-* in {}", boot.display())))
}

/// Checks the prerequisites and prepares (or finds cached) kernel and initramfs of
/// the testbed's `line`.
pub fn prepare(line: GuestKernel) -> Result<Kernel, PrepareError> {
    let qemu = require_program("qemu-system-x86_64", "qemu-system-x86")?;
    let busybox = static_busybox()?;
    require_program("cpio", "cpio")?;
    require_program("depmod", "kmod")?;

    let dir = testbed_dir();
    let kernel_dir = dir.join("kernel");
    fs::create_dir_all(&kernel_dir).map_err(|err| io_failed(&kernel_dir, &err))?;
    let _lock = lock(&dir.join("prepare.lock"))?;

    // `kernel/current-<line>` names the unpacked release; it is written last.
    let current = kernel_dir.join(format!("current-{}", line.name()));
    let cached = fs::read_to_string(&current)
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| {
            kernel_dir
                .join(r)
                .join("layer/boot")
                .join(format!("vmlinuz-{r}"))
                .is_file()
        });
    let release = match cached {
        Some(release) => release,
        None => {
            let deb = fetch_kernel_deb(line, &dir.join("download").join(line.name()))?;
            let release = unpack_kernel(&deb, &kernel_dir)?;
            fs::write(&current, format!("{release}\n")).map_err(|err| io_failed(&current, &err))?;
            release
        }
    };
    let layer = kernel_dir.join(&release).join("layer");
    let busybox_bytes = fs::read(&busybox).map_err(|err| io_failed(&busybox, &err))?;
    let hash = fnv1a(&[
        INIT_SCRIPT.as_bytes(),
        INITRAMFS_MODULES.join(",").as_bytes(),
        &busybox_bytes,
        // The way modules are staged (uncompressed since `copy_module`).
        b"plain-modules",
    ]);
    let initramfs = kernel_dir
        .join(&release)
        .join(format!("initramfs-{hash:016x}.cpio"));
    if !initramfs.is_file() {
        // Older builds (from an earlier init.sh) go; they are only a cache.
        if let Ok(entries) = fs::read_dir(kernel_dir.join(&release)) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("initramfs-") {
                    let path = entry.path();
                    let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
                }
            }
        }
        build_initramfs(&layer, &release, &busybox, &initramfs)?;
    }
    Ok(Kernel {
        line,
        vmlinuz: layer.join("boot").join(format!("vmlinuz-{release}")),
        release,
        layer,
        initramfs,
        qemu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines from the modules.dep that `depmod -b` wrote for Debian's 6.1.0-56-amd64
    // (package linux-image-6.1.0-56-amd64 6.1.192-2).
    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio_virqfd.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio_virqfd.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/vfio_virqfd.ko:
kernel/net/9p/9pnet.ko:
kernel/virt/lib/irqbypass.ko:
";

    #[test]
    fn module_closure_follows_dependencies() {
        let got = module_closure(DEP, "", &["9p", "vfio_pci"]).expect("closure");
        let want: BTreeSet<String> = [
            "kernel/fs/9p/9p.ko",
            "kernel/net/9p/9pnet.ko",
            "kernel/fs/fscache/fscache.ko",
            "kernel/fs/netfs/netfs.ko",
            "kernel/drivers/vfio/pci/vfio-pci.ko",
            "kernel/drivers/vfio/pci/vfio-pci-core.ko",
            "kernel/drivers/vfio/vfio_virqfd.ko",
            "kernel/drivers/vfio/vfio.ko",
            "kernel/virt/lib/irqbypass.ko",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(got, want);
        assert!(module_closure(DEP, "", &["nonexistent"]).is_err());
    }

    #[test]
    fn module_closure_skips_what_the_kernel_has_built_in() {
        // 6.12's modules.builtin lists virtio_pci; its modules.dep has no line for it.
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio.ko\n";
        let got = module_closure(DEP, builtin, &["virtio_pci", "overlay"]).expect("closure");
        assert_eq!(
            got,
            BTreeSet::from(["kernel/fs/overlayfs/overlay.ko".to_owned()])
        );
        assert!(module_closure(DEP, "", &["virtio_pci"]).is_err());
    }

    #[test]
    fn metapackage_depends_names_the_image() {
        assert_eq!(
            image_package_from_depends("linux-image-6.1.0-56-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            image_package_from_depends("initramfs-tools | linux-initramfs-tool"),
            None
        );
    }

    #[test]
    fn elf_static_check() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        // The test binary itself is dynamically linked on Debian.
        let me = fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        assert!(!is_static_elf(&me));
    }
}
