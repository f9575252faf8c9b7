//! Everything the bind planner reads from a host, read once and owned: the PCI
//! devices, their names, which devices the host itself uses (root disk, default
//! route, devices passthru holds), the processes holding devices open, whether a text
//! console runs on the boot display, and passthru's own bind records.
//! `passthru bind`, `vm check` and `vm run` all plan from this same reading.

use crate::host::pci::device::PciError;
use crate::host::pci::names::PciNames;
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::records::{self, BindRecord, StateError};
use crate::host::root::HostRoot;
use crate::host::usage::HostUse;

use super::{Inputs, Overrides, Refusal};
use crate::host::holders;

/// The host as the bind planner sees it.
#[derive(Debug)]
pub struct HostState {
    /// Every PCI device.
    pub devices: Vec<PciDevice>,
    names: PciNames,
    host: HostUse,
    holders: holders::Holders,
    console_on_framebuffer: bool,
    records: Vec<BindRecord>,
}

impl HostState {
    /// Reads the host; bind records that could not be read come back beside it
    /// (they only cannot mark a device as held: the caller decides whether to warn).
    pub fn read(root: &HostRoot) -> Result<(Self, Vec<StateError>), PciError> {
        let devices = crate::host::pci::device::read_all(root)?;
        let (records, errors) = records::read_all(root);
        let state = Self {
            holders: holders::find(root, &devices),
            host: HostUse::read(root, &records),
            names: PciNames::load(),
            console_on_framebuffer: console_on_framebuffer(root),
            records,
            devices,
        };
        Ok((state, errors))
    }

    /// Refusals for the disks the host uses on `devices` (see
    /// [`super::storage_refusal`]). `vm define` and `vm start` check this before libvirt
    /// is given the devices: libvirt detaches a `managed` host device from its driver
    /// itself when the domain starts.
    pub fn storage_refusals(&self, devices: &[PciAddress], o: Overrides) -> Vec<Refusal> {
        let inputs = self.inputs();
        self.devices
            .iter()
            .filter(|d| devices.contains(&d.address))
            .filter_map(|d| super::storage_refusal(&inputs, d, o))
            .collect()
    }

    /// The planner's view.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            devices: &self.devices,
            names: &self.names,
            host: &self.host,
            holders: &self.holders,
            console_on_framebuffer: self.console_on_framebuffer,
            records: &self.records,
        }
    }
}

/// Whether a virtual console runs on a framebuffer (`sys/class/vtconsole/vtcon*`
/// with name "frame buffer device" and `bind` = 1): then the boot display drives it.
pub fn console_on_framebuffer(root: &HostRoot) -> bool {
    root.list_dir_optional("sys/class/vtconsole")
        .unwrap_or_default()
        .iter()
        .any(|vt| {
            let read = |f: &str| {
                root.read_optional(format!("sys/class/vtconsole/{vt}/{f}"))
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            read("name").contains("frame buffer") && read("bind").trim() == "1"
        })
}
