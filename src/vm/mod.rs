//! Virtual machines: the spec, where the vCPUs run, and the renderers of the plan.

pub mod pinning;
pub mod render;
pub mod spec;
