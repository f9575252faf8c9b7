//! VM renderers: libvirt XML and QEMU argv from one plan, compared with golden files
//! in `tests/golden/vm/` (`PASSTHRU_BLESS=1` rewrites them), and every XML checked
//! by libvirt's own `virt-xml-validate`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use passthru::host::cpu::{CpuTopology, LogicalCpu};
use passthru::vm::pinning::{plan, CpuRequest};
use passthru::vm::plan::{Accel, Ovmf, VmPlan};
use passthru::vm::render::{libvirt_xml, qemu_argv};
use passthru::vm::spec::VmSpec;

/// An 8-core / 16-thread desktop CPU (siblings n and n+8) with one L3 cache.
fn desktop_8c16t() -> CpuTopology {
    let all: Vec<u32> = (0..16).collect();
    CpuTopology {
        cpus: (0..16)
            .map(|cpu| LogicalCpu {
                cpu,
                online: true,
                package: Some(0),
                die: Some(0),
                core: Some(cpu % 8),
                thread_siblings: vec![cpu % 8, cpu % 8 + 8],
                l3_shared_with: all.clone(),
                numa_node: Some(0),
                core_kind: None,
            })
            .collect(),
    }
}

const WIN11: &str = r#"
name = "win11"
memory = "16G"
cpus = 8
devices = ["0000:01:00.0", "0000:01:00.1", "0000:02:00.0"]
isos = ["/var/lib/passthru/iso/Win11_23H2_English_x64.iso", "/var/lib/passthru/iso/virtio-win.iso"]
os = "windows"
hugepages = true
display = "spice"

[[disks]]
path = "/var/lib/passthru/vms/win11.qcow2"
size = "128G"

[firmware]
secure_boot = true
tpm = true
"#;

const LINUX: &str = r#"
name = "fedora-ws"
memory = "8G"
cpus = 4
devices = ["0000:03:00.0"]
network = { bridge = "br0" }

[[disks]]
path = "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB"
format = "raw"
"#;

fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/vm")
        .join(name);
    if std::env::var_os("PASSTHRU_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PASSTHRU_BLESS=1 writes it)", path.display()));
    if text != want {
        let diff = similar::TextDiff::from_lines(&want, text)
            .unified_diff()
            .header("golden", "now")
            .to_string();
        panic!("{name} differs from its golden file:\n{diff}");
    }
}

/// Validates a domain XML with libvirt's own schema checker.
fn validate(xml: &str) {
    let Ok(path) = which("virt-xml-validate") else {
        assert!(
            std::env::var("CI").is_err(),
            "virt-xml-validate is missing (install libvirt-clients)"
        );
        eprintln!("SKIPPED virt-xml-validate: not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new(path)
        .arg(&file)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virt-xml-validate rejected the XML:\n{}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .ok_or(())
}

fn render(spec_text: &str, amd: bool) -> (String, Vec<String>) {
    render_with(spec_text, amd, |_| {})
}

fn render_with(
    spec_text: &str,
    amd: bool,
    adjust: impl FnOnce(&mut VmPlan),
) -> (String, Vec<String>) {
    let spec = VmSpec::parse(spec_text).unwrap();
    let pinning = plan(
        &desktop_8c16t(),
        &CpuRequest::Count(match spec.cpus {
            passthru::vm::spec::Cpus::Count(n) => n,
            passthru::vm::spec::Cpus::Host(_) => unreachable!(),
        }),
        None,
    )
    .unwrap();
    let mut vm = VmPlan {
        devices: spec.devices.iter().filter_map(|d| d.address).collect(),
        roms: spec
            .devices
            .iter()
            .filter_map(|d| Some((d.address?, d.rom.clone()?)))
            .collect(),
        state_dir: PathBuf::from("/var/lib/passthru/vms").join(&spec.name),
        hugepage_kib: spec.hugepages.then_some(2048),
        spec,
        pinning,
        amd,
        accel: Accel::Kvm,
        ovmf: Some(Ovmf {
            code: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".into(),
            vars_template: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd".into(),
        }),
        boot_iso_first: true,
    };
    adjust(&mut vm);
    (libvirt_xml(&vm), qemu_argv(&vm))
}

#[test]
fn a_windows_gaming_vm() {
    let (xml, argv) = render(WIN11, true);
    validate(&xml);
    // the GPU and its audio function share one guest slot, the NVMe has its own
    assert!(xml.contains("<address type=\"pci\" domain=\"0x0000\" bus=\"0x01\" slot=\"0x00\" function=\"0x0\" multifunction=\"on\"/>"), "{xml}");
    assert!(
        xml.contains(
            "<address type=\"pci\" domain=\"0x0000\" bus=\"0x01\" slot=\"0x00\" function=\"0x1\"/>"
        ),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<address type=\"pci\" domain=\"0x0000\" bus=\"0x02\" slot=\"0x00\" function=\"0x0\"/>"
        ),
        "{xml}"
    );
    // whole cores, core 0 left to the host, SMT exposed
    assert!(
        xml.contains("<topology sockets=\"1\" dies=\"1\" cores=\"4\" threads=\"2\"/>"),
        "{xml}"
    );
    assert!(!xml.contains("cpuset=\"0\"/>\n    <vcpupin"), "{xml}");
    assert!(xml.contains("<feature policy=\"require\" name=\"topoext\"/>"));
    assert!(
        xml.contains("<page size=\"2048\" unit=\"KiB\"/>")
            && xml.contains("<tpm model=\"tpm-crb\">")
            && xml.contains("<hyperv mode=\"custom\">")
    );
    assert!(
        argv.windows(2).any(|w| w[0] == "-device"
            && w[1] == "vfio-pci,host=0000:01:00.0,bus=rp1,addr=0x0.0,multifunction=on"),
        "{argv:?}"
    );
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "-smp" && w[1] == "8,sockets=1,cores=4,threads=2"),
        "{argv:?}"
    );
    golden("win11.xml", &xml);
    golden("win11.argv", &(argv.join("\n") + "\n"));
}

/// Once the OS is installed (`boot_iso_first` false), the disk boots first and the
/// ISOs stay attached: the installer after the disk, the driver ISO not bootable.
#[test]
fn an_installed_vm_boots_from_its_disk_with_the_isos_still_attached() {
    let (xml, argv) = render_with(WIN11, true, |p| p.boot_iso_first = false);
    validate(&xml);
    let order_of = |needle: &str| {
        let at = xml.find(needle).unwrap();
        let disk = &xml[at..at + xml[at..].find("</disk>").unwrap()];
        disk.split("<boot order=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_owned)
    };
    assert_eq!(order_of("win11.qcow2").as_deref(), Some("1"), "{xml}");
    assert_eq!(order_of("Win11_23H2").as_deref(), Some("2"), "{xml}");
    assert_eq!(order_of("virtio-win.iso"), None, "{xml}");
    assert!(
        argv.iter()
            .any(|a| a.starts_with("virtio-blk-pci,drive=disk0,bootindex=1")),
        "{argv:?}"
    );
    assert!(
        argv.iter()
            .any(|a| a == "ide-cd,drive=cd0,bus=ide.0,bootindex=2"),
        "{argv:?}"
    );
    // The installing VM is the golden one: the ISO first.
    let (xml, _) = render(WIN11, true);
    assert_eq!(
        xml.matches("<boot order=").count(),
        2,
        "one ISO and one disk are bootable: {xml}"
    );
}

#[test]
fn a_linux_vm_on_a_bridge_with_a_raw_disk() {
    let (xml, argv) = render(LINUX, false);
    validate(&xml);
    assert!(!xml.contains("topoext") && !xml.contains("hyperv"));
    assert!(xml.contains("<source bridge=\"br0\"/>"));
    assert!(
        argv.contains(&"bridge,br=br0,model=virtio-net-pci".to_string()),
        "{argv:?}"
    );
    golden("fedora-ws.xml", &xml);
    golden("fedora-ws.argv", &(argv.join("\n") + "\n"));
}

/// A Linux guest under TCG booted straight into its kernel, with a GPU ROM image,
/// 1 GiB hugepages, a USB receiver and an evdev keyboard and mouse.
const APPLIANCE: &str = r#"
name = "lab"
memory = "4G"
cpus = 2
hugepages = true
usb = [{ id = "046d:c52b" }]
evdev = ["/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd", "/dev/input/by-id/usb-Logitech_USB_Receiver-event-mouse"]

[[devices]]
address = "0000:01:00.0"
id = "10de:1b80"
subsystem = "1043:8591"
rom = "/var/lib/passthru/roms/gtx1080.rom"

[[devices]]
address = "0000:01:00.1"
id = "10de:10f0"

[firmware]
uefi = false

[kernel]
path = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 root=/dev/vda"
"#;

#[test]
fn a_tcg_guest_with_direct_kernel_boot_rom_usb_and_evdev() {
    let (xml, argv) = render_with(APPLIANCE, false, |p| {
        p.accel = Accel::Tcg;
        p.ovmf = None;
        p.hugepage_kib = Some(1048576);
    });
    validate(&xml);
    assert!(xml.starts_with("<domain type=\"qemu\">"), "{xml}");
    assert!(
        xml.contains("<cpu mode=\"maximum\" check=\"none\">"),
        "{xml}"
    );
    assert!(!xml.contains("invtsc") && !xml.contains("host-passthrough"));
    assert!(xml.contains("<rom file=\"/var/lib/passthru/roms/gtx1080.rom\"/>"));
    assert!(xml.contains("<page size=\"1048576\" unit=\"KiB\"/>"));
    assert!(xml.contains("<vendor id=\"0x046d\"/>") && xml.contains("<product id=\"0xc52b\"/>"));
    assert!(xml.contains("grabToggle=\"ctrl-ctrl\""));
    assert!(xml.contains("<kernel>/boot/vmlinuz</kernel>"));
    let has = |a: &str, b: &str| argv.windows(2).any(|w| w[0] == a && w[1] == b);
    assert!(
        has("-machine", "q35,accel=tcg,memory-backend=mem"),
        "{argv:?}"
    );
    assert!(has("-cpu", "max"), "{argv:?}");
    assert!(has(
        "-device",
        "vfio-pci,host=0000:01:00.0,bus=rp1,addr=0x0.0,multifunction=on,romfile=/var/lib/passthru/roms/gtx1080.rom"
    ));
    assert!(has("-append", "console=ttyS0 root=/dev/vda"));
    assert!(argv.iter().any(|a| a.contains("mem-path=/dev/hugepages1G")));
    assert!(has(
        "-device",
        "usb-host,bus=usbhost.0,vendorid=0x046d,productid=0xc52b"
    ));
    golden("lab.xml", &xml);
    golden("lab.argv", &(argv.join("\n") + "\n"));
}

/// One logical CPU of a host layout written as sysfs: (cpu, package, core id,
/// thread siblings, L3 sharers, NUMA node).
type CpuRow = (u32, u32, u32, String, String, u32);

/// Writes a CPU topology into a fixture host the way the kernel lays it out.
fn write_cpus(f: &support::Fixture, rows: &[CpuRow]) {
    let mut nodes: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for (cpu, package, core, siblings, l3, node) in rows {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}");
        f.write(&format!("{dir}/online"), "1\n");
        f.write(
            &format!("{dir}/topology/physical_package_id"),
            &format!("{package}\n"),
        );
        f.write(&format!("{dir}/topology/die_id"), "0\n");
        f.write(&format!("{dir}/topology/core_id"), &format!("{core}\n"));
        f.write(
            &format!("{dir}/topology/thread_siblings_list"),
            &format!("{siblings}\n"),
        );
        f.write(&format!("{dir}/cache/index3/level"), "3\n");
        f.write(
            &format!("{dir}/cache/index3/shared_cpu_list"),
            &format!("{l3}\n"),
        );
        nodes.entry(*node).or_default().push(*cpu);
    }
    for (node, cpus) in nodes {
        f.write(
            &format!("sys/devices/system/node/node{node}/cpulist"),
            &format!("{}\n", passthru::host::cpu::format_cpu_list(&cpus)),
        );
    }
    f.write("usr/share/OVMF/OVMF_CODE_4M.fd", "");
    f.write("usr/share/OVMF/OVMF_VARS_4M.fd", "");
}

/// `cores` SMT cores (siblings n and n+cores) in L3 domains of `per_l3` cores, on
/// `nodes` NUMA nodes (one package each).
fn smt_cpus(cores: u32, per_l3: u32, nodes: u32) -> Vec<CpuRow> {
    let per_node = cores / nodes;
    (0..cores * 2)
        .map(|cpu| {
            let core = cpu % cores;
            let l3 = core / per_l3;
            let l3_list = format!(
                "{}-{},{}-{}",
                l3 * per_l3,
                l3 * per_l3 + per_l3 - 1,
                l3 * per_l3 + cores,
                l3 * per_l3 + per_l3 - 1 + cores
            );
            (
                cpu,
                core / per_node,
                core % per_node,
                format!("{core},{}", core + cores),
                l3_list,
                core / per_node,
            )
        })
        .collect()
}

fn resolve_on(f: &support::Fixture, spec: &str) -> (String, Vec<String>) {
    use passthru::vm::resolve::{resolve, ResolveOptions};
    let spec = VmSpec::parse(spec).unwrap();
    let options = ResolveOptions {
        accel: Accel::Kvm,
        state_dir: PathBuf::from("/var/lib/passthru/vms").join(&spec.name),
        allow_host_disks: false,
    };
    let snapshot = passthru::host::snapshot::HostSnapshot::gather_for_vm(
        &passthru::host::root::HostRoot::new(f.root()),
        passthru::host::snapshot::Needs::VM,
        &spec,
    )
    .unwrap();
    let r = resolve(&snapshot, spec, &options).unwrap();
    assert!(r.blockers().is_empty(), "{:?}", r.blockers());
    (libvirt_xml(&r.plan), qemu_argv(&r.plan))
}

const GPU_VM: &str = "name = \"desk\"\nmemory = \"16G\"\ncpus = 8\ndevices = [\"DEV\"]\n\n[[disks]]\npath = \"/var/lib/passthru/vms/desk.qcow2\"\nsize = \"128G\"\n";

/// The XML and argv for the same spec on four real host shapes, resolved from
/// fixture roots: where the vCPUs land is the point of each.
#[test]
fn host_layouts() {
    // Intel, 8 cores with SMT, one L3.
    let f = support::Fixture::new("intel-desktop");
    write_cpus(&f, &smt_cpus(8, 8, 1));
    let (xml, argv) = resolve_on(&f, &GPU_VM.replace("DEV", "01:00.0"));
    validate(&xml);
    // Whole cores 1-4 with their siblings 9-12; core 0 (CPUs 0 and 8) runs QEMU.
    assert!(xml.contains("<vcpupin vcpu=\"0\" cpuset=\"1\"/>"), "{xml}");
    assert!(xml.contains("<vcpupin vcpu=\"1\" cpuset=\"9\"/>"), "{xml}");
    assert!(xml.contains("<emulatorpin cpuset=\"0,8\"/>"), "{xml}");
    // The GPU and its audio function come along (one IOMMU group).
    assert!(
        argv.iter()
            .any(|a| a.starts_with("vfio-pci,host=0000:01:00.1")),
        "{argv:?}"
    );
    golden("layout-intel-smt.xml", &xml);
    golden("layout-intel-smt.argv", &(argv.join("\n") + "\n"));

    // AMD, 16 cores in two CCDs of 8 (a Ryzen 9 5950X): one CCD, topoext.
    let f = support::Fixture::new("amd-desktop-shared-group");
    write_cpus(&f, &smt_cpus(16, 8, 1));
    let (xml, _) = resolve_on(&f, &GPU_VM.replace("DEV", "06:00.0"));
    validate(&xml);
    assert!(xml.contains("name=\"topoext\""));
    assert!(
        xml.contains("<vcpupin vcpu=\"0\" cpuset=\"8\"/>"),
        "the second CCD: {xml}"
    );
    golden("layout-amd-2ccd.xml", &xml);

    // A hybrid Core i9-12900K: 8 P-cores with SMT (CPUs 0-15), 8 E-cores (16-23).
    let f = support::Fixture::new("intel-desktop");
    let mut rows: Vec<CpuRow> = (0..16)
        .map(|cpu| {
            let core = cpu / 2;
            (
                cpu,
                0,
                core * 4,
                format!("{}-{}", core * 2, core * 2 + 1),
                "0-23".into(),
                0,
            )
        })
        .collect();
    rows.extend((16..24).map(|cpu| (cpu, 0, 32 + cpu, cpu.to_string(), "0-23".into(), 0)));
    write_cpus(&f, &rows);
    f.write("sys/devices/cpu_core/cpus", "0-15\n");
    f.write("sys/devices/cpu_atom/cpus", "16-23\n");
    let (xml, _) = resolve_on(&f, &GPU_VM.replace("DEV", "01:00.0"));
    validate(&xml);
    let pinned: Vec<&str> = xml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<vcpupin vcpu=\""))
        .map(|l| {
            l.split("cpuset=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>")
        })
        .collect();
    assert_eq!(
        pinned,
        ["2", "3", "4", "5", "6", "7", "8", "9"],
        "P-cores only"
    );
    golden("layout-hybrid.xml", &xml);

    // Two NUMA nodes (two 8-core packages), the GPU on node 1: vCPUs and memory there.
    let f = support::Fixture::new("intel-desktop");
    write_cpus(&f, &smt_cpus(16, 8, 2));
    f.write("sys/bus/pci/devices/0000:01:00.0/numa_node", "1\n");
    let (xml, _) = resolve_on(&f, &GPU_VM.replace("DEV", "01:00.0"));
    validate(&xml);
    assert!(
        xml.contains("<memory mode=\"strict\" nodeset=\"1\"/>"),
        "{xml}"
    );
    golden("layout-two-numa.xml", &xml);
    // With the GPU on node 0 the vCPUs stay on node 0, though node 1 has more free
    // cores (core 0 is the host's).
    f.write("sys/bus/pci/devices/0000:01:00.0/numa_node", "0\n");
    let (xml, _) = resolve_on(&f, &GPU_VM.replace("DEV", "01:00.0"));
    assert!(
        xml.contains("<memory mode=\"strict\" nodeset=\"0\"/>"),
        "{xml}"
    );
    assert!(xml.contains("<vcpupin vcpu=\"0\" cpuset=\"1\"/>"), "{xml}");
}

/// Every path goes into QEMU's `key=value,…` options with its commas doubled, and
/// stays one value; the libvirt XML escapes what XML would read as markup.
#[test]
fn commas_in_paths_stay_inside_their_value() {
    let spec = r#"
name = "odd"
memory = "1G"
cpus = 2
isos = ["/iso/win,file.filename=/etc/shadow.iso"]
evdev = ["/dev/input/by-id/usb-a,b-event-kbd"]

[[devices]]
address = "0000:01:00.0"
rom = "/roms/a,romfile=/etc/shadow.rom"

[[disks]]
path = "/vm/d,file.filename=/etc/shadow"
format = "raw"

[kernel]
path = "/boot/vmlinuz,x"
initrd = "/boot/initrd,y"
cmdline = "console=ttyS0,115200"

[firmware]
tpm = true
"#;
    let (xml, argv) = render_with(spec, false, |p| {
        p.state_dir = PathBuf::from("/var/lib/passthru/vms/a,b=c");
    });
    let has = |want: &str| argv.iter().any(|a| a == want);
    assert!(
        has("file=/vm/d,,file.filename=/etc/shadow,if=none,id=disk0,format=raw,cache=none,aio=native,discard=unmap"),
        "{argv:?}"
    );
    assert!(
        has("file=/iso/win,,file.filename=/etc/shadow.iso,media=cdrom,if=none,id=cd0,readonly=on"),
        "{argv:?}"
    );
    assert!(
        argv.iter()
            .any(|a| a.ends_with(",romfile=/roms/a,,romfile=/etc/shadow.rom")),
        "{argv:?}"
    );
    assert!(
        has("input-linux,id=evdev0,evdev=/dev/input/by-id/usb-a,,b-event-kbd,grab_all=on,repeat=on,grab-toggle=ctrl-ctrl"),
        "{argv:?}"
    );
    assert!(has(
        "unix:/var/lib/passthru/vms/a,,b=c/qmp.sock,server=on,wait=off"
    ));
    assert!(has(
        "socket,id=chrtpm,path=/var/lib/passthru/vms/a,,b=c/swtpm.sock"
    ));
    assert!(has(
        "if=pflash,format=raw,unit=1,file=/var/lib/passthru/vms/a,,b=c/odd_VARS.fd"
    ));
    assert!(has(
        "socket,id=console,path=/var/lib/passthru/vms/a,,b=c/console.sock,server=on,wait=off,\
         logfile=/var/lib/passthru/vms/a,,b=c/console.log"
    ));
    // -kernel, -initrd and -append take their argument whole (QEMU 10 opens
    // '/boot/vmlinuz,x' as it is): no doubling there.
    let after = |flag: &str| argv[argv.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(after("-kernel"), "/boot/vmlinuz,x");
    assert_eq!(after("-initrd"), "/boot/initrd,y");
    assert_eq!(after("-append"), "console=ttyS0,115200");
    // In the XML the values are whole attribute values and texts.
    assert!(
        xml.contains("<source file=\"/vm/d,file.filename=/etc/shadow\"/>"),
        "{xml}"
    );
    assert!(xml.contains("<kernel>/boot/vmlinuz,x</kernel>"), "{xml}");
    validate(&xml);
}

/// Quotes, angle brackets and ampersands in paths and the kernel command line come
/// out of the XML parser exactly as they went in.
#[test]
fn markup_in_values_is_escaped_in_the_libvirt_xml() {
    let hostile = r#"/vm/a"b'c<d>&e]]>f.img"#;
    let cmdline = r#"quiet"/><devices><hostdev mode='subsystem'></hostdev></devices><x a=""#;
    let spec = format!(
        "name = \"m\"\nmemory = \"1G\"\ncpus = 2\n\n[[disks]]\npath = {hostile:?}\n\n\
         [kernel]\npath = \"/boot/vmlinuz\"\ncmdline = {cmdline:?}\n"
    );
    let (xml, _) = render(&spec, false);
    validate(&xml);
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut sources, mut elements) = (Vec::new(), Vec::new());
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Empty(e) | quick_xml::events::Event::Start(e) => {
                if let Some(f) = e.try_get_attribute("file").unwrap() {
                    sources.push(
                        f.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap()
                            .into_owned(),
                    );
                }
                elements.push(e.name().into_inner().to_string());
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    let inner = &xml[xml.find("<cmdline>").unwrap() + 9..xml.find("</cmdline>").unwrap()];
    let cmdlines = vec![quick_xml::escape::unescape(inner).unwrap().into_owned()];
    let hostdevs = elements
        .iter()
        .filter(|e| *e == "hostdev" || *e == "x")
        .count();
    assert_eq!(sources, vec![hostile.to_string()]);
    assert_eq!(cmdlines, vec![cmdline.to_string()]);
    assert_eq!(hostdevs, 0, "no element came from a value");
}

/// The real QEMU, started with `-S` on the argv rendered for a disk and an ISO whose
/// paths carry commas and `=` (a disk path that, unescaped, would make QEMU open
/// another file as the disk's backing image), opens exactly those two files: QMP's
/// `query-block` and `query-named-block-nodes` say so. The VM's state directory (its
/// QMP socket) has a comma too.
#[test]
fn the_real_qemu_opens_exactly_the_paths_of_the_spec() {
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "qemu-system-x86_64 is missing"
        );
        eprintln!("SKIPPED the_real_qemu_opens_exactly_the_paths_of_the_spec: no QEMU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().display().to_string();
    let qemu_img = |args: &[&str]| {
        let out = std::process::Command::new("qemu-img")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    // What the injected text names: a decoy disk and a file that must stay closed.
    let decoy = format!("{t}/d.qcow2");
    let secret = format!("{t}/secret.img");
    qemu_img(&["create", "-q", "-f", "qcow2", "--", &decoy, "1M"]);
    qemu_img(&["create", "-q", "-f", "raw", "--", &secret, "1M"]);
    let disk = format!("{decoy},backing.file.filename={secret},backing.driver=raw");
    let iso = format!("{t}/in=st,all.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).unwrap();
    let spec = format!(
        "name = \"inj\"\nmemory = \"256M\"\ncpus = 2\nnetwork = \"none\"\n\
         isos = [{iso:?}]\n\n[[disks]]\npath = {disk:?}\nsize = \"16M\"\n\n\
         [firmware]\nuefi = false\n"
    );
    // The disk is created by passthru with the real qemu-img.
    let parsed = VmSpec::parse(&spec).unwrap();
    let created = passthru::apply::disk::create_missing(&parsed).unwrap();
    assert_eq!(created, vec![PathBuf::from(&disk)]);
    let state = dir.path().join("st,ate=x");
    std::fs::create_dir(&state).unwrap();
    let (_, argv) = render_with(&spec, false, |p| {
        p.accel = Accel::Tcg;
        p.ovmf = None;
        p.state_dir = state.clone();
    });
    let mut qemu = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg("-S")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let qmp = passthru::apply::qmp::Qmp::connect(
        &state.join("qmp.sock"),
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(30),
    );
    let Ok(mut qmp) = qmp else {
        let _ = qemu.kill();
        let out = qemu.wait_with_output().unwrap();
        panic!(
            "QEMU did not start ({qmp:?}): {}\n{argv:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let blocks = qmp.execute("query-block", None).unwrap();
    let nodes = qmp.execute("query-named-block-nodes", None).unwrap();
    qmp.quit().unwrap();
    let _ = qemu.wait();
    let inserted: Vec<(String, String)> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| {
            Some((
                b["device"].as_str()?.to_string(),
                b["inserted"]["file"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(
        inserted,
        vec![
            ("cd0".to_string(), iso.clone()),
            ("disk0".to_string(), disk.clone())
        ],
        "{blocks:#}"
    );
    let mut opened: Vec<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["file"].as_str().unwrap().to_string())
        .collect();
    opened.sort();
    opened.dedup();
    let mut want = vec![iso, disk];
    want.sort();
    assert_eq!(opened, want, "nothing else is opened: {nodes:#}");
}

fn passthru_cli(vm_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_passthru"))
        .args(args)
        .env("PASSTHRU_VM_DIR", vm_dir.join("specs"))
        .env("PASSTHRU_VM_STATE_DIR", vm_dir.join("state"))
        .env_remove("PASSTHRU_ROOT")
        .output()
        .unwrap()
}

/// A bridge name that carries a `helper=` option (QEMU runs the helper, as root
/// under `vm run`) is refused when the spec is read: `vm run` with the real QEMU never
/// starts it, and the helper never runs.
#[test]
fn a_bridge_with_a_helper_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("helper-ran");
    let helper = dir.path().join("helper.sh");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("specs")).unwrap();
    let spec = dir.path().join("specs/br.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"br\"\nmemory = \"128M\"\ncpus = 1\n\
             network = {{ bridge = \"br0,helper={}\" }}\n\n[firmware]\nuefi = false\n",
            helper.display()
        ),
    )
    .unwrap();
    let out = passthru_cli(
        dir.path(),
        &[
            "vm",
            "run",
            spec.to_str().unwrap(),
            "--accel",
            "tcg",
            "--shutdown-timeout",
            "1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("network.bridge: \"br0,helper=") && err.contains("is not an interface name"),
        "{err}"
    );
    assert!(!marker.exists(), "the helper ran");
    assert!(!dir.path().join("state/br").exists(), "nothing was created");
}

/// A disk path that `qemu-img` would read as an option is refused when the spec is
/// read; an absolute path whose file name begins with `-` is created as that file by
/// the real `qemu-img` (passthru ends its options with `--`).
#[test]
fn disk_paths_are_never_options_of_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("specs")).unwrap();
    let spec = dir.path().join("specs/dash.toml");
    let write = |path: &str| {
        std::fs::write(
            &spec,
            format!(
                "name = \"dash\"\nmemory = \"128M\"\ncpus = 1\nnetwork = \"none\"\n\n\
                 [[disks]]\npath = {path:?}\nsize = \"16M\"\n\n[firmware]\nuefi = false\n"
            ),
        )
        .unwrap();
    };
    write("-obacking_file=/etc/shadow");
    let out = passthru_cli(
        dir.path(),
        &[
            "vm",
            "define",
            spec.to_str().unwrap(),
            "--connect",
            "test:///default",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not an absolute path"), "{err}");
    // Made absolute, the same name is a file like any other.
    let disk = dir.path().join("-obacking_file=,etc,shadow");
    let mut s = VmSpec::parse(&std::fs::read_to_string(&spec).unwrap().replace(
        "\"-obacking_file=/etc/shadow\"",
        &format!("{:?}", disk.display().to_string()),
    ))
    .unwrap();
    s.disks[0].format = "qcow2".into();
    assert_eq!(
        passthru::apply::disk::create_missing(&s).unwrap(),
        vec![disk.clone()]
    );
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "--"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert!(info.get("backing-filename").is_none(), "{info}");
    let argv = passthru::vm::disk::create_argv(&s.disks[0], 16);
    assert_eq!(argv[argv.len() - 3], "--", "{argv:?}");
}
