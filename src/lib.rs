//! passthru: check a Linux host for PCI passthrough, set up VFIO reversibly, and run
//! virtual machines that own real devices.
//!
//! Data flows one way: host facts (read through a [`host_root::HostRoot`]) → pure
//! findings and plans → the one module that changes the host.

pub mod apply;
pub mod bind;
pub mod boot;
pub mod check;
pub mod cli;
pub mod cpu;
pub mod enable;
pub mod facts;
pub mod host_devices;
pub mod host_root;
pub mod iommu;
pub mod kernel;
pub mod list;
pub mod mounts;
pub mod pci;
pub mod report;
pub mod state;
pub mod vm;
