//! A VM's disk images: created with `qemu-img` (the tool every QEMU install has)
//! when the spec gives a size and the file does not exist yet. An existing file or
//! block device is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::spec::{parse_mib, Disk, VmSpec};

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

/// The `qemu-img` argv that creates `disk` (`size` in MiB).
pub fn create_argv(disk: &Disk, size_mib: u64) -> Vec<String> {
    vec![
        "qemu-img".into(),
        "create".into(),
        "-q".into(),
        "-f".into(),
        disk.format.clone(),
        disk.path.display().to_string(),
        format!("{size_mib}M"),
    ]
}

/// Creates every missing disk of `spec`; returns the paths created.
pub fn create_missing(spec: &VmSpec) -> Result<Vec<PathBuf>, DiskError> {
    let mut created = Vec::new();
    for disk in missing(spec) {
        let size = disk
            .size
            .as_deref()
            .and_then(parse_mib)
            .ok_or_else(|| DiskError::MissingNoSize(disk.path.clone()))?;
        if let Some(dir) = disk.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DiskError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        run(&create_argv(disk, size), &disk.path)?;
        created.push(disk.path.clone());
    }
    Ok(created)
}

fn run(argv: &[String], path: &Path) -> Result<(), DiskError> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(DiskError::Spawn)?;
    if !out.status.success() {
        return Err(DiskError::Failed {
            path: path.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, size: Option<&str>, format: &str) -> VmSpec {
        let mut s = VmSpec::parse("name = \"t\"\nmemory = \"1G\"\ncpus = 2\n").unwrap();
        s.disks.push(Disk {
            path: dir.join("sub/t.img"),
            size: size.map(Into::into),
            format: format.into(),
        });
        s
    }

    /// Runs the real qemu-img (qemu-utils is on every machine that runs the tests).
    #[test]
    fn creates_qcow2_and_raw_with_the_real_qemu_img() {
        for format in ["qcow2", "raw"] {
            let dir = tempfile::tempdir().unwrap();
            let s = spec(dir.path(), Some("64M"), format);
            assert_eq!(missing(&s).len(), 1);
            let made = create_missing(&s).unwrap();
            assert_eq!(made, vec![dir.path().join("sub/t.img")]);
            let out = Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&made[0])
                .output()
                .unwrap();
            let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(info["format"], format);
            assert_eq!(info["virtual-size"], 64 * 1024 * 1024);
            // A second run leaves the existing image alone.
            assert!(missing(&s).is_empty());
            assert!(create_missing(&s).unwrap().is_empty());
        }
    }

    #[test]
    fn a_missing_disk_without_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = create_missing(&spec(dir.path(), None, "qcow2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gives no size"), "{err}");
    }
}
