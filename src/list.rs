//! `passthru list`: PCI devices by IOMMU group, with a verdict per group.
//!
//! A VM receives whole IOMMU groups. A group can be passed through as a whole when
//! its endpoints are all functions of one slot (a GPU and its HDMI audio function, a
//! multi-port NIC): PCI bridges and host bridges stay with the host and do not count.
//! When a group also holds other devices, passing it means taking those from the host
//! too, so the verdict names them and what the host uses them for.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host::pci::device::{DeviceKind, PciDevice};
use crate::host::pci::names::PciNames;
use crate::host::pci::PciAddress;
use crate::host::usage::{is_host_side_bridge, is_platform_function, HostUse, StorageUse};

/// The JSON schema version of [`ListReport`].
pub const SCHEMA_VERSION: u32 = 1;

/// What the host uses a device for (devices it should keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The firmware's boot display (`boot_vga`), usually the host's console.
    BootDisplay,
    /// Controller of the disk holding the root filesystem.
    RootDisk,
    /// The NIC carrying the default route.
    DefaultRoute,
    /// Controller of a disk the host uses besides `/`: a mounted filesystem, swap,
    /// an LVM / dm-crypt / md RAID member, or a device node a process holds open.
    DiskInUse,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Self::BootDisplay => "the host's boot display",
            Self::RootDisk => "holds your root filesystem",
            Self::DefaultRoute => "carries your default network route",
            Self::DiskInUse => "holds a disk the host uses",
        }
    }
}

/// One device as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedDevice {
    /// Address.
    pub address: PciAddress,
    /// Vendor id, 4 hex digits.
    pub vendor_id: String,
    /// Device id, 4 hex digits.
    pub device_id: String,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: Option<String>,
    /// Subsystem device id.
    pub subsystem_device_id: Option<String>,
    /// Class code, 6 hex digits.
    pub class: String,
    /// Class name from pci.ids.
    pub class_name: String,
    /// Kind for role hints and filters.
    pub kind: DeviceKind,
    /// Revision, 2 hex digits.
    pub revision: Option<String>,
    /// Vendor name.
    pub vendor_name: Option<String>,
    /// Device name.
    pub device_name: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Boot display flag (`null` when the device has no `boot_vga` file).
    pub boot_vga: Option<bool>,
    /// Reset methods (`null` when the kernel does not list them).
    pub reset_methods: Option<Vec<String>>,
    /// Whether the device can be reset at all.
    pub has_reset: bool,
    /// NUMA node.
    pub numa_node: Option<i32>,
    /// Bridges above it, outermost first.
    pub parents: Vec<PciAddress>,
    /// What the host uses it for.
    pub roles: Vec<Role>,
    /// When `passthru bind` took it (UTC, ISO 8601), if it holds it.
    pub held_by_passthru_since: Option<String>,
    /// How the host uses the disks on it (besides `/`): mounts, swap, holders, open
    /// device nodes. Empty for every other device.
    pub storage_in_use: Vec<StorageUse>,
}

/// Functions of one slot within a group: they move together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    /// `0000:01:00`.
    pub slot: String,
    /// Its functions in the group.
    pub functions: Vec<PciAddress>,
    /// `gpu_with_audio`, `multifunction` or `single`.
    pub role: &'static str,
}

/// One IOMMU group with its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Group number.
    pub group: u32,
    /// Whether it can be given to a VM as a whole (one slot's functions, bridges aside).
    pub passable: bool,
    /// Why not, naming the other devices and what the host uses them for.
    pub reasons: Vec<String>,
    /// Cautions that do not change the verdict (boot display, root disk, no reset).
    pub notes: Vec<String>,
    /// Endpoint units (bridges excluded).
    pub units: Vec<Unit>,
    /// All members, bridges included.
    pub devices: Vec<ListedDevice>,
}

/// The `--json` document of `passthru list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Whether the kernel formed IOMMU groups.
    pub iommu_groups: bool,
    /// Why there are no groups, when there are none.
    pub note: Option<String>,
    /// Groups, by number.
    pub groups: Vec<Group>,
    /// Devices without a group (all of them when the IOMMU is off).
    pub ungrouped: Vec<ListedDevice>,
}

/// Which devices to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only groups holding a device of one of these kinds.
    pub kinds: BTreeSet<DeviceKind>,
    /// Only this group.
    pub group: Option<u32>,
}

impl Filter {
    fn matches_device(&self, d: &ListedDevice) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&d.kind)
    }
}

fn hex4(v: u16) -> String {
    format!("{v:04x}")
}

fn listed(d: &PciDevice, names: &PciNames, host: &HostUse) -> ListedDevice {
    let mut roles = Vec::new();
    if d.boot_vga == Some(true) {
        roles.push(Role::BootDisplay);
    }
    if host.root_disks.iter().any(|r| r.address == d.address) {
        roles.push(Role::RootDisk);
    }
    if host.route_nics.iter().any(|r| r.address == d.address) {
        roles.push(Role::DefaultRoute);
    }
    let storage_in_use: Vec<StorageUse> = host
        .storage
        .iter()
        .filter(|u| u.address == d.address)
        .cloned()
        .collect();
    if !storage_in_use.is_empty() {
        roles.push(Role::DiskInUse);
    }
    ListedDevice {
        address: d.address,
        vendor_id: hex4(d.vendor_id),
        device_id: hex4(d.device_id),
        subsystem_vendor_id: d.subsystem_vendor_id.map(hex4),
        subsystem_device_id: d.subsystem_device_id.map(hex4),
        class: format!("{:06x}", d.class),
        class_name: names.class(d.class),
        kind: d.kind(),
        revision: d.revision.map(|r| format!("{r:02x}")),
        vendor_name: names.vendor(d.vendor_id).map(str::to_string),
        device_name: names.device(d.vendor_id, d.device_id).map(str::to_string),
        driver: d.driver.clone(),
        iommu_group: d.iommu_group,
        boot_vga: d.boot_vga,
        reset_methods: d.reset_methods.clone(),
        has_reset: d.has_reset,
        numa_node: d.numa_node,
        parents: d.parents.clone(),
        roles,
        held_by_passthru_since: host
            .held_by_passthru
            .iter()
            .find(|(a, _)| *a == d.address)
            .map(|(_, since)| utc_time(*since)),
        storage_in_use,
    }
}

/// Unix seconds as `2026-11-24T23:10:00Z` (proleptic Gregorian, Howard Hinnant's
/// days-to-civil algorithm).
pub fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A short description: `Ethernet controller Intel Corporation 82574L … (driver e1000e)`.
fn describe(d: &ListedDevice) -> String {
    let name = match (&d.vendor_name, &d.device_name) {
        (Some(v), Some(n)) => format!("{v} {n}"),
        (Some(v), None) => format!("{v} device {}", d.device_id),
        _ => format!("[{}:{}]", d.vendor_id, d.device_id),
    };
    let driver = match &d.driver {
        Some(drv) => format!("driver {drv}"),
        None => "no driver".into(),
    };
    format!("{} {} {name} ({driver})", d.address, d.class_name)
}

fn unit_role(functions: &[&ListedDevice]) -> &'static str {
    let kinds: BTreeSet<DeviceKind> = functions.iter().map(|d| d.kind).collect();
    if kinds.contains(&DeviceKind::Gpu) && kinds.contains(&DeviceKind::Audio) {
        "gpu_with_audio"
    } else if functions.len() > 1 {
        "multifunction"
    } else {
        "single"
    }
}

fn build_group(
    group: u32,
    devices: Vec<ListedDevice>,
    class_of: &BTreeMap<PciAddress, u32>,
) -> Group {
    let endpoints: Vec<&ListedDevice> = devices
        .iter()
        .filter(|d| {
            !class_of
                .get(&d.address)
                .is_some_and(|c| is_host_side_bridge(*c))
        })
        .collect();
    let mut slots: BTreeMap<String, Vec<&ListedDevice>> = BTreeMap::new();
    for d in &endpoints {
        slots.entry(d.address.slot()).or_default().push(d);
    }
    let units: Vec<Unit> = slots
        .iter()
        .map(|(slot, fs)| Unit {
            slot: slot.clone(),
            functions: fs.iter().map(|d| d.address).collect(),
            role: unit_role(fs),
        })
        .collect();
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let platform: Vec<&&ListedDevice> = endpoints
        .iter()
        .filter(|d| {
            class_of
                .get(&d.address)
                .is_some_and(|c| is_platform_function(*c))
        })
        .collect();
    for p in &platform {
        reasons.push(format!(
            "{} is the chipset's {} (part of the host's platform controller): a group holding it stays with the host",
            p.address, p.class_name
        ));
    }
    if !platform.is_empty() {
        for d in endpoints.iter().filter(|d| !d.roles.is_empty()) {
            let roles: Vec<&str> = d.roles.iter().map(|r| r.describe()).collect();
            reasons.push(format!(
                "it also holds {}, which {}",
                describe(d),
                roles.join(" and ")
            ));
        }
    }
    if units.is_empty() {
        reasons.push(format!(
            "group {group} holds only bridges: there is nothing to pass through"
        ));
    } else if units.len() > 1 {
        for (i, unit) in units.iter().enumerate() {
            let others: Vec<String> = units
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, u)| u.functions.iter())
                .filter_map(|a| devices.iter().find(|d| d.address == *a))
                .map(|d| {
                    let roles: Vec<&str> = d.roles.iter().map(|r| r.describe()).collect();
                    if roles.is_empty() {
                        describe(d)
                    } else {
                        format!("{}, which {}", describe(d), roles.join(" and "))
                    }
                })
                .collect();
            reasons.push(format!(
                "{} shares group {group} with {}",
                unit.slot,
                others.join("; ")
            ));
        }
    }
    for d in &endpoints {
        for r in &d.roles {
            let what = if *r == Role::DiskInUse {
                let uses: Vec<String> = d.storage_in_use.iter().map(StorageUse::describe).collect();
                format!("{} ({})", r.describe(), uses.join("; "))
            } else {
                r.describe().to_string()
            };
            notes.push(format!(
                "{} {what}: the host loses it while a VM has it",
                d.address,
            ));
        }
        if !d.has_reset {
            notes.push(format!(
                "{} has no reset method: it may not work again after a VM stops until the host reboots",
                d.address
            ));
        }
    }
    Group {
        group,
        passable: units.len() == 1 && platform.is_empty(),
        reasons,
        notes,
        units,
        devices,
    }
}

/// Builds the list from devices (pure).
pub fn build(
    devices: &[PciDevice],
    names: &PciNames,
    host: &HostUse,
    filter: &Filter,
) -> ListReport {
    let class_of: BTreeMap<PciAddress, u32> =
        devices.iter().map(|d| (d.address, d.class)).collect();
    let mut by_group: BTreeMap<u32, Vec<ListedDevice>> = BTreeMap::new();
    let mut ungrouped = Vec::new();
    for d in devices {
        let l = listed(d, names, host);
        match d.iommu_group {
            Some(g) => by_group.entry(g).or_default().push(l),
            None => ungrouped.push(l),
        }
    }
    let iommu_groups = !by_group.is_empty();
    let groups: Vec<Group> = by_group
        .into_iter()
        .filter(|(g, _)| filter.group.is_none_or(|want| want == *g))
        .filter(|(_, ds)| ds.iter().any(|d| filter.matches_device(d)))
        .map(|(g, ds)| build_group(g, ds, &class_of))
        .collect();
    if filter.group.is_some() {
        ungrouped.clear();
    } else {
        ungrouped.retain(|d| filter.matches_device(d));
    }
    let note = (!iommu_groups).then(|| {
        "There are no IOMMU groups: the IOMMU is off or absent, so no device can be passed \
         through yet. Run `passthru check` to see why and how to turn it on."
            .to_string()
    });
    ListReport {
        schema_version: SCHEMA_VERSION,
        iommu_groups,
        note,
        groups,
        ungrouped,
    }
}

/// A short class label for the table.
fn short_class(d: &ListedDevice) -> String {
    match d.kind {
        DeviceKind::Gpu if d.class.starts_with("0300") => "VGA".into(),
        DeviceKind::Gpu => "Display".into(),
        DeviceKind::Audio => "Audio".into(),
        DeviceKind::Usb => "USB".into(),
        DeviceKind::Nvme => "NVMe".into(),
        DeviceKind::Storage => "Storage".into(),
        DeviceKind::Network => "Net".into(),
        DeviceKind::Bridge => "Bridge".into(),
        DeviceKind::Other => match d.class_name.split_whitespace().next() {
            Some(word) if word.len() <= 7 && word != "Unassigned" => word.to_string(),
            _ => "Other".into(),
        },
    }
}

/// Drops corporate suffixes: "NVIDIA Corporation" → "NVIDIA".
fn short_vendor(name: &str) -> &str {
    let mut s = name;
    for suffix in [
        " Corporation",
        " Corp.",
        ", Inc.",
        " Inc.",
        " Co., Ltd.",
        " Co., Ltd",
        " Limited",
        " Ltd.",
    ] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = stripped;
        }
    }
    s
}

fn device_line(d: &ListedDevice) -> String {
    let group = d
        .iommu_group
        .map_or_else(|| "-".to_string(), |g| g.to_string());
    let name = match (&d.vendor_name, &d.device_name) {
        (Some(v), Some(n)) => format!("{} {n}", short_vendor(v)),
        (Some(v), None) => format!("{} device", short_vendor(v)),
        _ => d.class_name.clone(),
    };
    let mut line = format!(
        "{group:>4}  {}  {:<7} {name} [{}:{}]",
        d.address,
        short_class(d),
        d.vendor_id,
        d.device_id
    );
    match &d.driver {
        Some(drv) => line.push_str(&format!("  driver={drv}")),
        None => line.push_str("  driver=none"),
    }
    match &d.reset_methods {
        Some(m) if !m.is_empty() => line.push_str(&format!("  reset={}", m.join(","))),
        _ if d.has_reset => line.push_str("  reset=yes"),
        _ => line.push_str("  reset=none"),
    }
    if let Some(since) = &d.held_by_passthru_since {
        line.push_str(&format!("  held-by-passthru since {since}"));
    }
    for r in &d.roles {
        line.push_str(match r {
            Role::BootDisplay => "  boot-vga",
            Role::RootDisk => "  root-disk",
            Role::DefaultRoute => "  default-route",
            Role::DiskInUse => "  disk-in-use",
        });
    }
    line
}

/// Renders the list for a terminal.
pub fn render_text(report: &ListReport) -> String {
    let mut out = String::new();
    if let Some(note) = &report.note {
        out.push_str(&format!("{note}\n\n"));
    }
    for g in &report.groups {
        let verdict = if g.passable {
            let u = &g.units[0];
            let what = match u.role {
                "gpu_with_audio" => "a GPU with its audio function",
                "multifunction" => "one multifunction device",
                _ => "one device",
            };
            format!("passable as a whole: {what} ({})", u.slot)
        } else {
            "not passable alone".to_string()
        };
        out.push_str(&format!("IOMMU group {}: {verdict}\n", g.group));
        for d in &g.devices {
            out.push_str(&device_line(d));
            out.push('\n');
        }
        for r in &g.reasons {
            out.push_str(&format!("      why: {r}\n"));
        }
        for n in &g.notes {
            out.push_str(&format!("      note: {n}\n"));
        }
    }
    if !report.ungrouped.is_empty() {
        if report.iommu_groups {
            out.push_str("Devices without an IOMMU group:\n");
        }
        for d in &report.ungrouped {
            out.push_str(&device_line(d));
            out.push('\n');
        }
    }
    if report.groups.is_empty() && report.ungrouped.is_empty() {
        out.push_str("No devices match.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1764025838`
        assert_eq!(utc_time(1_764_025_838), "2025-11-24T23:10:38Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
