//! PCI devices as the kernel shows them in `/sys/bus/pci/devices`.

pub mod address;
pub mod device;
pub mod names;

pub use address::PciAddress;
pub use device::PciDevice;
