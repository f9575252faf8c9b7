//! `passthru report`: capture what passthru reads into a `.tar.gz` whose tree is a
//! valid `--root`.
//!
//! The capture is made by running the same readers as `check` and `list` on a
//! *recording* [`HostRoot`]: every file they read is archived with the content they
//! read, every directory they list and every symlink they follow is archived as such.
//! So the archive holds exactly what the tool reads (no home directories, no
//! secrets), and `passthru list --root <extracted>` sees the same host. Boot and
//! initramfs configuration files, which later commands plan from, are added too.
//! Device nodes (`/dev/kvm`) and write-only files (`reset`) become empty files.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::host::facts::HostFacts;
use crate::host::pci;
use crate::host::root::{Capture, Captured, HostRoot};
use crate::host::usage;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The archive could not be written.
    #[error("cannot write the report {}", path.display())]
    Write {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PCI devices could not be read.
    #[error("cannot read the PCI devices")]
    Pci(#[from] pci::device::PciError),
}

/// Configuration files that describe how the host boots (bootloader, initramfs,
/// module options), captured for planning. Directories are captured with their files.
pub const BOOT_CONFIG: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "etc/default/grub",
    "etc/default/grub.d",
    "etc/kernel/cmdline",
    "etc/kernelstub/configuration",
    "boot/loader/loader.conf",
    "boot/loader/entries",
    "boot/efi/loader/entries",
    "efi/loader/entries",
    "etc/modprobe.d",
    "etc/modules",
    "etc/modules-load.d",
    "etc/initramfs-tools/modules",
    "etc/initramfs-tools/initramfs.conf",
    "etc/initramfs-tools/conf.d",
    "etc/dracut.conf",
    "etc/dracut.conf.d",
    "etc/mkinitcpio.conf",
    "etc/mkinitcpio.conf.d",
    "etc/booster.yaml",
];

/// Reads everything passthru reads from `root`, recording it.
pub fn capture(root: &HostRoot) -> Result<Capture, ReportError> {
    let rec = root.recording();
    let facts = HostFacts::gather(&rec);
    // A live /dev/kmsg is a character device read record by record: archive the
    // records as text lines, which the log parser reads back.
    if let Ok(Some(log)) = &facts.log {
        let text: String = log.lines.iter().map(|l| l.display() + "\n").collect();
        rec.record("dev/kmsg", Captured::File(text.into_bytes()));
    }
    // Every attribute a device is read from is recorded as it is read.
    pci::device::read_all(&rec)?;
    let _ = crate::host::records::read_all(&rec);
    // Failures here are findings for `list`, not reasons to fail a report.
    let _ = usage::root_disk_controllers(&rec);
    let _ = usage::default_route_nics(&rec);
    let _ = usage::storage_in_use(&rec, false);
    for path in BOOT_CONFIG {
        capture_config(&rec, Path::new(path));
    }
    Ok(without_pid(rec.captured()))
}

/// `/proc/self` is a link to the reading process's `/proc/<pid>`: archive what was
/// read there under `proc/self` itself, so the report holds no process number.
fn without_pid(capture: Capture) -> Capture {
    let self_link = Path::new("/proc/self");
    let Some(Captured::Symlink(target)) = capture.get(self_link) else {
        return capture;
    };
    let pid_dir = Path::new("/proc").join(target);
    capture
        .into_iter()
        .filter(|(path, _)| path != self_link)
        .map(|(path, entry)| match path.strip_prefix(&pid_dir) {
            Ok(rest) if rest.as_os_str().is_empty() => (self_link.to_path_buf(), entry),
            Ok(rest) => (self_link.join(rest), entry),
            Err(_) => (path, entry),
        })
        .collect()
}

fn capture_config(rec: &HostRoot, path: &Path) {
    let Ok(meta) = rec.metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for name in rec.list_dir(path).unwrap_or_default() {
            let child = path.join(name);
            if rec.metadata(&child).is_ok_and(|m| m.is_file()) {
                let _ = rec.read_bytes(&child);
            }
        }
    } else {
        let _ = rec.read_bytes(path);
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes a capture as a gzip-compressed tar archive to `out`.
pub fn write_archive(capture: &Capture, about: &str, out: impl Write) -> std::io::Result<()> {
    let gz = GzEncoder::new(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut h = header(tar::EntryType::Regular, about.len() as u64, 0o644);
    tar.append_data(&mut h, "PASSTHRU-REPORT", about.as_bytes())?;
    for (path, entry) in capture {
        let rel = path.strip_prefix("/").unwrap_or(path);
        if rel.as_os_str().is_empty() {
            continue;
        }
        match entry {
            Captured::Dir => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                tar.append_data(&mut h, rel, std::io::empty())?;
            }
            Captured::File(bytes) => {
                // The kernel log is root's only on the host: keep it so when extracted.
                let mode = if rel == Path::new("dev/kmsg") {
                    0o600
                } else {
                    0o644
                };
                let mut h = header(tar::EntryType::Regular, bytes.len() as u64, mode);
                tar.append_data(&mut h, rel, bytes.as_slice())?;
            }
            Captured::Present => {
                let mut h = header(tar::EntryType::Regular, 0, 0o644);
                tar.append_data(&mut h, rel, std::io::empty())?;
            }
            Captured::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                tar.append_link(&mut h, rel, target)?;
            }
        }
    }
    tar.into_inner()?.finish()?.flush()
}
