//! One passthru at a time changes the host.
//!
//! Two `enable` at once would each plan from the files as they were and write their
//! own result (`enabled.json` naming one device, `passthru-vfio.conf` binding
//! another); two `bind` could interleave their driver writes. Every command that
//! changes the host therefore first takes an exclusive `flock` on
//! `/run/passthru/lock` (root-relative [`LOCK_FILE`]) and holds it until it exits —
//! the kernel releases it however the process ends, `kill -9` included, so a stale
//! lock cannot exist. The file holds the holder's pid and command line, for the
//! message of the one that has to wait.
//!
//! A second command waits up to [`WAIT`] (saying for whom), then refuses, naming
//! the holder: a short command (a `bind`, a `vm stop`) is simply waited for, a long
//! one (an `enable` regenerating the initramfs, one waiting at its prompt) is not
//! queued behind.
//!
//! The lock file is opened with `O_NOFOLLOW` and must be a regular file owned by the
//! user running passthru: a file planted in `/run/passthru` by someone else is not
//! used.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::host::root::HostRoot;

/// The lock file, relative to the root.
pub const LOCK_FILE: &str = "run/passthru/lock";

/// How long a second command waits for the lock before it refuses.
pub const WAIT: Duration = Duration::from_secs(10);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another passthru holds it.
    #[error(
        "another passthru is changing this host: process {pid} (`{command}`); \
         wait for it to finish, then run this again"
    )]
    Held {
        /// The holder's pid, as it wrote it (`?` if it had not yet).
        pid: String,
        /// The holder's command line.
        command: String,
    },
    /// The lock file is not one passthru can trust.
    #[error("{}: {why}: remove it (it is recreated as needed)", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The host lock, held while this value lives.
#[derive(Debug)]
pub struct HostLock {
    file: File,
    /// What the lock file says while this value holds it: the pid and command line.
    record: String,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock of `root` for `command` (the command line, shown to a second
    /// command), waiting up to `wait` while another holds it; `waiting` is called
    /// once, with the holder's description, when it must wait.
    pub fn acquire(
        root: &HostRoot,
        command: &str,
        wait: Duration,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<Self, LockError> {
        let path = root.path(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.is_dir() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    LockError::Untrusted {
                        path: path.clone(),
                        why: "it is a symlink".into(),
                    }
                } else {
                    io(e)
                }
            })?;
        let meta = file.metadata().map_err(io)?;
        let me = super::sys::geteuid();
        if !meta.is_file() || meta.uid() != me {
            return Err(LockError::Untrusted {
                path,
                why: format!("not a regular file owned by uid {me}"),
            });
        }
        let deadline = Instant::now() + wait;
        let mut told = false;
        while let Err(e) = super::sys::flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            let (pid, holder) = holder(&mut file);
            if Instant::now() >= deadline {
                return Err(LockError::Held {
                    pid,
                    command: holder,
                });
            }
            if !told {
                waiting(&format!(
                    "waiting for process {pid} (`{holder}`), which is changing this host"
                ));
                told = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let record = format!("{}\n{command}\n", std::process::id());
        let lock = Self { file, record, path };
        lock.write_record()?;
        Ok(lock)
    }

    /// Writes the holder's pid and command line into the lock file.
    fn write_record(&self) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = &self.file;
        f.set_len(0).map_err(io)?;
        f.rewind().map_err(io)?;
        f.write_all(self.record.as_bytes()).map_err(io)
    }

    /// Lets other commands change the host while this one waits on something that
    /// changes nothing itself: a `vm run` while its guest runs (hours, often beside
    /// other VMs of their own devices). [`HostLock::retake`] takes it back before
    /// the command changes the host again.
    pub fn release(&self) {
        // Unlocking a descriptor this value owns cannot fail in a way to act on.
        let _ = super::sys::flock(&self.file, libc::LOCK_UN);
    }

    /// Takes the lock back after [`HostLock::release`], waiting as long as another
    /// command holds it: what follows must run (a `vm run` giving its devices back),
    /// so it is queued, not refused. `waiting` hears whom it waits for, every
    /// [`WAIT`].
    pub fn retake(&self, waiting: &mut dyn FnMut(&str)) -> Result<(), LockError> {
        let mut next_note = Instant::now();
        loop {
            let Err(e) = super::sys::flock(&self.file, libc::LOCK_EX | libc::LOCK_NB) else {
                return self.write_record();
            };
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Io {
                    path: self.path.clone(),
                    source: e,
                });
            }
            if Instant::now() >= next_note {
                let mut f = &self.file;
                let mut text = String::new();
                let _ = f.rewind();
                let _ = f.read_to_string(&mut text);
                let (pid, holder) = parse_holder(&text);
                waiting(&format!(
                    "waiting for process {pid} (`{holder}`), which is changing this host"
                ));
                next_note += WAIT;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The holder's pid and command line, as it wrote them into the lock file.
fn holder(file: &mut File) -> (String, String) {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    parse_holder(&text)
}

/// Parses the lock file's text: the pid on the first line, the command on the
/// second. A holder that has not written yet reads as `?`.
pub fn parse_holder(text: &str) -> (String, String) {
    let mut lines = text.lines();
    let pid = lines
        .next()
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("?")
        .to_string();
    let command = lines
        .next()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or("passthru")
        .to_string();
    (pid, command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("run"));
        let root = HostRoot::new(dir.path());
        let first = HostLock::acquire(&root, "passthru enable 01:00.0", WAIT, &mut |_| {}).unwrap();
        let mut said = Vec::new();
        let second = HostLock::acquire(
            &root,
            "passthru bind 02:00.0",
            Duration::from_millis(300),
            &mut |m| said.push(m.to_string()),
        );
        let pid = std::process::id().to_string();
        match second {
            Err(LockError::Held { pid: p, command }) => {
                assert_eq!(p, pid);
                assert_eq!(command, "passthru enable 01:00.0");
            }
            other => panic!("second lock: {other:?}"),
        }
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains(&pid) && said[0].contains("passthru enable 01:00.0"));
        // Released with its holder: the next one takes it.
        drop(first);
        HostLock::acquire(&root, "passthru bind 02:00.0", WAIT, &mut |_| {}).unwrap();
    }

    /// A `vm run` lets go while its guest runs: another command takes the lock then,
    /// and the teardown waits for it (and says for whom) instead of being refused.
    #[test]
    fn released_while_the_guest_runs_and_taken_back_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("run"));
        let root = HostRoot::new(dir.path());
        let run = HostLock::acquire(&root, "passthru vm run a", WAIT, &mut |_| {}).unwrap();
        run.release();
        let other = HostLock::acquire(&root, "passthru vm run b", WAIT, &mut |_| {}).unwrap();
        let path = dir.path().join(LOCK_FILE);
        assert!(std::fs::read_to_string(&path).unwrap().contains("vm run b"));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut said = Vec::new();
            run.retake(&mut |m| said.push(m.to_string())).unwrap();
            tx.send(()).unwrap();
            (run, said)
        });
        // Still held by the other: the teardown waits (longer than a refusal would).
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        drop(other);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let (run, said) = waiter.join().unwrap();
        assert!(said[0].contains("vm run b"), "{said:?}");
        assert!(std::fs::read_to_string(&path).unwrap().contains("vm run a"));
        // Held again: a third command is refused.
        let third = HostLock::acquire(&root, "passthru bind", Duration::ZERO, &mut |_| {});
        assert!(matches!(third, Err(LockError::Held { .. })), "{third:?}");
        drop(run);
    }

    #[test]
    fn a_planted_symlink_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("run/passthru"));
        crate::testing::write(dir.path().join("victim"), "keep");
        std::os::unix::fs::symlink(
            dir.path().join("victim"),
            dir.path().join("run/passthru/lock"),
        )
        .unwrap();
        let root = HostRoot::new(dir.path());
        let r = HostLock::acquire(&root, "passthru bind", WAIT, &mut |_| {});
        assert!(matches!(r, Err(LockError::Untrusted { .. })), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("victim")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn holder_text() {
        assert_eq!(
            parse_holder("123\npassthru enable 01:00.0\n"),
            ("123".into(), "passthru enable 01:00.0".into())
        );
        assert_eq!(parse_holder(""), ("?".into(), "passthru".into()));
    }
}
