//! A VM's disk images: which are missing, the `qemu-img` command that creates one
//! when the spec gives a size (created by [`crate::apply::disk`]; an existing file or
//! block device is never touched), and whether an OS is on the disks yet
//! ([`boot_iso_first`]), so an installer ISO boots only while they are blank.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::spec::{Disk, VmSpec};

/// Why a disk could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The disk does not exist and the spec gives no size to create it with.
    #[error("disk {} does not exist and the spec gives no size to create it (add size = \"64G\")", .0.display())]
    MissingNoSize(PathBuf),
    /// Its directory could not be created.
    #[error("cannot create {}: {source}", .path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `qemu-img` could not be started.
    #[error("cannot run qemu-img (install qemu-utils / qemu-img): {0}")]
    Spawn(std::io::Error),
    /// A disk could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `qemu-img map` could not tell whether a disk is blank.
    #[error("cannot tell whether {} is blank: {detail}", .path.display())]
    Map {
        /// The image.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// `qemu-img create` failed.
    #[error("qemu-img create {} failed: {stderr}", .path.display())]
    Failed {
        /// The image.
        path: PathBuf,
        /// What qemu-img said.
        stderr: String,
    },
}

/// The disks of `spec` that do not exist yet.
pub fn missing(spec: &VmSpec) -> Vec<&Disk> {
    spec.disks.iter().filter(|d| !d.path.exists()).collect()
}

/// The `qemu-img` argv that creates `disk` (`size` in MiB). `qemu-img` takes the
/// file name whole (it is not one of QEMU's `key=value` option strings), after `--`.
pub fn create_argv(disk: &Disk, size_mib: u64) -> Vec<String> {
    vec![
        "qemu-img".into(),
        "create".into(),
        "-q".into(),
        "-f".into(),
        disk.format.clone(),
        // The end of the options: the path is never read as one.
        "--".into(),
        disk.path.display().to_string(),
        format!("{size_mib}M"),
    ]
}

/// Whether a disk holds nothing yet: an OS installer has not written to it.
///
/// A missing image is blank (it is about to be created). A qcow2 (or other format)
/// image is blank when `qemu-img map` lists no extent with data (`-U` so an image a
/// running VM holds can be read). A raw image or block device is blank when its first
/// MiB — where every partition table and boot sector lives — is all zeros (a raw
/// file's map is no help: `qemu-img create` itself allocates its first block).
pub fn disk_is_blank(disk: &Disk) -> Result<bool, DiskError> {
    let path = &disk.path;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(DiskError::Io {
                path: path.clone(),
                source,
            })
        }
    };
    if disk.format == "raw" || meta.file_type().is_block_device() {
        return first_mib_is_zero(path);
    }
    // read-only probe: `qemu-img map -U` reads which extents of the image hold data
    let out = Command::new("qemu-img")
        .args(["map", "-U", "--output=json", "-f", &disk.format, "--"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiskError::Map {
            path: path.clone(),
            detail: format!("cannot run qemu-img: {e}"),
        })?;
    if !out.status.success() {
        return Err(DiskError::Map {
            path: path.clone(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    map_has_data(&String::from_utf8_lossy(&out.stdout))
        .map(|has| !has)
        .map_err(|detail| DiskError::Map {
            path: path.clone(),
            detail,
        })
}

fn first_mib_is_zero(path: &Path) -> Result<bool, DiskError> {
    let io = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::with_capacity(1 << 20);
    std::fs::File::open(path)
        .map_err(io)?
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf.iter().all(|b| *b == 0))
}

/// Whether `qemu-img map --output=json` lists an extent holding data.
pub fn map_has_data(json: &str) -> Result<bool, String> {
    let extents: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("unexpected qemu-img map output: {e}"))?;
    Ok(extents
        .iter()
        .any(|e| e.get("data").and_then(serde_json::Value::as_bool) == Some(true)))
}

/// Whether the installer ISO should boot before the disks: while every disk is blank.
pub fn boot_iso_first(spec: &VmSpec) -> Result<bool, DiskError> {
    for d in &spec.disks {
        if !disk_is_blank(d)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_map_tells_blank_from_written() {
        // `qemu-img map --output=json` (QEMU 7.2) on a new 64 MiB qcow2 image, and
        // after `qemu-io -c "write -P 0x55 1M 64k"`.
        let blank = r#"[{ "start": 0, "length": 67108864, "depth": 0, "present": false, "zero": true, "data": false}]"#;
        let written = r#"[{ "start": 0, "length": 1048576, "depth": 0, "present": false, "zero": true, "data": false},
{ "start": 1048576, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 1114112, "length": 65994752, "depth": 0, "present": false, "zero": true, "data": false}]"#;
        assert_eq!(map_has_data(blank), Ok(false));
        assert_eq!(map_has_data(written), Ok(true));
        assert!(map_has_data("qemu-img: Could not open").is_err());
    }
}
