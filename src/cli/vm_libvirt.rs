//! `passthru vm define / start / stop / console`: VMs run by libvirt
//! (`qemu:///system`).

use std::path::PathBuf;

use crate::host_root::HostRoot;
use crate::vm::render::Accel;

/// `vm define`.
#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    /// The VM's name, or the path of a spec file.
    pub spec: PathBuf,
    /// kvm, or tcg (software emulation) where KVM is not usable.
    #[arg(long, value_enum, default_value_t = Accel::Kvm)]
    pub accel: Accel,
}

/// `vm start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The VM's name.
    pub name: String,
}

/// `vm stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// Pull the plug instead of asking the guest to shut down.
    #[arg(long)]
    pub force: bool,
}

/// `vm console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM's name.
    pub name: String,
}

/// `passthru vm define`.
pub(super) fn define(_json: bool, _root: &HostRoot, _args: &DefineArgs) -> anyhow::Result<u8> {
    anyhow::bail!("vm define is not available yet")
}

/// `passthru vm start`.
pub(super) fn start(_json: bool, _args: &StartArgs) -> anyhow::Result<u8> {
    anyhow::bail!("vm start is not available yet")
}

/// `passthru vm stop`.
pub(super) fn stop(_json: bool, _args: &StopArgs) -> anyhow::Result<u8> {
    anyhow::bail!("vm stop is not available yet")
}

/// `passthru vm console`.
pub(super) fn console(_args: &ConsoleArgs) -> anyhow::Result<u8> {
    anyhow::bail!("vm console is not available yet")
}
