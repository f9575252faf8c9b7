//! The kernel log.
//!
//! On a live host it is read from `/dev/kmsg`, one record per `read()`, in the form
//! `prio,seq,usec,flags;text` (continuation lines that start with a space carry
//! key=value metadata and are skipped). In a captured root `dev/kmsg` is a plain
//! file and may hold either kmsg records or `dmesg` lines
//! (`[    0.081810] DMAR: IOMMU enabled`); both are parsed, line by line.

use serde::Serialize;

use crate::host_root::{HostError, HostRoot};

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
    pub fn parse(_text: &str) -> Self {
        unimplemented!()
    }

    /// Reads `dev/kmsg` under the root: a character device is read record by record
    /// without blocking; a plain file is read whole. `Ok(None)` when absent.
    pub fn read(_root: &HostRoot) -> Result<Option<Self>, HostError> {
        unimplemented!()
    }

    /// The first line whose text contains `needle`.
    pub fn find(&self, needle: &str) -> Option<&LogLine> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }
}
