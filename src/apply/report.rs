//! `passthru report FILE`: the archive of what passthru reads on this host
//! ([`crate::report::capture`], [`crate::report::write_archive`]), written to FILE
//! readable by its owner only.

use std::path::Path;

use crate::host::root::HostRoot;
use crate::report::{capture, write_archive, ReportError};

/// Captures `root` and writes the archive to `path`; returns how many entries it holds.
pub fn write_report(root: &HostRoot, path: &Path) -> Result<usize, ReportError> {
    let capture = capture(root)?;
    let about = format!(
        "passthru {} report of {}\nExtract it and read it with: passthru list --root DIR\n",
        env!("CARGO_PKG_VERSION"),
        root.dir().display()
    );
    write_private(path, |w| write_archive(&capture, &about, w)).map_err(|source| {
        ReportError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(capture.len())
}

/// Writes a file that only its owner may read (the archive holds the kernel log,
/// which the kernel shows to root only), with `write` filling it.
///
/// The content goes to a new file beside `path` with a random name, created with
/// `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 (set again with `fchmod` whatever the
/// umask, before any byte is written), and is then renamed over `path`. So a failed
/// report leaves no half archive, no symlink placed at either name is ever written
/// through (`rename` replaces a link at `path`, it does not follow it), and the file
/// never exists under a predictable name with wider permissions.
fn write_private(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("report".into(), |n| n.to_string_lossy());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .make_in(dir, |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
        })?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let mut w = std::io::BufWriter::new(tmp.as_file().try_clone()?);
    write(&mut w)?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    // On failure the temporary file is removed when `tmp` is dropped.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
