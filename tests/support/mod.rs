//! Test environment for the CLI tests: fixture hosts and a runner for the binary.
//!
//! A fixture host lives in `tests/fixtures/<name>/`:
//! - `root/`: files copied as they are (`proc/cpuinfo`, `proc/cmdline`, `dev/kmsg`,
//!   `boot/config-*`, `lib/modules/*/modules.*`, `etc/…`, `sys/module/*/initstate`, …);
//! - `pci.tsv`: one PCI function a line, from which the sysfs device tree is built
//!   the way the kernel lays it out (device directories nested under their bridges,
//!   relative `sys/bus/pci/devices` links, `driver` and `iommu_group` links, the
//!   `sys/kernel/iommu_groups` tree);
//! - `base`: the name of a fixture this one extends (built first, then overlaid);
//! - `links.tsv`: further symlinks (`sys/dev/block/8:2`, `sys/class/net/eno1`), whose
//!   target directories are created.
//!
//! Trees are built into a temporary directory for each test, so tests can also change
//! them.

#![allow(dead_code, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A materialised fixture host.
pub struct Fixture {
    dir: Dir,
}

enum Dir {
    Temp(tempfile::TempDir),
    Borrowed(PathBuf),
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// `../` repeated once per directory level of `dir` below the tree root.
fn up_to_root(dir: &Path) -> String {
    "../".repeat(dir.components().count())
}

impl Fixture {
    /// Builds fixture `name` into a fresh temporary directory.
    pub fn new(name: &str) -> Self {
        let src = fixtures_dir().join(name);
        assert!(src.is_dir(), "no fixture {}", src.display());
        // A fixture may extend another (`base` names it): the base is built first, and
        // this fixture's files are laid over it.
        let f = match std::fs::read_to_string(src.join("base")) {
            Ok(base) => Self::new(base.trim()),
            Err(_) => Self {
                dir: Dir::Temp(tempfile::tempdir().unwrap()),
            },
        };
        if src.join("root").is_dir() {
            copy_tree(&src.join("root"), f.root());
        }
        if let Ok(pci) = std::fs::read_to_string(src.join("pci.tsv")) {
            f.build_pci(&pci);
        }
        if let Ok(links) = std::fs::read_to_string(src.join("links.tsv")) {
            for line in links
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                let (link, target) = line.split_once("->").expect("links.tsv: LINK -> TARGET");
                f.link(link.trim(), target.trim());
            }
        }
        f
    }

    /// An existing tree (e.g. an extracted report), not deleted afterwards.
    pub fn from_dir(dir: &Path) -> Self {
        Self {
            dir: Dir::Borrowed(dir.to_path_buf()),
        }
    }

    /// The root directory (for `--root`).
    pub fn root(&self) -> &Path {
        match &self.dir {
            Dir::Temp(t) => t.path(),
            Dir::Borrowed(p) => p,
        }
    }

    /// Writes a file below the root, creating directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Creates a symlink `rel` → `target` and the target directory (resolved from the
    /// link's directory) when it does not exist.
    pub fn link(&self, rel: &str, target: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let resolved = if let Some(abs) = target.strip_prefix('/') {
            self.root().join(abs)
        } else {
            p.parent().unwrap().join(target)
        };
        if !resolved.exists() {
            std::fs::create_dir_all(&resolved).unwrap();
        }
        symlink(target, &p).unwrap();
    }

    /// Builds the PCI sysfs tree from `pci.tsv` lines:
    /// `address ids subsys class rev driver group bridges boot_vga reset numa`, where
    /// `ids`/`subsys` are `vvvv:dddd`, `bridges` is a comma list of parent bridges
    /// (outermost first) and `-` means absent; `reset` is the `reset_method` content
    /// with commas for spaces, `-` for no file and `none` for an empty file.
    fn build_pci(&self, table: &str) {
        for line in table
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let c: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(c.len(), 11, "pci.tsv needs 11 columns: {line}");
            let (addr, ids, subsys, class, rev, driver, group, bridges, boot_vga, reset, numa) = (
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10],
            );
            // The root bus is the bus of the outermost bridge (or of the device).
            let top = if bridges == "-" {
                addr
            } else {
                bridges.split(',').next().unwrap()
            };
            let mut path = format!("sys/devices/pci{}", &top[..7]);
            if bridges != "-" {
                for b in bridges.split(',') {
                    write!(path, "/{b}").unwrap();
                }
            }
            write!(path, "/{addr}").unwrap();
            let dev = PathBuf::from(&path);
            let (v, d) = ids.split_once(':').unwrap();
            self.write(&format!("{path}/vendor"), &format!("0x{v}\n"));
            self.write(&format!("{path}/device"), &format!("0x{d}\n"));
            if subsys != "-" {
                let (sv, sd) = subsys.split_once(':').unwrap();
                self.write(&format!("{path}/subsystem_vendor"), &format!("0x{sv}\n"));
                self.write(&format!("{path}/subsystem_device"), &format!("0x{sd}\n"));
            }
            self.write(&format!("{path}/class"), &format!("0x{class}\n"));
            self.write(&format!("{path}/revision"), &format!("0x{rev}\n"));
            if numa != "-" {
                self.write(&format!("{path}/numa_node"), &format!("{numa}\n"));
            }
            if boot_vga != "-" {
                self.write(&format!("{path}/boot_vga"), &format!("{boot_vga}\n"));
            }
            match reset {
                "-" => {}
                "none" => self.write(&format!("{path}/reset_method"), ""),
                m => {
                    self.write(
                        &format!("{path}/reset_method"),
                        &format!("{}\n", m.replace(',', " ")),
                    );
                    self.write(&format!("{path}/reset"), "");
                }
            }
            let up = up_to_root(dev.strip_prefix("sys").unwrap());
            if driver != "-" {
                self.link(
                    &format!("{path}/driver"),
                    &format!("{up}bus/pci/drivers/{driver}"),
                );
            }
            if group != "-" {
                self.link(
                    &format!("{path}/iommu_group"),
                    &format!("{up}kernel/iommu_groups/{group}"),
                );
                self.link(
                    &format!("sys/kernel/iommu_groups/{group}/devices/{addr}"),
                    &format!("../../../../{}", dev.strip_prefix("sys").unwrap().display()),
                );
            }
            self.link(
                &format!("sys/bus/pci/devices/{addr}"),
                &format!("../../../{}", dev.strip_prefix("sys").unwrap().display()),
            );
        }
    }
}

/// Runs the passthru binary.
pub fn passthru(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passthru"))
        .args(args)
        .env_remove("PASSTHRU_ROOT")
        .env("NO_COLOR", "1")
        .output()
        .expect("run passthru")
}

/// Runs `passthru <args> --root <fixture> --json` and parses its output.
pub fn json(fixture: &Fixture, args: &[&str]) -> (i32, serde_json::Value) {
    let root = fixture.root().to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--json", "--root", root]);
    let out = passthru(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "passthru {all:?} did not print JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// The finding with `id` in a `check --json` document.
pub fn finding<'a>(check: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    check["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id} in {check:#}"))
}

/// A tree as [`snapshot`] records it: for each path (a link's with ` -> link`), its
/// bytes (or link target), mode and owner.
pub type Tree = std::collections::BTreeMap<String, (Vec<u8>, u32, u32)>;

/// Every regular file, directory and symlink under `dir`: bytes (or link target),
/// mode, and owner.
pub fn snapshot(dir: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if meta.is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                out.insert(
                    rel + " -> link",
                    (t.display().to_string().into_bytes(), 0, meta.uid()),
                );
            } else if meta.is_dir() {
                out.insert(rel + "/", (Vec::new(), meta.mode(), meta.uid()));
                stack.push(e.path());
            } else {
                out.insert(
                    rel,
                    (std::fs::read(e.path()).unwrap(), meta.mode(), meta.uid()),
                );
            }
        }
    }
    out
}

pub fn assert_same(a: &Tree, b: &Tree, ctx: &str) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<&&String> = keys.iter().filter(|k| a.get(**k) != b.get(**k)).collect();
    assert!(differ.is_empty(), "{ctx}: these paths differ: {differ:?}");
}

/// The JSON document on `out`'s standard output, which must have every object's keys
/// in alphabetical order, at every level, as schema 1 of `report`, `undo`, `verify`
/// and `vm list` prints them: the bytes printed are those of a sorted map.
pub fn sorted_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // serde_json's map is sorted: printing the parsed value sorts every object.
    let sorted = serde_json::to_string_pretty(&value).unwrap() + "\n";
    assert_eq!(text, sorted, "the keys are not in alphabetical order");
    value
}
