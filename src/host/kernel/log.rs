//! The kernel log.
//!
//! On a live host it is read from `/dev/kmsg`, one record per `read()`, in the form
//! `prio,seq,usec,flags;text` (continuation lines that start with a space carry
//! key=value metadata and are skipped). In a captured root `dev/kmsg` is a plain
//! file and may hold either kmsg records or `dmesg` lines
//! (`[    0.081810] DMAR: IOMMU enabled`); both are parsed, line by line.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;

use serde::Serialize;

use crate::host::root::{HostError, HostRoot, LOG_CAP};

/// One log message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Seconds since boot, when known.
    pub time: Option<f64>,
    /// The message text without prefix.
    pub text: String,
}

impl LogLine {
    /// The line as `dmesg` prints it (`[    0.081810] text`), for evidence.
    pub fn display(&self) -> String {
        match self.time {
            Some(t) => format!("[{t:12.6}] {}", self.text),
            None => self.text.clone(),
        }
    }
}

/// The parsed kernel log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KernelLog {
    /// Messages in order.
    pub lines: Vec<LogLine>,
}

impl KernelLog {
    /// Parses kmsg records and/or dmesg text lines.
    ///
    /// Each line is, in this order of preference:
    /// - a kmsg record `prio,seq,usec,flags[,more];text` (the time is `usec`
    ///   microseconds; `\xNN` escapes the kernel applies to unprintable bytes are
    ///   undone);
    /// - a kmsg continuation line (a space, then `KEY=value` metadata such as
    ///   ` SUBSYSTEM=pci`): skipped;
    /// - a dmesg line `[    0.081810] text`, optionally after a `<6>` level prefix;
    /// - anything else is kept whole as text without a time (`dmesg -t`, or a
    ///   line such as `[Firmware Bug]: …` whose brackets hold no time).
    ///
    /// Empty lines are skipped.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().filter_map(parse_line).collect();
        Self { lines }
    }

    /// Reads `dev/kmsg` under the root: on the live system the character device is
    /// read record by record without blocking; a plain file (a captured root) is read
    /// whole. At most [`LOG_CAP`] bytes either way. `Ok(None)` when absent.
    ///
    /// In a captured root only a regular file is read (see [`crate::host::root`]): a
    /// device node or FIFO there is an error, never opened.
    ///
    /// Reading `/dev/kmsg` needs privileges when `kernel.dmesg_restrict` is set: a
    /// permission error is returned as an error (with the path), not as an empty log.
    ///
    /// On a live host this is the slowest thing `check` reads: the kernel formats
    /// and hands out one record per `read(2)` (about a microsecond each, a few hundred
    /// records after boot). `syslog(2)`'s `READ_ALL`, one call for the whole buffer,
    /// takes as long (the formatting is the cost) and starts at the last `dmesg
    /// --clear`, which would hide the boot's IOMMU lines; so the log is read here,
    /// and [`KernelLog::read_in_background`] lets other reads go on meanwhile.
    pub fn read(root: &HostRoot) -> Result<Option<Self>, HostError> {
        const KMSG: &str = "dev/kmsg";
        let (file, meta) = match root.open_for_reading(KMSG) {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.file_type().is_char_device() {
            read_kmsg_device(file, &root.path(KMSG)).map(Some)
        } else {
            drop(file);
            let bytes = root.read_bytes_up_to(KMSG, LOG_CAP)?;
            Ok(Some(Self::parse(&String::from_utf8_lossy(&bytes))))
        }
    }

    /// Starts [`KernelLog::read`] on another thread (see
    /// [`HostRoot::read_in_background`]), so that other reads go on meanwhile.
    pub fn read_in_background(root: &HostRoot) -> PendingLog {
        root.read_in_background(Self::read)
    }

    /// The first line whose text contains `needle`.
    pub fn find(&self, needle: &str) -> Option<&LogLine> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }
}

/// The kernel log being read by [`KernelLog::read_in_background`].
pub type PendingLog = crate::host::root::Pending<Result<Option<KernelLog>, HostError>>;

/// The size of one `read()` from `/dev/kmsg`. The kernel returns one record per
/// call and fails with `EINVAL` when the buffer is too small; records are at most
/// about 1 KiB of text plus metadata (`CONSOLE_EXT_LOG_MAX` is 8192).
const KMSG_BUFFER: usize = 8192;

/// Reads every record now in the kernel's ring buffer from the `/dev/kmsg` device
/// `file` (opened `O_NONBLOCK`) at `path`, without waiting for new ones, and stops
/// after [`LOG_CAP`] bytes (the ring buffer is smaller; a log written faster than it
/// is read would otherwise never end).
fn read_kmsg_device(
    mut file: std::fs::File,
    path: &std::path::Path,
) -> Result<KernelLog, HostError> {
    let err = |source: std::io::Error| HostError {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = vec![0u8; KMSG_BUFFER];
    let mut lines = Vec::new();
    let mut total = 0usize;
    while total < LOG_CAP {
        match file.read(&mut buf) {
            // Not expected from kmsg, but it means there is nothing more.
            Ok(0) => break,
            Ok(n) => {
                total += n;
                let record = String::from_utf8_lossy(&buf[..n]);
                lines.extend(record.lines().filter_map(parse_line));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EPIPE: the records before this one were overwritten while we read;
            // the kernel has moved us to the oldest one still there.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(KernelLog { lines })
}

/// Parses one line of kmsg or dmesg text; `None` for empty and metadata lines.
fn parse_line(line: &str) -> Option<LogLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || is_kmsg_metadata(line) {
        return None;
    }
    if let Some(record) = parse_kmsg_record(line) {
        return Some(record);
    }
    if let Some(dmesg) = parse_dmesg_line(line) {
        return Some(dmesg);
    }
    Some(LogLine {
        time: None,
        text: line.to_string(),
    })
}

/// Whether `line` is a kmsg continuation line: a space, then `KEY=value` with an
/// upper-case key (` SUBSYSTEM=pci`, ` DEVICE=+pci:0000:00:02.0`).
fn is_kmsg_metadata(line: &str) -> bool {
    let Some(rest) = line.strip_prefix(' ') else {
        return false;
    };
    let Some((key, _)) = rest.split_once('=') else {
        return false;
    };
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `prio,seq,usec,flags[,…];text`.
fn parse_kmsg_record(line: &str) -> Option<LogLine> {
    let (prefix, text) = line.split_once(';')?;
    let mut fields = prefix.split(',');
    let prio = fields.next()?;
    let seq = fields.next()?;
    let usec = fields.next()?;
    let numeric = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
    if !(numeric(prio) && numeric(seq) && numeric(usec)) {
        return None;
    }
    let usec: u64 = usec.parse().ok()?;
    Some(LogLine {
        time: Some(usec as f64 / 1_000_000.0),
        text: unescape_kmsg(text),
    })
}

/// Undoes kmsg's `\xNN` escaping of unprintable bytes (a newline inside a
/// message is `\x0a`).
fn unescape_kmsg(text: &str) -> String {
    if !text.contains("\\x") {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `[    0.081810] text`, also with a leading `<6>` level as `dmesg -r` prints.
fn parse_dmesg_line(line: &str) -> Option<LogLine> {
    let mut rest = line;
    if let Some(after) = rest.strip_prefix('<') {
        let (level, after) = after.split_once('>')?;
        if level.is_empty() || !level.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = after;
    }
    let inner = rest.strip_prefix('[')?;
    let (stamp, text) = inner.split_once(']')?;
    let stamp = stamp.trim();
    if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let time: f64 = stamp.parse().ok()?;
    Some(LogLine {
        time: Some(time),
        text: text.strip_prefix(' ').unwrap_or(text).to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing;

    fn texts(log: &KernelLog) -> Vec<&str> {
        log.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn kmsg_records() {
        // /dev/kmsg as `cat /dev/kmsg` shows it (format documented in
        // Documentation/ABI/testing/dev-kmsg); the continuation lines carry the
        // device metadata.
        let log = KernelLog::parse(
            "6,1234,81810,-;DMAR: IOMMU enabled\n\
             6,1301,108976,-;DMAR-IR: Enabled IRQ remapping in xapic mode\n\
             6,1502,1612345,-,caller=T1;pci 0000:00:02.0: Adding to iommu group 0\n \
             SUBSYSTEM=pci\n \
             DEVICE=+pci:0000:00:02.0\n\
             4,1503,1700000,c;line one\\x0aline two\n",
        );
        assert_eq!(
            texts(&log),
            vec![
                "DMAR: IOMMU enabled",
                "DMAR-IR: Enabled IRQ remapping in xapic mode",
                "pci 0000:00:02.0: Adding to iommu group 0",
                "line one\nline two",
            ]
        );
        assert_eq!(log.lines[0].time, Some(0.08181));
        assert_eq!(log.lines[2].time, Some(1.612345));
        assert_eq!(log.lines[0].display(), "[    0.081810] DMAR: IOMMU enabled");
        assert_eq!(
            log.find("IRQ remapping").map(|l| l.time),
            Some(Some(0.108976))
        );
    }

    #[test]
    fn dmesg_lines() {
        // From the Broadwell excerpt used in crate::host::iommu's tests.
        let log = KernelLog::parse(
            "[    0.015053] ACPI: DMAR 0x00000000AC9D3420 0000B8 (v01 INTEL  BDW      00000001 INTL 00000001)\n\
             [    0.081810] DMAR: IOMMU enabled\r\n\
             \n\
             <6>[ 1234.500000] vfio-pci 0000:01:00.0: enabling device (0000 -> 0003)\n\
             [    2.616834]  PPR X2APIC NX GT IA GA PC GA_vAPIC\n",
        );
        assert_eq!(log.lines.len(), 4);
        assert_eq!(log.lines[0].time, Some(0.015053));
        assert!(log.lines[0]
            .text
            .starts_with("ACPI: DMAR 0x00000000AC9D3420"));
        assert_eq!(log.lines[1].text, "DMAR: IOMMU enabled");
        assert_eq!(log.lines[2].time, Some(1234.5));
        assert_eq!(
            log.lines[2].text,
            "vfio-pci 0000:01:00.0: enabling device (0000 -> 0003)"
        );
        // Only the one separating space is removed.
        assert_eq!(log.lines[3].text, " PPR X2APIC NX GT IA GA PC GA_vAPIC");
        assert_eq!(
            log.lines[1].display(),
            "[    0.081810] DMAR: IOMMU enabled",
            "display round-trips a dmesg line"
        );
    }

    #[test]
    fn plain_text_without_times() {
        // `dmesg -t` output (real lines from an AMD host with firmware bugs,
        // see crate::host::iommu's tests): brackets that hold no time are text.
        let log = KernelLog::parse(
            "[Firmware Bug]: AMD-Vi: IOAPIC[9] not in IVRS table\n\
             AMD-Vi: Disabling interrupt remapping\n\
             [Tue Nov 24 10:00:00 2026] not a time\n\
             1,2,x,-;not a record either\n",
        );
        assert_eq!(log.lines.len(), 4);
        assert!(log.lines.iter().all(|l| l.time.is_none()));
        assert_eq!(
            log.lines[0].text,
            "[Firmware Bug]: AMD-Vi: IOAPIC[9] not in IVRS table"
        );
        assert_eq!(log.lines[3].text, "1,2,x,-;not a record either");
        assert_eq!(
            log.lines[1].display(),
            "AMD-Vi: Disabling interrupt remapping"
        );
        // An indented line that is not metadata is kept.
        let kept = KernelLog::parse(" PPR X2APIC NX");
        assert_eq!(kept.lines.len(), 1);
    }

    #[test]
    fn reads_a_captured_kmsg_file() {
        let dir = tempfile::tempdir().unwrap();
        testing::mkdir(dir.path().join("dev"));
        testing::write(
            dir.path().join("dev/kmsg"),
            "6,1234,81810,-;DMAR: IOMMU enabled\n[    0.861114] DMAR: Intel(R) Virtualization Technology for Directed I/O\n",
        );
        let root = HostRoot::new(dir.path());
        let log = KernelLog::read(&root).unwrap().unwrap();
        assert_eq!(log.lines.len(), 2);
        assert_eq!(log.lines[1].time, Some(0.861114));

        let empty = HostRoot::new(dir.path().join("absent"));
        assert!(KernelLog::read(&empty).unwrap().is_none());

        // Read on another thread: the same log, recorded in the same capture.
        let recording = root.recording();
        let pending = KernelLog::read_in_background(&recording);
        assert_eq!(pending.wait().unwrap(), Some(log));
        assert!(recording
            .captured()
            .contains_key(std::path::Path::new("/dev/kmsg")));
        assert!(KernelLog::read_in_background(&empty)
            .wait()
            .unwrap()
            .is_none());
        testing::write(dir.path().join("dev/kmsg"), vec![b'x'; 10]);
        let fifo = dir.path().join("dev/fifo");
        testing::mkfifo(&fifo);
        testing::remove(dir.path().join("dev/kmsg"));
        testing::mv(&fifo, dir.path().join("dev/kmsg"));
        let e = KernelLog::read_in_background(&root).wait().unwrap_err();
        assert!(e.path.ends_with("dev/kmsg"), "{e}");
    }

    #[test]
    fn reads_the_live_kmsg_device_without_blocking() {
        // The real device, when this machine has one: reading must end (it would
        // hang if the device were read in blocking mode) and yield timed records,
        // or fail with the path when reading it is not permitted.
        // Containers sometimes put another device there (LXC: /dev/null or the
        // console); only the real kmsg (char 1:11) must hold records.
        use std::os::unix::fs::MetadataExt;
        let root = HostRoot::system();
        let Ok(meta) = std::fs::metadata(root.path("dev/kmsg")) else {
            return;
        };
        let real_kmsg =
            meta.file_type().is_char_device() && meta.rdev() == crate::apply::sys::makedev(1, 11);
        match KernelLog::read(&root) {
            Ok(Some(log)) => {
                if real_kmsg {
                    assert!(!log.lines.is_empty(), "the ring buffer is never empty");
                    assert!(log.lines.iter().all(|l| l.time.is_some()));
                }
            }
            Ok(None) => panic!("dev/kmsg exists but was reported absent"),
            Err(e) => {
                assert!(e.path.ends_with("dev/kmsg"), "{e}");
                if real_kmsg {
                    assert_eq!(e.source.kind(), std::io::ErrorKind::PermissionDenied);
                }
            }
        }
    }
}
