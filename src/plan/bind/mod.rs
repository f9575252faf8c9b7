//! `passthru bind` / `unbind`: hand devices to `vfio-pci` now, and give them back.
//!
//! A VM can only receive a device that the host's driver has let go of and that
//! `vfio-pci` holds. The IOMMU isolates *groups*, not devices, so VFIO accepts a
//! device only when every endpoint of its group is bound to vfio-pci or to no driver
//! at all; PCI bridges in the group stay with the host. Functions of one slot (a GPU
//! and its HDMI audio) share the slot's reset and move together.
//!
//! Binding uses `driver_override` (only the named driver may take the device) and
//! `drivers_probe`, never `new_id`, which would grab every device with the same ids.
//! This module only *plans*: it resolves what the user named into whole groups,
//! decides what would be refused and why, and lists the steps. [`crate::apply`]
//! carries them out.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::Serialize;

use crate::host::holders::Holders;
use crate::host::pci::names::PciNames;
use crate::host::pci::{PciAddress, PciDevice};
use crate::host::records::BindRecord;
use crate::host::snapshot::HostSnapshot;
use crate::host::usage::{is_host_side_bridge, HostUse};

/// The driver that holds devices for VMs.
pub const VFIO_PCI: &str = "vfio-pci";

/// What the user named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `01:00.0` or `0000:01:00.0`.
    Address(PciAddress),
    /// `group:14`.
    Group(u32),
    /// Any other text: matched against device names, confirmed by the user.
    Name(String),
}

/// Why a target could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `group:` without a number.
    #[error("'{0}' is not a group: write group:N, e.g. group:14")]
    Group(String),
    /// Something that looks like an address but is not one.
    #[error(transparent)]
    Address(#[from] crate::host::pci::address::AddressError),
    /// Empty text.
    #[error("an empty name matches nothing")]
    Empty,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(n) = s.strip_prefix("group:") {
            return n
                .parse()
                .map(Target::Group)
                .map_err(|_| TargetError::Group(s.to_string()));
        }
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        match s.parse::<PciAddress>() {
            Ok(a) => Ok(Target::Address(a)),
            // Text made only of hex digits, ':' and '.' was meant as an address.
            Err(e)
                if s.contains(':')
                    && s.bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                Err(e.into())
            }
            Err(_) => Ok(Target::Name(s.to_string())),
        }
    }
}

/// What stops a bind or unbind, with the flag that overrides it (if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The device concerned.
    pub address: Option<PciAddress>,
    /// Why, in a sentence.
    pub reason: String,
    /// The flag that accepts the risk, when there is one.
    pub override_flag: Option<&'static str>,
}

/// Flags that accept a risk `bind` would otherwise refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Take the whole IOMMU group even when other devices in it are in use.
    pub whole_group: bool,
    /// Take the boot display although the console or a display server drives it.
    pub boot_display: bool,
    /// Take the controller of the disk holding `/`.
    pub root_disk: bool,
    /// Take the NIC carrying the default route.
    pub default_route: bool,
    /// Take the controller of a disk the host uses besides `/` (mounted, swap, a
    /// member of a stacked device, open in a process).
    pub disk_in_use: bool,
}

/// The flag that accepts taking a disk the host uses.
pub const ALLOW_DISK_IN_USE: &str = "--allow-disk-in-use";

/// Refuses `d` when the host uses a disk on it besides `/` (see
/// [`crate::host::usage::storage_in_use`]): a mounted filesystem, swap, an LVM /
/// dm-crypt / md RAID member or a device node a process holds open. `bind` and
/// `enable` (and `vm run`, which binds) refuse alike.
pub fn storage_refusal(inputs: &Inputs<'_>, d: &PciDevice, o: Overrides) -> Option<Refusal> {
    let uses: Vec<String> = inputs
        .host
        .storage
        .iter()
        .filter(|u| u.address == d.address)
        .map(crate::host::usage::StorageUse::describe)
        .collect();
    if uses.is_empty() || o.disk_in_use {
        return None;
    }
    Some(Refusal {
        address: Some(d.address),
        reason: format!(
            "{} holds a disk the host uses: {}. Once vfio-pci has it, the host loses that disk: \
             its reads and writes fail, unwritten data is lost, and a boot that waits for it \
             (/etc/fstab, a RAID or LVM volume) fails. Unmount it, swapoff it or stop what holds \
             it first",
            inputs.describe(d),
            uses.join("; ")
        ),
        override_flag: Some(ALLOW_DISK_IN_USE),
    })
}

/// What the planner knows about the host.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Every PCI device.
    pub devices: &'a [PciDevice],
    /// Names for descriptions.
    pub names: &'a PciNames,
    /// Root disk and default-route devices.
    pub host: &'a HostUse,
    /// Processes holding devices open.
    pub holders: &'a Holders,
    /// Whether a text console runs on a framebuffer (fbcon bound).
    pub console_on_framebuffer: bool,
    /// Devices passthru bound earlier.
    pub records: &'a [BindRecord],
}

impl Inputs<'_> {
    fn device(&self, a: PciAddress) -> Option<&PciDevice> {
        self.devices.iter().find(|d| d.address == a)
    }

    /// `0000:01:00.0 VGA compatible controller NVIDIA Corporation GA104 [GeForce RTX 3070]`.
    pub fn describe(&self, d: &PciDevice) -> String {
        let name = match (
            self.names.vendor(d.vendor_id),
            self.names.device(d.vendor_id, d.device_id),
        ) {
            (Some(v), Some(n)) => format!("{v} {n}"),
            (Some(v), None) => format!("{v} [{:04x}:{:04x}]", d.vendor_id, d.device_id),
            _ => format!("[{:04x}:{:04x}]", d.vendor_id, d.device_id),
        };
        format!("{} {} {name}", d.address, self.names.class(d.class))
    }

    fn endpoints_of_group(&self, group: u32) -> Vec<&PciDevice> {
        self.devices
            .iter()
            .filter(|d| d.iommu_group == Some(group) && !is_host_side_bridge(d.class))
            .collect()
    }
}

/// One device's change of driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The device.
    pub address: PciAddress,
    /// Its IOMMU group.
    pub group: Option<u32>,
    /// What it is.
    pub description: String,
    /// Its driver now.
    pub from: Option<String>,
    /// Its driver afterwards (`None` for unbind with no recorded driver: the kernel
    /// chooses).
    pub to: Option<String>,
    /// Already as wanted: nothing to do.
    pub noop: bool,
    /// For unbind: the bind record to restore from, if any.
    #[serde(skip)]
    pub record: Option<BindRecord>,
}

/// The steps of a bind or unbind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Per device, in address order.
    pub steps: Vec<Step>,
    /// The IOMMU groups concerned.
    pub groups: Vec<u32>,
}

impl Plan {
    /// Whether nothing needs to change.
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| s.noop)
    }
}

/// Resolves targets into device addresses. Name targets match case-insensitively
/// against vendor, device and class names; the caller confirms them with the user.
pub fn resolve_targets(targets: &[Target], inputs: &Inputs<'_>) -> Result<Vec<PciAddress>, String> {
    let mut out = BTreeSet::new();
    for t in targets {
        match t {
            Target::Address(a) => {
                if inputs.device(*a).is_none() {
                    return Err(format!("there is no PCI device {a} (see `passthru list`)"));
                }
                out.insert(*a);
            }
            Target::Group(g) => {
                let members = inputs.endpoints_of_group(*g);
                if members.is_empty() {
                    return Err(format!(
                        "there is no IOMMU group {g} with devices to bind (see `passthru list`)"
                    ));
                }
                out.extend(members.iter().map(|d| d.address));
            }
            Target::Name(n) => {
                let needle = n.to_lowercase();
                let found: Vec<PciAddress> = inputs
                    .devices
                    .iter()
                    .filter(|d| !is_host_side_bridge(d.class))
                    .filter(|d| inputs.describe(d).to_lowercase().contains(&needle))
                    .map(|d| d.address)
                    .collect();
                if found.is_empty() {
                    return Err(format!(
                        "no device's name contains '{n}' (see `passthru list`)"
                    ));
                }
                out.extend(found);
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn holders_text(inputs: &Inputs<'_>, a: PciAddress) -> Option<String> {
    inputs
        .holders
        .get(&a)
        .filter(|h| !h.is_empty())
        .map(|h| crate::host::holders::describe(h))
}

/// What to bind: the devices named (by address, resolved from the user's targets)
/// and the risks the user accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindRequest {
    /// The devices named.
    pub named: Vec<PciAddress>,
    /// The risks accepted.
    pub overrides: Overrides,
}

/// Plans binding the request's devices (and what must come with them) to vfio-pci
/// on the host `snapshot` describes, reading nothing.
pub fn plan(snapshot: &HostSnapshot, request: &BindRequest) -> Result<Plan, Vec<Refusal>> {
    plan_bind(&snapshot.bind_inputs(), &request.named, request.overrides)
}

/// Refusals for the disks the host uses on `devices` (see [`storage_refusal`]).
/// `vm define` and `vm start` check this before libvirt is given the devices:
/// libvirt detaches a `managed` host device from its driver itself when the domain
/// starts.
pub fn storage_refusals(
    snapshot: &HostSnapshot,
    devices: &[PciAddress],
    o: Overrides,
) -> Vec<Refusal> {
    let inputs = snapshot.bind_inputs();
    snapshot
        .devices
        .iter()
        .filter(|d| devices.contains(&d.address))
        .filter_map(|d| storage_refusal(&inputs, d, o))
        .collect()
}

/// Plans binding `named` (and what must come with them) to vfio-pci.
pub fn plan_bind(
    inputs: &Inputs<'_>,
    named: &[PciAddress],
    o: Overrides,
) -> Result<Plan, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut take: BTreeSet<PciAddress> = BTreeSet::new();
    let mut groups = BTreeSet::new();
    let named_slots: BTreeSet<String> = named.iter().map(|a| a.slot()).collect();
    for &a in named {
        let Some(d) = inputs.device(a) else { continue };
        if is_host_side_bridge(d.class) {
            refusals.push(Refusal {
                address: Some(a),
                reason: format!(
                    "{a} is a PCI bridge: bridges stay with the host; name the device behind it"
                ),
                override_flag: None,
            });
            continue;
        }
        let Some(g) = d.iommu_group else {
            refusals.push(Refusal {
                address: Some(a),
                reason: format!(
                    "{a} has no IOMMU group: the IOMMU is off, so nothing can be passed through (see `passthru check`)"
                ),
                override_flag: None,
            });
            continue;
        };
        groups.insert(g);
    }
    for &g in &groups {
        for d in inputs.endpoints_of_group(g) {
            let in_use = d.driver.as_deref().is_some_and(|drv| drv != VFIO_PCI);
            if named_slots.contains(&d.address.slot()) || !in_use || o.whole_group {
                take.insert(d.address);
            } else {
                let named_here: Vec<String> = named
                    .iter()
                    .filter(|a| inputs.device(**a).and_then(|x| x.iommu_group) == Some(g))
                    .map(ToString::to_string)
                    .collect();
                refusals.push(Refusal {
                    address: Some(d.address),
                    reason: format!(
                        "IOMMU group {g} of {} also holds {} (driver {}), which you did not name: \
                         VFIO needs the whole group, so it would be taken from the host too",
                        named_here.join(", "),
                        inputs.describe(d),
                        d.driver.as_deref().unwrap_or("none"),
                    ),
                    override_flag: Some("--whole-group"),
                });
            }
        }
    }
    let mut steps = Vec::new();
    for &a in &take {
        let Some(d) = inputs.device(a) else { continue };
        let noop = d.driver.as_deref() == Some(VFIO_PCI);
        if !noop {
            check_host_use(inputs, d, o, &mut refusals);
        }
        steps.push(Step {
            address: a,
            group: d.iommu_group,
            description: inputs.describe(d),
            from: d.driver.clone(),
            to: Some(VFIO_PCI.to_string()),
            noop,
            record: None,
        });
    }
    if refusals.is_empty() {
        Ok(Plan {
            steps,
            groups: groups.into_iter().collect(),
        })
    } else {
        Err(refusals)
    }
}

/// Refuses devices the host itself depends on, and devices held open.
fn check_host_use(inputs: &Inputs<'_>, d: &PciDevice, o: Overrides, refusals: &mut Vec<Refusal>) {
    let a = d.address;
    let desc = inputs.describe(d);
    let held = holders_text(inputs, a);
    if crate::host::usage::is_platform_function(d.class) {
        refusals.push(Refusal {
            address: Some(a),
            reason: format!("{desc} is part of the chipset's platform controller: the host cannot run without it"),
            override_flag: None,
        });
    }
    let drm_held = inputs
        .holders
        .get(&a)
        .is_some_and(|h| h.iter().any(|h| h.file.starts_with("/dev/dri/")));
    if d.boot_vga == Some(true)
        && d.driver.is_some()
        && (inputs.console_on_framebuffer || drm_held)
        && !o.boot_display
    {
        let by = if drm_held {
            "a display server"
        } else {
            "the text console (fbcon)"
        };
        refusals.push(Refusal {
            address: Some(a),
            reason: format!(
                "{desc} is the host's boot display and {by} still drives it: taking it leaves the host without a screen"
            ),
            override_flag: Some("--allow-boot-display"),
        });
    }
    if inputs.host.root_disks.iter().any(|r| r.address == a) && !o.root_disk {
        refusals.push(Refusal {
            address: Some(a),
            reason: format!("{desc} holds your root filesystem: the host would lose its own disk"),
            override_flag: Some("--allow-root-disk"),
        });
    }
    refusals.extend(storage_refusal(inputs, d, o));
    if let Some(nic) = inputs.host.route_nics.iter().find(|r| r.address == a) {
        if !o.default_route {
            refusals.push(Refusal {
                address: Some(a),
                reason: format!(
                    "{desc} carries your default network route ({}): the host would go offline",
                    nic.interface
                ),
                override_flag: Some("--allow-default-route"),
            });
        }
    }
    if let Some(h) = held {
        refusals.push(Refusal {
            address: Some(a),
            reason: format!(
                "{desc} is in use: {h}. Stop them first: unbinding the driver would wait in the kernel until they let go"
            ),
            override_flag: None,
        });
    }
}

/// Plans giving devices back to their host drivers. `named` empty means every device
/// passthru holds (`--all`).
pub fn plan_unbind(inputs: &Inputs<'_>, named: &[PciAddress]) -> Result<Plan, Vec<Refusal>> {
    let records: BTreeMap<PciAddress, &BindRecord> =
        inputs.records.iter().map(|r| (r.address, r)).collect();
    let mut take: BTreeSet<PciAddress> = BTreeSet::new();
    if named.is_empty() {
        take.extend(records.keys());
    }
    for &a in named {
        take.insert(a);
        // The rest of its group that passthru took with it comes back too.
        if let Some(g) = inputs.device(a).and_then(|d| d.iommu_group) {
            for d in inputs.endpoints_of_group(g) {
                if records.contains_key(&d.address) || d.address.same_slot(a) {
                    take.insert(d.address);
                }
            }
        }
    }
    let mut refusals = Vec::new();
    let mut steps = Vec::new();
    let mut groups = BTreeSet::new();
    for a in take {
        let record = records.get(&a).copied().cloned();
        let Some(d) = inputs.device(a) else {
            // Recorded but gone (hot-unplugged): nothing to restore.
            steps.push(Step {
                address: a,
                group: record.as_ref().and_then(|r| r.group),
                description: format!("{a} (no longer present)"),
                from: None,
                to: None,
                noop: true,
                record,
            });
            continue;
        };
        groups.extend(d.iommu_group);
        let to = record.as_ref().and_then(|r| r.original_driver.clone());
        let on_vfio = d.driver.as_deref() == Some(VFIO_PCI);
        let overridden = d.driver_override.as_deref() == Some(VFIO_PCI);
        let noop = record.is_none() && !on_vfio && !overridden;
        if !noop {
            if let Some(h) = holders_text(inputs, a) {
                refusals.push(Refusal {
                    address: Some(a),
                    reason: format!(
                        "{} is in use: {h}. Stop the VM or program first: unbinding would wait in the kernel until it lets go",
                        inputs.describe(d)
                    ),
                    override_flag: None,
                });
            }
        }
        steps.push(Step {
            address: a,
            group: d.iommu_group,
            description: inputs.describe(d),
            from: d.driver.clone(),
            to,
            noop,
            record,
        });
    }
    if refusals.is_empty() {
        Ok(Plan {
            steps,
            groups: groups.into_iter().collect(),
        })
    } else {
        Err(refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::snapshot::in_memory;

    fn request(named: &[&str]) -> BindRequest {
        BindRequest {
            named: named.iter().map(|a| a.parse().unwrap()).collect(),
            overrides: Overrides::default(),
        }
    }

    #[test]
    fn a_snapshot_built_in_memory_plans_whole_groups() {
        let snapshot = in_memory::desktop();
        let plan = plan(&snapshot, &request(&["0000:01:00.0"])).unwrap();
        let taken: Vec<String> = plan.steps.iter().map(|s| s.address.to_string()).collect();
        assert_eq!(taken, ["0000:01:00.0", "0000:01:00.1"]);
        assert_eq!(plan.groups, [1]);
    }

    #[test]
    fn the_root_disk_of_a_snapshot_is_refused() {
        let snapshot = in_memory::desktop();
        let refusals = plan(&snapshot, &request(&["0000:02:00.0"])).unwrap_err();
        assert!(
            refusals
                .iter()
                .any(|r| r.override_flag == Some("--allow-root-disk")),
            "{refusals:?}"
        );
        let mut accepted = request(&["0000:02:00.0"]);
        accepted.overrides.root_disk = true;
        assert!(plan(&snapshot, &accepted).is_ok());
    }
}
