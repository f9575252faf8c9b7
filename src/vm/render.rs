//! Renderers of a VM plan: libvirt domain XML, and a QEMU command line (an argv,
//! never a shell string). Both come from the same [`VmPlan`], so they agree.
//!
//! Passed-through devices keep their slot's shape: each host slot gets a PCIe root
//! port in the guest, and its functions sit at the same function numbers there, so a
//! GPU and its HDMI audio stay one multifunction device, as drivers expect.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;

use quick_xml::events::BytesText;
use quick_xml::Writer;

use super::pinning::PinningPlan;
use super::spec::{Display, Network, OsType, VmSpec};
use crate::cpu::format_cpu_list;
use crate::pci::PciAddress;

/// UEFI firmware images for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// The read-only code image (`OVMF_CODE*.fd`; the `.secboot` build for Secure Boot).
    pub code: PathBuf,
    /// The template of the per-VM variable store (`OVMF_VARS*.fd`).
    pub vars_template: PathBuf,
}

/// Everything a renderer needs.
#[derive(Debug, Clone)]
pub struct VmPlan<'a> {
    /// The spec.
    pub spec: &'a VmSpec,
    /// Where the vCPUs run.
    pub pinning: &'a PinningPlan,
    /// Every passed-through device (whole groups, bridges excluded), sorted.
    pub devices: Vec<PciAddress>,
    /// The host CPU is AMD (`topoext` exposes SMT to the guest).
    pub amd: bool,
    /// UEFI firmware, when the spec asks for UEFI.
    pub ovmf: Option<Ovmf>,
    /// Where the VM's own files live (NVRAM, QMP socket, TPM state).
    pub state_dir: PathBuf,
}

impl VmPlan<'_> {
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
pub fn libvirt_xml(plan: &VmPlan<'_>) -> String {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    // Writing into memory cannot fail.
    let _ = write_domain(&mut w, plan);
    let mut out = String::from_utf8(w.into_inner().into_inner()).unwrap_or_default();
    out.push('\n');
    out
}

fn write_domain(w: &mut Writer<Cursor<Vec<u8>>>, plan: &VmPlan<'_>) -> XmlResult {
    let spec = plan.spec;
    let p = plan.pinning;
    let mib = spec.memory_mib().to_string();
    let vcpus = p.vcpus.len().to_string();
    w.create_element("domain")
        .with_attribute(("type", "kvm"))
        .write_inner_content(|w| {
            text(w, "name", &[], &spec.name)?;
            text(w, "memory", &[("unit", "MiB")], &mib)?;
            text(w, "currentMemory", &[("unit", "MiB")], &mib)?;
            if spec.hugepages {
                w.create_element("memoryBacking")
                    .write_inner_content(|w| empty(w, "hugepages", &[]))?;
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
            let mut os = w.create_element("os");
            if spec.firmware.uefi {
                os = os.with_attribute(("firmware", "efi"));
            }
            os.write_inner_content(|w| {
                text(w, "type", &[("arch", "x86_64"), ("machine", "q35")], "hvm")?;
                if spec.firmware.uefi {
                    w.create_element("firmware").write_inner_content(|w| {
                        let sb = if spec.firmware.secure_boot {
                            "yes"
                        } else {
                            "no"
                        };
                        empty(w, "feature", &[("enabled", sb), ("name", "secure-boot")])?;
                        empty(w, "feature", &[("enabled", sb), ("name", "enrolled-keys")])
                    })?;
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
                            &plan
                                .state_dir
                                .join(format!("{}_VARS.fd", spec.name))
                                .display()
                                .to_string(),
                        )?;
                    }
                }
                Ok(())
            })?;
            w.create_element("features").write_inner_content(|w| {
                empty(w, "acpi", &[])?;
                empty(w, "apic", &[])?;
                if plan.windows() {
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
            w.create_element("cpu")
                .with_attributes([
                    ("mode", "host-passthrough"),
                    ("check", "none"),
                    ("migratable", "off"),
                ])
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
                    if plan.windows() {
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

fn write_devices(w: &mut Writer<Cursor<Vec<u8>>>, plan: &VmPlan<'_>) -> XmlResult {
    let spec = plan.spec;
    // Installer ISOs boot first, then the disks.
    let mut boot = 1;
    for (i, iso) in spec.isos.iter().enumerate() {
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "cdrom")])
            .write_inner_content(|w| {
                empty(w, "driver", &[("name", "qemu"), ("type", "raw")])?;
                empty(w, "source", &[("file", &iso.display().to_string())])?;
                empty(
                    w,
                    "target",
                    &[
                        ("dev", &format!("sd{}", (b'a' + i as u8) as char)),
                        ("bus", "sata"),
                    ],
                )?;
                empty(w, "readonly", &[])?;
                if i == 0 {
                    empty(w, "boot", &[("order", &boot.to_string())])?;
                    boot += 1;
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
                    &[
                        ("dev", &format!("vd{}", (b'a' + i as u8) as char)),
                        ("bus", "virtio"),
                    ],
                )?;
                empty(w, "boot", &[("order", &(boot + i).to_string())])
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
                    empty(w, "address", &refs)
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

/// The QEMU command line. vCPU pinning is not a QEMU option: `vm run` pins the vCPU
/// threads (found through QMP) to [`PinningPlan::vcpus`] after start.
pub fn qemu_argv(plan: &VmPlan<'_>) -> Vec<String> {
    let spec = plan.spec;
    let p = plan.pinning;
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
    let mut machine = String::from("q35,accel=kvm,kernel-irqchip=on");
    if spec.firmware.secure_boot {
        machine.push_str(",smm=on");
    }
    if spec.hugepages {
        machine.push_str(",memory-backend=mem");
    }
    push(&["-machine", &machine]);
    let mut cpu = String::from("host,migratable=off,invtsc=on");
    if plan.amd {
        cpu.push_str(",topoext=on");
    }
    if plan.windows() {
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
    if spec.hugepages {
        push(&[
            "-object",
            &format!("memory-backend-file,id=mem,size={mib}M,mem-path=/dev/hugepages,share=on,prealloc=on"),
        ]);
    }
    if let (true, Some(o)) = (spec.firmware.uefi, &plan.ovmf) {
        push(&[
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                o.code.display()
            ),
        ]);
        let vars = plan.state_dir.join(format!("{}_VARS.fd", spec.name));
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        ]);
    }
    let mut boot = 1;
    for (i, iso) in spec.isos.iter().enumerate() {
        push(&[
            "-drive",
            &format!(
                "file={},media=cdrom,if=none,id=cd{i},readonly=on",
                iso.display()
            ),
        ]);
        let mut dev = format!("ide-cd,drive=cd{i},bus=ide.{i}");
        if i == 0 {
            dev.push_str(&format!(",bootindex={boot}"));
            boot += 1;
        }
        push(&["-device", &dev]);
    }
    for (i, d) in spec.disks.iter().enumerate() {
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=disk{i},format={},cache=none,aio=native,discard=unmap",
                d.path.display(),
                d.format
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=disk{i},bootindex={}", boot + i),
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
            push(&["-device", &dev]);
        }
    }
    match &spec.network {
        Network::User => push(&["-nic", "user,model=virtio-net-pci"]),
        Network::Bridge(br) => push(&["-nic", &format!("bridge,br={br},model=virtio-net-pci")]),
        Network::None => push(&["-nic", "none"]),
    }
    if spec.firmware.tpm {
        let sock = plan.state_dir.join("swtpm.sock");
        push(&[
            "-chardev",
            &format!("socket,id=chrtpm,path={}", sock.display()),
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
    let qmp = plan.state_dir.join("qmp.sock");
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    a
}
