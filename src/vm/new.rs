//! The spec of a new VM (`passthru vm new`): what the user asked for, completed with
//! good defaults for this host.
//!
//! The defaults are the policy of a first VM that works: UEFI (OVMF) unless legacy
//! BIOS is asked for; for Windows, Secure Boot and a TPM, which Windows 11 requires;
//! an emulated SPICE display when no device is passed through (there would be no
//! screen at all otherwise), none when a passed GPU is the display; 8 GiB of memory,
//! but never more than half of a smaller host; one qcow2 disk in the VM's data
//! directory; user-mode networking. Everything here is pure: the host's devices and
//! memory are read by the caller.

use std::path::{Path, PathBuf};

use super::identity;
use super::spec::{
    Cpus, DirectKernel, Disk, Display, Firmware, IdPair, Network, OsType, UsbDevice, VmSpec,
};
use crate::host::pci::{PciAddress, PciDevice};

/// What the user asked for (`vm new`'s flags). Paths are taken as given: the caller
/// makes them absolute, so they mean the same wherever the VM is started from.
#[derive(Debug, Clone, Default)]
pub struct NewVm {
    /// The VM's name.
    pub name: String,
    /// Devices to pass through (their groups come along when the VM is resolved).
    pub devices: Vec<PciAddress>,
    /// vCPUs.
    pub cpus: u32,
    /// Memory (`16G`); `None` for the default.
    pub memory: Option<String>,
    /// Installer or driver ISOs.
    pub isos: Vec<PathBuf>,
    /// The size of the new disk image; `None` for a VM without a disk.
    pub disk: Option<String>,
    /// Legacy BIOS (SeaBIOS) instead of UEFI.
    pub bios: bool,
    /// The display; `None` for the default.
    pub display: Option<Display>,
    /// No network at all.
    pub no_network: bool,
    /// A host bridge instead of user-mode networking.
    pub bridge: Option<String>,
    /// A Linux kernel booted directly.
    pub kernel: Option<PathBuf>,
    /// Its initramfs.
    pub initrd: Option<PathBuf>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// The guest OS.
    pub os: OsType,
    /// Back the memory with hugepages.
    pub hugepages: bool,
    /// USB devices (vendor:product).
    pub usb: Vec<IdPair>,
    /// evdev input devices.
    pub evdev: Vec<PathBuf>,
}

/// What the defaults depend on, as read from the host.
#[derive(Debug, Clone, Copy)]
pub struct NewVmHost<'a> {
    /// The host's PCI devices: each passed device is written with its identity (IDs
    /// and subsystem), so the spec still finds it after the buses are renumbered.
    pub devices: &'a [PciDevice],
    /// The host's memory (`MemTotal`), when known.
    pub mem_total_mib: Option<u64>,
    /// Where the VM's disks go (its own directory under this one).
    pub data_dir: &'a Path,
}

/// Why a new spec cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewVmError {
    /// A device asked for is not on this host.
    #[error("no PCI device at {0} on this host (see `passthru list`)")]
    NoDevice(PciAddress),
}

/// The spec of a new VM: `request` completed with the defaults (see the module's
/// documentation). It is not validated here: [`VmSpec::validate`] says what is wrong
/// with the user's values.
pub fn new_spec(request: &NewVm, host: &NewVmHost<'_>) -> Result<VmSpec, NewVmError> {
    let name = request.name.as_str();
    let windows = request.os == OsType::Windows;
    let devices = request
        .devices
        .iter()
        .map(|a| {
            host.devices
                .iter()
                .find(|d| d.address == *a)
                .map(identity::identity_of)
                .ok_or(NewVmError::NoDevice(*a))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let no_device = devices.is_empty();
    Ok(VmSpec {
        name: name.to_string(),
        memory: request
            .memory
            .clone()
            .unwrap_or_else(|| default_memory(host.mem_total_mib)),
        cpus: Cpus::Count(request.cpus),
        devices,
        usb: request.usb.iter().map(|id| UsbDevice { id: *id }).collect(),
        evdev: request.evdev.clone(),
        kernel: request.kernel.clone().map(|path| DirectKernel {
            path,
            initrd: request.initrd.clone(),
            cmdline: request.cmdline.clone().unwrap_or_default(),
        }),
        disks: match &request.disk {
            None => Vec::new(),
            Some(size) => vec![Disk {
                path: host.data_dir.join(name).join(format!("{name}.qcow2")),
                size: Some(size.clone()),
                format: "qcow2".into(),
            }],
        },
        isos: request.isos.clone(),
        firmware: Firmware {
            uefi: !request.bios,
            secure_boot: windows && !request.bios,
            tpm: windows,
        },
        os: request.os,
        // Without a passed device the guest needs an emulated display.
        display: request.display.unwrap_or(if no_device {
            Display::Spice
        } else {
            Display::None
        }),
        network: match (&request.bridge, request.no_network) {
            (Some(br), _) => Network::Bridge(br.clone()),
            (None, true) => Network::None,
            (None, false) => Network::User,
        },
        hugepages: request.hugepages,
    })
}

/// The memory of a new VM when `--memory` is not given: 8 GiB, but never more than half
/// of what the host has (the host keeps the other half), in steps of 256 MiB.
pub fn default_memory(host_mib: Option<u64>) -> String {
    const DEFAULT_MIB: u64 = 8 * 1024;
    match host_mib {
        Some(total) if total / 2 < DEFAULT_MIB => format!("{}M", (total / 2 / 256 * 256).max(256)),
        _ => "8G".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_memory_leaves_the_host_half() {
        assert_eq!(default_memory(None), "8G");
        assert_eq!(default_memory(Some(32011)), "8G");
        assert_eq!(default_memory(Some(16384)), "8G");
        assert_eq!(default_memory(Some(16000)), "7936M");
        assert_eq!(default_memory(Some(979)), "256M");
        assert_eq!(default_memory(Some(100)), "256M");
    }

    fn gpu() -> PciDevice {
        PciDevice {
            address: "0000:01:00.0".parse().unwrap(),
            vendor_id: 0x10de,
            device_id: 0x2484,
            class: 0x030000,
            ..PciDevice::default()
        }
    }

    fn request(name: &str) -> NewVm {
        NewVm {
            name: name.into(),
            cpus: 4,
            disk: Some("64G".into()),
            ..NewVm::default()
        }
    }

    #[test]
    fn windows_gets_secure_boot_and_a_tpm_and_a_passed_gpu_is_the_display() {
        let devices = [gpu()];
        let host = NewVmHost {
            devices: &devices,
            mem_total_mib: Some(32768),
            data_dir: Path::new("/var/lib/passthru/vms"),
        };
        let mut r = request("win11");
        r.os = OsType::Windows;
        r.devices = vec![devices[0].address];
        let spec = new_spec(&r, &host).unwrap();
        assert_eq!(
            spec.firmware,
            Firmware {
                uefi: true,
                secure_boot: true,
                tpm: true
            }
        );
        assert_eq!(spec.display, Display::None);
        assert_eq!(spec.memory, "8G");
        assert_eq!(
            spec.disks[0].path,
            Path::new("/var/lib/passthru/vms/win11/win11.qcow2")
        );
        assert_eq!(spec.devices[0].address, Some(devices[0].address));
        assert_eq!(spec.network, Network::User);

        // Legacy BIOS has no Secure Boot; Windows keeps its TPM.
        r.bios = true;
        let spec = new_spec(&r, &host).unwrap();
        assert_eq!(
            (
                spec.firmware.uefi,
                spec.firmware.secure_boot,
                spec.firmware.tpm
            ),
            (false, false, true)
        );
    }

    #[test]
    fn without_a_passed_device_the_guest_gets_a_spice_display() {
        let host = NewVmHost {
            devices: &[],
            mem_total_mib: Some(4096),
            data_dir: Path::new("/d"),
        };
        let mut r = request("linux");
        r.disk = None;
        r.bridge = Some("br0".into());
        let spec = new_spec(&r, &host).unwrap();
        assert_eq!(spec.display, Display::Spice);
        assert!(!spec.firmware.tpm);
        assert_eq!(spec.memory, "2048M");
        assert!(spec.disks.is_empty());
        assert_eq!(spec.network, Network::Bridge("br0".into()));
        r.display = Some(Display::None);
        assert_eq!(new_spec(&r, &host).unwrap().display, Display::None);
    }

    #[test]
    fn a_device_not_on_the_host_is_named() {
        let host = NewVmHost {
            devices: &[],
            mem_total_mib: None,
            data_dir: Path::new("/d"),
        };
        let mut r = request("ghost");
        r.devices = vec!["0000:09:00.0".parse().unwrap()];
        assert_eq!(
            new_spec(&r, &host).unwrap_err().to_string(),
            "no PCI device at 0000:09:00.0 on this host (see `passthru list`)"
        );
    }
}
