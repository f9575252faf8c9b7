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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

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

impl HostRoot {
    /// The running machine itself (`/`).
    pub fn system() -> Self {
        Self::new("/")
    }

    /// A tree laid out like a host, e.g. an extracted report or a test fixture.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            recorder: None,
        }
    }

    /// The same root, recording every read into a [`Capture`] (see the module doc).
    pub fn recording(&self) -> Self {
        Self {
            root: self.root.clone(),
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
        let Ok(meta) = self.path(rel).symlink_metadata() else {
            return;
        };
        let entry = if meta.file_type().is_symlink() {
            match std::fs::read_link(self.path(rel)) {
                Ok(target) => Captured::Symlink(target),
                Err(_) => return,
            }
        } else if meta.is_dir() {
            Captured::Dir
        } else {
            Captured::Present
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

    /// The real path of `rel` (relative to the root) without resolving symlinks.
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

    /// Reads raw bytes.
    pub fn read_bytes(&self, rel: impl AsRef<Path>) -> Result<Vec<u8>, HostError> {
        let rel = rel.as_ref();
        let bytes = std::fs::read(self.path(rel)).map_err(|e| self.err(rel, e))?;
        if self.recorder.is_some() {
            // Record the file where it really is, so links on the way are kept too.
            let real = self.resolve(rel).unwrap_or_else(|_| rel.to_path_buf());
            self.record(real, Captured::File(bytes.clone()));
        }
        Ok(bytes)
    }

    /// Whether `rel` exists (following symlinks relative to the root).
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.resolve(rel)
            .is_ok_and(|p| self.path(p).symlink_metadata().is_ok())
    }

    /// The names in a directory, sorted. A missing directory is an error; use
    /// [`HostRoot::list_dir_optional`] where absence is normal.
    pub fn list_dir(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, HostError> {
        let rel = rel.as_ref();
        let entries = std::fs::read_dir(self.path(rel)).map_err(|e| self.err(rel, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.err(rel, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
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

    /// The raw target of a symlink.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> Result<PathBuf, HostError> {
        let rel = rel.as_ref();
        let target = std::fs::read_link(self.path(rel)).map_err(|e| self.err(rel, e))?;
        self.record(rel, Captured::Symlink(target.clone()));
        Ok(target)
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
            let real = self.path(&candidate);
            match real.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(
                            self.err(rel, io::Error::other("too many levels of symbolic links"))
                        );
                    }
                    let target = std::fs::read_link(&real).map_err(|e| self.err(&candidate, e))?;
                    self.record(&candidate, Captured::Symlink(target.clone()));
                    if target.is_absolute() {
                        done = PathBuf::from("/");
                    }
                    pending.extend(components_rev(&target));
                }
                Ok(_) => done = candidate,
                Err(e) => return Err(self.err(&candidate, e)),
            }
        }
        // A recorded link must not dangle in the archive: keep what it leads to.
        self.record_kind(&done);
        Ok(done)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/devices/pci0000:00/0000:00:01.0")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/bus/pci/devices")).unwrap();
        // relative link, as the kernel makes them
        symlink(
            "../../../devices/pci0000:00/0000:00:01.0",
            dir.path().join("sys/bus/pci/devices/0000:00:01.0"),
        )
        .unwrap();
        // absolute link, as a capture might hold: must stay inside the root
        symlink("/sys/devices/pci0000:00", dir.path().join("sys/abs")).unwrap();
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
        std::fs::create_dir_all(dir.path().join("sys/devices/d")).unwrap();
        std::fs::write(dir.path().join("sys/devices/d/vendor"), "0x8086\n").unwrap();
        std::fs::write(dir.path().join("sys/devices/d/class"), "0x030000\n").unwrap();
        symlink("devices/d", dir.path().join("sys/link")).unwrap();
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
    fn dotdot_never_leaves_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        symlink("../../../../a", dir.path().join("up")).unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(root.resolve("up").unwrap(), PathBuf::from("/a"));
    }

    #[test]
    fn link_loops_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
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
}
