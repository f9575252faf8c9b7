//! Facts about the host, read through a [`root::HostRoot`] (`/` or a `--root` tree) and
//! never changed here: PCI devices and their names, the kernel (release, command line,
//! config, modules, log), CPUs, the IOMMU, how the host boots, what the host itself
//! uses (disks, the route's NIC, mounts, holders), and passthru's own records of what
//! it bound — and the one snapshot ([`snapshot::HostSnapshot`]) that gathers them
//! once for every command.

pub mod boot;
pub mod cpu;
pub mod facts;
pub mod holders;
pub mod iommu;
pub mod kernel;
pub mod mounts;
pub mod pci;
pub mod records;
pub mod root;
pub mod snapshot;
pub mod usage;
