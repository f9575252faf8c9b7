//! Binding at boot **by address**, for a device whose `vendor:device` ids another
//! device shares that stays with the host (two identical GPUs, one passed through).
//!
//! `vfio-pci ids=` (or `vfio-pci.ids=`) would take both, so such a device is claimed
//! with its `driver_override` instead, and that has to happen before its host driver
//! loads: a PCI driver binds every matching device the moment it registers. The one
//! step that always comes before a loadable driver registers is modprobe itself, so
//! passthru puts an `install` command on the **host driver's module**:
//!
//! ```text
//! install amdgpu /usr/local/sbin/passthru-vfio-override amdgpu $CMDLINE_OPTS
//! ```
//!
//! Whoever loads `amdgpu` — udev on a device's modalias, the initramfs's module list,
//! `systemd-modules-load`, a user — runs the script instead: it writes `vfio-pci` to
//! the listed devices' `driver_override`, loads vfio-pci (nothing to do when it is
//! built in), asks the PCI core to probe each still driverless device (which now
//! matches only vfio-pci), then loads `amdgpu` for real with `modprobe
//! --ignore-install`. It works the same whether vfio-pci is a module or built into the
//! kernel: kmod never runs `install` commands for built-in modules, which is why the
//! hook sits on the host driver and not on vfio-pci.
//!
//! The hooked module gets no `softdep … pre: vfio-pci` (the script loads vfio-pci
//! itself): kmod ignores the `install` command of any module that has soft
//! dependencies. What cannot be hooked is refused with the reason: a host driver built
//! into the kernel (it takes the devices before any program runs), a module with an
//! `install` command elsewhere in modprobe.d (kmod runs only the first one), and a
//! module with a `softdep` of its own or someone else's (kmod would skip the hook).

use std::collections::{BTreeMap, BTreeSet};

use crate::host::kernel::modules::normalize;
use crate::host::pci::PciAddress;
use crate::host::snapshot::FileView;

use super::{HEADER, MODPROBE_FILE, OVERRIDE_SCRIPT, WAY_BACK_ARG};

/// The driver that takes a device at boot when vfio-pci does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDriver {
    /// A loadable module (normalized name: `snd_hda_intel`, `bochs`).
    Module(String),
    /// A driver compiled into the kernel (its driver name).
    Builtin(String),
}

impl HostDriver {
    /// The module to order after vfio-pci or to hook, if it is one.
    pub fn module(&self) -> Option<&str> {
        match self {
            Self::Module(m) => Some(m),
            Self::Builtin(_) => None,
        }
    }
}

/// Whether `name` can be a kernel module's name, and so goes safely into a
/// modprobe.d line or the override script: letters, digits, `_` and `-` (what
/// `modprobe` and the kernel's build accept), nothing that could end a line or a
/// word. A driver's name comes from sysfs, the name of a link: it is checked before
/// passthru writes it anywhere.
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The directories kmod reads configuration from (`man 5 modprobe.d`).
pub const MODPROBE_DIRS: &[&str] = &[
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "usr/lib/modprobe.d",
    "lib/modprobe.d",
];

/// Why kmod would not run passthru's `install` command for a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another `install` command for it, in this file: kmod runs only the first.
    Install(String),
    /// A `softdep` for it, in this file: kmod ignores the `install` command of a
    /// module that has soft dependencies (`mod->ignorecmd` in libkmod).
    Softdep(String),
}

impl Conflict {
    /// Why the hook cannot work, and what to do.
    pub fn explain(&self, module: &str) -> String {
        match self {
            Self::Install(file) => format!(
                "{file} already has an `install` command for {module}, and kmod runs only one"
            ),
            Self::Softdep(file) if file.ends_with("/modules.softdep") => format!(
                "{module} declares soft dependencies ({file}), and kmod ignores the `install` \
                 command of a module that has some"
            ),
            Self::Softdep(file) => format!(
                "{file} gives {module} a `softdep`, and kmod ignores the `install` command of a \
                 module that has one: remove that line (passthru's hook loads vfio-pci first \
                 itself) and run `enable` again"
            ),
        }
    }
}

/// The `install` and `softdep` lines for each module in the host's modprobe.d files
/// (other than passthru's own) and in the kernel's `modules.softdep` (what modules
/// declare themselves): normalized module name → the first conflict found.
pub fn conflicts(files: &FileView, release: Option<&str>) -> BTreeMap<String, Conflict> {
    let mut paths = Vec::new();
    for dir in MODPROBE_DIRS {
        let mut names = files.entries(dir);
        names.sort();
        for name in names {
            let path = format!("{dir}/{name}");
            if name.ends_with(".conf") && path != MODPROBE_FILE {
                paths.push(path);
            }
        }
    }
    paths.extend(softdep_files(release));
    let mut found = BTreeMap::new();
    for path in paths {
        let Some(text) = files.text(&path) else {
            continue;
        };
        conflicts_in(&text, &path, &mut found);
    }
    found
}

/// The kernel's `modules.softdep` files for `release`.
pub fn softdep_files(release: Option<&str>) -> Vec<String> {
    match release.filter(|r| !r.is_empty() && !r.contains('/')) {
        Some(r) => vec![
            format!("lib/modules/{r}/modules.softdep"),
            format!("usr/lib/modules/{r}/modules.softdep"),
        ],
        None => Vec::new(),
    }
}

/// Adds the `install` and `softdep` lines of one modprobe.d (or `modules.softdep`)
/// text, read from the root-relative `path`, to `found`; a module already there keeps
/// its first conflict. Comments (`#` to the end of the line) and other commands are
/// skipped.
pub fn conflicts_in(text: &str, path: &str, found: &mut BTreeMap<String, Conflict>) {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(kind), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        let conflict = match kind {
            "install" => Conflict::Install(format!("/{path}")),
            "softdep" => Conflict::Softdep(format!("/{path}")),
            _ => continue,
        };
        found.entry(normalize(module)).or_insert(conflict);
    }
}

/// The `install` lines of passthru's modprobe.d file: one per hooked host module.
pub fn install_lines(modules: &BTreeSet<String>) -> String {
    if modules.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "# Devices that share their ids with one the host keeps are bound by address:\n\
         # loading their host driver runs this script first, which claims them.\n",
    );
    // The planner refuses any other name; a name that is not one is never written.
    for m in modules.iter().filter(|m| is_module_name(m)) {
        s.push_str(&format!(
            "install {m} /{OVERRIDE_SCRIPT} {m} $CMDLINE_OPTS\n"
        ));
    }
    s
}

/// The script modprobe runs in place of loading a hooked host driver (first argument:
/// the module, then the options modprobe was given). Only shell built-ins and
/// modprobe: it runs inside the initramfs too.
pub fn override_script(addresses: &[PciAddress]) -> String {
    let list = addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "#!/bin/sh\n{HEADER}\
         # Run by modprobe in place of loading a host driver\n\
         # (`install MODULE …` in /{MODPROBE_FILE}).\n\
         # These devices share their ids with a device the host keeps, so they are\n\
         # claimed for vfio-pci by address (driver_override) before the driver loads;\n\
         # it then binds only the devices that stay with the host.\n\
         # The way back ({WAY_BACK_ARG}) leaves them to the driver.\n\
         module=$1\n\
         shift\n\
         read -r cmdline < /proc/cmdline\n\
         case \" $cmdline \" in\n\
         *\" {WAY_BACK_ARG} \"*) ;;\n\
         *)\n    \
             for dev in {list}; do\n        \
                 f=/sys/bus/pci/devices/$dev/driver_override\n        \
                 [ -w \"$f\" ] && echo vfio-pci > \"$f\"\n    \
             done\n    \
             # A vfio-pci module takes them as it loads; a built-in (or already loaded)\n    \
             # one needs the PCI core to probe them again.\n    \
             /sbin/modprobe vfio-pci\n    \
             for dev in {list}; do\n        \
                 [ -e /sys/bus/pci/devices/$dev/driver ] || echo \"$dev\" > /sys/bus/pci/drivers_probe\n    \
             done 2>/dev/null\n    \
             ;;\n\
         esac\n\
         exec /sbin/modprobe --ignore-install \"$module\" \"$@\"\n"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn install_lines_name_the_module_twice() {
        let modules: BTreeSet<String> = ["nvidia".to_string(), "snd_hda_intel".to_string()]
            .into_iter()
            .collect();
        let text = install_lines(&modules);
        assert!(text.contains(
            "install nvidia /usr/local/sbin/passthru-vfio-override nvidia $CMDLINE_OPTS\n"
        ));
        assert!(text.contains(
            "install snd_hda_intel /usr/local/sbin/passthru-vfio-override snd_hda_intel $CMDLINE_OPTS\n"
        ));
        assert_eq!(install_lines(&BTreeSet::new()), "");
    }

    #[test]
    fn module_names() {
        for ok in ["nvidia", "snd_hda_intel", "bochs-drm", "r8169"] {
            assert!(is_module_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x\ninstall vfio-pci /tmp/evil",
            "a;b",
            "../x",
            "a$b",
            "é",
        ] {
            assert!(!is_module_name(bad), "{bad:?}");
        }
        let hostile: BTreeSet<String> = ["a b".to_string(), "nvidia".to_string()].into();
        assert_eq!(install_lines(&hostile).matches("install ").count(), 1);
    }

    #[test]
    fn conflicts_are_found_in_every_directory_and_in_modules_softdep() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let write = |rel: &str, text: &str| {
            let path = p.join(rel);
            crate::testing::mkdir(path.parent().unwrap());
            crate::testing::write(path, text);
        };
        write(
            "lib/modprobe.d/nvidia.conf",
            "alias nvidia nvidia-current\ninstall nvidia modprobe -i nvidia-current $CMDLINE_OPTS\n",
        );
        write(
            "etc/modprobe.d/vfio.conf",
            "# from a wiki guide\n# install snd-hda-intel /bin/false\nsoftdep amdgpu pre: vfio-pci\n",
        );
        write("etc/modprobe.d/notes.txt", "install e1000e /bin/true\n");
        write(
            "etc/modprobe.d/passthru-vfio.conf",
            "install bochs /usr/local/sbin/passthru-vfio-override bochs\n",
        );
        write(
            "lib/modules/6.1.0-13-amd64/modules.softdep",
            "# Soft dependencies extracted from modules themselves.\nsoftdep r8169 pre: realtek\n",
        );
        let root = crate::host::root::HostRoot::new(p);
        let release = Some("6.1.0-13-amd64");
        let wants = super::super::files_to_read(release, &BTreeSet::new());
        let found = conflicts(&FileView::gather(&root, &wants), release);
        assert_eq!(
            found["nvidia"],
            Conflict::Install("/lib/modprobe.d/nvidia.conf".into())
        );
        assert_eq!(
            found["amdgpu"],
            Conflict::Softdep("/etc/modprobe.d/vfio.conf".into())
        );
        assert!(found["amdgpu"]
            .explain("amdgpu")
            .contains("remove that line"));
        assert_eq!(
            found["r8169"],
            Conflict::Softdep("/lib/modules/6.1.0-13-amd64/modules.softdep".into())
        );
        assert!(found["r8169"]
            .explain("r8169")
            .contains("declares soft dependencies"));
        assert!(
            !found.contains_key("snd_hda_intel"),
            "a comment is not a line"
        );
        assert!(!found.contains_key("e1000e"), "only *.conf files count");
        assert!(
            !found.contains_key("bochs"),
            "passthru's own file does not count"
        );
    }

    /// The script lists the devices and hands over to modprobe, and `sh -n` parses
    /// it (the testbed's Debian root runs it for real at boot).
    #[test]
    fn script_lists_the_devices_and_parses() {
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        let script = override_script(&[a]);
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("for dev in 0000:01:00.0; do"));
        assert!(script.ends_with("exec /sbin/modprobe --ignore-install \"$module\" \"$@\"\n"));
        // The text is plain POSIX sh: check it parses.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        crate::testing::write(&path, &script);
        // read-only probe: `sh -n` parses the script without running it
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
