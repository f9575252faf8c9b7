//! VM renderers: libvirt XML and QEMU argv from one plan, compared with golden files
//! in `tests/golden/vm/` (`PASSTHRU_BLESS=1` rewrites them), and every XML checked
//! by libvirt's own `virt-xml-validate`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use passthru::cpu::{CpuTopology, LogicalCpu};
use passthru::vm::pinning::{plan, CpuRequest};
use passthru::vm::render::{libvirt_xml, qemu_argv, Ovmf, VmPlan};
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
    let vm = VmPlan {
        spec: &spec,
        pinning: &pinning,
        devices: spec.devices.clone(),
        amd,
        ovmf: Some(Ovmf {
            code: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".into(),
            vars_template: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd".into(),
        }),
        state_dir: PathBuf::from("/var/lib/passthru/vms").join(&spec.name),
    };
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
        xml.contains("<hugepages/>")
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
