//! Carrying out bind and unbind plans: `driver_override`, `unbind`, `drivers_probe`,
//! with a journal record written before each device is touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{now, Applier, ApplyError};
use crate::host::pci::PciAddress;
use crate::host::records::BindRecord;
use crate::plan::bind::{Plan, Step, VFIO_PCI};

/// A group ready for a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupNode {
    /// The IOMMU group.
    pub group: u32,
    /// Its VFIO device node, e.g. `/dev/vfio/14`.
    pub node: PathBuf,
}

/// How long to wait for `/dev/vfio/<group>` after binding.
const NODE_WAIT: Duration = Duration::from_secs(10);

fn device_dir(a: PciAddress) -> PathBuf {
    PathBuf::from(format!("sys/bus/pci/devices/{a}"))
}

impl Applier {
    fn current_driver(&self, a: PciAddress) -> Option<String> {
        self.root()
            .read_link(device_dir(a).join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn current_override(&self, a: PciAddress) -> Option<String> {
        self.root()
            .read_to_string(device_dir(a).join("driver_override"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != "(null)")
    }

    /// Loads vfio-pci and vfio_iommu_type1 with `modprobe` when they are not there.
    pub fn load_vfio(&self, progress: &mut dyn FnMut(&str)) -> Result<(), ApplyError> {
        if !self.root().exists("sys/bus/pci/drivers/vfio-pci") {
            progress("loading vfio-pci (modprobe vfio-pci)");
            self.run("modprobe", &["vfio-pci"])?;
        }
        if !self.root().exists("sys/module/vfio_iommu_type1") {
            progress("loading vfio_iommu_type1 (modprobe vfio_iommu_type1)");
            self.run("modprobe", &["vfio_iommu_type1"])?;
        }
        if !self.root().exists("sys/bus/pci/drivers/vfio-pci") {
            return Err(ApplyError::Verify(
                "vfio-pci is not available after modprobe (see `passthru check`)".into(),
            ));
        }
        Ok(())
    }

    /// Binds every step's device to vfio-pci and returns the groups' VFIO nodes.
    pub fn bind(
        &self,
        plan: &Plan,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<GroupNode>, ApplyError> {
        if !plan.is_noop() {
            self.load_vfio(progress)?;
        }
        for step in plan.steps.iter().filter(|s| !s.noop) {
            self.bind_one(step, progress)?;
        }
        let mut nodes = Vec::new();
        for &group in &plan.groups {
            let node = PathBuf::from(format!("dev/vfio/{group}"));
            if !self.wait_for(&node, NODE_WAIT) {
                return Err(ApplyError::Verify(format!(
                    "/dev/vfio/{group} did not appear within {} s after binding group {group} (is udev running?)",
                    NODE_WAIT.as_secs()
                )));
            }
            nodes.push(GroupNode {
                group,
                node: Path::new("/").join(node),
            });
        }
        Ok(nodes)
    }

    fn bind_one(&self, step: &Step, progress: &mut dyn FnMut(&str)) -> Result<(), ApplyError> {
        let a = step.address;
        let dir = device_dir(a);
        let driver = self.current_driver(a);
        if driver.as_deref() == Some(VFIO_PCI) {
            return Ok(());
        }
        // Journal first: what the device had before, so unbind can restore it even if
        // passthru dies half-way. An existing record keeps the true original.
        let record_path = BindRecord::path(a);
        if !self.root().path(&record_path).exists() {
            let record = BindRecord {
                address: a,
                group: step.group,
                original_driver: driver.clone(),
                original_override: self.current_override(a),
                since: now(),
            };
            let json = serde_json::to_vec_pretty(&record).map_err(|e| ApplyError::Journal {
                path: self.root().path(&record_path),
                source: e.into(),
            })?;
            self.write_atomic(&record_path, &json)?;
        }
        progress(&format!(
            "{a}: {} → {VFIO_PCI}",
            driver.as_deref().unwrap_or("no driver")
        ));
        self.write_sysfs(&dir.join("driver_override"), VFIO_PCI)?;
        if driver.is_some() {
            self.write_sysfs(&dir.join("driver/unbind"), &a.to_string())?;
        }
        self.write_sysfs(Path::new("sys/bus/pci/drivers_probe"), &a.to_string())?;
        match self.current_driver(a) {
            Some(d) if d == VFIO_PCI => Ok(()),
            other => Err(ApplyError::Verify(format!(
                "{a} is bound to {} instead of {VFIO_PCI} after probing (see `dmesg`)",
                other.as_deref().unwrap_or("no driver")
            ))),
        }
    }

    /// Gives every step's device back to its original driver. Devices that cannot
    /// be restored are returned with the reason; the others are restored regardless.
    pub fn unbind(
        &self,
        plan: &Plan,
        progress: &mut dyn FnMut(&str),
    ) -> Vec<(PciAddress, ApplyError)> {
        let mut failures = Vec::new();
        for step in &plan.steps {
            if step.noop {
                // Nothing bound, but a stale record (a device that disappeared) goes.
                if step.record.is_some() {
                    if let Err(e) = self.remove(&BindRecord::path(step.address)) {
                        failures.push((step.address, e));
                    }
                }
                continue;
            }
            if let Err(e) = self.unbind_one(step, progress) {
                failures.push((step.address, e));
            }
        }
        failures
    }

    fn unbind_one(&self, step: &Step, progress: &mut dyn FnMut(&str)) -> Result<(), ApplyError> {
        let a = step.address;
        let dir = device_dir(a);
        let wanted = step.record.as_ref().and_then(|r| r.original_driver.clone());
        progress(&format!(
            "{a}: {} → {}",
            step.from.as_deref().unwrap_or("no driver"),
            wanted.as_deref().unwrap_or("the kernel's choice")
        ));
        if self.current_driver(a).as_deref() == Some(VFIO_PCI) {
            self.write_sysfs(
                Path::new("sys/bus/pci/drivers/vfio-pci/unbind"),
                &a.to_string(),
            )?;
        }
        let original_override = step
            .record
            .as_ref()
            .and_then(|r| r.original_override.clone());
        // An empty write clears the override; a recorded one is put back.
        self.write_sysfs(
            &dir.join("driver_override"),
            &original_override.unwrap_or_else(|| "\n".into()),
        )?;
        self.write_sysfs(Path::new("sys/bus/pci/drivers_probe"), &a.to_string())?;
        let now_driver = self.current_driver(a);
        if let Some(w) = &wanted {
            if now_driver.as_deref() != Some(w.as_str()) {
                return Err(ApplyError::Verify(format!(
                    "{a} went to {} instead of its original driver {w} (is the {w} module loaded? see `dmesg`)",
                    now_driver.as_deref().unwrap_or("no driver")
                )));
            }
        }
        self.remove(&BindRecord::path(a))
    }
}
