//! Renderers of a VM plan: libvirt domain XML, and a QEMU command line (an argv,
//! never a shell string). Both come from the same [`VmPlan`], so they agree.
//!
//! Passed-through devices keep their slot's shape: each host slot gets a PCIe root
//! port in the guest, and its functions sit at the same function numbers there, so a
//! GPU and its HDMI audio stay one multifunction device, as drivers expect.

use std::collections::BTreeMap;
use std::io::Cursor;

use quick_xml::events::BytesText;
use quick_xml::Writer;

use super::plan::{Accel, VmPlan};
use super::spec::{Display, Network, OsType};
use crate::host::cpu::format_cpu_list;
use crate::host::pci::PciAddress;

impl VmPlan {
    /// Host slots with their functions, in order.
    fn slots(&self) -> Vec<Vec<PciAddress>> {
        let mut by_slot: BTreeMap<String, Vec<PciAddress>> = BTreeMap::new();
        for d in &self.devices {
            by_slot.entry(d.slot()).or_default().push(*d);
        }
        by_slot.into_values().collect()
    }

    fn windows(&self) -> bool {
        self.spec.os == OsType::Windows
    }

    /// Boot orders (1 = first): of the first ISO, and of the first disk (the other
    /// disks follow it). Only the first ISO is bootable (the others hold drivers).
    fn boot_orders(&self) -> (usize, usize) {
        let isos = usize::from(!self.spec.isos.is_empty());
        if self.boot_iso_first {
            (1, 1 + isos)
        } else {
            (1 + self.spec.disks.len(), 1)
        }
    }
}

type XmlResult = std::io::Result<()>;

fn text(
    w: &mut Writer<Cursor<Vec<u8>>>,
    name: &str,
    attrs: &[(&str, &str)],
    value: &str,
) -> XmlResult {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn empty(w: &mut Writer<Cursor<Vec<u8>>>, name: &str, attrs: &[(&str, &str)]) -> XmlResult {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_empty()?;
    Ok(())
}

fn hex(v: u32, width: usize) -> String {
    format!("0x{v:0width$x}")
}

/// The libvirt domain XML.
pub fn libvirt_xml(plan: &VmPlan) -> String {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    // Writing into memory cannot fail.
    let _ = write_domain(&mut w, plan);
    let mut out = String::from_utf8(w.into_inner().into_inner()).unwrap_or_default();
    out.push('\n');
    out
}

fn write_domain(w: &mut Writer<Cursor<Vec<u8>>>, plan: &VmPlan) -> XmlResult {
    let spec = &plan.spec;
    let p = &plan.pinning;
    let mib = spec.memory_mib().to_string();
    let vcpus = p.vcpus.len().to_string();
    let kvm = plan.accel == Accel::Kvm;
    w.create_element("domain")
        .with_attribute(("type", if kvm { "kvm" } else { "qemu" }))
        .write_inner_content(|w| {
            text(w, "name", &[], &spec.name)?;
            text(w, "memory", &[("unit", "MiB")], &mib)?;
            text(w, "currentMemory", &[("unit", "MiB")], &mib)?;
            if let Some(kib) = plan.hugepage_kib {
                w.create_element("memoryBacking").write_inner_content(|w| {
                    w.create_element("hugepages").write_inner_content(|w| {
                        empty(w, "page", &[("size", &kib.to_string()), ("unit", "KiB")])
                    })?;
                    empty(w, "locked", &[])
                })?;
            }
            text(w, "vcpu", &[("placement", "static")], &vcpus)?;
            w.create_element("cputune").write_inner_content(|w| {
                for (vcpu, host) in &p.vcpus {
                    empty(
                        w,
                        "vcpupin",
                        &[("vcpu", &vcpu.to_string()), ("cpuset", &host.to_string())],
                    )?;
                }
                if !p.emulator.is_empty() {
                    empty(
                        w,
                        "emulatorpin",
                        &[("cpuset", &format_cpu_list(&p.emulator))],
                    )?;
                }
                Ok(())
            })?;
            if let Some(node) = p.numa_node {
                w.create_element("numatune").write_inner_content(|w| {
                    empty(
                        w,
                        "memory",
                        &[("mode", "strict"), ("nodeset", &node.to_string())],
                    )
                })?;
            }
            // With the OVMF images found on the host, the firmware is given by path;
            // libvirt (9.0) refuses a `<loader>` with `readonly` when `<os
            // firmware='efi'>` asks it to pick the firmware itself, so autoselection
            // is only the fallback.
            let autoselect = spec.firmware.uefi && plan.ovmf.is_none();
            let mut os = w.create_element("os");
            if autoselect {
                os = os.with_attribute(("firmware", "efi"));
            }
            os.write_inner_content(|w| {
                text(w, "type", &[("arch", "x86_64"), ("machine", "q35")], "hvm")?;
                if autoselect {
                    w.create_element("firmware").write_inner_content(|w| {
                        let sb = if spec.firmware.secure_boot {
                            "yes"
                        } else {
                            "no"
                        };
                        empty(w, "feature", &[("enabled", sb), ("name", "secure-boot")])?;
                        empty(w, "feature", &[("enabled", sb), ("name", "enrolled-keys")])
                    })?;
                }
                if spec.firmware.uefi {
                    if let Some(o) = &plan.ovmf {
                        let secure = if spec.firmware.secure_boot {
                            "yes"
                        } else {
                            "no"
                        };
                        text(
                            w,
                            "loader",
                            &[("readonly", "yes"), ("secure", secure), ("type", "pflash")],
                            &o.code.display().to_string(),
                        )?;
                        text(
                            w,
                            "nvram",
                            &[("template", &o.vars_template.display().to_string())],
                            &plan.nvram_path().display().to_string(),
                        )?;
                    }
                }
                if let Some(k) = &spec.kernel {
                    text(w, "kernel", &[], &k.path.display().to_string())?;
                    if let Some(initrd) = &k.initrd {
                        text(w, "initrd", &[], &initrd.display().to_string())?;
                    }
                    if !k.cmdline.is_empty() {
                        text(w, "cmdline", &[], &k.cmdline)?;
                    }
                }
                Ok(())
            })?;
            w.create_element("features").write_inner_content(|w| {
                empty(w, "acpi", &[])?;
                empty(w, "apic", &[])?;
                if plan.windows() && kvm {
                    w.create_element("hyperv")
                        .with_attribute(("mode", "custom"))
                        .write_inner_content(|w| {
                            for f in [
                                "relaxed",
                                "vapic",
                                "vpindex",
                                "synic",
                                "stimer",
                                "reset",
                                "frequencies",
                                "tlbflush",
                                "ipi",
                            ] {
                                if f == "stimer" {
                                    w.create_element("stimer")
                                        .with_attribute(("state", "on"))
                                        .write_empty()?;
                                } else {
                                    empty(w, f, &[("state", "on")])?;
                                }
                            }
                            empty(w, "spinlocks", &[("state", "on"), ("retries", "8191")])
                        })?;
                }
                if spec.firmware.secure_boot {
                    empty(w, "smm", &[("state", "on")])?;
                }
                Ok(())
            })?;
            let cpu_attrs: &[(&str, &str)] = if kvm {
                &[
                    ("mode", "host-passthrough"),
                    ("check", "none"),
                    ("migratable", "off"),
                ]
            } else {
                // TCG emulates a CPU: the most it can (`-cpu max`).
                &[("mode", "maximum"), ("check", "none")]
            };
            w.create_element("cpu")
                .with_attributes(cpu_attrs.iter().copied())
                .write_inner_content(|w| {
                    empty(
                        w,
                        "topology",
                        &[
                            ("sockets", &p.sockets.to_string()),
                            ("dies", "1"),
                            ("cores", &p.cores.to_string()),
                            ("threads", &p.threads.to_string()),
                        ],
                    )?;
                    if !kvm {
                        return Ok(());
                    }
                    empty(w, "cache", &[("mode", "passthrough")])?;
                    if plan.amd {
                        empty(w, "feature", &[("policy", "require"), ("name", "topoext")])?;
                    }
                    empty(w, "feature", &[("policy", "require"), ("name", "invtsc")])
                })?;
            let offset = if plan.windows() { "localtime" } else { "utc" };
            w.create_element("clock")
                .with_attribute(("offset", offset))
                .write_inner_content(|w| {
                    empty(w, "timer", &[("name", "rtc"), ("tickpolicy", "catchup")])?;
                    empty(w, "timer", &[("name", "pit"), ("tickpolicy", "delay")])?;
                    empty(w, "timer", &[("name", "hpet"), ("present", "no")])?;
                    if plan.windows() && kvm {
                        empty(w, "timer", &[("name", "hypervclock"), ("present", "yes")])?;
                    }
                    Ok(())
                })?;
            text(w, "on_poweroff", &[], "destroy")?;
            text(w, "on_reboot", &[], "restart")?;
            text(w, "on_crash", &[], "destroy")?;
            w.create_element("devices")
                .write_inner_content(|w| write_devices(w, plan))?;
            Ok(())
        })?;
    Ok(())
}

fn write_devices(w: &mut Writer<Cursor<Vec<u8>>>, plan: &VmPlan) -> XmlResult {
    let spec = &plan.spec;
    // The installer ISO boots first, then the disks (or the other way round once
    // the OS is installed).
    let (iso_boot, disk_boot) = plan.boot_orders();
    for (i, iso) in spec.isos.iter().enumerate() {
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "cdrom")])
            .write_inner_content(|w| {
                empty(w, "driver", &[("name", "qemu"), ("type", "raw")])?;
                empty(w, "source", &[("file", &iso.display().to_string())])?;
                empty(
                    w,
                    "target",
                    &[("dev", &device_name("sd", i)), ("bus", "sata")],
                )?;
                empty(w, "readonly", &[])?;
                if i == 0 {
                    empty(w, "boot", &[("order", &iso_boot.to_string())])?;
                }
                Ok(())
            })?;
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "disk")])
            .write_inner_content(|w| {
                empty(
                    w,
                    "driver",
                    &[
                        ("name", "qemu"),
                        ("type", &disk.format),
                        ("cache", "none"),
                        ("io", "native"),
                        ("discard", "unmap"),
                    ],
                )?;
                empty(w, "source", &[("file", &disk.path.display().to_string())])?;
                empty(
                    w,
                    "target",
                    &[("dev", &device_name("vd", i)), ("bus", "virtio")],
                )?;
                empty(w, "boot", &[("order", &(disk_boot + i).to_string())])
            })?;
    }
    // One root port per passed slot, its functions at the same function numbers.
    for (n, functions) in plan.slots().iter().enumerate() {
        let index = (n + 1).to_string();
        empty(
            w,
            "controller",
            &[
                ("type", "pci"),
                ("index", &index),
                ("model", "pcie-root-port"),
            ],
        )?;
        for a in functions {
            w.create_element("hostdev")
                .with_attributes([("mode", "subsystem"), ("type", "pci"), ("managed", "yes")])
                .write_inner_content(|w| {
                    w.create_element("source").write_inner_content(|w| {
                        empty(
                            w,
                            "address",
                            &[
                                ("domain", &hex(a.domain, 4)),
                                ("bus", &hex(u32::from(a.bus), 2)),
                                ("slot", &hex(u32::from(a.device), 2)),
                                ("function", &hex(u32::from(a.function), 1)),
                            ],
                        )
                    })?;
                    let mut attrs: Vec<(&str, String)> = vec![
                        ("type", "pci".into()),
                        ("domain", "0x0000".into()),
                        ("bus", hex(n as u32 + 1, 2)),
                        ("slot", "0x00".into()),
                        ("function", hex(u32::from(a.function), 1)),
                    ];
                    if a.function == 0 && functions.len() > 1 {
                        attrs.push(("multifunction", "on".into()));
                    }
                    let refs: Vec<(&str, &str)> =
                        attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    empty(w, "address", &refs)?;
                    if let Some(rom) = plan.roms.get(a) {
                        empty(w, "rom", &[("file", &rom.display().to_string())])?;
                    }
                    Ok(())
                })?;
        }
    }
    match &spec.network {
        Network::User => w
            .create_element("interface")
            .with_attribute(("type", "user"))
            .write_inner_content(|w| empty(w, "model", &[("type", "virtio")]))
            .map(|_| ())?,
        Network::Bridge(br) => w
            .create_element("interface")
            .with_attribute(("type", "bridge"))
            .write_inner_content(|w| {
                empty(w, "source", &[("bridge", br)])?;
                empty(w, "model", &[("type", "virtio")])
            })
            .map(|_| ())?,
        Network::None => {}
    }
    for usb in &spec.usb {
        w.create_element("hostdev")
            .with_attributes([("mode", "subsystem"), ("type", "usb"), ("managed", "yes")])
            .write_inner_content(|w| {
                w.create_element("source").write_inner_content(|w| {
                    empty(w, "vendor", &[("id", &hex(u32::from(usb.id.vendor), 4))])?;
                    empty(w, "product", &[("id", &hex(u32::from(usb.id.device), 4))])
                })?;
                Ok(())
            })?;
    }
    for dev in &spec.evdev {
        w.create_element("input")
            .with_attribute(("type", "evdev"))
            .write_inner_content(|w| {
                let path = dev.display().to_string();
                let mut attrs = vec![("dev", path.as_str())];
                // Keyboards take the grab; Ctrl+Ctrl toggles between host and guest.
                if is_keyboard(dev) {
                    attrs.extend([
                        ("grab", "all"),
                        ("repeat", "on"),
                        ("grabToggle", "ctrl-ctrl"),
                    ]);
                }
                empty(w, "source", &attrs)
            })?;
    }
    // A serial console: `passthru vm console` (virsh console) attaches to it.
    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| empty(w, "target", &[("port", "0")]))?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| empty(w, "target", &[("type", "serial"), ("port", "0")]))?;
    if spec.firmware.tpm {
        w.create_element("tpm")
            .with_attribute(("model", "tpm-crb"))
            .write_inner_content(|w| {
                empty(w, "backend", &[("type", "emulator"), ("version", "2.0")])
            })?;
    }
    match spec.display {
        Display::Spice => {
            empty(w, "graphics", &[("type", "spice"), ("autoport", "yes")])?;
            w.create_element("video")
                .write_inner_content(|w| empty(w, "model", &[("type", "qxl")]))?;
        }
        // The passed GPU is the display: no emulated one.
        Display::None => {
            w.create_element("video")
                .write_inner_content(|w| empty(w, "model", &[("type", "none")]))?;
        }
    }
    empty(w, "memballoon", &[("model", "none")])
}

/// An evdev device path that names a keyboard (`/dev/input/by-id/…-event-kbd`).
fn is_keyboard(dev: &std::path::Path) -> bool {
    dev.to_string_lossy().ends_with("-kbd")
}

/// A path as the value of one of QEMU's `key=value,…` options (`-drive`, `-device`,
/// `-object`, `-chardev`, `-qmp`): QEMU reads a doubled comma as a comma of the value,
/// so `/iso/a,b.iso` stays one path instead of ending the value and adding an option
/// (`file.filename=…`, `helper=…`). `-kernel`, `-initrd` and `-append` take their
/// argument whole and get it as it is.
pub fn opt_value(path: &std::path::Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A guest disk's name as libvirt writes them: `prefix` and the disk's index in
/// base 26 with letters (`vda` … `vdz`, `vdaa`, `vdab`, …).
pub fn device_name(prefix: &str, index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

/// The QEMU command line. vCPU pinning is not a QEMU option: `vm run` pins the vCPU
/// threads (found through QMP) to [`PinningPlan::vcpus`] after start.
///
/// [`PinningPlan::vcpus`]: crate::vm::pinning::PinningPlan::vcpus
pub fn qemu_argv(plan: &VmPlan) -> Vec<String> {
    let spec = &plan.spec;
    let p = &plan.pinning;
    let mib = spec.memory_mib();
    let mut a: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|s| (*s).to_string()));
    push(&[
        "qemu-system-x86_64",
        "-name",
        &spec.name,
        "-nodefaults",
        "-no-user-config",
    ]);
    let kvm = plan.accel == Accel::Kvm;
    let mut machine = if kvm {
        String::from("q35,accel=kvm,kernel-irqchip=on")
    } else {
        String::from("q35,accel=tcg")
    };
    if spec.firmware.secure_boot {
        machine.push_str(",smm=on");
    }
    if plan.hugepage_kib.is_some() {
        machine.push_str(",memory-backend=mem");
    }
    push(&["-machine", &machine]);
    let mut cpu = if kvm {
        String::from("host,migratable=off,invtsc=on")
    } else {
        String::from("max")
    };
    if plan.amd && kvm {
        cpu.push_str(",topoext=on");
    }
    if plan.windows() && kvm {
        cpu.push_str(",hv-relaxed,hv-vapic,hv-vpindex,hv-synic,hv-stimer,hv-reset,hv-frequencies,hv-tlbflush,hv-ipi,hv-spinlocks=0x1fff,hv-time");
    }
    push(&["-cpu", &cpu]);
    push(&[
        "-smp",
        &format!(
            "{},sockets={},cores={},threads={}",
            p.vcpus.len(),
            p.sockets,
            p.cores,
            p.threads
        ),
    ]);
    push(&["-m", &format!("{mib}M")]);
    if let Some(kib) = plan.hugepage_kib {
        let path = if kib == 1024 * 1024 {
            "/dev/hugepages1G"
        } else {
            "/dev/hugepages"
        };
        push(&[
            "-object",
            &format!("memory-backend-file,id=mem,size={mib}M,mem-path={path},share=on,prealloc=on"),
        ]);
    }
    if let (true, Some(o)) = (spec.firmware.uefi, &plan.ovmf) {
        push(&[
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                opt_value(&o.code)
            ),
        ]);
        let vars = plan.nvram_path();
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", opt_value(&vars)),
        ]);
    }
    let (iso_boot, disk_boot) = plan.boot_orders();
    for (i, iso) in spec.isos.iter().enumerate() {
        push(&[
            "-drive",
            &format!(
                "file={},media=cdrom,if=none,id=cd{i},readonly=on",
                opt_value(iso)
            ),
        ]);
        let mut dev = format!("ide-cd,drive=cd{i},bus=ide.{i}");
        if i == 0 {
            dev.push_str(&format!(",bootindex={iso_boot}"));
        }
        push(&["-device", &dev]);
    }
    for (i, d) in spec.disks.iter().enumerate() {
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=disk{i},format={},cache=none,aio=native,discard=unmap",
                opt_value(&d.path),
                d.format
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=disk{i},bootindex={}", disk_boot + i),
        ]);
    }
    for (n, functions) in plan.slots().iter().enumerate() {
        let port = format!("rp{}", n + 1);
        push(&[
            "-device",
            &format!("pcie-root-port,id={port},chassis={},bus=pcie.0", n + 1),
        ]);
        for f in functions {
            let mut dev = format!("vfio-pci,host={f},bus={port},addr=0x0.{:x}", f.function);
            if f.function == 0 && functions.len() > 1 {
                dev.push_str(",multifunction=on");
            }
            if let Some(rom) = plan.roms.get(f) {
                dev.push_str(&format!(",romfile={}", opt_value(rom)));
            }
            push(&["-device", &dev]);
        }
    }
    match &spec.network {
        Network::User => push(&["-nic", "user,model=virtio-net-pci"]),
        Network::Bridge(br) => push(&["-nic", &format!("bridge,br={br},model=virtio-net-pci")]),
        Network::None => push(&["-nic", "none"]),
    }
    if !spec.usb.is_empty() {
        push(&["-device", "qemu-xhci,id=usbhost"]);
        for u in &spec.usb {
            push(&[
                "-device",
                &format!(
                    "usb-host,bus=usbhost.0,vendorid={},productid={}",
                    hex(u32::from(u.id.vendor), 4),
                    hex(u32::from(u.id.device), 4)
                ),
            ]);
        }
    }
    for (i, dev) in spec.evdev.iter().enumerate() {
        let mut obj = format!("input-linux,id=evdev{i},evdev={}", opt_value(dev));
        if is_keyboard(dev) {
            obj.push_str(",grab_all=on,repeat=on,grab-toggle=ctrl-ctrl");
        }
        push(&["-object", &obj]);
    }
    if let Some(k) = &spec.kernel {
        push(&["-kernel", &k.path.display().to_string()]);
        if let Some(initrd) = &k.initrd {
            push(&["-initrd", &initrd.display().to_string()]);
        }
        if !k.cmdline.is_empty() {
            push(&["-append", &k.cmdline]);
        }
    }
    if spec.firmware.tpm {
        let sock = plan.swtpm_path();
        push(&[
            "-chardev",
            &format!("socket,id=chrtpm,path={}", opt_value(&sock)),
        ]);
        push(&["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]);
        push(&["-device", "tpm-crb,tpmdev=tpm0"]);
    }
    match spec.display {
        Display::Spice => push(&[
            "-vga",
            "qxl",
            "-spice",
            "port=5930,addr=127.0.0.1,disable-ticketing=on",
        ]),
        Display::None => push(&["-vga", "none", "-display", "none"]),
    }
    push(&[
        "-chardev",
        &format!(
            "socket,id=console,path={},server=on,wait=off,logfile={}",
            opt_value(&plan.console_path()),
            opt_value(&plan.console_log_path())
        ),
        "-serial",
        "chardev:console",
    ]);
    let qmp = plan.qmp_path();
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt_value(&qmp)),
    ]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_go_on_as_libvirt_counts() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .iter()
            .map(|i| device_name("vd", *i))
            .collect();
        assert_eq!(
            names,
            ["vda", "vdb", "vdz", "vdaa", "vdab", "vdaz", "vdba", "vdzz", "vdaaa"]
        );
    }

    #[test]
    fn commas_are_doubled_in_option_values() {
        assert_eq!(opt_value(std::path::Path::new("/a,b,,c=d")), "/a,,b,,,,c=d");
    }
}
