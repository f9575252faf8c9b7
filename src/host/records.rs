//! What passthru remembers between runs: the devices it handed to `vfio-pci`, with
//! the driver each had before, kept in `/run/passthru/bound/<address>.json`.
//!
//! `/run` is a tmpfs: the records live exactly as long as the bindings they describe
//! (a reboot undoes both). Each record is written *before* the device is touched, so
//! `passthru unbind` can restore a device even after passthru was killed half-way.
//! Records are read through the [`HostRoot`]; only `apply` writes them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::pci::PciAddress;
use crate::host::root::{HostError, HostRoot};

/// Where bind records live, relative to the root.
pub const BOUND_DIR: &str = "run/passthru/bound";

/// One device passthru bound to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRecord {
    /// The device.
    pub address: PciAddress,
    /// Its IOMMU group.
    pub group: Option<u32>,
    /// The driver it had before (`None`: no driver).
    pub original_driver: Option<String>,
    /// Its `driver_override` before (`None`: not set).
    pub original_override: Option<String>,
    /// When passthru took it, in seconds since the Unix epoch.
    pub since: u64,
}

impl BindRecord {
    /// The record's path relative to the root.
    pub fn path(address: PciAddress) -> PathBuf {
        PathBuf::from(BOUND_DIR).join(format!("{address}.json"))
    }
}

/// A record that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] HostError),
    /// The file is not a valid record.
    #[error("{} is not a valid bind record", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Every bind record, by address; unreadable records are returned as errors beside
/// the good ones, so one damaged file does not hide the others.
pub fn read_all(root: &HostRoot) -> (Vec<BindRecord>, Vec<StateError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let names = match root.list_dir_optional(BOUND_DIR) {
        Ok(n) => n,
        Err(e) => return (records, vec![e.into()]),
    };
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        let path = PathBuf::from(BOUND_DIR).join(name);
        match root.read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<BindRecord>(&text) {
                Ok(r) => records.push(r),
                Err(source) => errors.push(StateError::Invalid {
                    path: root.path(&path),
                    source,
                }),
            },
            Err(e) => errors.push(e.into()),
        }
    }
    records.sort_by_key(|r| r.address);
    (records, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_reports_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bound = dir.path().join(BOUND_DIR);
        crate::testing::mkdir(&bound);
        crate::testing::write(
            bound.join("0000:01:00.0.json"),
            r#"{"address":"0000:01:00.0","group":1,"original_driver":"nvidia","original_override":null,"since":1764000000}"#,
        );
        crate::testing::write(bound.join("0000:02:00.0.json"), "{not json");
        let (records, errors) = read_all(&HostRoot::new(dir.path()));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].original_driver.as_deref(), Some("nvidia"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .contains("0000:02:00.0.json is not a valid bind record"));
        assert_eq!(
            BindRecord::path(records[0].address),
            PathBuf::from("run/passthru/bound/0000:01:00.0.json")
        );
    }
}
