//! The one place that changes the host.
//!
//! Everything else in passthru reads and plans; this module carries plans out. Each
//! change is journaled with what was there before *before* it is made, so it can be
//! undone even after a crash, and every write to a driver runs with a timeout: a
//! driver that never returns from `unbind` is reported as stuck, not waited on
//! forever. Such a write runs in a child process (`passthru __sysfs-write`): a thread
//! stuck in the kernel would keep passthru itself from exiting, a child is left
//! behind instead.
//!
//! Man pages written for the user (`passthru man DIR`) are written here too, in
//! [`man`], though they are no change to the host that needs a way back.

pub mod bind;
pub mod disk;
pub mod enable;
pub mod journal;
pub mod kernel_config;
pub mod libvirt;
pub mod lock;
pub mod man;
pub mod qmp;
pub mod report;
pub mod safe_path;
pub mod spec;
pub(crate) mod sys;
pub mod sysfs_child;
pub mod vm_session;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::root::HostRoot;

/// The first argument that makes the passthru binary the child of
/// [`Applier::write_sysfs`]: `passthru __sysfs-write FILE VALUE` writes VALUE to FILE
/// and exits, 0 on success, 2 with the kernel's error on standard error. It is an
/// interface between passthru and itself, not a command: the command line's
/// definitions (and so `--help`, the completions and the man pages) do not know it.
pub const SYSFS_WRITE_ARG: &str = "__sysfs-write";

/// Why a change failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A write did not return in time.
    #[error(
        "writing {value:?} to {} did not return within {} s: the driver is stuck in the kernel \
         (see `dmesg`); the device may need a reboot to recover",
        path.display(),
        timeout.as_secs()
    )]
    Timeout {
        /// The sysfs file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// How long passthru waited.
        timeout: Duration,
    },
    /// A write failed.
    #[error("cannot write {value:?} to {}: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// What the kernel said.
        message: String,
    },
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output or exit status.
        message: String,
    },
    /// The state after a change is not what it should be.
    #[error("{0}")]
    Verify(String),
    /// A file the plan edits changed after the plan was made from it.
    #[error(
        "{} changed since the plan was made from it (edited while passthru waited?): \
         nothing was changed; run the command again to plan from the file as it is now",
        path.display()
    )]
    Changed {
        /// The file (root-relative, as the plan names it).
        path: PathBuf,
    },
    /// A file the plan edits is a symlink passthru does not write through.
    #[error("{} is a symlink passthru does not write through: {why}", path.display())]
    UnsafeLink {
        /// The link (root-relative).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An `undo` was interrupted after it restored the files: the boot files are
    /// still to be regenerated from them.
    #[error(
        "an interrupted `passthru undo` restored the files but did not finish regenerating \
         the boot files from them: run `passthru undo` again first"
    )]
    UndoUnfinished,
    /// A journal record could not be written or removed.
    #[error("cannot update {}", path.display())]
    Journal {
        /// The record.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Carries out plans on a live host.
#[derive(Debug, Clone)]
pub struct Applier {
    root: HostRoot,
    timeout: Duration,
    exe: PathBuf,
}

impl Applier {
    /// An applier for `root` (the live system, `/`), waiting at most `timeout` for
    /// each driver write. `exe` is the passthru binary that performs writes in a
    /// child process.
    pub fn new(root: HostRoot, timeout: Duration, exe: PathBuf) -> Self {
        Self { root, timeout, exe }
    }

    /// The root it changes.
    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    /// Writes `value` to the sysfs file `rel` (root-relative) in a child process,
    /// waiting at most the timeout.
    pub fn write_sysfs(&self, rel: &Path, value: &str) -> Result<(), ApplyError> {
        let path = self.root.path(rel);
        let mut child = Command::new(&self.exe)
            .arg(SYSFS_WRITE_ARG)
            .arg(&path)
            .arg(value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ApplyError::Write {
                path: path.clone(),
                value: value.to_string(),
                message: format!("cannot start {}: {e}", self.exe.display()),
            })?;
        let status = wait_with_timeout(&mut child, self.timeout);
        match status {
            Some(Ok(s)) if s.success() => Ok(()),
            Some(Ok(_)) | Some(Err(_)) => {
                let mut message = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut message);
                }
                Err(ApplyError::Write {
                    path,
                    value: value.to_string(),
                    message: message.trim().to_string(),
                })
            }
            None => {
                let _ = child.kill();
                Err(ApplyError::Timeout {
                    path,
                    value: value.to_string(),
                    timeout: self.timeout,
                })
            }
        }
    }

    /// Runs a command (a distribution tool such as `modprobe`) with the timeout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<(), ApplyError> {
        let line = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ApplyError::Command {
                command: line.clone(),
                message: e.to_string(),
            })?;
        match wait_with_timeout(&mut child, self.timeout) {
            Some(Ok(s)) if s.success() => Ok(()),
            Some(Ok(s)) => {
                let mut message = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut message);
                }
                Err(ApplyError::Command {
                    command: line,
                    message: format!("{s}: {}", message.trim()),
                })
            }
            Some(Err(e)) => Err(ApplyError::Command {
                command: line,
                message: e.to_string(),
            }),
            None => {
                let _ = child.kill();
                Err(ApplyError::Command {
                    command: line,
                    message: format!("did not finish within {} s", self.timeout.as_secs()),
                })
            }
        }
    }

    /// Writes a file atomically: beside it, fsync, rename, fsync the directory. A new
    /// file gets mode 0644 and the caller's owner; see [`Applier::write_atomic_as`].
    pub fn write_atomic(&self, rel: &Path, content: &[u8]) -> Result<(), ApplyError> {
        self.write_atomic_as(rel, content, &Attributes::new(0o644))
    }

    /// Writes a file atomically with the given mode, owner and SELinux label, all
    /// set on the temporary file before the rename: the file never exists, not even
    /// for a moment, with more permissive attributes than it ends with.
    ///
    /// The temporary file has a random name beside the file (see [`journal::temp_path`])
    /// and is created with `O_EXCL` and `O_NOFOLLOW`, so a name planted in advance (a
    /// symlink, a file of another user) is never written through: a second passthru
    /// or anyone else cannot make two writes share one temporary file.
    pub fn write_atomic_as(
        &self,
        rel: &Path,
        content: &[u8],
        attrs: &Attributes,
    ) -> Result<(), ApplyError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = self.root.path(rel);
        let err = |source| ApplyError::Journal {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(err)?;
        let prefix = journal::temp_path(&path);
        let (tmp, mut f) = loop {
            let tmp = PathBuf::from(format!("{}.{:016x}", prefix.display(), random_u64()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        };
        let written = (|| {
            f.write_all(content)?;
            if let Some((uid, gid)) = attrs.owner {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            // After the chown, which clears the set-id bits.
            f.set_permissions(std::fs::Permissions::from_mode(attrs.mode & 0o7777))?;
            if let Some(label) = &attrs.selinux {
                journal::xattr_set(&tmp, "security.selinux", label);
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes a file; a missing file is fine.
    pub fn remove(&self, rel: &Path) -> Result<(), ApplyError> {
        let path = self.root.path(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ApplyError::Journal { path, source }),
        }
    }

    /// Polls until `rel` exists, at most `limit`.
    pub fn wait_for(&self, rel: &Path, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.root.path(rel).exists() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits for a child at most `timeout`: `None` when it is still running.
fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The attributes a file is written with (see [`Applier::write_atomic_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    /// Owner and group; `None` leaves the writer's.
    pub owner: Option<(u32, u32)>,
    /// The SELinux label (`security.selinux`) to keep, if the file had one.
    pub selinux: Option<Vec<u8>>,
}

impl Attributes {
    /// Mode `mode`, the writer's owner, no label.
    pub fn new(mode: u32) -> Self {
        Self {
            mode,
            owner: None,
            selinux: None,
        }
    }
}

/// 64 random bits from the kernel (`getrandom`), for names nobody can predict.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // Flags 0 block only until the kernel's pool is initialised, which it is long
    // before passthru runs.
    if !matches!(sys::getrandom(&mut buf), Ok(8)) {
        // No getrandom (very old kernels): time and pid are unique enough, as
        // O_EXCL refuses a name that exists anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(buf)
}

/// The seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
