//! libvirt driven through the distribution's `virsh` (see [`crate::vm::libvirt`] for
//! why virsh and what its answers mean): `vm define` writes the domain XML and runs
//! `virsh define`, `vm start`/`vm stop` run `virsh start`/`shutdown`/`destroy`. The
//! read-only queries (`domstate`, `domuuid`, `dumpxml`) go through the same runner,
//! so every virsh call passthru makes is here.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::vm::libvirt::{
    accel_of_xml, classify, with_uuid, DomainState, LibvirtError, VirshFailure,
};
use crate::vm::plan::Accel;
use crate::vm::render;
use crate::vm::resolve::Resolution;

/// The distribution's `virsh`, on one connection.
#[derive(Debug, Clone)]
pub struct Virsh {
    /// The program (`virsh`).
    pub program: PathBuf,
    /// The connection URI.
    pub uri: String,
}

impl Virsh {
    /// `virsh` on `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            program: PathBuf::from("virsh"),
            uri: uri.into(),
        }
    }

    /// The command `virsh -c URI ARGS…`. Every command passthru gives virsh ends its
    /// options with `--`, so a domain name or a file is never read as an option.
    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-c").arg(&self.uri).args(args);
        cmd
    }

    /// Runs virsh; its stdout, or the error it means. `name` is the domain the
    /// command is about (for "no such domain").
    fn run<S: AsRef<OsStr>>(&self, args: &[S], name: Option<&str>) -> Result<String, LibvirtError> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(LibvirtError::Spawn)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(match (classify(&stderr), name) {
            (VirshFailure::NoDaemon, _) => LibvirtError::NotRunning {
                uri: self.uri.clone(),
                detail: stderr.lines().last().unwrap_or("").to_string(),
            },
            (VirshFailure::NoDomain, Some(name)) => LibvirtError::UnknownDomain {
                name: name.to_string(),
            },
            _ => LibvirtError::Failed {
                command: args
                    .iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                stderr,
            },
        })
    }

    /// The domain's state, or `None` when libvirt has no domain of that name.
    pub fn state(&self, name: &str) -> Result<Option<DomainState>, LibvirtError> {
        match self.run(&["domstate", "--", name], Some(name)) {
            Ok(out) => Ok(Some(DomainState::parse(&out))),
            Err(LibvirtError::UnknownDomain { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The domain's state; an unknown domain is an error naming the remedy.
    pub fn require_state(&self, name: &str) -> Result<DomainState, LibvirtError> {
        self.state(name)?
            .ok_or_else(|| LibvirtError::UnknownDomain {
                name: name.to_string(),
            })
    }

    /// The domain's UUID, or `None` when it is not defined.
    pub fn uuid(&self, name: &str) -> Result<Option<String>, LibvirtError> {
        match self.run(&["domuuid", "--", name], Some(name)) {
            Ok(out) => Ok(Some(out.trim().to_string()).filter(|u| !u.is_empty())),
            Err(LibvirtError::UnknownDomain { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How the defined domain runs its CPU (its stored XML's `<domain type>`).
    pub fn defined_accel(&self, name: &str) -> Result<Option<Accel>, LibvirtError> {
        match self.run(&["dumpxml", "--inactive", "--", name], Some(name)) {
            Ok(xml) => Ok(accel_of_xml(&xml)),
            Err(LibvirtError::UnknownDomain { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `virsh define FILE`: creates the domain, or replaces its definition.
    pub fn define(&self, xml_file: &Path) -> Result<(), LibvirtError> {
        self.run(
            &[OsStr::new("define"), OsStr::new("--"), xml_file.as_os_str()],
            None,
        )
        .map(drop)
    }

    /// `virsh start NAME`.
    pub fn start(&self, name: &str) -> Result<(), LibvirtError> {
        self.run(&["start", "--", name], Some(name)).map(drop)
    }

    /// `virsh shutdown NAME`: asks the guest to power off (ACPI power button).
    pub fn shutdown(&self, name: &str) -> Result<(), LibvirtError> {
        self.run(&["shutdown", "--", name], Some(name)).map(drop)
    }

    /// `virsh destroy NAME`: ends the QEMU process at once (the guest's power cord).
    pub fn destroy(&self, name: &str) -> Result<(), LibvirtError> {
        self.run(&["destroy", "--", name], Some(name)).map(drop)
    }

    /// `virsh console NAME` in place of passthru (`exec`): the user's terminal goes to
    /// the guest's serial console until Ctrl+] leaves it. Returns only when virsh
    /// could not be started.
    pub fn exec_console(&self, name: &str) -> LibvirtError {
        use std::os::unix::process::CommandExt;
        LibvirtError::Spawn(self.command(&["console", "--", name]).exec())
    }

    /// Waits until the domain is no longer active; the last state seen on timeout.
    pub fn wait_inactive(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Result<(), DomainState>, LibvirtError> {
        let start = Instant::now();
        loop {
            let state = self.require_state(name)?;
            if !state.is_active() {
                return Ok(Ok(()));
            }
            if start.elapsed() >= timeout {
                return Ok(Err(state));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// What boots first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstBoot {
    /// The installer ISO (the disks are blank).
    Cdrom,
    /// The first disk.
    Disk,
}

/// What `vm define` did.
#[derive(Debug, Clone, Serialize)]
pub struct Defined {
    /// The domain's name.
    pub name: String,
    /// The connection.
    pub uri: String,
    /// kvm or tcg.
    pub accel: Accel,
    /// The domain existed and its definition was replaced.
    pub updated: bool,
    /// The XML given to libvirt (kept in the VM's state directory).
    pub xml: PathBuf,
    /// Disk images created for it.
    pub disks_created: Vec<PathBuf>,
    /// What boots first.
    pub first_boot: FirstBoot,
    /// Remarks from resolving the spec (moved devices, hugepages).
    pub notes: Vec<String>,
}

/// Defines (or re-defines) the VM of a resolved spec in libvirt: refuses while
/// something blocks it, creates its missing disks and its state directory, chooses
/// the boot order from the disks' contents, writes the XML next to the VM's other
/// files and runs `virsh define`.
pub fn define(res: &mut Resolution, virsh: &Virsh) -> Result<Defined, LibvirtError> {
    let name = res.plan.spec.name.clone();
    let blockers = res.blockers();
    if !blockers.is_empty() {
        return Err(LibvirtError::Blocked { name, blockers });
    }
    // libvirt is asked first: when it is not there, nothing is created.
    let uuid = virsh.uuid(&name)?;
    let state_dir = res.plan.state_dir.clone();
    make_reachable_dir(&state_dir)?;
    let disks_created = super::disk::create_missing(&res.plan.spec)?;
    res.plan.boot_iso_first = crate::vm::disk::boot_iso_first(&res.plan.spec)?;
    let mut xml = render::libvirt_xml(&res.plan);
    if let Some(u) = &uuid {
        xml = with_uuid(&xml, u);
    }
    let file = state_dir.join(format!("{name}.xml"));
    std::fs::write(&file, &xml).map_err(|source| LibvirtError::Io {
        path: file.clone(),
        source,
    })?;
    virsh.define(&file)?;
    Ok(Defined {
        name,
        uri: virsh.uri.clone(),
        accel: res.plan.accel,
        updated: uuid.is_some(),
        xml: file,
        disks_created,
        first_boot: if res.plan.boot_iso_first && !res.plan.spec.isos.is_empty() {
            FirstBoot::Cdrom
        } else {
            FirstBoot::Disk
        },
        notes: res.notes.clone(),
    })
}

/// Creates `dir` (and its parents) so that QEMU, which libvirt runs as its own user
/// (`libvirt-qemu` on Debian), can reach the files in it: directories passthru
/// creates get mode 0755.
fn make_reachable_dir(dir: &Path) -> Result<(), LibvirtError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| LibvirtError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
