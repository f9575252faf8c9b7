//! CLI tests: the real binary on fixture hosts (see `tests/support`).

mod support;

use support::{finding, json, passthru, Fixture};

#[test]
fn intel_desktop_list_groups_and_verdicts() {
    let f = Fixture::new("intel-desktop");
    let (code, list) = json(&f, &["list"]);
    assert_eq!(code, 0);
    assert_eq!(list["iommu_groups"], true);
    let groups = list["groups"].as_array().unwrap();
    let numbers: Vec<u64> = groups.iter().map(|g| g["group"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7]);
    let g1 = &groups[1];
    assert_eq!(g1["passable"], true, "{g1:#}");
    assert_eq!(g1["units"][0]["role"], "gpu_with_audio");
    assert_eq!(g1["units"][0]["functions"], serde_json::json!(["0000:01:00.0", "0000:01:00.1"]));
    let gpu = &g1["devices"][1];
    assert_eq!(gpu["address"], "0000:01:00.0");
    assert_eq!(gpu["driver"], "nvidia");
    assert_eq!(gpu["vendor_name"], "NVIDIA Corporation");
    assert_eq!(gpu["reset_methods"], serde_json::json!(["bus"]));
    assert_eq!(gpu["parents"], serde_json::json!(["0000:00:01.0"]));
    // the iGPU is the boot display
    assert_eq!(groups[2]["devices"][0]["roles"], serde_json::json!(["boot_display"]));
    // the USB controller and the chipset's shared SRAM are functions of one slot
    assert_eq!(groups[3]["passable"], true);
    assert_eq!(groups[3]["units"][0]["role"], "multifunction");
    // the chipset group holds the NIC carrying the default route
    let g6 = &groups[6];
    assert_eq!(g6["passable"], false);
    let reasons = g6["reasons"].to_string();
    assert!(reasons.contains("0000:00:1f.6") && reasons.contains("default network route"), "{reasons}");
    // the SATA controller holds the root filesystem
    assert_eq!(groups[4]["devices"][0]["roles"], serde_json::json!(["root_disk"]));
    assert!(groups[4]["notes"].to_string().contains("root filesystem"));
}

#[test]
fn intel_desktop_check_passes() {
    let f = Fixture::new("intel-desktop");
    let (code, check) = json(&f, &["check"]);
    assert_eq!(code, 0, "{check:#}");
    assert_eq!(check["host"]["cpu_vendor"], "intel");
    assert_eq!(check["host"]["iommu"]["state"], "on");
    assert_eq!(check["host"]["iommu"]["kind"], "intel");
    assert_eq!(check["host"]["iommu"]["groups"], 8);
    assert_eq!(check["host"]["interrupt_remapping"], "on");
    assert_eq!(check["host"]["vfio_pci"], "module");
    for id in [
        "cpu.virtualization",
        "iommu.firmware",
        "iommu.kernel",
        "iommu.cmdline",
        "iommu.passthrough_mode",
        "iommu.interrupt_remapping",
        "iommu.acs_override",
        "kernel.vfio",
        "vfio.modules",
    ] {
        assert_eq!(finding(&check, id)["status"], "ok", "{id}: {:#}", finding(&check, id));
    }
    let ir = finding(&check, "iommu.interrupt_remapping");
    assert_eq!(ir["evidence"][0]["text"], "[    0.179660] DMAR-IR: Enabled IRQ remapping in x2apic mode");
    let cmd = finding(&check, "iommu.cmdline");
    assert_eq!(cmd["summary"], "intel_iommu=on is set");
    assert!(cmd["evidence"][0]["text"].as_str().unwrap().contains("intel_iommu=on iommu=pt"));
}

#[test]
fn text_output_explains_failures_with_evidence_and_remedy() {
    let f = Fixture::new("intel-desktop");
    // Take the kernel argument away: the IOMMU stays off.
    f.write("proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=5d3a ro quiet\n");
    std::fs::remove_dir_all(f.root().join("sys/kernel/iommu_groups")).unwrap();
    let out = passthru(&["check", "--root", f.root().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FAIL  iommu.cmdline"), "{text}");
    assert!(text.contains("intel_iommu=on is missing"), "{text}");
    assert!(text.contains("evidence: /proc/cmdline: BOOT_IMAGE="), "{text}");
    assert!(text.contains("remedy:   Add `intel_iommu=on iommu=pt`"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let out = passthru(&["list", "--root", "/nonexistent/passthru-root"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--root /nonexistent/passthru-root: cannot open"), "{err}");

    let f = Fixture::new("intel-desktop");
    let out = passthru(&["list", "--group", "99", "--root", f.root().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("no IOMMU group 99"));

    let out = passthru(&["list", "--class", "toaster"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn list_filters_keep_whole_groups() {
    let f = Fixture::new("intel-desktop");
    let (_, gpus) = json(&f, &["list", "--gpu"]);
    let groups: Vec<u64> = gpus["groups"].as_array().unwrap().iter().map(|g| g["group"].as_u64().unwrap()).collect();
    assert_eq!(groups, [1, 2]);
    // the GPU's group is shown whole: root port, GPU and its audio function
    assert_eq!(gpus["groups"][0]["devices"].as_array().unwrap().len(), 3);
    let (_, nvme) = json(&f, &["list", "--class", "nvme"]);
    assert_eq!(nvme["groups"][0]["group"], 7);
    let (_, one) = json(&f, &["list", "--group", "3"]);
    assert_eq!(one["groups"].as_array().unwrap().len(), 1);
}

#[test]
fn text_list_shows_one_line_per_device() {
    let f = Fixture::new("intel-desktop");
    let out = passthru(&["list", "--root", f.root().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("IOMMU group 1: passable as a whole: a GPU with its audio function (0000:01:00)"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("   1  0000:01:00.0  VGA     NVIDIA GA104 [GeForce RTX 3070")
            && l.contains("[10de:2484]  driver=nvidia  reset=bus")),
        "{text}"
    );
    assert!(text.contains("driver=i915  reset=flr  boot-vga"), "{text}");
}
