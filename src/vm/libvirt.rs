//! VMs run by libvirt: `vm define`, `vm start`, `vm stop`, `vm console` — what
//! virsh says and means (its errors, a domain's state, the stored XML's accelerator),
//! and the domain XML given to it. The virsh calls themselves, and the files written
//! for them, are [`crate::apply::libvirt`].
//!
//! libvirt keeps *domains* (its name for a VM): an XML definition it stores, and a
//! QEMU process it starts from it. passthru renders that XML from the spec
//! ([`super::render::libvirt_xml`]) and hands it to the distribution's own `virsh`
//! (`virsh -c URI define FILE`), so there is no libvirt library to link and the user
//! can inspect everything with the same tool. The connection is `qemu:///system` (the
//! system daemon, which can give PCI devices to a VM) unless `LIBVIRT_DEFAULT_URI`
//! says otherwise, as for `virsh` itself.
//!
//! Re-defining a domain replaces its definition; its UUID is kept (read back with
//! `virsh domuuid`), because libvirt refuses a second UUID for one name and keys the
//! TPM's state (`/var/lib/libvirt/swtpm/UUID`) by it — a Windows guest's BitLocker
//! keys live there. The UEFI variable store (`NAME_VARS.fd` in the VM's state
//! directory) is created by libvirt from its template on first start and kept after.
//!
//! **Installing.** The spec's ISOs are attached as CD-ROMs. While every disk of the VM
//! is still blank (see [`super::disk::disk_is_blank`]), the first ISO boots first, so the installer
//! runs; once an OS wrote to a disk, the disk boots first and the ISOs stay attached
//! (a driver ISO such as virtio-win is still needed then). `vm start` re-defines the
//! domain from its spec before it starts it, so the switch needs nothing from the
//! user: install, power off, `vm start` again, and the installed system boots. OVMF
//! takes the boot order from QEMU on every boot, so the stored NVRAM does not pin the
//! old order.

use std::path::PathBuf;

use serde::Serialize;

use super::disk::DiskError;
use super::plan::Accel;

/// The connection used when neither `--connect` nor `LIBVIRT_DEFAULT_URI` says.
pub const DEFAULT_URI: &str = "qemu:///system";

/// The connection URI: `LIBVIRT_DEFAULT_URI`, else [`DEFAULT_URI`].
pub fn default_uri() -> String {
    std::env::var("LIBVIRT_DEFAULT_URI")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URI.to_string())
}

/// What went wrong talking to libvirt.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// `virsh` is not installed.
    #[error("cannot run virsh (install libvirt-clients on Debian/Ubuntu, libvirt-client on Fedora, libvirt on Arch): {0}")]
    Spawn(std::io::Error),
    /// No libvirt daemon answers at the URI.
    #[error("libvirt is not running at {uri}: start it with `systemctl start libvirtd` (or `systemctl start virtqemud.socket` where libvirt runs as modular daemons) ({detail})")]
    NotRunning {
        /// The connection URI.
        uri: String,
        /// What virsh said.
        detail: String,
    },
    /// libvirt has no domain of that name.
    #[error(
        "libvirt has no VM named {name}: define it from its spec with `passthru vm define {name}`"
    )]
    UnknownDomain {
        /// The domain's name.
        name: String,
    },
    /// A virsh command failed for another reason.
    #[error("virsh {command} failed: {stderr}")]
    Failed {
        /// The virsh arguments.
        command: String,
        /// What virsh said.
        stderr: String,
    },
    /// The guest did not power off in time after an ACPI shutdown request.
    #[error("VM {name} is still {state} {secs} s after the ACPI shutdown request (the guest ignored it or is slow): `passthru vm stop --force {name}` pulls the plug")]
    Timeout {
        /// The domain's name.
        name: String,
        /// Its state at the end.
        state: String,
        /// How long we waited.
        secs: u64,
    },
    /// The VM is not running (e.g. `vm console`).
    #[error("VM {name} is not running (it is {state}): start it with `passthru vm start {name}`")]
    NotRunningVm {
        /// The domain's name.
        name: String,
        /// Its state.
        state: String,
    },
    /// Something on this host stops the VM from starting.
    #[error("VM {name} cannot run on this host yet:\n  - {}", .blockers.join("\n  - "))]
    Blocked {
        /// The VM.
        name: String,
        /// Each blocker with its remedy.
        blockers: Vec<String>,
    },
    /// A disk could not be created.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A file or directory could not be written or read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A domain's state, as `virsh domstate` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainState {
    /// `running`.
    Running,
    /// `idle` (blocked on a resource).
    Idle,
    /// `paused`.
    Paused,
    /// `in shutdown`: the guest is shutting down.
    InShutdown,
    /// `shut off`.
    ShutOff,
    /// `crashed`.
    Crashed,
    /// `pmsuspended`: suspended by the guest's power management.
    PmSuspended,
    /// Anything else virsh may print (`no state`, newer states).
    Other(String),
}

impl DomainState {
    /// Parses the first line of `virsh domstate NAME`.
    pub fn parse(text: &str) -> Self {
        match text.lines().next().unwrap_or("").trim() {
            "running" => Self::Running,
            "idle" => Self::Idle,
            "paused" => Self::Paused,
            "in shutdown" => Self::InShutdown,
            "shut off" => Self::ShutOff,
            "crashed" => Self::Crashed,
            "pmsuspended" => Self::PmSuspended,
            other => Self::Other(other.to_string()),
        }
    }

    /// A QEMU process exists for the domain (it can be stopped, not started).
    pub fn is_active(&self) -> bool {
        !matches!(self, Self::ShutOff | Self::Crashed)
    }
}

impl std::fmt::Display for DomainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Idle => "idle",
            Self::Paused => "paused",
            Self::InShutdown => "in shutdown",
            Self::ShutOff => "shut off",
            Self::Crashed => "crashed",
            Self::PmSuspended => "pmsuspended",
            Self::Other(s) => s,
        })
    }
}

/// What a failed virsh call means, from its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirshFailure {
    /// No daemon at the URI.
    NoDaemon,
    /// No such domain.
    NoDomain,
    /// Something else.
    Other,
}

/// Classifies virsh's error output. The wordings are virsh's own (libvirt 9.0):
/// `error: failed to connect to the hypervisor` followed by `error: Failed to connect
/// socket to '/var/run/libvirt/libvirt-sock': No such file or directory` when no
/// daemon runs; `error: failed to get domain 'NAME'` for an unknown name (older and
/// newer versions add `Domain not found: no domain with matching name 'NAME'`).
pub fn classify(stderr: &str) -> VirshFailure {
    if stderr.contains("failed to connect to the hypervisor")
        || stderr.contains("Failed to connect socket")
    {
        VirshFailure::NoDaemon
    } else if stderr.contains("failed to get domain") || stderr.contains("Domain not found") {
        VirshFailure::NoDomain
    } else {
        VirshFailure::Other
    }
}

/// The `<domain type='…'>` of a domain XML: `kvm` or `qemu` (TCG).
pub fn accel_of_xml(xml: &str) -> Option<Accel> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e))
                if e.name().into_inner() == "domain" =>
            {
                let t = e.try_get_attribute("type").ok().flatten()?;
                return match &*t.value {
                    "kvm" => Some(Accel::Kvm),
                    "qemu" => Some(Accel::Tcg),
                    _ => None,
                };
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The domain XML with `<uuid>` right after `<name>` (libvirt keeps the domain's
/// identity, and its TPM state, when the definition is replaced).
pub fn with_uuid(xml: &str, uuid: &str) -> String {
    match xml.find("</name>") {
        Some(at) => {
            let end = at + "</name>".len();
            let indent = xml[..at]
                .rfind('\n')
                .map(|nl| &xml[nl + 1..])
                .map(|line| &line[..line.len() - line.trim_start().len()])
                .unwrap_or("  ");
            format!(
                "{}\n{indent}<uuid>{uuid}</uuid>{}",
                &xml[..end],
                &xml[end..]
            )
        }
        None => xml.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What virsh 9.0.0 (Debian 12) printed on this machine, before `libvirtd` ran.
    const NO_DAEMON: &str = "error: failed to connect to the hypervisor\n\
        error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory";
    // `virsh domstate nosuch` with libvirtd running.
    const NO_DOMAIN: &str = "error: failed to get domain 'nosuch'";

    #[test]
    fn virsh_errors_are_told_apart() {
        assert_eq!(classify(NO_DAEMON), VirshFailure::NoDaemon);
        assert_eq!(classify(NO_DOMAIN), VirshFailure::NoDomain);
        assert_eq!(
            classify("error: Domain not found: no domain with matching name 'x'"),
            VirshFailure::NoDomain
        );
        assert_eq!(
            classify("error: Failed to start domain 'x'\nerror: internal error: process exited while connecting to monitor"),
            VirshFailure::Other
        );
    }

    #[test]
    fn errors_name_their_remedy() {
        let e = LibvirtError::UnknownDomain { name: "win".into() }.to_string();
        assert!(e.contains("passthru vm define win"), "{e}");
        let e = LibvirtError::NotRunning {
            uri: DEFAULT_URI.into(),
            detail: "x".into(),
        }
        .to_string();
        assert!(e.contains("systemctl start libvirtd"), "{e}");
    }

    #[test]
    fn domain_states_as_virsh_prints_them() {
        // `virsh domstate` prints the state and an empty line.
        assert_eq!(DomainState::parse("running\n\n"), DomainState::Running);
        assert_eq!(DomainState::parse("shut off\n\n"), DomainState::ShutOff);
        assert_eq!(DomainState::parse("in shutdown\n"), DomainState::InShutdown);
        assert!(DomainState::parse("paused\n").is_active());
        assert!(!DomainState::parse("crashed\n").is_active());
        assert_eq!(
            DomainState::parse("no state\n"),
            DomainState::Other("no state".into())
        );
        assert_eq!(DomainState::ShutOff.to_string(), "shut off");
    }

    #[test]
    fn the_domain_type_tells_the_accelerator() {
        // The head of `virsh dumpxml` of a running TCG domain.
        let xml = "<domain type='qemu' id='3'>\n  <name>t</name>\n</domain>\n";
        assert_eq!(accel_of_xml(xml), Some(Accel::Tcg));
        assert_eq!(
            accel_of_xml("<domain type=\"kvm\"><name>w</name></domain>"),
            Some(Accel::Kvm)
        );
        assert_eq!(accel_of_xml("not xml"), None);
    }

    #[test]
    fn the_uuid_goes_after_the_name() {
        let xml = "<domain type=\"qemu\">\n  <name>t</name>\n  <memory unit=\"MiB\">1</memory>\n</domain>\n";
        assert_eq!(
            with_uuid(xml, "2d4f7a52-0d0e-4a1d-9c55-3c1f0a6b7e11"),
            "<domain type=\"qemu\">\n  <name>t</name>\n  <uuid>2d4f7a52-0d0e-4a1d-9c55-3c1f0a6b7e11</uuid>\n  <memory unit=\"MiB\">1</memory>\n</domain>\n"
        );
    }
}
