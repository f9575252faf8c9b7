//! `passthru enable` plans on realistic host layouts (`--dry-run`: nothing is
//! written), compared with golden files in `tests/golden/enable/`, plus the journal's
//! properties on real files. `PASSTHRU_BLESS=1 cargo test --test enable_plan` rewrites
//! the golden files after a deliberate change; review their diff.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::{assert_same, json, passthru, snapshot, Fixture};

/// The plan without what depends on the fixture's temporary path.
fn plan_of(f: &Fixture, args: &[&str]) -> Value {
    let mut all = vec!["enable", "--dry-run"];
    all.extend(args);
    let (code, doc) = json(f, &all);
    assert_eq!(code, 0, "{doc:#}");
    doc["plan"].clone()
}

fn golden(name: &str, plan: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/enable")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(plan).unwrap() + "\n";
    if std::env::var_os("PASSTHRU_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PASSTHRU_BLESS=1 writes it)", path.display()));
    if text != want {
        let diff = similar::TextDiff::from_lines(&want, &text)
            .unified_diff()
            .header("golden", "now")
            .to_string();
        panic!("{name}: the plan differs from {}:\n{diff}", path.display());
    }
}

fn file<'a>(plan: &'a Value, path: &str) -> &'a Value {
    plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the plan: {plan:#}"))
}

fn after<'a>(plan: &'a Value, path: &str) -> &'a str {
    file(plan, path)["after"].as_str().unwrap()
}

fn argvs(plan: &Value) -> Vec<String> {
    plan["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn debian_grub_and_initramfs_tools() {
    let f = Fixture::new("debian-grub");
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(plan["boot"]["initramfs"], "initramfs_tools");
    assert_eq!(
        plan["enabled"]["devices"],
        serde_json::json!(["0000:01:00.0", "0000:01:00.1"])
    );
    assert_eq!(
        plan["enabled"]["ids"],
        serde_json::json!(["10de:228b", "10de:2484"])
    );
    // intel_iommu=on is in /etc/default/grub already: only iommu=pt is added, in a drop-in
    let dropin = after(&plan, "etc/default/grub.d/passthru.cfg");
    assert!(
        dropin.contains("\nGRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt\"\n"),
        "{dropin}"
    );
    // the way back: the same entries again from GRUB's 10_linux, without VFIO
    let way_back = file(&plan, "etc/grub.d/11_passthru_without_vfio");
    assert_eq!(way_back["mode"], 0o755);
    let script = way_back["after"].as_str().unwrap();
    assert!(
        script.contains("    for a in intel_iommu=on iommu=pt; do\n"),
        "{script}"
    );
    assert!(script.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"$(strip \"$GRUB_CMDLINE_LINUX_DEFAULT\") module_blacklist=vfio_pci\"\n"), "{script}");
    assert!(
        script.ends_with("exec \"$(dirname \"$0\")/10_linux\"\n"),
        "{script}"
    );
    assert!(plan["way_back"]
        .as_str()
        .unwrap()
        .contains("(without VFIO)"));
    assert!(plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["path"] != "etc/default/grub"));
    let modprobe = after(&plan, "etc/modprobe.d/passthru-vfio.conf");
    assert!(
        modprobe.contains("options vfio-pci ids=10de:228b,10de:2484\n"),
        "{modprobe}"
    );
    assert!(
        modprobe.contains("softdep nvidia pre: vfio-pci\nsoftdep snd_hda_intel pre: vfio-pci\n"),
        "{modprobe}"
    );
    assert!(
        after(&plan, "etc/initramfs-tools/modules").ends_with("vfio\nvfio_iommu_type1\nvfio_pci\n")
    );
    assert_eq!(
        argvs(&plan),
        ["update-initramfs -u -k all", "/usr/sbin/update-grub"]
    );
    assert_eq!(
        plan["inspections"][0]["argv"],
        serde_json::json!(["lsinitramfs", "--", "/boot/initrd.img-6.1.0-13-amd64"])
    );
    golden("debian-grub", &plan);

    // the text preview is a unified diff of every file, then the commands
    let out = passthru(&[
        "enable",
        "01:00.0",
        "--dry-run",
        "--root",
        f.root().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--- /dev/null\n+++ b/etc/modprobe.d/passthru-vfio.conf\n"),
        "{text}"
    );
    assert!(
        text.contains("--- a/etc/initramfs-tools/modules\n+++ b/etc/initramfs-tools/modules\n"),
        "{text}"
    );
    assert!(text.contains("+vfio_pci\n"), "{text}");
    assert!(
        text.contains("  update-initramfs -u -k all    # rebuild the initramfs"),
        "{text}"
    );
}

#[test]
fn ubuntu_with_vfio_pci_built_in_and_the_iommu_off() {
    let f = Fixture::new("ubuntu-builtin");
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        plan["enabled"]["kernel_args"],
        serde_json::json!([
            "intel_iommu=on",
            "iommu=pt",
            "vfio-pci.ids=10de:228b,10de:2484"
        ])
    );
    // built in: no modprobe.d, no initramfs rebuild
    let paths: Vec<&str> = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "etc/default/grub.d/passthru.cfg",
            "etc/grub.d/11_passthru_without_vfio",
            "var/lib/passthru/enabled.json"
        ]
    );
    assert_eq!(argvs(&plan), ["/usr/sbin/update-grub"]);
    golden("ubuntu-builtin", &plan);
}

#[test]
fn fedora_grubby_and_dracut() {
    let f = Fixture::new("fedora-grubby-dracut");
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(plan["boot"]["bootloader"]["kind"], "grubby");
    assert_eq!(plan["boot"]["initramfs"], "dracut");
    // AMD-Vi is on by default: only iommu=pt
    assert_eq!(
        plan["enabled"]["kernel_args"],
        serde_json::json!(["iommu=pt"])
    );
    let dracut = after(&plan, "etc/dracut.conf.d/passthru-vfio.conf");
    assert!(
        dracut.contains("force_drivers+=\" vfio vfio_iommu_type1 vfio_pci \"\n"),
        "{dracut}"
    );
    assert!(
        dracut.contains("install_items+=\" /etc/modprobe.d/passthru-vfio.conf \"\n"),
        "{dracut}"
    );
    // the older kernel's entry has iommu=pt already, the current one not: grubby adds it
    assert_eq!(
        argvs(&plan),
        [
            "dracut -f --regenerate-all",
            "grubby --update-kernel=ALL --args=iommu=pt"
        ]
    );
    // grubby rewrites the BLS entries: saved before, restored by undo
    let snaps: Vec<&str> = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        snaps.contains(
            &"boot/loader/entries/8f2b6c1d4e3a4b5c9d7e0f1a2b3c4d5e-6.6.9-200.fc39.x86_64.conf"
        ),
        "{snaps:?}"
    );
    assert!(snaps.contains(&"etc/default/grub"));
    assert_eq!(
        plan["inspections"][0]["argv"],
        serde_json::json!([
            "lsinitrd",
            "--",
            "/boot/initramfs-6.6.9-200.fc39.x86_64.img"
        ])
    );
    // the way back: a BLS copy of each entry, written once grubby is done with them
    let copy = file(
        &plan,
        "boot/loader/entries/8f2b6c1d4e3a4b5c9d7e0f1a2b3c4d5e-6.5.12-300.fc39.x86_64-without-vfio.conf",
    );
    assert_eq!(copy["after_commands"], true);
    let text = copy["after"].as_str().unwrap();
    assert!(
        text.starts_with(
            "title Fedora Linux (6.5.12-300.fc39.x86_64) 39 (Workstation Edition) (without VFIO)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\noptions root=UUID=8a0e4f51-7c2d-4b8e-a3f6-2d9c1b7e5f10 ro rhgb quiet module_blacklist=vfio_pci\n"),
        "{text}"
    );
    assert!(plan["way_back"]
        .as_str()
        .unwrap()
        .contains("(without VFIO)"));
    golden("fedora-grubby-dracut", &plan);
    // Debian's dracut names the image like initramfs-tools did, beside the kernel
    let debian = Fixture::new("fedora-grubby-dracut");
    debian.write("boot/initrd.img-6.6.9-200.fc39.x86_64", "");
    let plan = plan_of(&debian, &["01:00.0"]);
    assert_eq!(
        plan["inspections"][0]["argv"],
        serde_json::json!(["lsinitrd", "--", "/boot/initrd.img-6.6.9-200.fc39.x86_64"])
    );

    // every entry has it: grubby has nothing to add, and no command runs for it
    let entry = "boot/loader/entries/8f2b6c1d4e3a4b5c9d7e0f1a2b3c4d5e-6.6.9-200.fc39.x86_64.conf";
    let text = std::fs::read_to_string(f.root().join(entry)).unwrap();
    f.write(
        entry,
        &text.replace("ro rhgb quiet\n", "ro rhgb quiet iommu=pt\n"),
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(argvs(&plan), ["dracut -f --regenerate-all"]);
    assert_eq!(
        plan["enabled"]["kernel_args"],
        serde_json::json!(["iommu=pt"])
    );
    // a contradicting argument in an entry is removed, nothing is added
    f.write(
        entry,
        &text.replace("ro rhgb quiet\n", "ro rhgb quiet iommu=pt amd_iommu=off\n"),
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        argvs(&plan),
        [
            "dracut -f --regenerate-all",
            "grubby --update-kernel=ALL --remove-args=amd_iommu=off"
        ]
    );
}

#[test]
fn proxmox_kernel_cmdline() {
    let f = Fixture::new("proxmox-kernel-cmdline");
    let plan = plan_of(&f, &["02:00.0"]);
    assert_eq!(
        after(&plan, "etc/kernel/cmdline"),
        "root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet intel_iommu=on iommu=pt\n"
    );
    assert_eq!(
        argvs(&plan),
        [
            "update-initramfs -u -k all",
            "/usr/sbin/proxmox-boot-tool refresh"
        ]
    );
    golden("proxmox-kernel-cmdline", &plan);
}

#[test]
fn arch_systemd_boot_and_mkinitcpio() {
    let f = Fixture::new("arch-systemd-boot");
    let plan = plan_of(&f, &["01:00.0"]);
    for entry in [
        "boot/loader/entries/arch.conf",
        "boot/loader/entries/arch-fallback.conf",
    ] {
        let text = after(&plan, entry);
        assert!(
            text.lines()
                .any(|l| l.starts_with("options ") && l.ends_with(" intel_iommu=on iommu=pt")),
            "{entry}: {text}"
        );
    }
    assert!(after(&plan, "etc/mkinitcpio.conf.d/passthru-vfio.conf")
        .contains("MODULES+=(vfio vfio_iommu_type1 vfio_pci)\n"));
    assert_eq!(argvs(&plan), ["mkinitcpio -P"]);
    golden("arch-systemd-boot", &plan);
}

#[test]
fn arch_booster_and_systemd_boot() {
    let f = Fixture::new("arch-booster");
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(plan["boot"]["initramfs"], "booster");
    // the user's force-loaded keyboard modules stay, after vfio; every other line too
    let yaml = after(&plan, "etc/booster.yaml");
    let before = file(&plan, "etc/booster.yaml")["before"].as_str().unwrap();
    assert_eq!(
        yaml,
        before.replace(
            "\nmodules_force_load: usbhid,hid_generic\n",
            "\nmodules_force_load: vfio_pci,vfio,vfio_iommu_type1,usbhid,hid_generic\n"
        )
    );
    // booster bakes the modprobe.d options into the image
    assert!(after(&plan, "etc/modprobe.d/passthru-vfio.conf")
        .contains("options vfio-pci ids=10de:228b,10de:2484\n"));
    assert_eq!(argvs(&plan), ["/usr/lib/booster/regenerate_images"]);
    assert_eq!(
        plan["inspections"][0]["argv"],
        serde_json::json!(["booster", "ls", "--", "/boot/booster-linux.img"])
    );
    assert_eq!(
        plan["inspections"][1]["must_contain"],
        serde_json::json!(["ids=10de:228b,10de:2484"])
    );
    assert_eq!(plan["manual"], serde_json::json!([]));
    assert!(after(&plan, "boot/loader/entries/arch.conf")
        .ends_with(" rw quiet intel_iommu=on iommu=pt\n"));
    golden("arch-booster", &plan);
}

#[test]
fn popos_kernelstub() {
    let f = Fixture::new("popos-kernelstub");
    let plan = plan_of(&f, &["02:00.0"]);
    assert_eq!(
        argvs(&plan),
        [
            "update-initramfs -u -k all",
            // iommu=pt is among the user's kernel_options already
            "kernelstub --add-options=intel_iommu=on"
        ]
    );
    assert_eq!(
        plan["enabled"]["kernel_args"],
        serde_json::json!(["intel_iommu=on", "iommu=pt"])
    );
    golden("popos-kernelstub", &plan);
}

#[test]
fn refusals_and_bad_input() {
    let f = Fixture::new("debian-grub");
    // the boot display and the chipset are refused at boot as at runtime
    let (code, doc) = json(&f, &["enable", "00:02.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert_eq!(doc["refusals"][0]["override_flag"], "--allow-boot-display");
    let (code, _) = json(&f, &["enable", "00:1f.3", "--dry-run"]);
    assert_eq!(code, 1);
    // applying needs the live host and root
    let out = passthru(&[
        "enable",
        "01:00.0",
        "--yes",
        "--root",
        f.root().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--root works only with --dry-run"));
    // no IOMMU in the firmware: nothing to enable
    let vm = Fixture::new("vm-no-vmx");
    let (code, doc) = json(&vm, &["enable", "00:03.0", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(
        doc["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("describes no IOMMU"),
        "{doc:#}"
    );
    // verify without enable says so
    let out = passthru(&["verify", "--root", f.root().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("nothing is enabled"));
}

fn files_plan(root: &std::path::Path, named: &str) -> passthru::plan::enable::EnablePlan {
    files_plan_of(root, &[named])
}

fn files_plan_of(root: &std::path::Path, named: &[&str]) -> passthru::plan::enable::EnablePlan {
    let host = passthru::host::root::HostRoot::new(root);
    let snapshot = passthru::host::snapshot::HostSnapshot::gather(
        &host,
        passthru::host::snapshot::Needs::ENABLE,
    )
    .unwrap();
    let named: Vec<passthru::host::pci::PciAddress> =
        named.iter().map(|n| n.parse().unwrap()).collect();
    let request = passthru::plan::enable::EnableRequest {
        named,
        overrides: passthru::plan::bind::Overrides::default(),
    };
    passthru::plan::enable::plan(&snapshot, &request).unwrap()
}

/// Plans `enable` for `named` and writes its files (the commands are not run).
fn enable_files(f: &Fixture, named: &[&str]) -> passthru::plan::enable::EnablePlan {
    let plan = files_plan_of(f.root(), named);
    applier(f.root()).apply_files(&plan).unwrap();
    plan
}

fn applier(root: &std::path::Path) -> passthru::apply::Applier {
    passthru::apply::Applier::new(
        passthru::host::root::HostRoot::new(root),
        std::time::Duration::from_secs(10),
        env!("CARGO_BIN_EXE_passthru").into(),
    )
}

#[test]
fn enable_then_undo_restores_every_file_byte_for_byte() {
    for (fixture, device) in [
        ("debian-grub", "01:00.0"),
        ("fedora-grubby-dracut", "01:00.0"),
        ("arch-systemd-boot", "01:00.0"),
        ("proxmox-kernel-cmdline", "02:00.0"),
        ("arch-grub", "01:00.0"),
        ("identical-gpus", "01:00.0"),
        ("arch-booster", "01:00.0"),
    ] {
        let f = Fixture::new(fixture);
        // An odd mode on a file passthru edits must survive too.
        let modules = f.root().join("etc/initramfs-tools/modules");
        if modules.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&modules, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let before = snapshot(f.root());
        let plan = files_plan(f.root(), device);
        assert!(!plan.files.is_empty());
        let a = applier(f.root());
        a.apply_files(&plan).unwrap();
        let enabled = snapshot(f.root());
        assert_ne!(enabled, before, "{fixture}: enable changed nothing");
        if modules.exists() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&modules).unwrap().permissions().mode() & 0o777,
                0o600,
                "{fixture}: mode kept"
            );
        }
        // enable twice equals enable once: the second plan is empty
        let again = files_plan(f.root(), device);
        assert!(
            again.files.is_empty(),
            "{fixture}: second plan changes {:#?}",
            again.files
        );
        a.apply_files(&again).unwrap();
        assert_same(&snapshot(f.root()), &enabled, fixture);
        let regenerate = a.roll_back().unwrap();
        assert_eq!(regenerate, plan.enabled.regenerate, "{fixture}");
        assert_same(
            &snapshot(f.root()),
            &before,
            &format!("{fixture}: after undo"),
        );
    }
}

/// After the reboot vfio-pci holds the devices from boot, so their host drivers are
/// no longer visible: running `enable` again must still plan the same files (the
/// softdeps and, for devices bound by address, the hooks on those drivers).
#[test]
fn enable_again_after_the_reboot_changes_nothing() {
    for (fixture, device) in [("debian-grub", "01:00.0"), ("identical-gpus", "01:00.0")] {
        let f = Fixture::new(fixture);
        let plan = enable_files(&f, &[device]);
        for a in &plan.enabled.devices {
            let link = f.root().join(format!("sys/bus/pci/devices/{a}/driver"));
            let target = std::fs::read_link(&link).unwrap();
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(target.with_file_name("vfio-pci"), &link).unwrap();
        }
        let again = files_plan(f.root(), device);
        assert!(
            again.files.is_empty(),
            "{fixture}: after the reboot the plan changes {:#?}",
            again.files
        );
    }
}

#[test]
fn a_kill_at_any_step_leaves_undo_able_to_restore() {
    let f = Fixture::new("debian-grub");
    let before = snapshot(f.root());
    let plan = files_plan(f.root(), "01:00.0");
    let paths: Vec<std::path::PathBuf> = plan.files.iter().map(|c| c.path.clone()).collect();
    // Stop after k journal records (before any write), or after the journal and k writes.
    for stage in 0..=(2 * paths.len()) {
        let a = applier(f.root());
        let journaled = stage.min(paths.len());
        a.journal_files(&paths[..journaled], &plan.enabled.regenerate)
            .unwrap();
        for c in plan.files.iter().take(stage.saturating_sub(paths.len())) {
            a.write_config(&c.path, c.after.as_deref().unwrap().as_bytes())
                .unwrap();
        }
        // A kill inside a write, between the temporary file and the rename.
        if let Some(c) = plan.files.get(stage.saturating_sub(paths.len())) {
            if stage >= paths.len() && f.root().join(&c.path).parent().unwrap().is_dir() {
                let tmp = passthru::apply::journal::temp_path(&c.path);
                std::fs::write(f.root().join(tmp), "half written").unwrap();
            }
        }
        a.roll_back().unwrap();
        assert_same(
            &snapshot(f.root()),
            &before,
            &format!("stopped at stage {stage}"),
        );
    }
}

#[test]
fn identical_devices_are_bound_by_address() {
    let f = Fixture::new("identical-gpus");
    let plan = plan_of(&f, &["01:00.0"]);
    // ids= would take the second card too: no ids, but the host drivers of both
    // functions are hooked, so loading them claims the passed card by address first
    assert_eq!(plan["enabled"]["ids"], serde_json::json!([]));
    let modprobe = after(&plan, "etc/modprobe.d/passthru-vfio.conf");
    assert!(!modprobe.contains("options vfio-pci ids="), "{modprobe}");
    assert!(!modprobe.contains("install vfio-pci"), "{modprobe}");
    for m in ["nvidia", "snd_hda_intel"] {
        assert!(
            modprobe.contains(&format!(
                "install {m} /usr/local/sbin/passthru-vfio-override {m} $CMDLINE_OPTS\n"
            )),
            "{modprobe}"
        );
        // kmod ignores the install command of a module with a softdep
        assert!(!modprobe.contains(&format!("softdep {m} ")), "{modprobe}");
    }
    let script = file(&plan, "usr/local/sbin/passthru-vfio-override");
    assert_eq!(script["mode"], 0o755);
    let text = script["after"].as_str().unwrap();
    assert!(text.starts_with("#!/bin/sh\n"));
    assert!(
        text.contains("for dev in 0000:01:00.0 0000:01:00.1; do"),
        "{text}"
    );
    assert!(!text.contains("0000:03:00.0"));
    assert!(
        text.ends_with("exec /sbin/modprobe --ignore-install \"$module\" \"$@\"\n"),
        "{text}"
    );
    let hook = file(&plan, "etc/initramfs-tools/hooks/passthru-vfio");
    assert_eq!(hook["mode"], 0o755);
    assert!(hook["after"]
        .as_str()
        .unwrap()
        .contains("copy_file script /usr/local/sbin/passthru-vfio-override"));
    assert!(plan["inspections"][0]["must_contain"]
        .to_string()
        .contains("usr/local/sbin/passthru-vfio-override"));
    // the modules are recorded: after the reboot vfio-pci holds both functions
    assert_eq!(
        plan["enabled"]["host_modules"],
        serde_json::json!({"0000:01:00.0": "nvidia", "0000:01:00.1": "snd_hda_intel"})
    );
    golden("identical-gpus", &plan);
}

/// Ubuntu's kernels have vfio-pci built in, where kmod runs no `install` command for
/// it: the hooks on the host drivers work the same, with no vfio modules to load.
#[test]
fn identical_devices_with_vfio_pci_built_in() {
    let g = Fixture::new("identical-gpus");
    g.write(
        "lib/modules/6.1.0-13-amd64/modules.builtin",
        "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/vfio_iommu_type1.ko\n\
         kernel/drivers/vfio/pci/vfio-pci-core.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\n",
    );
    let plan = plan_of(&g, &["01:00.0"]);
    let modprobe = after(&plan, "etc/modprobe.d/passthru-vfio.conf");
    assert!(
        modprobe.contains(
            "install nvidia /usr/local/sbin/passthru-vfio-override nvidia $CMDLINE_OPTS\n"
        ),
        "{modprobe}"
    );
    // a built-in vfio-pci reads neither options nor softdeps
    assert!(!modprobe.contains("softdep"), "{modprobe}");
    assert!(!modprobe.contains("options"), "{modprobe}");
    assert!(
        !plan["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "etc/initramfs-tools/modules"),
        "no vfio modules to add: {plan:#}"
    );
    file(&plan, "usr/local/sbin/passthru-vfio-override");
    file(&plan, "etc/initramfs-tools/hooks/passthru-vfio");
    assert_eq!(
        argvs(&plan)[0],
        "update-initramfs -u -k all",
        "the hook must reach the initramfs"
    );
    let must = plan["inspections"][0]["must_contain"].to_string();
    assert!(
        must.contains("passthru-vfio-override") && !must.contains("vfio-pci.ko"),
        "{must}"
    );
    let args = plan["enabled"]["kernel_args"].to_string();
    assert!(!args.contains("vfio-pci.ids"), "{args}");
    golden("identical-gpus-builtin", &plan);
}

/// What cannot be hooked is refused, saying why: a built-in host driver, and a
/// module with an `install` command of someone else.
#[test]
fn identical_devices_that_cannot_be_hooked() {
    let g = Fixture::new("identical-gpus");
    g.write(
        "lib/modprobe.d/nvidia-graphics-drivers.conf",
        "alias nvidia nvidia-current\ninstall nvidia modprobe -i nvidia-current $CMDLINE_OPTS\n",
    );
    let (code, doc) = json(&g, &["enable", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{doc:#}");
    let reasons = doc["refusals"].to_string();
    assert!(
        reasons.contains("/lib/modprobe.d/nvidia-graphics-drivers.conf already has an `install` command for nvidia"),
        "{doc:#}"
    );
    // snd_hda_intel could be hooked, but the card is refused as a whole
    assert_eq!(doc["refusals"].as_array().unwrap().len(), 1, "{doc:#}");

    // a softdep from a wiki guide would make kmod skip the hook: refused, with the fix
    let s = Fixture::new("identical-gpus");
    s.write(
        "etc/modprobe.d/vfio.conf",
        "options vfio-pci ids=10de:2484,10de:228b\nsoftdep nvidia pre: vfio-pci\n",
    );
    let (code, doc) = json(&s, &["enable", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{doc:#}");
    let reason = doc["refusals"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("/etc/modprobe.d/vfio.conf gives nvidia a `softdep`")
            && reason.contains("remove that line"),
        "{doc:#}"
    );

    let h = Fixture::new("identical-gpus");
    h.write(
        "lib/modules/6.1.0-13-amd64/modules.builtin",
        "kernel/sound/pci/hda/snd-hda-intel.ko\n",
    );
    let (code, doc) = json(&h, &["enable", "01:00.0", "--dry-run"]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        doc["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("its driver snd_hda_intel is built into the kernel"),
        "{doc:#}"
    );
}

#[test]
fn arch_grub_and_mkinitcpio_without_drop_ins() {
    let f = Fixture::new("arch-grub");
    let plan = plan_of(&f, &["01:00.0"]);
    // no /etc/default/grub.d: the main file is edited in place
    let grub = after(&plan, "etc/default/grub");
    assert!(
        grub.contains(
            "\nGRUB_CMDLINE_LINUX_DEFAULT=\"loglevel=3 quiet intel_iommu=on iommu=pt\"\n"
        ),
        "{grub}"
    );
    assert!(grub.contains("\nGRUB_CMDLINE_LINUX=\"\"\n"), "{grub}");
    // no /etc/mkinitcpio.conf.d: vfio goes first in MODULES, before the NVIDIA modules
    let conf = after(&plan, "etc/mkinitcpio.conf");
    assert!(conf.contains("\nMODULES=(vfio vfio_iommu_type1 vfio_pci nvidia nvidia_modeset nvidia_uvm nvidia_drm)\n"), "{conf}");
    assert!(
        conf.contains("\nFILES=(/etc/modprobe.d/passthru-vfio.conf)\n"),
        "{conf}"
    );
    assert_eq!(
        argvs(&plan),
        [
            "mkinitcpio -P",
            "/usr/bin/grub-mkconfig -o /boot/grub/grub.cfg"
        ]
    );
    golden("arch-grub", &plan);
}

/// Disabling the device bound by address takes its hook away: the install lines,
/// the script and the initramfs-tools hook that copies it.
#[test]
fn disable_the_device_bound_by_address() {
    let f = Fixture::new("identical-gpus");
    enable_files(&f, &["01:00.0", "02:00.0"]);
    assert!(f
        .root()
        .join("usr/local/sbin/passthru-vfio-override")
        .exists());

    // before the reboot nvidia still holds the card: verify names the hook
    let (code, doc) = json(&f, &["verify"]);
    assert_eq!(code, 1, "{doc:#}");
    let item = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["what"] == "0000:01:00.0 is bound to vfio-pci")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        item["cause"]
            .as_str()
            .unwrap()
            .contains("nvidia took it before passthru's hook could claim it by address"),
        "{item:#}"
    );

    let (code, doc) = json(&f, &["disable", "01:00.0", "--dry-run"]);
    assert_eq!(code, 0, "{doc:#}");
    let plan = &doc["plan"];
    let modprobe = after(plan, "etc/modprobe.d/passthru-vfio.conf");
    assert!(
        modprobe.contains("options vfio-pci ids=144d:a808") && !modprobe.contains("install "),
        "{modprobe}"
    );
    for gone in [
        "usr/local/sbin/passthru-vfio-override",
        "etc/initramfs-tools/hooks/passthru-vfio",
    ] {
        assert_eq!(file(plan, gone)["after"], Value::Null, "{gone}: {plan:#}");
    }
}

/// A host driver built into the kernel binds its devices before a vfio-pci module can
/// load: the plan says that those need a runtime bind after each boot.
#[test]
fn a_built_in_host_driver_is_a_step_by_hand() {
    // the fixture's kernel has xhci-hcd built in
    let f = Fixture::new("debian-grub");
    let plan = plan_of(&f, &["00:14.0"]);
    let manual = plan["manual"].to_string();
    assert!(
        manual.contains("xhci_hcd is built into this kernel")
            && manual.contains("passthru bind 0000:00:14.0"),
        "{plan:#}"
    );
    // the NVMe drive's driver is a module: nothing by hand
    let plan = plan_of(&f, &["02:00.0"]);
    assert_eq!(plan["manual"], serde_json::json!([]), "{plan:#}");
}

#[test]
fn disable_removes_one_device_and_keeps_the_others() {
    let f = Fixture::new("debian-grub");
    let both = enable_files(&f, &["01:00.0", "02:00.0"]);
    assert!(after(
        &serde_json::to_value(&both).unwrap(),
        "etc/modprobe.d/passthru-vfio.conf"
    )
    .contains("144d:a808"));

    let (code, doc) = json(&f, &["disable", "02:00.0", "--dry-run"]);
    assert_eq!(code, 0, "{doc:#}");
    let plan = &doc["plan"];
    assert_eq!(
        plan["enabled"]["devices"],
        serde_json::json!(["0000:01:00.0", "0000:01:00.1"])
    );
    let modprobe = after(plan, "etc/modprobe.d/passthru-vfio.conf");
    assert!(
        !modprobe.contains("144d:a808") && !modprobe.contains("softdep nvme "),
        "{modprobe}"
    );
    // a device that is not enabled is an error, not a silent success
    let out = passthru(&[
        "disable",
        "00:17.0",
        "--dry-run",
        "--root",
        f.root().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("is not among the enabled devices"));
    // enabling again with one more device keeps the first
    let (_, again) = json(&f, &["enable", "00:14.0", "--dry-run"]);
    let devices = again["plan"]["enabled"]["devices"].to_string();
    assert!(
        devices.contains("0000:01:00.0")
            && devices.contains("0000:02:00.0")
            && devices.contains("0000:00:14.0"),
        "{devices}"
    );
}

/// The plan's steps by hand, as one text.
fn manual(plan: &Value) -> String {
    plan["manual"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_file(plan: &Value, path: &str) -> bool {
    plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == path)
}

/// `/etc/default/grub` is a shell file: a quoted value with escaped quotes, a
/// trailing comment, `export`, a repeated assignment (the last one counts) and a
/// continuation line all come out as the shell reads them, and every other byte of
/// the file stays.
#[test]
fn grub_shell_quoting_is_kept() {
    let f = Fixture::new("arch-grub");
    let grub = "GRUB_DEFAULT=0\n\
        GRUB_CMDLINE_LINUX_DEFAULT=\"loglevel=3\"\n\
        # the one that counts:\n\
        export GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" splash\" # for the touchpad\n\
        GRUB_CMDLINE_LINUX=\"rd.luks=1 \\\n  intel_iommu=off\"\n\
        GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Arch`\n";
    f.write("etc/default/grub", grub);
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        after(&plan, "etc/default/grub"),
        "GRUB_DEFAULT=0\n\
        GRUB_CMDLINE_LINUX_DEFAULT=\"loglevel=3\"\n\
        # the one that counts:\n\
        export GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" splash intel_iommu=on iommu=pt\" # for the touchpad\n\
        GRUB_CMDLINE_LINUX=\"rd.luks=1\"\n\
        GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Arch`\n"
    );
    assert_eq!(manual(&plan), "", "{plan:#}");
    // sh reads the result as intended
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}\nprintf '%s|%s' \"$GRUB_CMDLINE_LINUX_DEFAULT\" \"$GRUB_CMDLINE_LINUX\"",
            after(&plan, "etc/default/grub")
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "quiet acpi_osi=\"Windows 2015\" splash intel_iommu=on iommu=pt|rd.luks=1"
    );
}

/// A value passthru cannot know (it refers to a variable, or runs a command), or a
/// file that runs commands, is left as it is: the arguments are a step by hand.
#[test]
fn grub_values_passthru_cannot_know_are_steps_by_hand() {
    for (grub, why) in [
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT quiet\"\n",
            "refers to a variable",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet $(cat /etc/extra-args)\"\n",
            "runs a command",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nif [ -e /etc/x ]; then\n  GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nfi\n",
            "line 2: runs a command",
        ),
        ("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\n", "never closed"),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows\"\n",
            "never closed",
        ),
    ] {
        let f = Fixture::new("arch-grub");
        f.write("etc/default/grub", grub);
        let plan = plan_of(&f, &["01:00.0"]);
        assert!(!has_file(&plan, "etc/default/grub"), "{grub}: {plan:#}");
        let manual = manual(&plan);
        assert!(
            manual.contains("passthru leaves /etc/default/grub as it is")
                && manual.contains(why)
                && manual.contains("Add `intel_iommu=on iommu=pt` to GRUB_CMDLINE_LINUX_DEFAULT, make sure neither it nor GRUB_CMDLINE_LINUX has any of `iommu=off intel_iommu=off`")
                && manual.contains("/usr/bin/grub-mkconfig -o /boot/grub/grub.cfg"),
            "{grub}: {manual}"
        );
    }
}

/// With GRUB's drop-in directory, a main file passthru cannot read still gets the
/// drop-in, and the user is told what to check.
#[test]
fn grub_drop_in_beside_a_main_file_passthru_cannot_read() {
    let f = Fixture::new("debian-grub");
    f.write(
        "etc/default/grub",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet $(cat /etc/extra)\"\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert!(!has_file(&plan, "etc/default/grub"));
    assert!(after(&plan, "etc/default/grub.d/passthru.cfg").contains(
        "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=on iommu=pt\"\n"
    ));
    assert!(
        manual(&plan).contains("cannot read the kernel arguments /etc/default/grub sets"),
        "{plan:#}"
    );
}

/// mkinitcpio's arrays may span lines and hold comments; vfio goes first, the
/// modprobe.d file last, and the rest stays as written. A MODULES string (not an
/// array) is left alone.
#[test]
fn mkinitcpio_arrays_over_several_lines() {
    let f = Fixture::new("arch-grub");
    f.write(
        "etc/mkinitcpio.conf",
        "MODULES=(\n    nvidia  # the GPU\n    nvidia_drm\n)\nFILES=(\n    /etc/crypt.key\n)\nHOOKS=(base udev)\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        after(&plan, "etc/mkinitcpio.conf"),
        "MODULES=(\n    vfio vfio_iommu_type1 vfio_pci nvidia  # the GPU\n    nvidia_drm\n)\nFILES=(\n    /etc/crypt.key /etc/modprobe.d/passthru-vfio.conf\n)\nHOOKS=(base udev)\n"
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{}\necho \"${{MODULES[*]}}|${{FILES[*]}}\"",
            after(&plan, "etc/mkinitcpio.conf")
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "vfio vfio_iommu_type1 vfio_pci nvidia nvidia_drm|/etc/crypt.key /etc/modprobe.d/passthru-vfio.conf\n"
    );

    let f = Fixture::new("arch-grub");
    f.write(
        "etc/mkinitcpio.conf",
        "MODULES=\"nvidia nvidia_drm\"\nHOOKS=\"base udev\"\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert!(!has_file(&plan, "etc/mkinitcpio.conf"), "{plan:#}");
    // the image is the user's to make right: nothing looks into it
    assert_eq!(plan["inspections"], serde_json::json!([]), "{plan:#}");
    let manual = manual(&plan);
    assert!(
        manual
            .contains("passthru leaves /etc/mkinitcpio.conf as it is: line 1: MODULES is a string")
            && manual.contains("Put vfio vfio_iommu_type1 vfio_pci first in MODULES, add /etc/modprobe.d/passthru-vfio.conf to FILES, then run `mkinitcpio -P`"),
        "{manual}"
    );
}

/// systemd-boot joins every `options` line of an entry: a contradiction on the
/// second line goes too, and what is there already is not added again.
#[test]
fn loader_entries_with_several_options_lines() {
    let f = Fixture::new("arch-systemd-boot");
    f.write(
        "boot/loader/entries/arch.conf",
        "title   Arch Linux\nlinux   /vmlinuz-linux\ninitrd  /initramfs-linux.img\noptions root=PARTUUID=5b7d rw\noptions\tiommu=pt intel_iommu=off quiet\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        after(&plan, "boot/loader/entries/arch.conf"),
        "title   Arch Linux\nlinux   /vmlinuz-linux\ninitrd  /initramfs-linux.img\noptions root=PARTUUID=5b7d rw\noptions\tiommu=pt quiet intel_iommu=on\n"
    );
    // the way back takes passthru's arguments off every line
    assert_eq!(
        after(&plan, "boot/loader/entries/arch-without-vfio.conf"),
        "title Arch Linux (without VFIO)\nlinux   /vmlinuz-linux\ninitrd  /initramfs-linux.img\noptions root=PARTUUID=5b7d rw\noptions\tintel_iommu=off quiet module_blacklist=vfio_pci\n"
    );
}

/// A file that is not UTF-8 is never edited through lossy text: it stays as it is,
/// and its edit is a step by hand.
#[test]
fn files_that_are_not_utf8_are_left_alone() {
    // a Latin-1 comment in initramfs-tools' modules, a Latin-1 title in an entry
    let f = Fixture::new("debian-grub");
    std::fs::write(
        f.root().join("etc/initramfs-tools/modules"),
        b"# m\xf3dulos\nraid1\n",
    )
    .unwrap();
    let plan = plan_of(&f, &["01:00.0"]);
    assert!(!has_file(&plan, "etc/initramfs-tools/modules"), "{plan:#}");
    assert_eq!(plan["inspections"], serde_json::json!([]), "{plan:#}");
    let m = manual(&plan);
    assert!(
        m.contains("passthru leaves /etc/initramfs-tools/modules as it is: it is not UTF-8 text (byte 3 is not)")
            && m.contains("Add vfio, vfio_iommu_type1, vfio_pci to it"),
        "{m}"
    );

    let f = Fixture::new("arch-systemd-boot");
    std::fs::write(
        f.root().join("boot/loader/entries/arch.conf"),
        b"title   Arch Linux (d\xe9faut)\nlinux   /vmlinuz-linux\noptions root=PARTUUID=5b7d rw\n",
    )
    .unwrap();
    let plan = plan_of(&f, &["01:00.0"]);
    assert!(!has_file(&plan, "boot/loader/entries/arch.conf"));
    assert!(!has_file(
        &plan,
        "boot/loader/entries/arch-without-vfio.conf"
    ));
    assert!(has_file(&plan, "boot/loader/entries/arch-fallback.conf"));
    let m = manual(&plan);
    assert!(
        m.contains("passthru leaves /boot/loader/entries/arch.conf as it is: it is not UTF-8")
            && m.contains("Add `intel_iommu=on iommu=pt` to its `options` line")
            && m.contains("passthru makes no copy of /boot/loader/entries/arch.conf"),
        "{m}"
    );
}

/// booster.yaml: a value YAML reads over several lines, or as a list, is left alone.
#[test]
fn booster_values_passthru_cannot_read_are_left_alone() {
    for yaml in [
        "modules_force_load: usbhid,\n  hid_generic\n",
        "modules_force_load: [usbhid, hid_generic]\n",
        "modules_force_load: |\n  usbhid\n",
        "modules_force_load: \"usb\\x68id\"\n",
    ] {
        let f = Fixture::new("arch-booster");
        f.write("etc/booster.yaml", yaml);
        let plan = plan_of(&f, &["01:00.0"]);
        assert!(!has_file(&plan, "etc/booster.yaml"), "{yaml}: {plan:#}");
        assert!(
            manual(&plan)
                .contains("passthru leaves /etc/booster.yaml as it is: line 1: modules_force_load")
                && manual(&plan).contains("Add vfio_pci,vfio,vfio_iommu_type1 to the front"),
            "{yaml}: {plan:#}"
        );
    }
}

/// /etc/kernel/cmdline: a quoted value stays one argument; a file of several lines is
/// left alone.
#[test]
fn kernel_cmdline_quoting_and_lines() {
    let f = Fixture::new("proxmox-kernel-cmdline");
    f.write(
        "etc/kernel/cmdline",
        "root=ZFS=rpool/ROOT/pve-1 boot=zfs acpi_osi=\"Windows 2015\" quiet\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert_eq!(
        after(&plan, "etc/kernel/cmdline"),
        "root=ZFS=rpool/ROOT/pve-1 boot=zfs acpi_osi=\"Windows 2015\" quiet intel_iommu=on iommu=pt\n"
    );
    f.write(
        "etc/kernel/cmdline",
        "root=ZFS=rpool/ROOT/pve-1 boot=zfs\nquiet\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    assert!(!has_file(&plan, "etc/kernel/cmdline"), "{plan:#}");
    assert!(
        manual(&plan).contains("passthru leaves /etc/kernel/cmdline as it is: it has 2 lines"),
        "{plan:#}"
    );
}

/// A driver's name comes from a link in sysfs: one that is no module name never
/// reaches a modprobe.d line (a newline would add an `install` command of its own).
#[test]
fn hostile_driver_names_are_refused() {
    // A link's name has no `/`; the rest is possible.
    for name in ["x\ninstall vfio-pci evil", "a b"] {
        let f = Fixture::new("debian-grub");
        let dev = f.root().join("sys/bus/pci/devices/0000:01:00.0");
        let link = std::fs::canonicalize(&dev).unwrap().join("driver");
        std::fs::remove_file(&link).unwrap();
        let drivers = f.root().join("sys/bus/pci/drivers");
        std::fs::create_dir_all(drivers.join(name)).unwrap();
        let up = "../".repeat(
            link.parent()
                .unwrap()
                .strip_prefix(std::fs::canonicalize(f.root()).unwrap())
                .unwrap()
                .components()
                .count(),
        );
        std::os::unix::fs::symlink(format!("{up}sys/bus/pci/drivers/{name}"), &link).unwrap();
        let (code, doc) = json(&f, &["enable", "--dry-run", "01:00.0"]);
        assert_eq!(code, 1, "{name:?}: {doc:#}");
        let text = doc.to_string();
        assert!(
            text.contains("which is not a kernel module's name"),
            "{name:?}: {doc:#}"
        );
        assert!(doc["plan"].is_null(), "nothing is planned: {doc:#}");
    }
    // The module a previous `enable` recorded (read back from enabled.json) is
    // checked the same way.
    let f = Fixture::new("debian-grub");
    let link = std::fs::canonicalize(f.root().join("sys/bus/pci/devices/0000:01:00.0"))
        .unwrap()
        .join("driver");
    std::fs::remove_file(&link).unwrap();
    f.write(
        "var/lib/passthru/enabled.json",
        &serde_json::json!({
            "devices": ["0000:01:00.0", "0000:01:00.1"],
            "named": ["0000:01:00.0"],
            "ids": ["10de:2484", "10de:228b"],
            "kernel_args": ["intel_iommu=on", "iommu=pt"],
            "regenerate": [],
            "host_modules": {"0000:01:00.0": "x\ninstall vfio-pci /tmp/evil"}
        })
        .to_string(),
    );
    let (code, doc) = json(&f, &["enable", "--dry-run", "01:00.0"]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        doc.to_string()
            .contains("which is not a kernel module's name"),
        "{doc:#}"
    );
}

/// GRUB reads the drop-ins in `/etc/default/grub.d` after the main file: one that
/// contradicts the VFIO arguments, or one read after passthru's that sets the
/// arguments anew, is a step by hand.
#[test]
fn other_grub_drop_ins_are_checked() {
    let f = Fixture::new("debian-grub");
    f.write(
        "etc/default/grub.d/50-nvidia-drm.cfg",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT nvidia-drm.modeset=1 intel_iommu=off\"\n",
    );
    f.write(
        "etc/default/grub.d/zz-quiet.cfg",
        "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\n",
    );
    f.write(
        "etc/default/grub.d/60-odd.cfg",
        "if true; then GRUB_CMDLINE_LINUX=\"x\"; fi\n",
    );
    // Ubuntu's: it only tests the value
    f.write(
        "etc/default/grub.d/init-select.cfg",
        "if [ \"${GRUB_CMDLINE_LINUX_DEFAULT#*init=}\" != \"${GRUB_CMDLINE_LINUX_DEFAULT}\" ]; then\n  :\nfi\n",
    );
    let plan = plan_of(&f, &["01:00.0"]);
    let m = manual(&plan);
    assert!(
        m.contains("/etc/default/grub.d/50-nvidia-drm.cfg (line 1) sets `intel_iommu=off` in GRUB_CMDLINE_LINUX_DEFAULT"),
        "{m}"
    );
    assert!(
        m.contains("/etc/default/grub.d/zz-quiet.cfg (line 1) is read after /etc/default/grub.d/passthru.cfg and sets GRUB_CMDLINE_LINUX_DEFAULT anew"),
        "{m}"
    );
    assert!(
        m.contains("passthru cannot read /etc/default/grub.d/60-odd.cfg (line 1: runs a command"),
        "{m}"
    );
    assert!(!m.contains("init-select.cfg"), "{m}");
    // the drop-ins are another package's: none is edited
    assert!(!has_file(&plan, "etc/default/grub.d/50-nvidia-drm.cfg"));
}

/// kernelstub's configuration is JSON: when passthru cannot read its options, the
/// options are added all the same and what they might contradict is a step by hand.
#[test]
fn kernelstub_configuration_passthru_cannot_read() {
    let f = Fixture::new("popos-kernelstub");
    f.write(
        "etc/kernelstub/configuration",
        "{\"user\": {\"kernel_options\": [\"quiet\", \"intel_iommu=off\",]}}\n",
    );
    let plan = plan_of(&f, &["02:00.0"]);
    assert_eq!(
        argvs(&plan),
        [
            "update-initramfs -u -k all",
            "kernelstub --add-options=intel_iommu=on iommu=pt"
        ]
    );
    assert!(
        manual(&plan).contains("passthru cannot read `user.kernel_options` in /etc/kernelstub/configuration (JSON): make sure they have none of `iommu=off intel_iommu=off`"),
        "{plan:#}"
    );
}

/// `verify --json` and `undo --dry-run --json`: the keys in alphabetical order at
/// every level, as schema 1 prints them; `undo` lists the journaled files, or nothing.
#[test]
fn verify_and_undo_json_documents() {
    let f = Fixture::new("debian-grub");
    let root = f.root().to_str().unwrap();
    let out = passthru(&["undo", "--dry-run", "--json", "--root", root]);
    assert_eq!(out.status.code(), Some(0));
    let doc = support::sorted_json(&out);
    assert_eq!(
        doc,
        serde_json::json!({"action": "undo", "restored": [], "schema_version": 1})
    );

    enable_files(&f, &["01:00.0"]);
    let out = passthru(&["verify", "--json", "--root", root]);
    assert_eq!(out.status.code(), Some(1));
    let doc = support::sorted_json(&out);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["enabled"]["named"], serde_json::json!(["0000:01:00.0"]));
    assert!(doc["items"].as_array().unwrap().len() > 2, "{doc:#}");

    let out = passthru(&["undo", "--dry-run", "--json", "--root", root]);
    assert_eq!(out.status.code(), Some(0));
    let doc = support::sorted_json(&out);
    assert_eq!(doc["action"], "undo");
    assert_eq!(doc["dry_run"], true);
    let journal: Vec<&str> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        journal.contains(&"etc/modprobe.d/passthru-vfio.conf"),
        "{doc:#}"
    );
}
