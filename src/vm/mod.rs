//! Virtual machines: the spec, the plan, and its renderers.

pub mod spec;
