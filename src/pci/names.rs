//! Human names for PCI ids, from the pci.ids database.
//!
//! The `pci-ids` crate embeds a copy of the database (version [`EMBEDDED_VERSION`]).
//! When the analysing machine has a newer `pci.ids` (`/usr/share/misc/pci.ids`,
//! `/usr/share/hwdata/pci.ids`, `/usr/share/pci.ids`), that file is used instead, so
//! a recently released GPU still gets its name. Names are a property of the tool,
//! not of the analysed host, so this is read from the analysing machine's own `/`.

/// The `Version:` of the pci.ids copy that the `pci-ids` crate embeds.
pub const EMBEDDED_VERSION: &str = "2025.07.11";

/// A source of names.
#[derive(Debug, Default)]
pub struct PciNames {
    _private: (),
}

impl PciNames {
    /// The embedded database, or the system's when its version is newer.
    pub fn load() -> Self {
        unimplemented!()
    }

    /// Which database is in use: `embedded <version>` or `<path> <version>`.
    pub fn source(&self) -> String {
        unimplemented!()
    }

    /// The vendor's name.
    pub fn vendor(&self, _vendor: u16) -> Option<&str> {
        unimplemented!()
    }

    /// The device's name.
    pub fn device(&self, _vendor: u16, _device: u16) -> Option<&str> {
        unimplemented!()
    }

    /// The subsystem's name.
    pub fn subsystem(
        &self,
        _vendor: u16,
        _device: u16,
        _sub_vendor: u16,
        _sub_device: u16,
    ) -> Option<&str> {
        unimplemented!()
    }

    /// The most specific class name for a 24-bit class code (subclass, else class),
    /// e.g. `VGA compatible controller`, `Audio device`; falls back to the hex code.
    pub fn class(&self, _class: u32) -> String {
        unimplemented!()
    }
}
