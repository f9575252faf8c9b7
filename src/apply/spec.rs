//! Writes VM specs: `vm new` writes one, `vm edit` replaces one once the edited copy
//! is valid, `vm rm` removes one. Which spec may be removed and what makes an edit
//! valid are decided in [`crate::vm::store`]; the files change here.

use std::path::{Path, PathBuf};

use crate::vm::spec::VmSpec;
use crate::vm::store::{self, StoreError};

/// Why a spec could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SpecWriteError {
    /// The spec directory could not be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The spec.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory of the edited spec could not be found.
    #[error("cannot find the directory of {}", path.display())]
    Dir {
        /// The spec.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The copy the editor works on could not be created.
    #[error("cannot write in {}", dir.display())]
    Draft {
        /// The spec's directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The editor could not be started.
    #[error("cannot start the editor '{editor}' (set $EDITOR)")]
    Editor {
        /// `$VISUAL` or `$EDITOR`, as given.
        editor: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The editor failed: the spec is left as it was.
    #[error("the editor exited with {status}; {} is unchanged", path.display())]
    EditorFailed {
        /// How the editor ended.
        status: std::process::ExitStatus,
        /// The spec.
        path: PathBuf,
    },
    /// The edited copy could not replace the spec.
    #[error("cannot replace {}", path.display())]
    Replace {
        /// The spec.
        path: PathBuf,
        /// Why.
        #[source]
        source: tempfile::PersistError,
    },
    /// The edited copy was not valid and is not edited again: the spec is left as it was.
    #[error("{} is unchanged", path.display())]
    Unchanged {
        /// The spec.
        path: PathBuf,
    },
    /// The copy could not be written or read back, or the spec's mode read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes the spec `text` to `path` (`vm new`), creating the spec directory `dir`
/// when it does not exist yet. A spec already at `path` is replaced in place (the
/// caller decides whether it may be: `--force`).
pub fn write_new(dir: &Path, path: &Path, text: &str) -> Result<(), SpecWriteError> {
    std::fs::create_dir_all(dir).map_err(|source| SpecWriteError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(|source| SpecWriteError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes the spec `arg` names (`vm rm`), and nothing else: what
/// [`store::removable_spec`] allows. Returns its path and the spec.
pub fn remove_spec(arg: &Path, dir: &Path) -> Result<(PathBuf, VmSpec), StoreError> {
    let (path, spec) = store::removable_spec(arg, dir)?;
    std::fs::remove_file(&path).map_err(|source| StoreError::Remove {
        path: path.clone(),
        source,
    })?;
    Ok((path, spec))
}

/// How an edit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// The text came back as it was: nothing was written.
    Unchanged,
    /// The spec was replaced by the edited copy.
    Saved,
}

/// Lets the user edit the spec at `path` (its text `original`) with `editor`
/// (`$VISUAL` or `$EDITOR`, which may carry arguments: `code --wait`).
///
/// The editor works on a copy beside the spec: the spec itself changes only once the
/// copy is valid (see [`store::edit_problem`]), by an atomic rename, and keeps its
/// mode. While the copy is not valid, `again` is asked (with the problem) whether to
/// edit it again; when it says no, the spec is left as it was
/// ([`SpecWriteError::Unchanged`]).
pub fn edit<E: From<SpecWriteError>>(
    path: &Path,
    original: &str,
    editor: &str,
    mut again: impl FnMut(&str) -> Result<bool, E>,
) -> Result<Edited, E> {
    let old_name = VmSpec::parse(original).ok().map(|s| s.name);
    // An absolute directory: the draft's path, given to the editor, never begins
    // with '-'.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).map_err(|source| {
        SpecWriteError::Dir {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let dir = dir.as_path();
    let draft = tempfile::Builder::new()
        .prefix(".passthru-edit-")
        .suffix(".toml")
        .tempfile_in(dir)
        .map_err(|source| SpecWriteError::Draft {
            dir: dir.to_path_buf(),
            source,
        })?;
    std::fs::write(draft.path(), original).map_err(SpecWriteError::from)?;
    loop {
        // Split on whitespace, as git does for simple values.
        let mut words = editor.split_whitespace();
        let program = words.next().unwrap_or("vi");
        let status = std::process::Command::new(program)
            .args(words)
            .arg(draft.path())
            .status()
            .map_err(|source| SpecWriteError::Editor {
                editor: editor.to_string(),
                source,
            })?;
        if !status.success() {
            return Err(SpecWriteError::EditorFailed {
                status,
                path: path.to_path_buf(),
            }
            .into());
        }
        let text = std::fs::read_to_string(draft.path()).map_err(SpecWriteError::from)?;
        if text == original {
            return Ok(Edited::Unchanged);
        }
        let Some(problem) = store::edit_problem(old_name.as_deref(), &text) else {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions())
                .map_err(SpecWriteError::from)?;
            std::fs::set_permissions(draft.path(), mode).map_err(SpecWriteError::from)?;
            draft
                .persist(path)
                .map_err(|source| SpecWriteError::Replace {
                    path: path.to_path_buf(),
                    source,
                })?;
            return Ok(Edited::Saved);
        };
        if !again(&problem)? {
            return Err(SpecWriteError::Unchanged {
                path: path.to_path_buf(),
            }
            .into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "name = \"t\"\nmemory = \"1G\"\ncpus = 1\n";

    #[test]
    fn rm_removes_only_specs_of_the_spec_directory() {
        let dir = tempfile::tempdir().unwrap();
        let specs = dir.path().join("specs");
        crate::testing::mkdir(&specs);
        let spec = specs.join("t.toml");
        crate::testing::write(&spec, SPEC);
        // A file elsewhere, given by path.
        let other = dir.path().join("passwd");
        crate::testing::write(&other, "root:x:0:0::/root:/bin/sh\n");
        let e = remove_spec(&other, &specs).unwrap_err().to_string();
        assert!(
            e.contains("removes only the VM specs (NAME.toml) in"),
            "{e}"
        );
        // A spec-shaped file elsewhere too.
        let elsewhere = dir.path().join("x.toml");
        crate::testing::write(&elsewhere, SPEC);
        assert!(remove_spec(&elsewhere, &specs).is_err());
        // ../ out of the directory.
        assert!(remove_spec(Path::new(&format!("{}/../x.toml", specs.display())), &specs).is_err());
        // A symlink in the directory (to a spec, even).
        std::os::unix::fs::symlink(&elsewhere, specs.join("l.toml")).unwrap();
        let e = remove_spec(Path::new("l"), &specs).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A file in the directory that is not a spec.
        crate::testing::write(specs.join("notes.toml"), "todo = 1\n");
        let e = remove_spec(Path::new("notes"), &specs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a valid VM spec"), "{e}");
        crate::testing::mkdir(specs.join("d.toml"));
        assert!(remove_spec(Path::new("d"), &specs)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        for kept in [
            &other,
            &elsewhere,
            &specs.join("l.toml"),
            &specs.join("notes.toml"),
        ] {
            assert!(
                kept.symlink_metadata().is_ok(),
                "{} was removed",
                kept.display()
            );
        }
        // The spec itself, by name and by path.
        let (removed, s) = remove_spec(Path::new("t"), &specs).unwrap();
        assert_eq!((removed, s.name.as_str()), (spec.clone(), "t"));
        crate::testing::write(&spec, SPEC);
        remove_spec(&spec, &specs).unwrap();
        assert!(!spec.exists());
    }
}
