//! Creates a VM's missing disk images with `qemu-img` (the tool every QEMU install
//! has), as [`crate::vm::disk`] plans them: only a disk whose file does not exist yet
//! and whose spec gives a size. An existing file or block device is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::vm::disk::{create_argv, missing, DiskError};
use crate::vm::spec::{parse_mib, VmSpec};

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
    use crate::vm::disk::{boot_iso_first, disk_is_blank};
    use crate::vm::spec::Disk;

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

    /// Runs the real qemu-img and qemu-io on real images.
    #[test]
    fn new_images_are_blank_until_written() {
        let dir = tempfile::tempdir().unwrap();
        for format in ["qcow2", "raw"] {
            let d = Disk {
                path: dir.path().join(format!("d.{format}")),
                size: Some("16M".into()),
                format: format.into(),
            };
            assert!(disk_is_blank(&d).unwrap(), "a missing image is blank");
            let mut spec = VmSpec::parse("name = \"t\"\nmemory = \"1G\"\ncpus = 1\n").unwrap();
            spec.disks.push(d.clone());
            create_missing(&spec).unwrap();
            assert!(disk_is_blank(&d).unwrap(), "{format}");
            assert!(boot_iso_first(&spec).unwrap());
            let out = Command::new("qemu-io")
                .args(["-f", format, "-c", "write -P 0x55 4k 4k"])
                .arg(&d.path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert!(!disk_is_blank(&d).unwrap(), "{format}");
            assert!(!boot_iso_first(&spec).unwrap());
        }
    }
}
