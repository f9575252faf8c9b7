//! The journal of persistent changes: before passthru changes a file under `/etc` or
//! `/boot`, it saves the bytes that were there (or that the file did not exist), with
//! mode and owner, in `/var/lib/passthru/journal/`. `undo` puts every file back byte
//! for byte and removes the files passthru created. The journal is written before
//! each change, so a crash or `kill -9` at any point leaves it able to roll back.
//!
//! **Symlinks.** A file the plan names may be a symlink (`/etc/default/grub` pointing
//! at `grub.real`, say). passthru resolves it *inside the root* and edits and journals
//! the file it leads to, leaving the link itself untouched; `undo` restores that file,
//! with its own mode and owner, and the link is still the same link. A link passthru
//! would not write through is refused before anything changes: a dangling one, one
//! leading to something other than a regular file, or a link or target owned by
//! another user than the one running passthru (root): root writing a file such a user
//! controls would let them choose what root later runs.
//!
//! **Undo in two phases.** `undo` first restores every file, then marks the journal
//! `"undo": "regenerating"` and runs the regenerators (`update-initramfs`, …). The
//! journal goes only after every regenerator succeeded: killed or failed half-way,
//! the next `undo` finds the mark and regenerates again, so the initramfs and
//! `grub.cfg` never keep the VFIO setup while passthru says there is nothing to undo.
//!
//! **A kill during the first write.** The journal directory may exist without its
//! manifest (passthru was killed while writing the first one, before it changed
//! anything else): the next `enable` or `undo` removes that directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Applier, ApplyError, Attributes};
use crate::plan::enable::PlannedCommand;

/// Where the journal lives, relative to the root.
pub const JOURNAL_DIR: &str = "var/lib/passthru/journal";
const MANIFEST: &str = crate::plan::enable::JOURNAL_MANIFEST;

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
    /// What it was: a regular file, or nothing. (`path` is never a symlink: a link
    /// the plan named is resolved, see [`Entry::link`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    /// The symlink the plan named, which led to `path` and which passthru left
    /// untouched (root-relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
}

/// What a journaled path was before passthru changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// Nothing: passthru created it.
    Absent,
}

/// How far an `undo` got (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UndoPhase {
    /// The files are restored; the regenerators are still to run.
    Regenerating,
}

/// How far an `enable` got: its files are written, its regenerators have not all
/// succeeded yet (cleared when they have). The next `enable` runs them again even
/// when no file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnablePhase {
    /// The regenerators are running, or one failed.
    Regenerating,
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
    /// Set by an `undo` that restored the files (see the module's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoPhase>,
    /// Set by an `enable` while its regenerators have not all succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<EnablePhase>,
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

    /// Writes the manifest (mode 0600: the backups may hold secrets).
    pub(super) fn save_journal(&self, j: &mut Journal) -> Result<(), ApplyError> {
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
        self.write_atomic_as(Path::new(MANIFEST), &json, &Attributes::new(0o600))
    }

    /// Saves the current state of `paths` that the journal does not hold yet, and
    /// remembers `regenerate`. Returns the journal. A path that is a symlink is
    /// resolved inside the root and the file it leads to is saved (see the module's
    /// documentation); refused, before anything is saved, where that is not safe.
    pub fn journal_files(
        &self,
        paths: &[PathBuf],
        regenerate: &[PlannedCommand],
    ) -> Result<Journal, ApplyError> {
        self.clean_unfinished_journal()?;
        let targets = paths
            .iter()
            .map(|p| self.write_target(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut j = self.journal()?.unwrap_or_default();
        if j.undo.is_some() {
            return Err(ApplyError::UndoUnfinished);
        }
        for c in regenerate {
            if !j.regenerate.contains(c) {
                j.regenerate.push(c.clone());
                self.save_journal(&mut j)?;
            }
        }
        for (named, path) in paths.iter().zip(&targets) {
            if j.entries.iter().any(|e| &e.path == path) {
                continue;
            }
            let real = self.root().path(path);
            let link = (named != path).then(|| named.clone());
            let entry = match std::fs::symlink_metadata(&real) {
                Ok(meta) => {
                    let bytes = std::fs::read(&real).map_err(|source| ApplyError::Journal {
                        path: real.clone(),
                        source,
                    })?;
                    let backup = format!("{}.orig", j.entries.len());
                    self.write_atomic_as(
                        &Path::new(JOURNAL_DIR).join(&backup),
                        &bytes,
                        &Attributes::new(0o600),
                    )?;
                    Entry {
                        path: path.clone(),
                        existed: true,
                        backup: Some(backup),
                        mode: Some(meta.permissions().mode()),
                        uid: Some(meta.uid()),
                        gid: Some(meta.gid()),
                        kind: Some(FileKind::File),
                        link,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry {
                    path: path.clone(),
                    existed: false,
                    backup: None,
                    mode: None,
                    uid: None,
                    gid: None,
                    kind: Some(FileKind::Absent),
                    link,
                },
                Err(source) => return Err(ApplyError::Journal { path: real, source }),
            };
            j.entries.push(entry);
            self.save_journal(&mut j)?;
        }
        Ok(j)
    }

    /// The root-relative path passthru writes for `path`: `path` itself, or, when it
    /// (or a directory on its way) is a symlink, the file it leads to, resolved
    /// inside the root. Refuses a link that is not safe to write through (see the
    /// module's documentation).
    pub fn write_target(&self, path: &Path) -> Result<PathBuf, ApplyError> {
        let rel = |p: PathBuf| p.strip_prefix("/").map(Path::to_path_buf).unwrap_or(p);
        let named = rel(path.to_path_buf());
        let refuse = |why: String| ApplyError::UnsafeLink {
            path: named.clone(),
            why,
        };
        let full = self.root().path(&named);
        let target = match std::fs::symlink_metadata(&full) {
            Ok(_) => match self.root().resolve(&named) {
                Ok(t) => rel(t),
                Err(e) if e.is_not_found() => {
                    return Err(refuse(format!(
                        "it leads to {}, which does not exist",
                        e.path.display()
                    )))
                }
                Err(e) => return Err(refuse(e.source.to_string())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new file: only the directories on its way can be links.
                match (named.parent(), named.file_name()) {
                    (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                        match self.root().resolve(parent) {
                            Ok(p) => rel(p).join(name),
                            // Directories still to create: nothing to resolve.
                            Err(_) => named.clone(),
                        }
                    }
                    _ => named.clone(),
                }
            }
            Err(source) => return Err(ApplyError::Journal { path: full, source }),
        };
        if target == named {
            return Ok(target);
        }
        let me = super::sys::geteuid();
        let whose = |uid: u32| {
            if uid == 0 {
                "root".to_string()
            } else {
                format!("uid {uid}")
            }
        };
        if let Ok(meta) = std::fs::symlink_metadata(&full) {
            if meta.file_type().is_symlink() && meta.uid() != me {
                return Err(refuse(format!(
                    "the link is owned by {}, not by {}",
                    whose(meta.uid()),
                    whose(me)
                )));
            }
        }
        let real = self.root().path(&target);
        if let Ok(meta) = std::fs::symlink_metadata(&real) {
            if !meta.is_file() {
                return Err(refuse(format!(
                    "it leads to /{}, which is not a regular file",
                    target.display()
                )));
            }
            if meta.uid() != me {
                return Err(refuse(format!(
                    "it leads to /{}, which is owned by {}, not by {}",
                    target.display(),
                    whose(meta.uid()),
                    whose(me)
                )));
            }
        }
        Ok(target)
    }

    /// Removes a journal directory that has no manifest (see the module's
    /// documentation), and the empty directories on its way that were created with
    /// it. Nothing outside it was changed by the run that left it.
    pub fn clean_unfinished_journal(&self) -> Result<(), ApplyError> {
        let dir = self.root().path(JOURNAL_DIR);
        if !dir.is_dir() || self.root().path(MANIFEST).exists() {
            return Ok(());
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|source| ApplyError::Journal { path: dir, source })?;
        let mut d = Path::new(JOURNAL_DIR).parent();
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
            if std::fs::remove_dir(self.root().path(p)).is_err() {
                break;
            }
            d = p.parent();
        }
        Ok(())
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
    /// label of the file it replaces (new files: 0644). A symlink is written through
    /// to the file it leads to, inside the root, and stays a symlink (see
    /// [`Applier::write_target`]).
    pub fn write_config(&self, path: &Path, content: &[u8]) -> Result<(), ApplyError> {
        let path = self.write_target(path)?;
        let real = self.root().path(&path);
        let old = std::fs::symlink_metadata(&real).ok();
        let attrs = Attributes {
            mode: old
                .as_ref()
                .map_or(0o644, |m| m.permissions().mode() & 0o7777),
            owner: old.as_ref().map(|m| (m.uid(), m.gid())),
            selinux: old
                .as_ref()
                .and_then(|_| xattr_get(&real, "security.selinux")),
        };
        self.create_parents(&path)?;
        self.write_atomic_as(&path, content, &attrs)
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
        self.clean_unfinished_journal()?;
        let Some(j) = self.journal()? else {
            return Ok(None);
        };
        self.restore_files(&j)?;
        self.forget_journal(&j)?;
        Ok(Some(j))
    }

    /// Puts every journaled file back as it was (bytes, mode, owner) and removes the
    /// files passthru created. Doing it twice does no harm: an `undo` killed half-way
    /// through it does it again.
    pub fn restore_files(&self, j: &Journal) -> Result<(), ApplyError> {
        for e in j.entries.iter().rev() {
            // The journal's own files are removed with the journal.
            if e.path.starts_with(JOURNAL_DIR) {
                continue;
            }
            if e.existed {
                let backup = self
                    .root()
                    .path(Path::new(JOURNAL_DIR).join(e.backup.as_deref().unwrap_or("")));
                let bytes = std::fs::read(&backup).map_err(|source| ApplyError::Journal {
                    path: backup,
                    source,
                })?;
                let attrs = Attributes {
                    mode: e.mode.map_or(0o644, |m| m & 0o7777),
                    owner: e.uid.zip(e.gid),
                    selinux: xattr_get(&self.root().path(&e.path), "security.selinux"),
                };
                // `path` is the file a link led to (never the link): the link, if
                // any, is left as it is.
                self.write_atomic_as(&e.path, &bytes, &attrs)?;
            } else {
                self.remove(&e.path)?;
            }
            // A write killed between its temporary file and the rename leaves the
            // temporary file behind (see `write_atomic`).
            self.remove_temporaries(&e.path)?;
            if let Some(link) = &e.link {
                self.remove_temporaries(link)?;
            }
        }
        Ok(())
    }

    /// Forgets the journal: the manifest first (so a kill from then on leaves a
    /// directory without manifest, which [`Applier::clean_unfinished_journal`]
    /// removes), then its directory and the directories passthru created.
    pub fn forget_journal(&self, j: &Journal) -> Result<(), ApplyError> {
        self.remove(Path::new(MANIFEST))?;
        let dir = self.root().path(JOURNAL_DIR);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ApplyError::Journal { path: dir, source }),
        }
        self.remove_created_dirs(j);
        Ok(())
    }

    /// Removes the temporary files a killed write left beside `path`: the random
    /// names of [`Applier::write_atomic_as`] and the fixed one older versions used.
    pub fn remove_temporaries(&self, path: &Path) -> Result<(), ApplyError> {
        let prefix = temp_path(path);
        let Some(name) = prefix.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(());
        };
        let dir = self.root().path(prefix.parent().unwrap_or(Path::new("")));
        let Ok(list) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in list.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let ours = n == name
                || n.strip_prefix(&name)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|r| r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()));
            if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                let p = e.path();
                std::fs::remove_file(&p)
                    .map_err(|source| ApplyError::Journal { path: p, source })?;
            }
        }
        Ok(())
    }

    /// Removes the directories passthru created, innermost first; only empty ones go
    /// (anything else put there is not passthru's).
    pub fn remove_created_dirs(&self, j: &Journal) {
        for d in j.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(self.root().path(d));
        }
    }
}

/// The name of the temporary files [`Applier::write_atomic`] writes beside `path`
/// first: `.NAME.tmp` followed by `.` and 16 random hex digits (older versions used
/// `.NAME.tmp` itself; [`Applier::remove_temporaries`] removes both).
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
    super::sys::getxattr(&p, &n)
}

pub(super) fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return;
    };
    // A failure (no SELinux) leaves the default label, as a new file would have.
    let _ = super::sys::setxattr(&p, &n, value);
}
