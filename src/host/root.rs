//! The host root: the one place through which every read of host state goes.
//!
//! passthru never reads `/sys`, `/proc`, `/dev` or `/etc` directly. It reads them
//! through a [`HostRoot`], which is `/` on a live machine and any directory laid out
//! like a host (a fixture tree, an extracted `passthru report`) otherwise. Paths are
//! given relative to the root (`"sys/bus/pci/devices"`; a leading `/` is accepted and
//! ignored).
//!
//! Symlinks inside the tree are resolved *relative to the root* by
//! [`HostRoot::resolve`]: an absolute link target such as `/sys/devices/...` means
//! `<root>/sys/devices/...`, never the analysing machine's own `/sys`.
//!
//! A root can also *record* what is read through it ([`HostRoot::recording`]): every
//! file's content as read, every directory listed, every symlink followed. That
//! record is what `passthru report` archives, so a report holds exactly what the tool
//! reads and nothing else, and reading the report with `--root` sees the same host.
//! Files read together from one directory (the attributes of a sysfs device) go
//! through a [`HostDir`], the directory opened once, under the same rules and
//! recorded the same way.

//!
//! # A captured tree is untrusted
//!
//! A tree given with `--root` may come from someone else (a report attached to a bug),
//! and passthru reads it as root. So for every root but `/`:
//!
//! - **nothing outside the root is reached**: every path is opened with `openat2(2)`
//!   and `RESOLVE_IN_ROOT` relative to the root directory, so a link such as
//!   `proc/cmdline -> /etc/shadow` or `-> ../../../etc/shadow` means
//!   `<root>/etc/shadow`, exactly as [`HostRoot::resolve`] computes it. Where
//!   `openat2` is unavailable (Linux before 5.6, or filtered by a sandbox) the same
//!   resolution is done by hand, one component at a time with `O_NOFOLLOW`;
//! - **only regular files are read**: a FIFO would block the reader forever and a
//!   character device such as `/dev/zero` never ends, so an entry that is not a
//!   regular file is refused before it is opened, and checked again with `fstat` on
//!   the open descriptor (opened `O_NONBLOCK`, so even a FIFO slipped in between
//!   cannot block);
//! - **every read is capped**: [`READ_CAP`] per file, [`LOG_CAP`] for the kernel log.
//!
//! On the live system (`/`) paths are opened as they are: `/dev/kmsg`, sysfs and
//! procfs files are not regular files in the usual sense (sysfs attributes report a
//! size of 4096, procfs files 0), and the system's own links are trusted. Reads are
//! capped there too.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The most bytes read from one file of a host: far more than any sysfs attribute
/// (one page), `/proc/cpuinfo` of a 1024-thread machine (about 1.5 MiB), a kernel
/// config (about 300 KiB) or a bootloader configuration. A larger file is an error,
/// not a truncated read.
pub const READ_CAP: usize = 16 << 20;

/// The most bytes read from the kernel log: the kernel's ring buffer is at most
/// 32 MiB (`log_buf_len`), and a captured `dmesg` text is about as large.
pub const LOG_CAP: usize = 64 << 20;

/// An I/O failure while reading the host, with the path that was touched.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct HostError {
    /// The full path (root included) that could not be read.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: io::Error,
}

impl HostError {
    /// Whether the path simply does not exist (as opposed to being unreadable).
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// How many symlinks [`HostRoot::resolve`] follows before giving up (as the kernel's
/// own `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// One recorded path, as seen through a recording [`HostRoot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// A file and the bytes read from it.
    File(Vec<u8>),
    /// A file that exists but whose content was not read (seen in a listing, or
    /// tested for existence): archived empty.
    Present,
    /// A directory.
    Dir,
    /// A symlink and its target, as written in the link.
    Symlink(PathBuf),
}

/// Root-relative path (starting with `/`) → what was seen there.
pub type Capture = BTreeMap<PathBuf, Captured>;

/// The root directory of the host being analysed.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
    /// The root directory, opened once (`O_PATH`) the first time a captured tree is
    /// read: every path inside it is resolved relative to this descriptor.
    dir_fd: Arc<OnceLock<File>>,
    recorder: Option<Arc<Mutex<Capture>>>,
}

impl PartialEq for HostRoot {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for HostRoot {}

impl Default for HostRoot {
    fn default() -> Self {
        Self::system()
    }
}

/// The error for a file that is read only when it is a regular file (any file of a
/// captured tree, a pci.ids file) but is something else.
pub(crate) fn not_regular(meta: &Metadata) -> io::Error {
    let ft = meta.file_type();
    let what = if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a plain file"
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file"),
    )
}

/// Reads `file` whole, failing (rather than truncating) when it holds more than `cap`
/// bytes; `size_hint` is what `fstat` said (0 for procfs, 4096 for sysfs).
pub(crate) fn read_capped(file: &mut File, size_hint: u64, cap: usize) -> io::Result<Vec<u8>> {
    let hint = usize::try_from(size_hint).unwrap_or(cap).min(cap);
    let mut bytes = Vec::with_capacity(hint.saturating_add(1));
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes)?;
    if bytes.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than {}, more than any such file holds",
                size_text(cap)
            ),
        ));
    }
    Ok(bytes)
}

/// `16 MiB`, `64 KiB`, `100 bytes`.
fn size_text(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

impl HostRoot {
    /// The running machine itself (`/`).
    pub fn system() -> Self {
        Self::new("/")
    }

    /// A tree laid out like a host, e.g. an extracted report or a test fixture.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            dir_fd: Arc::new(OnceLock::new()),
            recorder: None,
        }
    }

    /// The same root, recording every read into a [`Capture`] (see the module doc).
    pub fn recording(&self) -> Self {
        Self {
            root: self.root.clone(),
            dir_fd: Arc::clone(&self.dir_fd),
            recorder: Some(Arc::new(Mutex::new(Capture::new()))),
        }
    }

    /// What a recording root has seen so far (empty when not recording).
    pub fn captured(&self) -> Capture {
        self.recorder
            .as_ref()
            .map(|r| {
                r.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Whether reads are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Records `entry` at the root-relative `rel`, never downgrading content that was
    /// already read to a mere presence.
    pub fn record(&self, rel: impl AsRef<Path>, entry: Captured) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let rel = rel.as_ref();
        let key = Path::new("/").join(rel.strip_prefix("/").unwrap_or(rel));
        let mut map = recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (map.get(&key), &entry) {
            (Some(Captured::File(_)), Captured::Present) => {}
            _ => {
                map.insert(key, entry);
            }
        }
    }

    /// Records what is at the root-relative `rel` without reading file contents.
    fn record_kind(&self, rel: &Path) {
        if self.recorder.is_none() {
            return;
        }
        let Ok((meta, target)) = self.lstat_link(rel) else {
            return;
        };
        let entry = match target {
            Some(target) => Captured::Symlink(target),
            None if meta.is_dir() => Captured::Dir,
            None => Captured::Present,
        };
        self.record(rel, entry);
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Whether this is the live system (`/`) rather than a captured tree.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The real path of `rel` (relative to the root) without resolving symlinks, for
    /// messages. Reading through it would follow links out of a captured tree: read
    /// with this type's methods instead.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    fn err(&self, rel: impl AsRef<Path>, source: io::Error) -> HostError {
        HostError {
            path: self.path(rel),
            source,
        }
    }

    /// The root directory's descriptor (captured trees only).
    fn root_fd(&self) -> io::Result<&File> {
        if let Some(fd) = self.dir_fd.get() {
            return Ok(fd);
        }
        let fd = open_path_dir(&self.root)?;
        // Another clone may have won the race: either descriptor is the same root.
        let _ = self.dir_fd.set(fd);
        self.dir_fd
            .get()
            .ok_or_else(|| io::Error::other("the root directory descriptor vanished"))
    }

    /// Opens `rel` with `flags` (`O_CLOEXEC` is added): on the system as the path
    /// says, in a captured tree resolved inside the root (see the module doc).
    fn open(&self, rel: &Path, flags: libc::c_int) -> io::Result<File> {
        if self.is_system() {
            return open_plain(&self.path(rel), flags);
        }
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        resolve_in_root::open(self.root_fd()?, rel, flags)
    }

    /// The metadata of `rel` itself (a symlink is not followed) and, for a symlink,
    /// its target.
    fn lstat_link(&self, rel: &Path) -> io::Result<(Metadata, Option<PathBuf>)> {
        if self.is_system() {
            let path = self.path(rel);
            let meta = path.symlink_metadata()?;
            let target = if meta.file_type().is_symlink() {
                Some(std::fs::read_link(&path)?)
            } else {
                None
            };
            return Ok((meta, target));
        }
        let fd = self.open(rel, libc::O_PATH | libc::O_NOFOLLOW)?;
        let meta = fd.metadata()?;
        let target = if meta.file_type().is_symlink() {
            Some(resolve_in_root::read_link(&fd, c"")?)
        } else {
            None
        };
        Ok((meta, target))
    }

    /// Opens a file for reading: on the system as it is, in a captured tree only a
    /// regular file (checked before opening, so a device node is never opened, and
    /// again on the open descriptor). Opened `O_NONBLOCK` either way.
    pub fn open_for_reading(&self, rel: impl AsRef<Path>) -> Result<(File, Metadata), HostError> {
        let rel = rel.as_ref();
        let err = |e| self.err(rel, e);
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        if self.is_system() {
            let file = self.open(rel, flags).map_err(err)?;
            let meta = file.metadata().map_err(err)?;
            return Ok((file, meta));
        }
        let before = self
            .open(rel, libc::O_PATH)
            .and_then(|f| f.metadata())
            .map_err(err)?;
        if !before.is_file() {
            return Err(err(not_regular(&before)));
        }
        let file = self.open(rel, flags).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if !meta.is_file() {
            return Err(err(not_regular(&meta)));
        }
        if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
            return Err(err(io::Error::other(
                "the file was replaced while it was opened",
            )));
        }
        Ok((file, meta))
    }

    /// Reads a whole file as text (lossily: sysfs and logs are not always UTF-8).
    pub fn read_to_string(&self, rel: impl AsRef<Path>) -> Result<String, HostError> {
        let bytes = self.read_bytes(rel)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Reads a file as text, `Ok(None)` when it does not exist.
    pub fn read_optional(&self, rel: impl AsRef<Path>) -> Result<Option<String>, HostError> {
        match self.read_to_string(rel) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads raw bytes, at most [`READ_CAP`].
    pub fn read_bytes(&self, rel: impl AsRef<Path>) -> Result<Vec<u8>, HostError> {
        self.read_bytes_up_to(rel, READ_CAP)
    }

    /// Reads raw bytes, failing when the file holds more than `cap`.
    pub fn read_bytes_up_to(
        &self,
        rel: impl AsRef<Path>,
        cap: usize,
    ) -> Result<Vec<u8>, HostError> {
        let rel = rel.as_ref();
        let (mut file, meta) = self.open_for_reading(rel)?;
        let bytes = read_capped(&mut file, meta.len(), cap).map_err(|e| self.err(rel, e))?;
        if self.recorder.is_some() {
            // Record the file where it really is, so links on the way are kept too.
            let real = self.resolve(rel).unwrap_or_else(|_| rel.to_path_buf());
            self.record(real, Captured::File(bytes.clone()));
        }
        Ok(bytes)
    }

    /// Whether `rel` exists (following symlinks relative to the root).
    ///
    /// One system call when not recording: `stat` on the system, an `O_PATH` open
    /// resolved inside the root otherwise. A recording root walks the path one
    /// component at a time instead, so that the links on the way are recorded.
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        let rel = rel.as_ref();
        if self.recorder.is_some() {
            return self
                .resolve(rel)
                .is_ok_and(|p| self.symlink_metadata(p).is_ok());
        }
        if self.is_system() {
            return self.path(rel).metadata().is_ok();
        }
        self.open(rel, libc::O_PATH).is_ok()
    }

    /// The metadata of `rel`, following symlinks inside the root.
    pub fn metadata(&self, rel: impl AsRef<Path>) -> Result<Metadata, HostError> {
        let rel = rel.as_ref();
        if self.is_system() {
            return self.path(rel).metadata().map_err(|e| self.err(rel, e));
        }
        self.open(rel, libc::O_PATH)
            .and_then(|f| f.metadata())
            .map_err(|e| self.err(rel, e))
    }

    /// The metadata of `rel` itself: a symlink at the end is not followed (links
    /// before it are, inside the root).
    pub fn symlink_metadata(&self, rel: impl AsRef<Path>) -> Result<Metadata, HostError> {
        let rel = rel.as_ref();
        if self.is_system() {
            return self
                .path(rel)
                .symlink_metadata()
                .map_err(|e| self.err(rel, e));
        }
        self.open(rel, libc::O_PATH | libc::O_NOFOLLOW)
            .and_then(|f| f.metadata())
            .map_err(|e| self.err(rel, e))
    }

    /// Opens the directory `rel` (links followed inside the root; with `follow_last`
    /// false, a link as the last component is an error), so that its entries can be
    /// opened relative to it; see [`crate::host::pci::device`]. On the system it is opened
    /// `O_PATH`; in a captured tree for reading, so that it can also be listed with
    /// [`resolve_in_root::list`].
    pub(crate) fn open_dir(
        &self,
        rel: impl AsRef<Path>,
        follow_last: bool,
    ) -> Result<File, HostError> {
        let rel = rel.as_ref();
        let mut flags = if self.is_system() {
            libc::O_PATH | libc::O_DIRECTORY
        } else {
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK
        };
        if !follow_last {
            flags |= libc::O_NOFOLLOW;
        }
        self.open(rel, flags).map_err(|e| self.err(rel, e))
    }

    /// The names in a directory, sorted. A missing directory is an error; use
    /// [`HostRoot::list_dir_optional`] where absence is normal.
    pub fn list_dir(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, HostError> {
        let rel = rel.as_ref();
        let err = |e| self.err(rel, e);
        let mut names: Vec<String> = if self.is_system() {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(self.path(rel)).map_err(err)? {
                let entry = entry.map_err(err)?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names
        } else {
            let dir = self
                .open(rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK)
                .map_err(err)?;
            resolve_in_root::list(&dir)
                .map_err(err)?
                .iter()
                .map(|(n, _)| n.to_string_lossy().into_owned())
                .collect()
        };
        names.sort();
        if self.recorder.is_some() {
            let dir = self.resolve(rel).unwrap_or_else(|_| rel.to_path_buf());
            self.record(&dir, Captured::Dir);
            for name in &names {
                self.record_kind(&dir.join(name));
            }
        }
        Ok(names)
    }

    /// Like [`HostRoot::list_dir`], but a missing directory gives an empty list.
    pub fn list_dir_optional(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, HostError> {
        match self.list_dir(rel) {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The raw target of a symlink (links before it are followed inside the root).
    pub fn read_link(&self, rel: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        let rel = rel.as_ref();
        let target = self.link_target(rel)?;
        self.record(rel, Captured::Symlink(target.clone()));
        Ok(target)
    }

    /// [`HostRoot::read_link`] without recording.
    pub(crate) fn link_target(&self, rel: &Path) -> Result<PathBuf, HostError> {
        let err = |e| self.err(rel, e);
        if self.is_system() {
            return std::fs::read_link(self.path(rel)).map_err(err);
        }
        let fd = self
            .open(rel, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(err)?;
        resolve_in_root::read_link(&fd, c"").map_err(err)
    }

    /// Resolves every symlink in `rel` *inside the root* and returns the canonical
    /// root-relative path (always starting with `/`). Absolute link targets are taken
    /// relative to the root; `..` never climbs above it.
    pub fn resolve(&self, rel: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        let rel = rel.as_ref();
        let mut done = PathBuf::from("/");
        let mut pending: Vec<OsString> = components_rev(rel);
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            let candidate = done.join(&name);
            match self.lstat_link(&candidate) {
                Ok((_, Some(target))) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(
                            self.err(rel, io::Error::other("too many levels of symbolic links"))
                        );
                    }
                    self.record(&candidate, Captured::Symlink(target.clone()));
                    if target.is_absolute() {
                        done = PathBuf::from("/");
                    }
                    pending.extend(components_rev(&target));
                }
                Ok((_, None)) => done = candidate,
                Err(e) => return Err(self.err(&candidate, e)),
            }
        }
        // A recorded link must not dangle in the archive: keep what it leads to.
        self.record_kind(&done);
        Ok(done)
    }
}

/// A read of the host started on another thread by [`HostRoot::read_in_background`].
#[derive(Debug)]
pub struct Pending<T>(PendingState<T>);

#[derive(Debug)]
enum PendingState<T> {
    /// The thread, which gives `None` only if the job was not there to take (never:
    /// only a thread that could not start leaves it to the caller).
    Running(std::thread::JoinHandle<Option<T>>),
    Done(T),
}

impl<T> Pending<T> {
    /// Waits for the read to end and gives its result (a panic of the reading thread
    /// goes on here).
    pub fn wait(self) -> T {
        match self.0 {
            PendingState::Running(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .expect("a started thread always takes its job"),
            PendingState::Done(result) => result,
        }
    }
}

impl HostRoot {
    /// Runs `read` on this root on another thread, so that other reads go on
    /// meanwhile; [`Pending::wait`] gives its result. A recording root records what
    /// the thread reads as well. Where no thread can be started, `read` runs at once.
    pub fn read_in_background<T, F>(&self, read: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&HostRoot) -> T + Send + 'static,
    {
        // Shared, so that it can still be run here if the thread cannot start.
        let job = Arc::new(Mutex::new(Some(read)));
        let take = |job: &Mutex<Option<F>>| {
            job.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        };
        let root = self.clone();
        let theirs = Arc::clone(&job);
        let spawned =
            std::thread::Builder::new().spawn(move || take(&theirs).map(|read| read(&root)));
        match spawned {
            Ok(handle) => Pending(PendingState::Running(handle)),
            Err(_) => {
                let read = take(&job).expect("no thread started, so the job is still here");
                Pending(PendingState::Done(read(self)))
            }
        }
    }
}

/// The most bytes read in one `read()` of a directory entry by [`HostDir::read_attr`]:
/// the largest sysfs attribute the kernel writes (one page). A larger file in a
/// captured tree is read on in a second step.
const ATTR_BUF: usize = 4096;

/// The most bytes [`HostDir::read_attr`] reads from one file: sysfs writes at most a
/// page, so a larger file in a captured tree is refused rather than read on.
pub(crate) const ATTR_CAP: usize = 64 << 10;

/// A directory of the host opened once (resolved inside the root), whose entries are
/// opened and whose links are read relative to it (`openat`, `readlinkat` on the
/// directory's descriptor) instead of walking the whole path again for each: a sysfs
/// device directory holds a dozen attributes that are read together.
///
/// Reads through it obey the same rules as the root's own and are recorded the same
/// way (see the module doc). In a captured tree (any root but `/`) the directory is
/// listed once (`getdents64`, which also gives each entry's type), and an entry is
/// opened only when the listing shows a regular file: a FIFO or device node is never
/// opened, and an absent entry costs no further system call. The entry is then opened
/// by its one name with `O_NOFOLLOW | O_NONBLOCK`, so it cannot lead out of the
/// directory or block, and — when someone other than root or this process's user
/// could change the directory's entries after the listing — checked again with
/// `fstat` on the open descriptor.
#[derive(Debug)]
pub struct HostDir<'r> {
    root: &'r HostRoot,
    /// The directory, root-relative; where reads are recorded (on a recording root,
    /// the path with its links resolved).
    rel: PathBuf,
    fd: File,
    /// The entries and their `d_type`, sorted by name (captured trees only).
    entries: Option<Vec<(Vec<u8>, u8)>>,
    /// Whether nobody but root and this process's user can change the directory's
    /// entries (see [`HostDir::new`]).
    entries_fixed: bool,
}

/// The error for an entry of a captured tree that is not a regular file, by its
/// `d_type`.
fn not_a_file(d_type: u8) -> io::Error {
    let what = match d_type {
        libc::DT_FIFO => "a FIFO",
        libc::DT_CHR => "a character device",
        libc::DT_BLK => "a block device",
        libc::DT_SOCK => "a socket",
        libc::DT_DIR => "a directory",
        libc::DT_LNK => "a symlink",
        _ => "not a plain file",
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file"),
    )
}

/// The `d_type` of a `st_mode` (`IFTODT`: the type bits, shifted).
fn dt_of_mode(mode: libc::mode_t) -> u8 {
    u8::try_from((mode & libc::S_IFMT) >> 12).unwrap_or(libc::DT_UNKNOWN)
}

impl HostRoot {
    /// Opens the directory `rel` to read its entries relative to it (see
    /// [`HostDir`]); with `follow_last` false, a link as its last component is an
    /// error (links before it are followed inside the root).
    pub fn open_host_dir(
        &self,
        rel: impl AsRef<Path>,
        follow_last: bool,
    ) -> Result<HostDir<'_>, HostError> {
        let rel = rel.as_ref();
        let fd = self.open_dir(rel, follow_last)?;
        let rel = if self.recorder.is_some() {
            // Records the links on the way, and the directory itself.
            self.resolve(rel).unwrap_or_else(|_| rel.to_path_buf())
        } else {
            rel.to_path_buf()
        };
        HostDir::new(self, rel, fd)
    }
}

impl<'r> HostDir<'r> {
    /// The directory `rel` of `root`, opened as `fd`: listed in a captured tree.
    fn new(root: &'r HostRoot, rel: PathBuf, fd: File) -> Result<Self, HostError> {
        let (entries, entries_fixed) = if root.is_system() {
            (None, true)
        } else {
            let mut entries: Vec<(Vec<u8>, u8)> = resolve_in_root::list(&fd)
                .map_err(|e| root.err(&rel, e))?
                .into_iter()
                .map(|(name, t)| (name.into_vec(), t))
                .collect();
            entries.sort_unstable();
            // Only who may write a directory can put another file under a listed
            // name (rename, unlink, create). When that is root or this process's own
            // user alone — owned by one of them, no write bit for group or others
            // (an ACL granting more shows in the group bits) — the listing's types
            // stay true and each file is opened without a second look; otherwise
            // each opened file is checked again (`fstat`), so that a device node
            // swapped in after the listing is never read.
            let st = resolve_in_root::fstat(&fd).map_err(|e| root.err(&rel, e))?;
            let owner_trusted = st.st_uid == 0 || st.st_uid == crate::apply::sys::geteuid();
            (Some(entries), owner_trusted && st.st_mode & 0o022 == 0)
        };
        Ok(Self {
            root,
            rel,
            fd,
            entries,
            entries_fixed,
        })
    }

    /// Opens the subdirectory `name`, one component that is not a link (a link, a
    /// file or a name with a `/` is an error), relative to this directory: no path is
    /// walked again, and nothing outside the directory can be reached.
    pub fn open_subdir(&self, name: &CStr) -> Result<HostDir<'r>, HostError> {
        let bytes = name.to_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(self.err(
                name,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory entry's name"),
            ));
        }
        let flags = if self.root.is_system() {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW
        } else {
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_NOFOLLOW
        };
        let fd = resolve_in_root::openat(&self.fd, name, flags).map_err(|e| self.err(name, e))?;
        let rel = self.rel_of(name);
        self.root.record_kind(&rel);
        HostDir::new(self.root, rel, fd)
    }
}

impl HostDir<'_> {
    /// The directory, relative to the root.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The root-relative path of the entry `name`.
    fn rel_of(&self, name: &CStr) -> PathBuf {
        self.rel.join(OsStr::from_bytes(name.to_bytes()))
    }

    /// The full path of the entry `name` (root included), for messages.
    pub fn path_of(&self, name: &CStr) -> PathBuf {
        self.root.path(self.rel_of(name))
    }

    fn err(&self, name: &CStr, source: io::Error) -> HostError {
        HostError {
            path: self.path_of(name),
            source,
        }
    }

    /// The listed type of `name` (captured trees): `Err(NotFound)` when absent.
    fn listed(entries: &[(Vec<u8>, u8)], name: &CStr) -> io::Result<u8> {
        let key = name.to_bytes();
        entries
            .binary_search_by(|(n, _)| n.as_slice().cmp(key))
            .map(|i| entries[i].1)
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))
    }

    fn open_file(&self, name: &CStr) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let Some(entries) = &self.entries else {
            return resolve_in_root::openat(&self.fd, name, flags);
        };
        match Self::listed(entries, name)? {
            libc::DT_REG => {}
            // The filesystem does not say: ask.
            libc::DT_UNKNOWN => {
                let st = resolve_in_root::stat_at(&self.fd, name)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(not_a_file(dt_of_mode(st.st_mode)));
                }
            }
            other => return Err(not_a_file(other)),
        }
        let file = resolve_in_root::openat(&self.fd, name, flags | libc::O_NOFOLLOW)?;
        if !self.entries_fixed {
            let st = resolve_in_root::fstat(&file)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(not_a_file(dt_of_mode(st.st_mode)));
            }
        }
        Ok(file)
    }

    /// Reads the small file `name` (a sysfs attribute) with one `open` and, for
    /// sysfs attributes and small captured files, one `read`: no `stat` for a size
    /// hint, no second read to see end-of-file unless the first one filled the
    /// buffer. `Ok(None)` when the file does not exist. At most `ATTR_CAP` (64 KiB).
    pub fn read_attr(&self, name: &CStr) -> Result<Option<Vec<u8>>, HostError> {
        let mut file = match self.open_file(name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(name, e)),
        };
        let mut buf = [0u8; ATTR_BUF];
        let n = loop {
            match file.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(name, e)),
            }
        };
        let bytes = if n < buf.len() {
            // sysfs hands out a whole attribute in one read, and a regular file this
            // small is read whole too.
            buf[..n].to_vec()
        } else {
            let mut all = buf.to_vec();
            all.extend(read_capped(&mut file, 0, ATTR_CAP - n).map_err(|_| {
                self.err(
                    name,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "larger than 64 KiB, more than any sysfs attribute holds",
                    ),
                )
            })?);
            all
        };
        if self.root.recorder.is_some() {
            self.root
                .record(self.rel_of(name), Captured::File(bytes.clone()));
        }
        Ok(Some(bytes))
    }

    /// The target of the symlink `name`, read, never followed; `Ok(None)` when there
    /// is no such entry.
    pub fn read_link(&self, name: &CStr) -> Result<Option<PathBuf>, HostError> {
        if let Some(entries) = &self.entries {
            match Self::listed(entries, name) {
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
        match resolve_in_root::read_link(&self.fd, name) {
            Ok(target) => {
                self.root
                    .record(self.rel_of(name), Captured::Symlink(target.clone()));
                Ok(Some(target))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// Whether the entry `name` exists (a link is not followed), without reading it.
    pub fn has(&self, name: &CStr) -> bool {
        let present = match &self.entries {
            Some(entries) => Self::listed(entries, name).is_ok(),
            None => resolve_in_root::stat_at(&self.fd, name).is_ok(),
        };
        if present {
            self.root.record_kind(&self.rel_of(name));
        }
        present
    }
}

/// Opens an absolute path on the analysing machine as it is.
fn open_plain(path: &Path, flags: libc::c_int) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // std adds O_CLOEXEC; the access mode (read) is in `flags` as O_RDONLY (0), or
    // replaced by O_PATH.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// Opens a root directory as the base of resolutions.
fn open_path_dir(path: &Path) -> io::Result<File> {
    open_plain(path, libc::O_PATH | libc::O_DIRECTORY)
}

/// The normal components of a path, reversed (so they can be popped in order);
/// `..` is kept, `.` and the root are dropped.
fn components_rev(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    out.reverse();
    out
}

/// A path as a C string (paths never hold NUL bytes; one that does cannot exist).
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "a path with a NUL byte"))
}

/// Opening paths inside a directory as if it were `/` (see the module doc), and the
/// few descriptor-relative calls that go with it (their system calls are the safe
/// wrappers of [`crate::apply::sys`]).
pub(crate) mod resolve_in_root {
    use super::{c_path, components_rev, MAX_SYMLINKS};
    use crate::apply::sys;
    use std::ffi::{CStr, OsStr, OsString};
    use std::fs::File;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Whether `openat2` works here: 0 not yet known, 1 yes, 2 no.
    static OPENAT2: AtomicU8 = AtomicU8::new(0);

    /// How often `openat2` is retried when it says `EAGAIN` (a rename raced with a
    /// `..`), before the component walk is used instead.
    const EAGAIN_RETRIES: usize = 8;

    /// `openat2(dir, path, {flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS})`: opens
    /// `path` as if `dir` were `/`, so that no absolute link, `..` or `/proc` magic
    /// link leads out of it.
    fn openat2_in_root(dir: &File, path: &CStr, flags: libc::c_int) -> io::Result<File> {
        sys::openat2(
            dir,
            path,
            flags,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    pub(crate) use sys::{fstat, fstatat as stat_at, openat, readlinkat as read_link};

    /// The entries of the directory `dir` (opened for reading), without `.` and
    /// `..`: each name with its `d_type` (`libc::DT_REG`, `DT_DIR`, `DT_LNK`, … or
    /// `DT_UNKNOWN` where the filesystem does not say).
    pub(crate) fn list(dir: &File) -> io::Result<Vec<(OsString, u8)>> {
        // `struct linux_dirent64`: d_ino (8 bytes), d_off (8), d_reclen (2),
        // d_type (1), then the NUL-terminated name.
        const NAME: usize = 19;
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            let n = sys::getdents64(dir, &mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            let mut at = 0;
            while at + NAME < n {
                let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
                if reclen <= NAME || at + reclen > n {
                    return Err(io::Error::other("malformed directory entry"));
                }
                let d_type = buf[at + 18];
                let name = &buf[at + NAME..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    out.push((OsStr::from_bytes(name).to_os_string(), d_type));
                }
                at += reclen;
            }
        }
    }

    /// Opens the root-relative `rel` (no leading `/`) inside `root` with `flags`; see
    /// the module doc.
    pub(crate) fn open(root: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
        let path = if rel.as_os_str().is_empty() {
            c".".to_owned()
        } else {
            c_path(rel)?
        };
        if OPENAT2.load(Ordering::Relaxed) != 2 {
            for _ in 0..EAGAIN_RETRIES {
                match openat2_in_root(root, &path, flags) {
                    Ok(f) => {
                        OPENAT2.store(1, Ordering::Relaxed);
                        return Ok(f);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    // Linux before 5.6, or a sandbox that filters the call.
                    Err(e)
                        if OPENAT2.load(Ordering::Relaxed) == 0
                            && matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) =>
                    {
                        OPENAT2.store(2, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        walk(root, rel, flags)
    }

    /// What `openat2` with `RESOLVE_IN_ROOT` does, by hand: each component is opened
    /// `O_PATH | O_NOFOLLOW` relative to the directory before it; a symlink's target
    /// is walked in its place (from `root` when absolute), `..` goes back one
    /// directory and never above `root`, and the last component is opened with
    /// `flags` and `O_NOFOLLOW`, so a link swapped in meanwhile fails rather than
    /// being followed.
    pub(crate) fn walk(root: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
        let follow_last = flags & libc::O_NOFOLLOW == 0;
        let mut dirs: Vec<File> = Vec::new();
        let mut pending = components_rev(rel);
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                dirs.pop();
                continue;
            }
            let at = dirs.last().unwrap_or(root);
            let cname = c_path(Path::new(&name))?;
            let fd = openat(at, &cname, libc::O_PATH | libc::O_NOFOLLOW)?;
            let meta = fd.metadata()?;
            let last = pending.is_empty();
            if meta.file_type().is_symlink() && (!last || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = read_link(&fd, c"")?;
                if target.is_absolute() {
                    dirs.clear();
                }
                pending.extend(components_rev(&target));
                continue;
            }
            if last {
                return openat(at, &cname, flags | libc::O_NOFOLLOW);
            }
            if !meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            dirs.push(fd);
        }
        // The path ended at a directory (`a/..`, or the root itself).
        openat(dirs.last().unwrap_or(root), c".", flags)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn resolves_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        testing::mkdir(dir.path().join("sys/devices/pci0000:00/0000:00:01.0"));
        testing::mkdir(dir.path().join("sys/bus/pci/devices"));
        // relative link, as the kernel makes them
        testing::symlink(
            "../../../devices/pci0000:00/0000:00:01.0",
            dir.path().join("sys/bus/pci/devices/0000:00:01.0"),
        );
        // absolute link, as a capture might hold: must stay inside the root
        testing::symlink("/sys/devices/pci0000:00", dir.path().join("sys/abs"));
        assert_eq!(
            root.resolve("sys/bus/pci/devices/0000:00:01.0").unwrap(),
            PathBuf::from("/sys/devices/pci0000:00/0000:00:01.0")
        );
        assert_eq!(
            root.resolve("/sys/abs/0000:00:01.0").unwrap(),
            PathBuf::from("/sys/devices/pci0000:00/0000:00:01.0")
        );
        assert!(root.exists("sys/abs/0000:00:01.0"));
        assert!(!root.exists("sys/abs/nothing"));
    }

    #[test]
    fn recording_keeps_what_was_read_and_the_links_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        testing::mkdir(dir.path().join("sys/devices/d"));
        testing::write(dir.path().join("sys/devices/d/vendor"), "0x8086\n");
        testing::write(dir.path().join("sys/devices/d/class"), "0x030000\n");
        testing::symlink("devices/d", dir.path().join("sys/link"));
        let root = HostRoot::new(dir.path()).recording();
        assert_eq!(root.read_to_string("sys/link/vendor").unwrap(), "0x8086\n");
        assert_eq!(root.list_dir("sys/link").unwrap(), ["class", "vendor"]);
        let cap = root.captured();
        assert_eq!(
            cap.get(Path::new("/sys/devices/d/vendor")),
            Some(&Captured::File(b"0x8086\n".to_vec()))
        );
        // listed but never read: present, content not taken
        assert_eq!(
            cap.get(Path::new("/sys/devices/d/class")),
            Some(&Captured::Present)
        );
        assert_eq!(
            cap.get(Path::new("/sys/link")),
            Some(&Captured::Symlink(PathBuf::from("devices/d")))
        );
        assert!(HostRoot::new(dir.path()).captured().is_empty());
    }

    #[test]
    fn a_directory_opened_once_records_what_is_read_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sys/devices/d");
        testing::mkdir(&d);
        testing::write(d.join("vendor"), "0x8086\n");
        testing::write(d.join("class"), "0x030000\n");
        testing::write(d.join("reset"), "");
        testing::symlink("../../bus/pci/drivers/i915", d.join("driver"));
        testing::symlink("devices/d", dir.path().join("sys/link"));
        let root = HostRoot::new(dir.path()).recording();
        let opened = root.open_host_dir("sys/link", true).unwrap();
        assert_eq!(
            opened.read_attr(c"vendor").unwrap(),
            Some(b"0x8086\n".to_vec())
        );
        assert_eq!(opened.read_attr(c"numa_node").unwrap(), None);
        assert_eq!(
            opened.read_link(c"driver").unwrap(),
            Some(PathBuf::from("../../bus/pci/drivers/i915"))
        );
        assert_eq!(opened.read_link(c"iommu_group").unwrap(), None);
        assert!(opened.has(c"reset"));
        assert!(!opened.has(c"boot_vga"));
        assert!(opened.path_of(c"vendor").ends_with("sys/devices/d/vendor"));
        let cap = root.captured();
        let at = |p: &str| cap.get(Path::new(p)).cloned();
        // Recorded where the files really are, with the link on the way.
        assert_eq!(
            at("/sys/devices/d/vendor"),
            Some(Captured::File(b"0x8086\n".to_vec()))
        );
        assert_eq!(
            at("/sys/devices/d/driver"),
            Some(Captured::Symlink(PathBuf::from(
                "../../bus/pci/drivers/i915"
            )))
        );
        assert_eq!(at("/sys/devices/d/reset"), Some(Captured::Present));
        assert_eq!(at("/sys/link"), Some(Captured::Symlink("devices/d".into())));
        // What was not read is not taken.
        assert_eq!(at("/sys/devices/d/class"), None);
        assert_eq!(at("/sys/devices/d/numa_node"), None);
        // Not recording: nothing kept.
        let plain = HostRoot::new(dir.path());
        let opened = plain.open_host_dir("sys/link", true).unwrap();
        assert!(opened.read_attr(c"vendor").unwrap().is_some());
        assert!(opened.path_of(c"vendor").ends_with("sys/link/vendor"));
        assert!(plain.captured().is_empty());
    }

    #[test]
    fn a_directory_opened_once_reads_only_regular_files_inside_it() {
        let (dir, outside) = hostile_tree();
        testing::write(outside.path().join("vendor"), "0x1234\n");
        let x = dir.path().join("sys/devices/x");
        testing::symlink(outside.path().join("vendor"), x.join("device"));
        testing::mkfifo(x.join("class"));
        let root = HostRoot::new(dir.path());
        let opened = root.open_host_dir("etc/dev", true).unwrap();
        assert_eq!(
            opened.read_attr(c"vendor").unwrap(),
            Some(b"0x8086\n".to_vec())
        );
        // A link is not followed, a FIFO is not opened.
        let e = opened.read_attr(c"device").unwrap_err();
        assert!(e.source.to_string().contains("symlink"), "{e:?}");
        let e = opened.read_attr(c"class").unwrap_err();
        assert!(e.source.to_string().contains("FIFO"), "{e:?}");
        // Without following the last link, a link to a directory is refused.
        assert!(root.open_host_dir("sys/link", false).is_err());
        // Subdirectories are opened by one name, never through a link.
        let sys = root.open_host_dir("sys", true).unwrap();
        assert!(sys.open_subdir(c"link").is_err());
        assert!(sys.open_subdir(c"devices/x").is_err());
        assert!(sys.open_subdir(c"..").is_err());
        assert!(sys.open_subdir(c"nothing").unwrap_err().is_not_found());
        let x = sys
            .open_subdir(c"devices")
            .unwrap()
            .open_subdir(c"x")
            .unwrap();
        assert_eq!(x.rel(), Path::new("sys/devices/x"));
        assert_eq!(x.read_attr(c"vendor").unwrap(), Some(b"0x8086\n".to_vec()));
        assert!(x.read_attr(c"class").is_err(), "the FIFO is still refused");
        let etc = root.open_host_dir("etc", true).unwrap();
        assert!(etc.open_subdir(c"climb").is_err(), "a link out of the root");
    }

    /// A file swapped for a FIFO after the listing: in a directory only root or this
    /// user can change, the listing is trusted (and the FIFO, opened non-blocking,
    /// gives nothing); in one that others can write, each opened file is checked
    /// again and the FIFO is refused.
    #[test]
    fn files_swapped_after_the_listing_are_checked_where_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode, checked) in [
            ("fixed", 0o755, false),
            ("shared", 0o777, true),
            ("group", 0o775, true),
        ] {
            let d = dir.path().join(name);
            testing::write(d.join("vendor"), "0x8086\n");
            testing::chmod(&d, mode);
            let root = HostRoot::new(dir.path());
            let opened = root.open_host_dir(name, true).unwrap();
            assert_eq!(opened.entries_fixed, !checked, "{name}");
            testing::remove(d.join("vendor"));
            testing::mkfifo(d.join("vendor"));
            let read = opened.read_attr(c"vendor");
            if checked {
                let e = read.unwrap_err();
                assert!(e.source.to_string().contains("FIFO"), "{name}: {e:?}");
            } else {
                assert_eq!(
                    read.unwrap(),
                    Some(Vec::new()),
                    "{name}: a FIFO without writer"
                );
            }
        }
        // A directory of another user (as root: chown it) is checked too.
        if crate::apply::sys::is_root() {
            let d = dir.path().join("theirs");
            testing::write(d.join("vendor"), "0x8086\n");
            testing::chown(&d, 65534);
            let root = HostRoot::new(dir.path());
            assert!(!root.open_host_dir("theirs", true).unwrap().entries_fixed);
        }
    }

    #[test]
    fn dotdot_never_leaves_the_root() {
        let dir = tempfile::tempdir().unwrap();
        testing::mkdir(dir.path().join("a"));
        testing::symlink("../../../../a", dir.path().join("up"));
        let root = HostRoot::new(dir.path());
        assert_eq!(root.resolve("up").unwrap(), PathBuf::from("/a"));
    }

    #[test]
    fn link_loops_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        testing::symlink("b", dir.path().join("a"));
        testing::symlink("a", dir.path().join("b"));
        let root = HostRoot::new(dir.path());
        let err = root.resolve("a").unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(root.read_optional("proc/cmdline").unwrap(), None);
        let err = root.read_to_string("proc/cmdline").unwrap_err();
        assert!(err.is_not_found());
        assert!(err.path.ends_with("proc/cmdline"));
        assert!(root
            .list_dir_optional("sys/kernel/iommu_groups")
            .unwrap()
            .is_empty());
    }

    /// A tree with links that lead out of it (absolute, and `../` climbing past the
    /// root) and kernel-style links inside it; `outside` holds what must not be read.
    fn hostile_tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        testing::write(outside.path().join("secret"), "outside\n");
        testing::mkdir(outside.path().join("d"));
        testing::write(outside.path().join("d/f"), "outside\n");
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        testing::mkdir(r.join("proc"));
        testing::mkdir(r.join("etc/d"));
        testing::mkdir(r.join("sys/devices/x"));
        testing::write(r.join("sys/devices/x/vendor"), "0x8086\n");
        testing::write(r.join("etc/d/f"), "inside\n");
        let abs = outside.path().join("secret");
        let climb = format!(
            "{}{}",
            "../".repeat(r.components().count() + 3),
            outside.path().strip_prefix("/").unwrap().display()
        );
        // Absolute: means <root><abs>, which does not exist.
        testing::symlink(&abs, r.join("proc/cmdline"));
        // Climbing: `..` stops at the root, so this means <root><outside>/secret.
        testing::symlink(format!("{climb}/secret"), r.join("proc/cpuinfo"));
        testing::symlink(format!("{climb}/d"), r.join("etc/climb"));
        testing::symlink("/etc/d", r.join("etc/abs"));
        testing::symlink("../../../../../../../../etc/d", r.join("etc/up"));
        testing::symlink("devices/x", r.join("sys/link"));
        testing::symlink("../sys/devices/x", r.join("etc/dev"));
        (dir, outside)
    }

    fn check_hostile_reads(root: &HostRoot) {
        let not_found = |rel: &str| {
            let e = root.read_to_string(rel).unwrap_err();
            assert!(e.is_not_found(), "{rel}: {e:?}");
        };
        not_found("proc/cmdline");
        not_found("proc/cpuinfo");
        not_found("etc/climb/f");
        assert!(root.list_dir("etc/climb").unwrap_err().is_not_found());
        assert!(!root.exists("etc/climb/f"));
        assert!(root.metadata("proc/cpuinfo").is_err());
        // Links that stay inside work, relative to the root.
        assert_eq!(root.read_to_string("etc/abs/f").unwrap(), "inside\n");
        assert_eq!(root.read_to_string("etc/up/f").unwrap(), "inside\n");
        assert_eq!(root.list_dir("etc/up").unwrap(), ["f"]);
        assert_eq!(root.read_to_string("sys/link/vendor").unwrap(), "0x8086\n");
        assert_eq!(
            root.read_link("etc/abs").unwrap(),
            PathBuf::from("/etc/d"),
            "the link itself is read, not followed"
        );
        assert!(root.symlink_metadata("etc/abs").unwrap().is_symlink());
        assert!(root.metadata("etc/abs").unwrap().is_dir());
    }

    #[test]
    fn reads_never_leave_a_captured_root() {
        let (dir, _outside) = hostile_tree();
        check_hostile_reads(&HostRoot::new(dir.path()));
    }

    #[test]
    fn the_component_walk_resolves_as_openat2_does() {
        // The fallback for kernels without openat2, called directly: the same
        // answers for every path of the hostile tree.
        let (dir, _outside) = hostile_tree();
        let root = File::open(dir.path()).unwrap();
        let read = |rel: &str| -> io::Result<String> {
            let mut f = resolve_in_root::walk(&root, Path::new(rel), libc::O_RDONLY)?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(s)
        };
        for rel in ["proc/cmdline", "proc/cpuinfo", "etc/climb/f"] {
            assert_eq!(
                read(rel).unwrap_err().kind(),
                io::ErrorKind::NotFound,
                "{rel}"
            );
        }
        for rel in ["etc/abs/f", "etc/up/f", "etc/d/../d/f", "../../etc/d/f"] {
            assert_eq!(read(rel).unwrap(), "inside\n", "{rel}");
        }
        assert_eq!(read("sys/link/vendor").unwrap(), "0x8086\n");
        assert_eq!(read("etc/dev/vendor").unwrap(), "0x8086\n");
        // O_NOFOLLOW opens the last link itself; a directory path ends at the root.
        let link =
            resolve_in_root::walk(&root, Path::new("etc/abs"), libc::O_PATH | libc::O_NOFOLLOW)
                .unwrap();
        assert!(link.metadata().unwrap().is_symlink());
        let top = resolve_in_root::walk(&root, Path::new("etc/.."), libc::O_PATH).unwrap();
        assert_eq!(
            top.metadata().unwrap().ino(),
            root.metadata().unwrap().ino()
        );
        // Loops end.
        testing::symlink("loop", dir.path().join("loop"));
        assert_eq!(
            resolve_in_root::walk(&root, Path::new("loop"), libc::O_RDONLY)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ELOOP)
        );
    }

    #[test]
    fn only_regular_files_are_read_and_reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        testing::mkfifo(&fifo);
        // The machine's /dev/zero, reached from inside the root: in the root it
        // means <root>/dev/zero, absent; and a device node there is refused.
        testing::symlink("/dev/zero", dir.path().join("zero"));
        testing::write(dir.path().join("big"), vec![b'x'; 5000]);
        let root = HostRoot::new(dir.path());
        let e = root.read_bytes("fifo").unwrap_err();
        assert!(e.source.to_string().contains("FIFO"), "{e:?}");
        assert!(root.read_bytes("zero").unwrap_err().is_not_found());
        let e = root.read_bytes_up_to("big", 4096).unwrap_err();
        assert!(e.source.to_string().contains("4 KiB"), "{e:?}");
        assert_eq!(root.read_bytes_up_to("big", 5000).unwrap().len(), 5000);
        let e = root.list_dir("fifo").unwrap_err();
        assert!(!e.is_not_found());
    }
}
