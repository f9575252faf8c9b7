//! The journal of `enable` and `undo` on real files, against the ways it can be
//! defeated: files that are symlinks, a regenerator that fails during `undo`, edits
//! made after the plan, kills during the first journal write, planted temporary
//! names, a second passthru at the same time, and tools on an unsafe `PATH`.

#![allow(unsafe_code)] // this test calls libc itself (geteuid, …), outside the crate
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use support::{assert_same, snapshot, Fixture};

fn plan(root: &Path, named: &str) -> passthru::plan::enable::EnablePlan {
    let host = passthru::host::root::HostRoot::new(root);
    let snapshot = passthru::host::snapshot::HostSnapshot::gather(
        &host,
        passthru::host::snapshot::Needs::ENABLE,
    )
    .unwrap();
    let request = passthru::plan::enable::EnableRequest {
        named: vec![named.parse().unwrap()],
        overrides: passthru::plan::bind::Overrides::default(),
    };
    passthru::plan::enable::plan(&snapshot, &request).unwrap()
}

fn applier(root: &Path) -> passthru::apply::Applier {
    passthru::apply::Applier::new(
        passthru::host::root::HostRoot::new(root),
        std::time::Duration::from_secs(10),
        env!("CARGO_BIN_EXE_passthru").into(),
    )
}

const MODULES: &str = "etc/initramfs-tools/modules";

/// Turns `rel` into a relative symlink to `rel.real` (the file moves there).
fn make_link(root: &Path, rel: &str) -> PathBuf {
    let path = root.join(rel);
    let real = path.with_file_name(format!(
        "{}.real",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::rename(&path, &real).unwrap();
    symlink(real.file_name().unwrap(), &path).unwrap();
    real
}

/// With `/etc/initramfs-tools/modules` a symlink, `enable` edits the file it leads
/// to and leaves the link; `undo` restores that file (bytes and its own odd mode)
/// and the link stays a link, not a 0777 regular file.
#[test]
fn undo_through_a_symlink_restores_the_target_and_keeps_the_link() {
    let f = Fixture::new("debian-grub");
    let real = make_link(f.root(), MODULES);
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(f.root());
    let p = plan(f.root(), "01:00.0");
    assert!(p.files.iter().any(|c| c.path == Path::new(MODULES)));
    let a = applier(f.root());
    a.apply_files(&p).unwrap();
    let link = f.root().join(MODULES);
    assert!(
        link.symlink_metadata().unwrap().is_symlink(),
        "enable kept the link"
    );
    assert!(std::fs::read_to_string(&real).unwrap().contains("vfio_pci"));
    assert_eq!(real.metadata().unwrap().mode() & 0o7777, 0o640);
    a.roll_back().unwrap();
    assert_same(&snapshot(f.root()), &before, "after undo");
}

/// A link leading to a file another user owns is refused before anything changes.
#[test]
fn a_link_to_a_file_of_another_user_is_refused() {
    let f = Fixture::new("debian-grub");
    let real = make_link(f.root(), MODULES);
    std::os::unix::fs::chown(&real, Some(4242), Some(4242)).unwrap();
    let before = snapshot(f.root());
    let p = plan(f.root(), "01:00.0");
    let err = applier(f.root()).apply_files(&p).unwrap_err().to_string();
    assert!(
        err.contains("/etc/initramfs-tools/modules") && err.contains("uid 4242"),
        "{err}"
    );
    assert_same(&snapshot(f.root()), &before, "after the refusal");
}

/// A regenerator that fails during `undo` leaves the journal, marked, so the next
/// `undo` regenerates again (instead of "nothing to undo" with the VFIO setup still
/// in the initramfs); it restores nothing twice and finishes cleanly.
#[test]
fn undo_keeps_the_journal_until_every_regenerator_succeeded() {
    let f = Fixture::new("debian-grub");
    let outside = tempfile::tempdir().unwrap();
    let runs = outside.path().join("runs");
    let fail = outside.path().join("fail");
    let script = outside.path().join("regenerate");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> {}\nif [ -e {} ]; then exit 1; fi\n",
            runs.display(),
            fail.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(f.root());
    let mut p = plan(f.root(), "01:00.0");
    p.enabled.regenerate = vec![passthru::plan::enable::PlannedCommand {
        argv: vec![script.display().to_string()],
        why: "regenerate the boot files".into(),
    }];
    let a = applier(f.root());
    a.apply_files(&p).unwrap();
    std::fs::write(&fail, "").unwrap();
    let mut progress = |_: &str| {};
    assert!(a.undo(&mut progress).is_err(), "the regenerator failed");
    assert!(
        a.journal().unwrap().is_some(),
        "the journal is kept until the regenerators succeeded"
    );
    std::fs::remove_file(&fail).unwrap();
    assert!(
        a.undo(&mut progress).unwrap(),
        "the second undo has work to do"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    assert!(a.journal().unwrap().is_none());
    assert!(
        !a.undo(&mut progress).unwrap(),
        "then nothing is left to undo"
    );
    assert_same(&snapshot(f.root()), &before, "after the second undo");
}

/// An edit made to a planned file after the plan was made (while `enable` waited
/// at its prompt) stops the apply before anything changes, naming the file.
#[test]
fn an_edit_made_after_the_plan_stops_the_apply() {
    let f = Fixture::new("debian-grub");
    let p = plan(f.root(), "01:00.0");
    let modules = f.root().join(MODULES);
    let mut text = std::fs::read_to_string(&modules).unwrap();
    text.push_str("# added by hand while enable waited\n");
    std::fs::write(&modules, &text).unwrap();
    let before = snapshot(f.root());
    let a = applier(f.root());
    let err = a.apply_files(&p).unwrap_err().to_string();
    assert!(err.contains("/etc/initramfs-tools/modules"), "{err}");
    assert!(err.contains("changed since the plan"), "{err}");
    assert_same(&snapshot(f.root()), &before, "nothing changed");
    let mut progress = |_: &str| {};
    assert!(a.enable(&p, &mut progress).is_err());
    assert_same(
        &snapshot(f.root()),
        &before,
        "nothing changed by enable either",
    );
}

/// A kill during the very first journal write leaves the journal directory with a
/// temporary file and no manifest: `undo` removes it (nothing else had changed).
#[test]
fn a_kill_during_the_first_journal_write_is_cleaned_up() {
    let f = Fixture::new("debian-grub");
    let before = snapshot(f.root());
    let dir = f.root().join(passthru::apply::journal::JOURNAL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".journal.json.tmp"), "{\"entries\": [").unwrap();
    std::fs::write(dir.join(".journal.json.tmp.00c0ffee00c0ffee"), "{").unwrap();
    let mut progress = |_: &str| {};
    assert!(!applier(f.root()).undo(&mut progress).unwrap());
    assert_same(&snapshot(f.root()), &before, "after undo");
}

/// A name planted where the temporary file of a write goes (a symlink to a file
/// root must not write) is never written through.
#[test]
fn a_planted_temporary_name_is_not_written_through() {
    let f = Fixture::new("debian-grub");
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep me\n").unwrap();
    let tmp = passthru::apply::journal::temp_path(Path::new(MODULES));
    symlink(&victim, f.root().join(&tmp)).unwrap();
    let p = plan(f.root(), "01:00.0");
    applier(f.root()).apply_files(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(std::fs::read_to_string(f.root().join(MODULES))
        .unwrap()
        .contains("vfio_pci"));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A second passthru that would change the host, while another holds the host lock,
/// waits, then refuses (exit 1) naming the holder's pid and command.
#[test]
fn a_second_command_is_refused_naming_the_holder() {
    if !is_root() {
        eprintln!("SKIPPED a_second_command_is_refused_naming_the_holder: needs root");
        return;
    }
    let root = passthru::host::root::HostRoot::system();
    let _held = passthru::apply::lock::HostLock::acquire(
        &root,
        "passthru enable 01:00.0 (held by the journal test)",
        std::time::Duration::from_secs(120),
        &mut |_| {},
    )
    .unwrap();
    let specs = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_passthru"))
        .args(["vm", "rm", "nosuchvm"])
        .env_remove("PASSTHRU_ROOT")
        .env("PASSTHRU_VM_DIR", specs.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let pid = std::process::id().to_string();
    assert!(
        stderr.contains(&format!("process {pid}"))
            && stderr.contains("passthru enable 01:00.0 (held by the journal test)")
            && stderr.contains("another passthru is changing this host"),
        "{stderr}"
    );
    assert!(started.elapsed() >= passthru::apply::lock::WAIT);
}

/// As root, a tool is not looked up in a directory others can write, however early
/// it comes on `PATH`.
#[test]
fn tools_are_not_run_from_a_world_writable_path_entry() {
    if !is_root() {
        eprintln!("SKIPPED tools_are_not_run_from_a_world_writable_path_entry: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = dir.path().join("ran");
    // `vm stop` asks libvirt through `virsh`, looked up on PATH.
    let fake = evil.join("virsh");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        evil.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_passthru"))
        .args(["vm", "stop", "passthru-no-such-domain", "--timeout", "1"])
        .env_remove("PASSTHRU_ROOT")
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        !marker.exists(),
        "passthru ran {} as root: {out:?}",
        fake.display()
    );
}
