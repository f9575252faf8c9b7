//! PCI addresses (`domain:bus:device.function`, "BDF").
//!
//! The kernel names every PCI function `DDDD:BB:DD.F` in sysfs: a 16-bit (on VMD
//! hosts, wider) hexadecimal *domain* (segment), an 8-bit *bus*, a 5-bit *device*
//! (slot, 0–31) and a 3-bit *function* (0–7). Users usually write the short form
//! `01:00.0` that `lspci` prints, which means domain 0.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PCI function address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment; 0 on almost every desktop.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0–31.
    pub device: u8,
    /// Function number, 0–7.
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The overall shape is wrong.
    #[error(
        "'{0}' is not a PCI address: expected DOMAIN:BUS:DEVICE.FUNCTION like \
         0000:01:00.0, or BUS:DEVICE.FUNCTION like 01:00.0"
    )]
    Shape(String),
    /// A part is not hexadecimal or too large.
    #[error("'{input}' is not a PCI address: {part} '{value}' must be {rule}")]
    Part {
        /// The whole input.
        input: String,
        /// Which part (domain, bus, device, function).
        part: &'static str,
        /// The offending text.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
}

impl PciAddress {
    /// Builds an address; `None` when device > 31 or function > 7.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The same slot's function 0 (where multifunction devices keep their identity).
    pub fn function0(self) -> Self {
        Self {
            function: 0,
            ..self
        }
    }

    /// Whether `other` is another function of the same slot.
    pub fn same_slot(self, other: Self) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.device == other.device
    }

    /// The slot without the function, as `0000:01:00`.
    pub fn slot(self) -> String {
        format!("{:04x}:{:02x}:{:02x}", self.domain, self.bus, self.device)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

fn hex_part(
    input: &str,
    part: &'static str,
    value: &str,
    max_digits: usize,
    limit: u32,
    rule: &'static str,
) -> Result<u32, AddressError> {
    let bad = || AddressError::Part {
        input: input.to_string(),
        part,
        value: value.to_string(),
        rule,
    };
    if value.is_empty() || value.len() > max_digits || !value.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    let n = u32::from_str_radix(value, 16).map_err(|_| bad())?;
    if n > limit {
        return Err(bad());
    }
    Ok(n)
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let shape = || AddressError::Shape(input.to_string());
        let (head, function) = s.rsplit_once('.').ok_or_else(shape)?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => ("0", *bus, *device),
            [domain, bus, device] => (*domain, *bus, *device),
            _ => return Err(shape()),
        };
        let domain = hex_part(input, "domain", domain, 8, u32::MAX, "1 to 8 hex digits")?;
        let bus = hex_part(input, "bus", bus, 2, 0xff, "1 or 2 hex digits (00-ff)")?;
        let device = hex_part(
            input,
            "device",
            device,
            2,
            0x1f,
            "a hex number from 00 to 1f",
        )?;
        let function = hex_part(input, "function", function, 1, 7, "a digit from 0 to 7")?;
        // The limits above make these conversions lossless.
        Ok(Self {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_long_and_short_forms() {
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 1, 0, 0).unwrap());
        let b: PciAddress = "01:00.1".parse().unwrap();
        assert_eq!(b.to_string(), "0000:01:00.1");
        let c: PciAddress = "10000:e1:1f.7".parse().unwrap();
        assert_eq!(c.to_string(), "10000:e1:1f.7");
        assert!(a.same_slot(b));
        assert_eq!(b.function0(), a);
        assert_eq!(a.slot(), "0000:01:00");
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        for bad in [
            "",
            "01:00",
            "0000:01:00",
            "01.00.0",
            "0000:01:00.8",
            "0000:01:20.0",
            "0000:100:00.0",
            "zz:00.0",
            "1:2:3:4.0",
            "01:00.0.1",
            "0000:01:00.",
            ":01:00.0",
            "01:00.-1",
            "٠١:00.0",
            "123456789:00:00.0",
        ] {
            let err = bad.parse::<PciAddress>().unwrap_err();
            assert!(
                err.to_string().contains("is not a PCI address"),
                "{bad}: {err}"
            );
        }
        let err = "0000:01:20.0"
            .parse::<PciAddress>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("device '20'"), "{err}");
    }

    #[test]
    fn orders_by_domain_bus_device_function() {
        let mut v: Vec<PciAddress> = ["01:00.1", "00:1f.3", "01:00.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["0000:00:1f.3", "0000:01:00.0", "0000:01:00.1"]);
    }

    #[test]
    fn round_trips_through_json() {
        let a: PciAddress = "0000:0a:1f.7".parse().unwrap();
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, "\"0000:0a:1f.7\"");
        assert_eq!(serde_json::from_str::<PciAddress>(&j).unwrap(), a);
    }
}
