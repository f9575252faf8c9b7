//! Generates a host tree with many PCI devices for benchmarks: the sysfs layout the
//! kernel makes (device directories under their bridges, `sys/bus/pci/devices` links,
//! `driver` and `iommu_group` links, `sys/kernel/iommu_groups`) plus a 64-byte `config`
//! space per device, so `lspci -A linux-sysfs` reads the same tree.
//!
//! `cargo run --release --example gen_pci_tree -- DIR sriov 4096` makes an SR-IOV-like
//! host: 16 root ports, each with 256 virtual functions of an Intel 82599 NIC, every
//! function in its own IOMMU group. `… DIR desktop` makes a desktop-sized host.

use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

struct Dev {
    addr: String,
    vendor: u16,
    device: u16,
    class: u32,
    driver: Option<&'static str>,
    group: u32,
    parents: Vec<String>,
    reset: &'static str,
}

fn config_space(d: &Dev) -> Vec<u8> {
    let mut c = vec![0u8; 64];
    c[0..2].copy_from_slice(&d.vendor.to_le_bytes());
    c[2..4].copy_from_slice(&d.device.to_le_bytes());
    c[8] = 1; // revision
    c[9] = d.class as u8;
    c[10] = (d.class >> 8) as u8;
    c[11] = (d.class >> 16) as u8;
    c[14] = u8::from(d.class >> 8 == 0x0604); // header type 1 for bridges
    c[0x2c..0x2e].copy_from_slice(&0x8086u16.to_le_bytes());
    c[0x2e..0x30].copy_from_slice(&0x0001u16.to_le_bytes());
    c
}

fn write_dev(root: &Path, d: &Dev) -> io::Result<()> {
    let top = d.parents.first().unwrap_or(&d.addr);
    let mut rel = format!("devices/pci{}", &top[..7]);
    for p in &d.parents {
        rel.push('/');
        rel.push_str(p);
    }
    rel.push('/');
    rel.push_str(&d.addr);
    let dir = root.join("sys").join(&rel);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("vendor"), format!("0x{:04x}\n", d.vendor))?;
    std::fs::write(dir.join("device"), format!("0x{:04x}\n", d.device))?;
    std::fs::write(dir.join("subsystem_vendor"), "0x8086\n")?;
    std::fs::write(dir.join("subsystem_device"), "0x0001\n")?;
    std::fs::write(dir.join("class"), format!("0x{:06x}\n", d.class))?;
    std::fs::write(dir.join("revision"), "0x01\n")?;
    // What the kernel's pci_uevent() writes (DRIVER= comes first when bound).
    let driver = d
        .driver
        .map(|drv| format!("DRIVER={drv}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("uevent"),
        format!(
            "{driver}PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID=8086:0001\n\
             PCI_SLOT_NAME={}\nMODALIAS=pci:v{:08X}d{:08X}sv00008086sd00000001bc{:02X}sc{:02X}i{:02X}\n",
            d.class,
            d.vendor,
            d.device,
            d.addr,
            d.vendor,
            d.device,
            d.class >> 16,
            (d.class >> 8) & 0xff,
            d.class & 0xff
        ),
    )?;
    std::fs::write(dir.join("numa_node"), "-1\n")?;
    std::fs::write(dir.join("reset_method"), format!("{}\n", d.reset))?;
    std::fs::write(dir.join("config"), config_space(d))?;
    std::fs::write(dir.join("irq"), "0\n")?;
    std::fs::write(
        dir.join("resource"),
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
    )?;
    let up = "../".repeat(rel.split('/').count());
    if let Some(drv) = d.driver {
        std::fs::create_dir_all(root.join("sys/bus/pci/drivers").join(drv))?;
        symlink(format!("{up}bus/pci/drivers/{drv}"), dir.join("driver"))?;
    }
    let group = root.join(format!("sys/kernel/iommu_groups/{}/devices", d.group));
    std::fs::create_dir_all(&group)?;
    symlink(format!("../../../../{rel}"), group.join(&d.addr))?;
    symlink(
        format!("{up}kernel/iommu_groups/{}", d.group),
        dir.join("iommu_group"),
    )?;
    symlink(
        format!("../../../{rel}"),
        root.join("sys/bus/pci/devices").join(&d.addr),
    )?;
    Ok(())
}

fn sriov(n: usize) -> Vec<Dev> {
    let mut out = Vec::new();
    let buses = n.div_ceil(256).max(1);
    for b in 0..buses {
        let port = format!("0000:00:{:02x}.0", b + 1);
        out.push(Dev {
            addr: port.clone(),
            vendor: 0x8086,
            device: 0x1901,
            class: 0x060400,
            driver: Some("pcieport"),
            group: out.len() as u32,
            parents: vec![],
            reset: "",
        });
        for i in 0..256.min(n - b * 256) {
            out.push(Dev {
                addr: format!("0000:{:02x}:{:02x}.{}", b + 1, i / 8, i % 8),
                vendor: 0x8086,
                device: 0x10ed,
                class: 0x020000,
                driver: Some("ixgbevf"),
                group: out.len() as u32,
                parents: vec![port.clone()],
                reset: "flr",
            });
        }
    }
    out
}

fn desktop() -> Vec<Dev> {
    let d = |addr: &str, vendor, device, class, driver, group, parent: Option<&str>, reset| Dev {
        addr: addr.into(),
        vendor,
        device,
        class,
        driver,
        group,
        parents: parent.map(|p| vec![p.to_string()]).unwrap_or_default(),
        reset,
    };
    vec![
        d("0000:00:00.0", 0x8086, 0x3ec2, 0x060000, None, 0, None, ""),
        d(
            "0000:00:01.0",
            0x8086,
            0x1901,
            0x060400,
            Some("pcieport"),
            1,
            None,
            "",
        ),
        d(
            "0000:01:00.0",
            0x10de,
            0x2484,
            0x030000,
            Some("nvidia"),
            1,
            Some("0000:00:01.0"),
            "bus",
        ),
        d(
            "0000:01:00.1",
            0x10de,
            0x228b,
            0x040300,
            Some("snd_hda_intel"),
            1,
            Some("0000:00:01.0"),
            "bus",
        ),
        d(
            "0000:00:02.0",
            0x8086,
            0x3e92,
            0x030000,
            Some("i915"),
            2,
            None,
            "flr",
        ),
        d(
            "0000:00:12.0",
            0x8086,
            0xa379,
            0x118000,
            Some("intel_pch_thermal"),
            3,
            None,
            "",
        ),
        d(
            "0000:00:14.0",
            0x8086,
            0xa36d,
            0x0c0330,
            Some("xhci_hcd"),
            4,
            None,
            "pm",
        ),
        d(
            "0000:00:14.2",
            0x8086,
            0xa36f,
            0x050000,
            None,
            4,
            None,
            "pm",
        ),
        d(
            "0000:00:14.3",
            0x8086,
            0xa370,
            0x028000,
            Some("iwlwifi"),
            5,
            None,
            "flr",
        ),
        d(
            "0000:00:16.0",
            0x8086,
            0xa360,
            0x078000,
            Some("mei_me"),
            6,
            None,
            "pm",
        ),
        d(
            "0000:00:17.0",
            0x8086,
            0xa352,
            0x010601,
            Some("ahci"),
            7,
            None,
            "pm",
        ),
        d(
            "0000:00:1b.0",
            0x8086,
            0xa340,
            0x060400,
            Some("pcieport"),
            8,
            None,
            "",
        ),
        d(
            "0000:02:00.0",
            0x144d,
            0xa808,
            0x010802,
            Some("nvme"),
            9,
            Some("0000:00:1b.0"),
            "flr bus",
        ),
        d(
            "0000:00:1c.0",
            0x8086,
            0xa338,
            0x060400,
            Some("pcieport"),
            10,
            None,
            "",
        ),
        d(
            "0000:03:00.0",
            0x1b21,
            0x2142,
            0x0c0330,
            Some("xhci_hcd"),
            11,
            Some("0000:00:1c.0"),
            "pm bus",
        ),
        d(
            "0000:00:1d.0",
            0x8086,
            0xa330,
            0x060400,
            Some("pcieport"),
            12,
            None,
            "",
        ),
        d(
            "0000:04:00.0",
            0x8086,
            0x15f3,
            0x020000,
            Some("igc"),
            13,
            Some("0000:00:1d.0"),
            "flr bus",
        ),
        d("0000:00:1f.0", 0x8086, 0xa305, 0x060100, None, 14, None, ""),
        d(
            "0000:00:1f.3",
            0x8086,
            0xa348,
            0x040300,
            Some("snd_hda_intel"),
            14,
            None,
            "flr",
        ),
        d(
            "0000:00:1f.4",
            0x8086,
            0xa323,
            0x0c0500,
            Some("i801_smbus"),
            14,
            None,
            "",
        ),
        d("0000:00:1f.5", 0x8086, 0xa324, 0x0c8000, None, 14, None, ""),
        d(
            "0000:00:1f.6",
            0x8086,
            0x15bc,
            0x020000,
            Some("e1000e"),
            14,
            None,
            "flr",
        ),
    ]
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gen_pci_tree DIR sriov N | gen_pci_tree DIR desktop";
    let (Some(dir), Some(kind)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let devices = match kind.as_str() {
        "desktop" => desktop(),
        "sriov" => {
            let Some(n) = args.get(3).and_then(|n| n.parse().ok()) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            sriov(n)
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let root = Path::new(dir);
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root.join("sys/bus/pci/devices"))?;
    for d in &devices {
        write_dev(root, d)?;
    }
    println!("{} devices in {}", devices.len(), root.display());
    Ok(())
}
