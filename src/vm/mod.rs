//! Virtual machines: the spec, where it is stored, how it is resolved on a host
//! (devices, vCPU pinning, hugepages, firmware), and the renderers of the plan.

pub mod disk;
pub mod hugepages;
pub mod identity;
pub mod libvirt;
pub mod pinning;
pub mod render;
pub mod resolve;
pub mod spec;
pub mod store;
