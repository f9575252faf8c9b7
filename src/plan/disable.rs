//! `passthru disable`: which of the enabled devices stay enabled.
//!
//! `enable` binds whole IOMMU groups: a device cannot leave the setup without the rest
//! of its group (a GPU without its HDMI audio would leave the audio function bound to
//! vfio-pci for nothing, or the group only half isolated). So removing a device
//! removes every named device of its group; what is left is planned again by
//! `enable`'s planner, and when nothing is left the whole setup is undone.

use crate::host::pci::{PciAddress, PciDevice};

/// What `disable` leaves enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remaining {
    /// These named devices stay: the setup is planned again for them.
    Some(Vec<PciAddress>),
    /// No device stays: the whole setup is undone.
    None,
}

/// Why `disable` cannot remove the devices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisableError {
    /// None of them (nor any device of their groups) is enabled.
    #[error("{} is not among the enabled devices", list(.0))]
    NotEnabled(Vec<PciAddress>),
}

fn list(addresses: &[PciAddress]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The devices of `named` (what the user enabled) that stay when `remove` leaves
/// the setup, each removed device taking the rest of its IOMMU group (as `devices`
/// has the groups now) with it.
pub fn remaining(
    named: &[PciAddress],
    remove: &[PciAddress],
    devices: &[PciDevice],
) -> Result<Remaining, DisableError> {
    let group_of = |a: &PciAddress| {
        devices
            .iter()
            .find(|d| d.address == *a)
            .and_then(|d| d.iommu_group)
    };
    let gone: Vec<Option<u32>> = remove.iter().map(group_of).collect();
    let left: Vec<PciAddress> = named
        .iter()
        .copied()
        .filter(|a| !remove.contains(a) && !gone.contains(&group_of(a)))
        .collect();
    if left.len() == named.len() {
        return Err(DisableError::NotEnabled(remove.to_vec()));
    }
    Ok(if left.is_empty() {
        Remaining::None
    } else {
        Remaining::Some(left)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn dev(addr: &str, group: Option<u32>) -> PciDevice {
        PciDevice {
            address: a(addr),
            iommu_group: group,
            ..PciDevice::default()
        }
    }

    #[test]
    fn a_device_leaves_with_its_group() {
        let devices = [
            dev("0000:01:00.0", Some(1)),
            dev("0000:01:00.1", Some(1)),
            dev("0000:02:00.0", Some(2)),
        ];
        let named = [a("0000:01:00.0"), a("0000:01:00.1"), a("0000:02:00.0")];
        assert_eq!(
            remaining(&named, &[a("0000:01:00.1")], &devices),
            Ok(Remaining::Some(vec![a("0000:02:00.0")]))
        );
        assert_eq!(
            remaining(&named, &[a("0000:01:00.0"), a("0000:02:00.0")], &devices),
            Ok(Remaining::None)
        );
    }

    #[test]
    fn a_device_not_enabled_is_named() {
        let devices = [dev("0000:01:00.0", Some(1)), dev("0000:03:00.0", Some(3))];
        let e = remaining(&[a("0000:01:00.0")], &[a("0000:03:00.0")], &devices).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0000:03:00.0 is not among the enabled devices"
        );
    }

    #[test]
    fn without_groups_every_ungrouped_device_leaves() {
        // With the IOMMU off (a boot without it) no device has a group, and devices
        // without one count as one group: removing one removes them all, and the
        // setup is undone rather than planned again without the groups it needs.
        let devices = [dev("0000:01:00.0", None), dev("0000:02:00.0", None)];
        let named = [a("0000:01:00.0"), a("0000:02:00.0")];
        assert_eq!(
            remaining(&named, &[a("0000:01:00.0")], &devices),
            Ok(Remaining::None)
        );
    }
}
