//! `bind` / `unbind` decisions on fixture hosts (`--dry-run`: nothing is written).
//! The real binding runs in the testbed against the kernel's own vfio-pci.

#![allow(unsafe_code)] // this test calls libc itself (geteuid, …), outside the crate
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{json, passthru, Fixture};

fn steps(plan: &serde_json::Value) -> Vec<(String, String, String)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_string(),
                s["from"].as_str().unwrap_or("-").to_string(),
                s["to"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn refusal_flags(plan: &serde_json::Value) -> Vec<Option<String>> {
    plan["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["override_flag"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_gpu_moves_with_its_audio_function_and_bridges_stay() {
    let f = Fixture::new("intel-desktop");
    let (code, plan) = json(&f, &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["groups"], json!([1]));
    assert_eq!(
        steps(&plan),
        [
            ("0000:01:00.0".into(), "nvidia".into(), "vfio-pci".into()),
            (
                "0000:01:00.1".into(),
                "snd_hda_intel".into(),
                "vfio-pci".into()
            ),
        ]
    );
    // the same through group:1 and through a confirmed name
    let (_, by_group) = json(&f, &["bind", "group:1", "--dry-run"]);
    assert_eq!(steps(&by_group), steps(&plan));
    let (_, by_name) = json(&f, &["bind", "rtx 3070", "--dry-run"]);
    assert_eq!(steps(&by_name), steps(&plan));
    // text: device, current driver → new driver
    let out = passthru(&[
        "bind",
        "01:00.0",
        "--dry-run",
        "--root",
        f.root().to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("passthru would bind IOMMU group 1 to vfio-pci:"),
        "{text}"
    );
    assert!(text.contains("0000:01:00.0 VGA compatible controller NVIDIA Corporation GA104 [GeForce RTX 3070]  nvidia → vfio-pci"), "{text}");
    assert!(text.contains("(dry run: nothing was changed)"));
}

#[test]
fn a_group_with_host_devices_is_refused_unless_taken_whole() {
    let f = Fixture::new("amd-desktop-shared-group");
    let (code, plan) = json(&f, &["bind", "05:00.0", "--dry-run"]);
    assert_eq!(code, 1);
    let reasons = plan["refusals"].to_string();
    for other in ["0000:02:00.0", "0000:02:00.1", "0000:04:00.0"] {
        assert!(reasons.contains(other), "{other} not named: {reasons}");
    }
    assert!(refusal_flags(&plan)
        .iter()
        .all(|f| f.as_deref() == Some("--whole-group")));
    // taking the whole group still refuses the root disk's controller and the route NIC
    let (code, plan) = json(&f, &["bind", "05:00.0", "--dry-run", "--whole-group"]);
    assert_eq!(code, 1);
    let mut flags: Vec<String> = refusal_flags(&plan).into_iter().flatten().collect();
    flags.sort();
    assert_eq!(flags, ["--allow-default-route", "--allow-root-disk"]);
    let (code, plan) = json(
        &f,
        &[
            "bind",
            "05:00.0",
            "--dry-run",
            "--whole-group",
            "--allow-root-disk",
            "--allow-default-route",
        ],
    );
    assert_eq!(code, 0);
    let addrs: Vec<String> = steps(&plan).into_iter().map(|s| s.0).collect();
    assert_eq!(
        addrs,
        [
            "0000:02:00.0",
            "0000:02:00.1",
            "0000:04:00.0",
            "0000:05:00.0",
            "0000:05:00.1"
        ]
    );
}

#[test]
fn the_host_s_own_devices_are_refused_with_the_reason() {
    let f = Fixture::new("intel-desktop");
    // the boot display with fbcon on it
    let (code, plan) = json(&f, &["bind", "00:02.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert_eq!(
        refusal_flags(&plan),
        [Some("--allow-boot-display".to_string())]
    );
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("text console (fbcon)"));
    let (code, _) = json(
        &f,
        &["bind", "00:02.0", "--dry-run", "--allow-boot-display"],
    );
    assert_eq!(code, 0);
    // the root disk's controller
    let (code, plan) = json(&f, &["bind", "00:17.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("holds your root filesystem"));
    // the chipset: platform controller (no override) and the route NIC
    let (code, plan) = json(
        &f,
        &["bind", "00:1f.3", "--dry-run", "--allow-default-route"],
    );
    assert_eq!(code, 1);
    let reasons = plan["refusals"].to_string();
    assert!(
        reasons.contains("0000:00:1f.0") && reasons.contains("platform controller"),
        "{reasons}"
    );
    // a bridge is not a device to bind
    let (code, plan) = json(&f, &["bind", "00:01.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("is a PCI bridge"));
}

#[test]
fn processes_holding_the_device_are_named() {
    let f = Fixture::new("intel-desktop");
    f.write("proc/4242/comm", "Xorg\n");
    f.link("proc/4242/fd/12", "/dev/dri/card1");
    f.write("proc/777/comm", "pipewire\n");
    f.link("proc/777/fd/30", "/dev/snd/pcmC1D3p");
    f.link("proc/777/fd/31", "/dev/snd/controlC0");
    let (code, plan) = json(&f, &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1);
    let reasons: Vec<&str> = plan["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("Xorg (pid 4242) holds /dev/dri/card1"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("pipewire (pid 777) holds /dev/snd/pcmC1D3p"),
        "{reasons:?}"
    );
    assert!(
        !reasons[1].contains("controlC0"),
        "card 0 is the chipset's audio: {reasons:?}"
    );
    assert_eq!(
        plan["refusals"][0]["override_flag"],
        serde_json::Value::Null
    );
}

#[test]
fn bad_targets_and_unsafe_use_are_clear_errors() {
    let f = Fixture::new("intel-desktop");
    let root = f.root().to_str().unwrap();
    for (args, message) in [
        (
            vec!["bind", "01:00.9", "--dry-run"],
            "function '9' must be a digit from 0 to 7",
        ),
        (
            vec!["bind", "group:gpu", "--dry-run"],
            "'group:gpu' is not a group",
        ),
        (
            vec!["bind", "07:00.0", "--dry-run"],
            "there is no PCI device 0000:07:00.0",
        ),
        (
            vec!["bind", "group:99", "--dry-run"],
            "there is no IOMMU group 99",
        ),
        (
            vec!["bind", "Voodoo", "--dry-run"],
            "no device's name contains 'Voodoo'",
        ),
        (vec!["bind", "01:00.0"], "--root works only with --dry-run"),
        (vec!["bind", "RTX"], "--root works only with --dry-run"),
    ] {
        let mut all = args.clone();
        all.extend(["--root", root]);
        let out = passthru(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let out = passthru(&["bind"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nothing_can_be_bound_with_the_iommu_off() {
    let f = Fixture::new("intel-iommu-off");
    let (code, plan) = json(&f, &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("the IOMMU is off"));
}

/// Makes the fixture look as after `passthru bind 01:00.0`.
fn bound_gpu(f: &Fixture) {
    for (func, driver) in [("0", "nvidia"), ("1", "snd_hda_intel")] {
        let dir = format!("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.{func}");
        let link = f.root().join(&dir).join("driver");
        std::fs::remove_file(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        f.link(
            &format!("{dir}/driver"),
            "../../../../bus/pci/drivers/vfio-pci",
        );
        f.write(&format!("{dir}/driver_override"), "vfio-pci\n");
        f.write(
            &format!("run/passthru/bound/0000:01:00.{func}.json"),
            &format!(
                r#"{{"address":"0000:01:00.{func}","group":1,"original_driver":"{driver}","original_override":null,"since":1764025838}}"#
            ),
        );
    }
}

#[test]
fn unbind_gives_back_what_bind_took_and_list_shows_it() {
    let f = Fixture::new("intel-desktop");
    bound_gpu(&f);
    let (code, list) = json(&f, &["list", "--group", "1"]);
    assert_eq!(code, 0);
    assert_eq!(
        list["groups"][0]["devices"][1]["held_by_passthru_since"],
        "2025-11-24T23:10:38Z"
    );
    assert_eq!(
        list["groups"][0]["devices"][0]["held_by_passthru_since"],
        serde_json::Value::Null
    );
    // binding again is a no-op
    let (code, plan) = json(&f, &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["noop"] == true));
    // unbind --all and unbind of one function both restore the recorded drivers
    for args in [
        vec!["unbind", "--all", "--dry-run"],
        vec!["unbind", "01:00.1", "--dry-run"],
    ] {
        let (code, plan) = json(&f, &args);
        assert_eq!(code, 0, "{args:?}");
        assert_eq!(
            steps(&plan),
            [
                ("0000:01:00.0".into(), "vfio-pci".into(), "nvidia".into()),
                (
                    "0000:01:00.1".into(),
                    "vfio-pci".into(),
                    "snd_hda_intel".into()
                ),
            ],
            "{args:?}"
        );
    }
    // a VM holding the group's node blocks unbind, named
    f.write("proc/5150/comm", "qemu-system-x86\n");
    f.link("proc/5150/fd/40", "/dev/vfio/1");
    let (code, plan) = json(&f, &["unbind", "--all", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("qemu-system-x86 (pid 5150) holds /dev/vfio/1"));
    // … and so does one holding a function's own VFIO node (iommufd, kernel 6.6+)
    std::fs::remove_file(f.root().join("proc/5150/fd/40")).unwrap();
    // sys/class/vfio-dev/vfio0 is as deep as sys/bus/pci/devices: the same relative
    // target reaches the function's directory.
    let function = std::fs::read_link(f.root().join("sys/bus/pci/devices/0000:01:00.1")).unwrap();
    f.link(
        "sys/class/vfio-dev/vfio0/device",
        function.to_str().unwrap(),
    );
    f.link("proc/5150/fd/41", "/dev/vfio/devices/vfio0");
    let (code, plan) = json(&f, &["unbind", "--all", "--dry-run"]);
    assert_eq!(code, 1);
    let refusals = plan["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["address"], "0000:01:00.1", "{refusals:?}");
    assert!(refusals[0]["reason"]
        .as_str()
        .unwrap()
        .contains("qemu-system-x86 (pid 5150) holds /dev/vfio/devices/vfio0"));
}

#[test]
fn a_driver_write_that_never_returns_is_reported_not_waited_on() {
    use passthru::apply::{Applier, ApplyError};
    use passthru::host::root::HostRoot;
    use std::time::{Duration, Instant};
    // A FIFO without a reader blocks its writer in open(), as a driver stuck in
    // `unbind` blocks the write to its sysfs file.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("unbind");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let applier = Applier::new(
        HostRoot::new(dir.path()),
        Duration::from_secs(1),
        env!("CARGO_BIN_EXE_passthru").into(),
    );
    let started = Instant::now();
    let err = applier
        .write_sysfs(std::path::Path::new("unbind"), "0000:01:00.0")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
    assert!(matches!(err, ApplyError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("did not return within 1 s"),
        "{err}"
    );
    // A write that fails says what the kernel said.
    let err = applier
        .write_sysfs(
            std::path::Path::new("no/such/dir/driver_override"),
            "vfio-pci",
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
    // And a plain one works.
    std::fs::write(dir.path().join("driver_override"), "").unwrap();
    applier
        .write_sysfs(std::path::Path::new("driver_override"), "vfio-pci")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("driver_override")).unwrap(),
        "vfio-pci"
    );
}

/// `storage-in-use`: `/` on the SATA disk (00:17.0); on the NVMe drive at 02:00.0
/// `/home` (LVM over nvme0n1p1), swap (nvme0n1p2) and `/srv/media share`
/// (nvme0n1p3); the NVMe drive at 04:00.0 is a member of md127.
#[test]
fn disks_the_host_uses_are_refused_with_what_uses_them() {
    let f = Fixture::new("storage-in-use");
    let (code, plan) = json(&f, &["bind", "02:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(
        refusal_flags(&plan),
        [Some("--allow-disk-in-use".to_string())]
    );
    let reason = plan["refusals"][0]["reason"].as_str().unwrap();
    for what in [
        "holds a disk the host uses",
        "dm-0 (on nvme0n1) is mounted at /home",
        "nvme0n1p1 (on nvme0n1) is held by dm-0 (LVM vg0-home)",
        "nvme0n1p2 (on nvme0n1) is swap (/dev/nvme0n1p2)",
        "nvme0n1p3 (on nvme0n1) is mounted at /srv/media share",
    ] {
        assert!(reason.contains(what), "{what} not in: {reason}");
    }
    let (code, plan) = json(&f, &["bind", "04:00.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(plan["refusals"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("nvme1n1 is held by md127 (md RAID)"));
    // The override accepts it.
    let (code, plan) = json(
        &f,
        &[
            "bind",
            "02:00.0",
            "04:00.0",
            "--dry-run",
            "--allow-disk-in-use",
        ],
    );
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(
        steps(&plan),
        [
            ("0000:02:00.0".into(), "nvme".into(), "vfio-pci".into()),
            ("0000:04:00.0".into(), "nvme".into(), "vfio-pci".into()),
        ]
    );
    // The root disk keeps its own refusal and flag; its EFI partition is not
    // resolvable in this capture, so no disk-in-use refusal joins it.
    let (code, plan) = json(&f, &["bind", "00:17.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert_eq!(
        refusal_flags(&plan),
        [Some("--allow-root-disk".to_string())]
    );
    // Text: the refusal names the flag.
    let out = passthru(&[
        "bind",
        "02:00.0",
        "--dry-run",
        "--root",
        f.root().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--allow-disk-in-use") && text.contains("/home"),
        "{text}"
    );
}

#[test]
fn enable_refuses_disks_the_host_uses_too() {
    let f = Fixture::new("storage-in-use");
    let (code, doc) = json(&f, &["enable", "02:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{doc:#}");
    let refusals = doc["refusals"].to_string();
    assert!(
        refusals.contains("--allow-disk-in-use") && refusals.contains("mounted at /home"),
        "{doc:#}"
    );
    let (code, doc) = json(
        &f,
        &["enable", "02:00.0", "--dry-run", "--allow-disk-in-use"],
    );
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn a_data_disk_mounted_beside_the_root_disk_is_refused() {
    // amd-desktop-shared-group: `/` and `/boot` on the SATA disk, `/data` (xfs) on the
    // NVMe drive at 01:00.0.
    let f = Fixture::new("amd-desktop-shared-group");
    let (code, plan) = json(&f, &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(
        refusal_flags(&plan),
        [Some("--allow-disk-in-use".to_string())]
    );
    // (The capture has no `partition` file: the partition stands for its disk.)
    let reason = plan["refusals"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("nvme0n1p1 is mounted at /data"), "{reason}");
    let (code, _) = json(&f, &["bind", "01:00.0", "--dry-run", "--allow-disk-in-use"]);
    assert_eq!(code, 0);
}

#[test]
fn enable_with_the_iommu_off_refuses_a_disk_the_host_uses_too() {
    // The IOMMU is off, so enable plans by slot instead of by group: the NVMe drive
    // (02:00.0) with /home mounted from it is refused there as well.
    let f = Fixture::new("ubuntu-builtin");
    let part = "sys/devices/pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme0/nvme0n1/nvme0n1p1";
    f.write(&format!("{part}/partition"), "1\n");
    f.link("sys/dev/block/259:1", &format!("../../{}", &part[4..]));
    let mountinfo = std::fs::read_to_string(f.root().join("proc/self/mountinfo")).unwrap();
    f.write(
        "proc/self/mountinfo",
        &format!("{mountinfo}31 28 259:1 / /home rw,relatime shared:17 - ext4 /dev/nvme0n1p1 rw\n"),
    );
    let (code, doc) = json(&f, &["enable", "02:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{doc:#}");
    let refusals = doc["refusals"].to_string();
    assert!(
        refusals.contains("nvme0n1p1 (on nvme0n1) is mounted at /home")
            && refusals.contains("--allow-disk-in-use"),
        "{doc:#}"
    );
    let (code, doc) = json(
        &f,
        &["enable", "02:00.0", "--dry-run", "--allow-disk-in-use"],
    );
    assert_eq!(code, 0, "{doc:#}");
}
