//! Writing man pages into a directory the user names (`passthru man DIR`).
//!
//! The pages themselves are rendered from the command line's definitions elsewhere
//! (pure data: a file name and its roff text); this is the part that touches the file
//! system. Unlike the persistent setup, nothing here is journaled: the pages are an
//! output the user asked for, like `report`'s archive, in a directory of their choice,
//! and removing them is all it takes to undo. Each page is still written beside its
//! final name and renamed into place, so a page that was there before is either the
//! old one or the new one, never half of each.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One man page, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its file name, e.g. `passthru-vm-run.1`.
    pub file_name: String,
    /// Its roff source.
    pub content: Vec<u8>,
}

/// Why the pages could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    /// The path exists and is not a directory.
    #[error("{} exists and is not a directory: name a directory for the man pages", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory could not be created.
    #[error("cannot create the directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A page could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The page's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes every page into `dir`, creating it (and its parents) when missing, and
/// returns the paths written, in the order of `pages`. A page of the same name that is
/// already there is replaced; other files in `dir` are left alone.
pub fn write_pages(dir: &Path, pages: &[Page]) -> Result<Vec<PathBuf>, ManError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ManError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| ManError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::with_capacity(pages.len());
    for page in pages {
        let path = dir.join(&page.file_name);
        let err = |source| ManError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", page.file_name))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(err)?;
        tmp.write_all(&page.content).map_err(err)?;
        // A man page is a document anyone may read (tempfile creates files 0600).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .map_err(err)?;
        tmp.persist(&path).map_err(|e| err(e.error))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn page(name: &str, text: &str) -> Page {
        Page {
            file_name: name.to_owned(),
            content: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn creates_the_directory_and_replaces_pages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share/man/man1");
        crate::testing::mkdir(&dir);
        crate::testing::write(dir.join("other.1"), "kept");
        crate::testing::write(dir.join("passthru.1"), "old");
        let written = write_pages(
            &dir,
            &[
                page("passthru.1", ".TH new"),
                page("passthru-check.1", ".TH c"),
            ],
        )
        .unwrap();
        assert_eq!(
            written,
            [dir.join("passthru.1"), dir.join("passthru-check.1")]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("passthru.1")).unwrap(),
            ".TH new"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("other.1")).unwrap(),
            "kept"
        );
        let mode = std::fs::metadata(dir.join("passthru-check.1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // No temporary file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["other.1", "passthru-check.1", "passthru.1"]);

        let fresh = tmp.path().join("a/b/c");
        write_pages(&fresh, &[page("passthru.1", "x")]).unwrap();
        assert!(fresh.join("passthru.1").is_file());
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let err = write_pages(tmp.path(), &[page("passthru.1", "x")]).unwrap_err();
        assert!(matches!(err, ManError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let below = tmp.path().join("man1");
        let err = write_pages(&below, &[page("passthru.1", "x")]).unwrap_err();
        assert!(matches!(err, ManError::CreateDir { .. }), "{err}");
    }
}
