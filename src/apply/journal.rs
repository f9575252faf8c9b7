//! The journal of persistent changes: before passthru changes a file under `/etc` or
//! `/boot`, it saves the bytes that were there (or that the file did not exist), with
//! mode and owner, in `/var/lib/passthru/journal/`. `undo` puts every file back byte
//! for byte and removes the files passthru created. The journal is written before
//! each change, so a crash or `kill -9` at any point leaves it able to roll back.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Applier, ApplyError};
use crate::enable::PlannedCommand;

/// Where the journal lives, relative to the root.
pub const JOURNAL_DIR: &str = "var/lib/passthru/journal";
const MANIFEST: &str = "var/lib/passthru/journal/journal.json";

/// One file as it was before passthru changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Root-relative path.
    pub path: PathBuf,
    /// Whether it existed (if not, `undo` removes it).
    pub existed: bool,
    /// The backup's file name in the journal directory.
    pub backup: Option<String>,
    /// Its mode.
    pub mode: Option<u32>,
    /// Its owner.
    pub uid: Option<u32>,
    /// Its group.
    pub gid: Option<u32>,
}

/// The journal's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Files, in the order they were first saved.
    pub entries: Vec<Entry>,
    /// Directories passthru created (removed again by `undo` when empty).
    pub created_dirs: Vec<PathBuf>,
    /// Commands that regenerate boot files from the configuration (run again by `undo`).
    pub regenerate: Vec<PlannedCommand>,
}

impl Applier {
    /// The journal, if there is one.
    pub fn journal(&self) -> Result<Option<Journal>, ApplyError> {
        match self.root().read_optional(MANIFEST) {
            Ok(None) => Ok(None),
            Ok(Some(text)) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| ApplyError::Journal {
                        path: self.root().path(MANIFEST),
                        source: e.into(),
                    })
            }
            Err(e) => Err(ApplyError::Journal {
                path: e.path.clone(),
                source: e.source,
            }),
        }
    }

    fn save_journal(&self, j: &mut Journal) -> Result<(), ApplyError> {
        // The journal's own directories are passthru's creation too: note them first.
        let mut missing = Vec::new();
        let mut dir = Path::new(JOURNAL_DIR);
        loop {
            if self.root().path(dir).exists() {
                break;
            }
            missing.push(dir.to_path_buf());
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => break,
            }
        }
        for d in missing.iter().rev() {
            if !j.created_dirs.contains(d) {
                j.created_dirs.push(d.clone());
            }
            std::fs::create_dir(self.root().path(d)).map_err(|source| ApplyError::Journal {
                path: self.root().path(d),
                source,
            })?;
        }
        let json = serde_json::to_vec_pretty(&*j).map_err(|e| ApplyError::Journal {
            path: self.root().path(MANIFEST),
            source: e.into(),
        })?;
        self.write_atomic(Path::new(MANIFEST), &json)
    }

    /// Saves the current state of `paths` that the journal does not hold yet, and
    /// remembers `regenerate`. Returns the journal.
    pub fn journal_files(
        &self,
        paths: &[PathBuf],
        regenerate: &[PlannedCommand],
    ) -> Result<Journal, ApplyError> {
        let mut j = self.journal()?.unwrap_or_default();
        for c in regenerate {
            if !j.regenerate.contains(c) {
                j.regenerate.push(c.clone());
                self.save_journal(&mut j)?;
            }
        }
        for path in paths {
            if j.entries.iter().any(|e| &e.path == path) {
                continue;
            }
            let real = self.root().path(path);
            let entry = match std::fs::symlink_metadata(&real) {
                Ok(meta) => {
                    let bytes = std::fs::read(&real).map_err(|source| ApplyError::Journal {
                        path: real.clone(),
                        source,
                    })?;
                    let backup = format!("{}.orig", j.entries.len());
                    self.write_atomic(&Path::new(JOURNAL_DIR).join(&backup), &bytes)?;
                    Entry {
                        path: path.clone(),
                        existed: true,
                        backup: Some(backup),
                        mode: Some(meta.permissions().mode()),
                        uid: Some(meta.uid()),
                        gid: Some(meta.gid()),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry {
                    path: path.clone(),
                    existed: false,
                    backup: None,
                    mode: None,
                    uid: None,
                    gid: None,
                },
                Err(source) => return Err(ApplyError::Journal { path: real, source }),
            };
            j.entries.push(entry);
            self.save_journal(&mut j)?;
        }
        Ok(j)
    }

    /// Creates the parent directories of `path`, journaling the ones it creates.
    pub fn create_parents(&self, path: &Path) -> Result<(), ApplyError> {
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() || self.root().path(d).exists() {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut j = self.journal()?.unwrap_or_default();
        for d in missing.iter().rev() {
            if !j.created_dirs.contains(d) {
                j.created_dirs.push(d.clone());
            }
        }
        // Recorded first, created after: a crash in between leaves nothing unknown.
        self.save_journal(&mut j)?;
        for d in missing.iter().rev() {
            if self.root().path(d).exists() {
                continue;
            }
            std::fs::create_dir(self.root().path(d)).map_err(|source| ApplyError::Journal {
                path: self.root().path(d),
                source,
            })?;
        }
        Ok(())
    }

    /// Writes a configuration file atomically, keeping the mode, owner and SELinux
    /// label of the file it replaces (new files: 0644).
    pub fn write_config(&self, path: &Path, content: &[u8]) -> Result<(), ApplyError> {
        // Write where the file really is: a symlink inside the root stays a symlink.
        let path = self.root().resolve(path).map_or_else(
            |_| path.to_path_buf(),
            |p| p.strip_prefix("/").map(Path::to_path_buf).unwrap_or(p),
        );
        let real = self.root().path(&path);
        let old = std::fs::metadata(&real).ok();
        let label = old
            .as_ref()
            .and_then(|_| xattr_get(&real, "security.selinux"));
        self.create_parents(&path)?;
        self.write_atomic(&path, content)?;
        let err = |source| ApplyError::Journal {
            path: real.clone(),
            source,
        };
        let mode = old
            .as_ref()
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        if let Some(m) = &old {
            std::os::unix::fs::chown(&real, Some(m.uid()), Some(m.gid())).map_err(err)?;
        }
        if let Some(l) = label {
            xattr_set(&real, "security.selinux", &l);
        }
        Ok(())
    }

    /// Puts every journaled file back as it was and removes what passthru created;
    /// returns the regenerators to run again and forgets the journal.
    pub fn roll_back(&self) -> Result<Vec<PlannedCommand>, ApplyError> {
        Ok(self
            .roll_back_journal()?
            .map(|j| j.regenerate)
            .unwrap_or_default())
    }

    /// [`Applier::roll_back`], returning the journal that was rolled back.
    pub fn roll_back_journal(&self) -> Result<Option<Journal>, ApplyError> {
        let Some(j) = self.journal()? else {
            return Ok(None);
        };
        for e in j.entries.iter().rev() {
            // The journal's own files are removed with the journal.
            if e.path.starts_with(JOURNAL_DIR) {
                continue;
            }
            let real = self.root().path(&e.path);
            if e.existed {
                let backup = self
                    .root()
                    .path(Path::new(JOURNAL_DIR).join(e.backup.as_deref().unwrap_or("")));
                let bytes = std::fs::read(&backup).map_err(|source| ApplyError::Journal {
                    path: backup,
                    source,
                })?;
                self.write_atomic(&e.path, &bytes)?;
                let err = |source| ApplyError::Journal {
                    path: real.clone(),
                    source,
                };
                if let Some(mode) = e.mode {
                    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode & 0o7777))
                        .map_err(err)?;
                }
                if let (Some(uid), Some(gid)) = (e.uid, e.gid) {
                    std::os::unix::fs::chown(&real, Some(uid), Some(gid)).map_err(err)?;
                }
            } else {
                self.remove(&e.path)?;
            }
            // A write killed between its temporary file and the rename leaves the
            // temporary file behind (see `write_atomic`).
            self.remove(&temp_path(&e.path))?;
        }
        let dir = self.root().path(JOURNAL_DIR);
        std::fs::remove_dir_all(&dir)
            .map_err(|source| ApplyError::Journal { path: dir, source })?;
        self.remove_created_dirs(&j);
        Ok(Some(j))
    }

    /// Removes the directories passthru created, innermost first; only empty ones go
    /// (anything else put there is not passthru's).
    pub fn remove_created_dirs(&self, j: &Journal) {
        for d in j.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(self.root().path(d));
        }
    }
}

/// The temporary file [`Applier::write_atomic`] writes beside `path` first.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or("record".into(), |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.tmp"))
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len > 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings and a value of the given length. A
    // failure (no SELinux) leaves the default label, as a new file would have.
    unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        );
    }
}
