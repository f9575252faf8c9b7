//! `passthru vm run`: a VM run by QEMU directly, without libvirt.

use std::path::PathBuf;

use crate::host_root::HostRoot;
use crate::vm::render::Accel;

/// `vm run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The VM's name, or the path of a spec file.
    pub spec: PathBuf,
    /// kvm, or tcg (software emulation) where KVM is not usable.
    #[arg(long, value_enum, default_value_t = Accel::Kvm)]
    pub accel: Accel,
}

/// `passthru vm run`.
pub(super) fn run(_json: bool, _root: &HostRoot, _args: &RunArgs) -> anyhow::Result<u8> {
    anyhow::bail!("vm run is not available yet")
}
