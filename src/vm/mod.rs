//! Virtual machines: the spec, where it is stored, how it is resolved on a host
//! (devices, vCPU pinning, hugepages, firmware) into a plan, and the renderers of the
//! plan.

pub mod check;
pub mod disk;
pub mod host;
pub mod hostdisk;
pub mod hugepages;
pub mod identity;
pub mod libvirt;
pub mod new;
pub mod pinning;
pub mod plan;
pub mod qemu;
pub mod qmp;
pub mod render;
pub mod resolve;
pub mod run;
pub mod spec;
pub mod store;
