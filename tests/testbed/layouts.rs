//! The machine layouts the testbed boots: a desktop-like PCI topology under an Intel
//! IOMMU, an AMD IOMMU, an Intel IOMMU the kernel was told to leave off, and no IOMMU.
//!
//! Every layout has the same devices at the same addresses (the bus numbers are the
//! ones SeaBIOS assigns in this order), so the tests can name them:
//!
//! ```text
//! 00:00.0  q35 host bridge
//! 00:01.0  VGA (std)                 the boot display (boot_vga = 1)
//! 00:02.0  (free: amd-iommu takes this slot in the AMD layout)
//! 00:05.0  edu (1234:11e8)           on the root bus: no FLR, no PM reset, no bus reset
//! 00:08.0  virtio-9p  host /         } the fixture's own (see vm.rs)
//! 00:09.0  virtio-9p  kernel layer   }
//! 00:0a.0  virtio-9p  shared dir     }
//! 00:10.0  pcie-root-port ── 01:00.0 bochs-display (multifunction)  "GPU"
//!                          └ 01:00.1 ich9-intel-hda                 "its audio"
//! 00:11.0  pcie-root-port ── 02:00.0 qemu-xhci
//! 00:12.0  pcie-root-port ── 03:00.0 nvme
//! 00:13.0  pcie-root-port ── 04:00.0 e1000e
//! 00:14.0  pcie-root-port ── 05:00.0 pcie-pci-bridge ── 06:01.0 e1000
//!                                                     └ 06:02.0 pci-ohci
//! 00:1f.0/.2/.3  ICH9 LPC, AHCI, SMBus (part of q35)
//! ```

use super::kernel::GuestKernel;
use super::vm::{Iommu, VmBuilder};

pub const HOST_BRIDGE: &str = "0000:00:00.0";
pub const BOOT_VGA: &str = "0000:00:01.0";
pub const AMD_IOMMU_SLOT: &str = "0000:00:02.0";
pub const EDU: &str = "0000:00:05.0";
pub const GPU_PORT: &str = "0000:00:10.0";
pub const GPU: &str = "0000:01:00.0";
pub const GPU_AUDIO: &str = "0000:01:00.1";
pub const XHCI: &str = "0000:02:00.0";
pub const NVME: &str = "0000:03:00.0";
pub const NIC: &str = "0000:04:00.0";
pub const PCI_BRIDGE: &str = "0000:05:00.0";
pub const BEHIND_BRIDGE: [&str; 2] = ["0000:06:01.0", "0000:06:02.0"];

/// One device the layout puts in, and what the guest should see of it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub address: &'static str,
    /// `vendor:device` as in sysfs, without `0x`.
    pub id: &'static str,
    /// The driver the kernel binds (after the init's coldplug), if any.
    pub driver: Option<&'static str>,
}

/// The devices of every layout, with the drivers Debian's kernel binds.
pub const DEVICES: &[Expected] = &[
    Expected {
        address: BOOT_VGA,
        id: "1234:1111",
        driver: Some("bochs-drm"),
    },
    Expected {
        address: EDU,
        id: "1234:11e8",
        driver: None,
    },
    Expected {
        address: GPU,
        id: "1234:1111",
        driver: Some("bochs-drm"),
    },
    Expected {
        address: GPU_AUDIO,
        id: "8086:293e",
        driver: Some("snd_hda_intel"),
    },
    Expected {
        address: XHCI,
        id: "1b36:000d",
        driver: Some("xhci_hcd"),
    },
    Expected {
        address: NVME,
        id: "1b36:0010",
        driver: Some("nvme"),
    },
    Expected {
        address: NIC,
        id: "8086:10d3",
        driver: Some("e1000e"),
    },
    Expected {
        address: PCI_BRIDGE,
        id: "1b36:000e",
        driver: None,
    },
    Expected {
        address: BEHIND_BRIDGE[0],
        id: "8086:100e",
        driver: Some("e1000"),
    },
    Expected {
        address: BEHIND_BRIDGE[1],
        id: "106b:003f",
        driver: Some("ohci-pci"),
    },
];

/// The machine layouts of the testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// q35 + `intel-iommu,intremap=on,eim=on,caching-mode=on`, `intel_iommu=on iommu=pt`.
    IntelDesktop,
    /// The Intel desktop again, in a VM of its own: `bind`/`unbind` change drivers,
    /// which must not race with the read-only tests of `intel`.
    IntelBind,
    /// The Intel desktop once more, for `vm run`: it binds the edu device and boots a
    /// nested guest with it, which must not race with `intel_bind`'s driver changes.
    IntelRun,
    /// The Intel desktop with a disk in the NVMe drive (a namespace, `nvme0n1`), in a
    /// VM of its own: the host-use test makes filesystems and swap on it.
    IntelDisk,
    /// q35 + `amd-iommu,intremap=on,xtsup=on`, `iommu=pt`.
    AmdDesktop,
    /// The Intel machine booted with `intel_iommu=off`: the DMAR table is there, the
    /// IOMMU is not on.
    IommuOff,
    /// The same devices and no IOMMU device at all (no DMAR, no IVRS).
    NoIommu,
}

impl Layout {
    pub const ALL: [Layout; 7] = [
        Layout::IntelDesktop,
        Layout::IntelBind,
        Layout::IntelRun,
        Layout::IntelDisk,
        Layout::AmdDesktop,
        Layout::IommuOff,
        Layout::NoIommu,
    ];

    /// Short name, used for test names and log files.
    pub fn name(self) -> &'static str {
        match self {
            Layout::IntelDesktop => "intel",
            Layout::IntelBind => "intel_bind",
            Layout::IntelRun => "intel_run",
            Layout::IntelDisk => "intel_disk",
            Layout::AmdDesktop => "amd",
            Layout::IommuOff => "iommu_off",
            Layout::NoIommu => "no_iommu",
        }
    }

    /// The layout of a [`Layout::name`]; panics on an unknown name (a typo in a test
    /// declaration).
    pub fn by_name(name: &str) -> Layout {
        Layout::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .unwrap_or_else(|| panic!("no testbed layout named {name}"))
    }

    /// The layout's kernel arguments (beyond the fixture's `console=ttyS0 panic=-1`).
    ///
    /// Where the IOMMU remaps interrupts, `no_timer_check` skips the kernel's test of
    /// the timer interrupt through the IO-APIC: under TCG with QEMU 10 (and a loaded
    /// host) it fails now and then on both 6.1 and 6.12 ("timer doesn't work through
    /// Interrupt-remapped IO-APIC", a panic), although the timer works. Cloud images of Fedora
    /// and Ubuntu boot VMs with the same argument; nothing passthru reads depends on it.
    pub fn kernel_args(self) -> &'static [&'static str] {
        match self {
            Layout::IntelDesktop | Layout::IntelBind | Layout::IntelRun | Layout::IntelDisk => {
                &["intel_iommu=on", "iommu=pt", "no_timer_check"]
            }
            // `amd_iommu=on` is not an option of the 6.1 kernel (it logs "AMD-Vi: Unknown
            // option"): AMD-Vi is on by default when the firmware has an IVRS table.
            Layout::AmdDesktop => &["iommu=pt", "no_timer_check"],
            Layout::IommuOff => &["intel_iommu=off"],
            Layout::NoIommu => &[],
        }
    }

    /// Whether the kernel is expected to have an IOMMU on (and so IOMMU groups).
    pub fn iommu_on(self) -> bool {
        matches!(
            self,
            Layout::IntelDesktop
                | Layout::IntelBind
                | Layout::IntelRun
                | Layout::IntelDisk
                | Layout::AmdDesktop
        )
    }

    pub fn iommu(self) -> Iommu {
        match self {
            Layout::IntelDesktop
            | Layout::IntelBind
            | Layout::IntelRun
            | Layout::IntelDisk
            | Layout::IommuOff => Iommu::Intel {
                intremap: true,
                caching_mode: true,
            },
            Layout::AmdDesktop => Iommu::Amd { intremap: true },
            Layout::NoIommu => Iommu::None,
        }
    }

    /// The machine, ready to boot with the kernel `line` (which names its logs).
    pub fn builder(self, line: GuestKernel) -> VmBuilder {
        // Interrupt remapping needs the split irqchip.
        let machine = match self.iommu() {
            Iommu::None => "q35",
            _ => "q35,kernel-irqchip=split",
        };
        let mut nvme = "nvme,serial=testbed0,bus=rp3".to_owned();
        let mut drive = None;
        if self == Layout::IntelDisk {
            // A fresh, sparse 128 MiB image per boot: the NVMe drive's namespace 1.
            let dir = super::kernel::testbed_dir().join("disks");
            std::fs::create_dir_all(&dir).expect("testbed disks directory");
            let image = dir.join(format!("{}-{}-nvme.img", self.name(), line.name()));
            let file = std::fs::File::create(&image).expect("NVMe disk image");
            file.set_len(128 << 20).expect("NVMe disk image size");
            drive = Some(format!(
                "file={},format=raw,if=none,id=nvme0disk",
                image.display()
            ));
            nvme.push_str(",drive=nvme0disk");
        }
        let mut vm = VmBuilder::new(&format!("{}-{}", self.name(), line.name()))
            .machine(machine)
            .iommu(self.iommu())
            .device("VGA,bus=pcie.0,addr=0x1")
            .device("edu,bus=pcie.0,addr=0x5")
            .device("pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=0x10")
            .device("bochs-display,bus=rp1,addr=0x0.0,multifunction=on")
            .device("ich9-intel-hda,bus=rp1,addr=0x0.1")
            .device("pcie-root-port,id=rp2,bus=pcie.0,chassis=2,addr=0x11")
            .device("qemu-xhci,bus=rp2")
            .device("pcie-root-port,id=rp3,bus=pcie.0,chassis=3,addr=0x12")
            .device(&nvme)
            .device("pcie-root-port,id=rp4,bus=pcie.0,chassis=4,addr=0x13")
            .device("e1000e,bus=rp4")
            .device("pcie-root-port,id=rp5,bus=pcie.0,chassis=5,addr=0x14")
            .device("pcie-pci-bridge,id=pb1,bus=rp5")
            .device("e1000,bus=pb1,addr=0x1")
            .device("pci-ohci,bus=pb1,addr=0x2");
        for arg in self.kernel_args() {
            vm = vm.kernel_arg(arg);
        }
        if let Some(drive) = drive {
            vm = vm.qemu_arg("-drive").qemu_arg(&drive);
        }
        if self == Layout::IntelRun {
            // `vm run` reserves hugepages only from memory beyond the 1 GiB it leaves
            // to the host.
            vm = vm.memory_mib(2048);
        }
        vm
    }
}
