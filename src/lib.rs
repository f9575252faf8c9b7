//! passthru: check a Linux host for PCI passthrough, set up VFIO reversibly, and run
//! virtual machines that own real devices.
//!
//! Data flows one way: host facts (read through a [`host::root::HostRoot`]) → pure
//! findings and plans → the one module that changes the host.

pub mod apply;
pub mod check;
pub mod cli;
pub mod error;
pub mod host;
pub mod list;
pub mod plan;
pub mod report;
#[cfg(test)]
pub(crate) mod testing;
pub mod vm;
