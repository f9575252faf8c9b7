//! Finding a spec's devices on the host again.
//!
//! A PCI address names a place, not a device: adding a card, moving one to another
//! slot, or a firmware setting (above-4G decoding, bifurcation) can renumber buses, so
//! `01:00.0` may be a different device after the next boot. A spec can therefore name
//! a device by its identity — `vendor:device`, the board's subsystem IDs, and the
//! address it was last seen at — and [`find`] looks for it there first, then anywhere
//! on the host. When the identity matches nothing, or more than one device without
//! the address to tell them apart, it refuses and says what is there now: passing the
//! wrong device through (a host's disk controller, say) is far worse than not starting.

use crate::host::pci::{PciAddress, PciDevice};
use crate::vm::spec::{DeviceRef, IdPair};

/// A device of the spec, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it is now.
    pub address: PciAddress,
    /// Set when the device moved from the address the spec gives.
    pub moved_from: Option<PciAddress>,
}

/// Why a spec's device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Nothing at the address, and no identity to look for.
    #[error("no PCI device at {0} on this host (see `passthru list`)")]
    NoDevice(PciAddress),
    /// The identity matches no device on the host.
    #[error("the hardware changed: no {want} device on this host{now}; edit the VM's spec")]
    Gone {
        /// The identity asked for.
        want: String,
        /// What is at the old address now, as words (may be empty).
        now: String,
    },
    /// Several devices match and the address does not pick one.
    #[error("{want} matches several devices ({}): give the address of the one to pass", .candidates.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The identity asked for.
        want: String,
        /// The devices that match.
        candidates: Vec<PciAddress>,
    },
}

fn id_of(d: &PciDevice) -> IdPair {
    IdPair {
        vendor: d.vendor_id,
        device: d.device_id,
    }
}

fn subsystem_of(d: &PciDevice) -> Option<IdPair> {
    Some(IdPair {
        vendor: d.subsystem_vendor_id?,
        device: d.subsystem_device_id?,
    })
}

/// Whether `d` has the identity `want` asks for (an address-only ref matches any).
pub fn matches(want: &DeviceRef, d: &PciDevice) -> bool {
    want.id.is_none_or(|id| id == id_of(d))
        && want.subsystem.is_none_or(|s| subsystem_of(d) == Some(s))
}

fn describe(want: &DeviceRef) -> String {
    match (want.id, want.subsystem) {
        (Some(id), Some(s)) => format!("{id} (subsystem {s})"),
        (Some(id), None) => id.to_string(),
        (None, Some(s)) => format!("subsystem {s}"),
        (None, None) => "(any)".into(),
    }
}

/// Finds `want` among the host's `devices`.
pub fn find(devices: &[PciDevice], want: &DeviceRef) -> Result<Found, IdentityError> {
    let at = want
        .address
        .and_then(|a| devices.iter().find(|d| d.address == a));
    if let Some(d) = at {
        if matches(want, d) {
            return Ok(Found {
                address: d.address,
                moved_from: None,
            });
        }
    }
    if want.id.is_none() && want.subsystem.is_none() {
        // Only an address, and nothing there.
        let a = want.address.unwrap_or_default();
        return Err(IdentityError::NoDevice(a));
    }
    let candidates: Vec<&PciDevice> = devices.iter().filter(|d| matches(want, d)).collect();
    match candidates.as_slice() {
        [one] => Ok(Found {
            address: one.address,
            moved_from: want.address,
        }),
        [] => Err(IdentityError::Gone {
            want: describe(want),
            now: match (want.address, at) {
                (Some(a), Some(d)) => format!(
                    " ({a} is now {} with subsystem {})",
                    id_of(d),
                    subsystem_of(d).map_or_else(|| "unknown".into(), |s| s.to_string())
                ),
                (Some(a), None) => format!(" (nothing is at {a} now)"),
                _ => String::new(),
            },
        }),
        many => Err(IdentityError::Ambiguous {
            want: describe(want),
            candidates: many.iter().map(|d| d.address).collect(),
        }),
    }
}

/// The identity of a host device, for a spec: its address, IDs and subsystem.
pub fn identity_of(d: &PciDevice) -> DeviceRef {
    DeviceRef {
        address: Some(d.address),
        id: Some(id_of(d)),
        subsystem: subsystem_of(d),
        rom: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(addr: &str, id: (u16, u16), sub: (u16, u16)) -> PciDevice {
        PciDevice {
            address: addr.parse().unwrap(),
            vendor_id: id.0,
            device_id: id.1,
            subsystem_vendor_id: Some(sub.0),
            subsystem_device_id: Some(sub.1),
            ..PciDevice::default()
        }
    }

    fn want(text: &str) -> DeviceRef {
        #[derive(serde::Deserialize)]
        struct W {
            d: DeviceRef,
        }
        toml::from_str::<W>(&format!("d = {text}")).unwrap().d
    }

    /// Two identical RTX 4090s (one ASUS, one MSI board) and an NVMe drive.
    fn host() -> Vec<PciDevice> {
        vec![
            dev("0000:01:00.0", (0x10de, 0x2684), (0x1043, 0x889d)),
            dev("0000:01:00.1", (0x10de, 0x22ba), (0x1043, 0x889d)),
            dev("0000:02:00.0", (0x10de, 0x2684), (0x1462, 0x5103)),
            dev("0000:03:00.0", (0x144d, 0xa80a), (0x144d, 0xa801)),
        ]
    }

    #[test]
    fn found_where_it_was() {
        let f = find(
            &host(),
            &want(r#"{ address = "01:00.0", id = "10de:2684" }"#),
        )
        .unwrap();
        assert_eq!(f.address.to_string(), "0000:01:00.0");
        assert_eq!(f.moved_from, None);
    }

    #[test]
    fn found_after_the_bus_moved() {
        // The NVMe drive was at 05:00.0 when the spec was written.
        let f = find(
            &host(),
            &want(r#"{ address = "05:00.0", id = "144d:a80a", subsystem = "144d:a801" }"#),
        )
        .unwrap();
        assert_eq!(f.address.to_string(), "0000:03:00.0");
        assert_eq!(f.moved_from.unwrap().to_string(), "0000:05:00.0");
    }

    #[test]
    fn subsystem_tells_identical_chips_apart() {
        let f = find(
            &host(),
            &want(r#"{ address = "04:00.0", id = "10de:2684", subsystem = "1462:5103" }"#),
        )
        .unwrap();
        assert_eq!(f.address.to_string(), "0000:02:00.0");
    }

    #[test]
    fn ambiguity_is_refused() {
        let err = find(
            &host(),
            &want(r#"{ address = "04:00.0", id = "10de:2684" }"#),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "10de:2684 matches several devices (0000:01:00.0, 0000:02:00.0): give the address of the one to pass"
        );
    }

    #[test]
    fn changed_hardware_is_refused_with_what_is_there_now() {
        // The GPU was replaced by another model at the same address.
        let err = find(
            &host(),
            &want(r#"{ address = "03:00.0", id = "1002:744c" }"#),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "the hardware changed: no 1002:744c device on this host (0000:03:00.0 is now 144d:a80a with subsystem 144d:a801); edit the VM's spec"
        );
        let err = find(&host(), &want(r#""07:00.0""#))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no PCI device at 0000:07:00.0 on this host (see `passthru list`)"
        );
    }

    #[test]
    fn identity_round_trips() {
        let d = &host()[2];
        assert_eq!(find(&host(), &identity_of(d)).unwrap().address, d.address);
    }
}
