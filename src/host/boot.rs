//! How the host boots: which initramfs generator and which bootloader it uses, read
//! from the files and tools present (never from the distribution's name alone).
//!
//! `enable` needs both: the initramfs must load `vfio-pci` before the host drivers
//! (and carry the modprobe.d file that says which devices it takes), and the
//! bootloader must pass the kernel arguments (`intel_iommu=on iommu=pt`, and
//! `vfio-pci.ids=` when vfio-pci is built in).

use serde::Serialize;

use crate::host::root::HostRoot;

/// The initramfs generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Initramfs {
    /// Debian/Ubuntu's initramfs-tools (`update-initramfs`).
    InitramfsTools,
    /// dracut (Fedora, RHEL, openSUSE, …).
    Dracut,
    /// Arch's mkinitcpio.
    Mkinitcpio,
    /// booster.
    Booster,
    /// None recognised.
    Unknown,
}

/// The bootloader (or the tool that manages its kernel command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Bootloader {
    /// Pop!_OS's kernelstub.
    Kernelstub,
    /// Fedora/RHEL's grubby (BLS entries).
    Grubby,
    /// GRUB configured through `/etc/default/grub`.
    Grub {
        /// `/etc/default/grub.d/*.cfg` is read (Debian, Ubuntu): passthru writes a
        /// drop-in there instead of editing `/etc/default/grub`.
        dropin: bool,
        /// The command that regenerates `grub.cfg`.
        update: Vec<String>,
    },
    /// `/etc/kernel/cmdline` (systemd's kernel-install, Proxmox's proxmox-boot-tool),
    /// with the loader entries that already exist.
    KernelCmdline {
        /// The command that refreshes the boot entries, if there is one
        /// (`proxmox-boot-tool refresh`).
        refresh: Option<Vec<String>>,
        /// Existing systemd-boot entries (`/boot/loader/entries/*.conf`), edited too.
        entries: Vec<String>,
    },
    /// systemd-boot entries without kernel-install's `/etc/kernel/cmdline`.
    LoaderEntries {
        /// Every entry, root-relative.
        entries: Vec<String>,
    },
    /// Nothing recognised: the arguments must be added by hand.
    Unknown,
}

/// How the host boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSetup {
    /// The initramfs generator.
    pub initramfs: Initramfs,
    /// The bootloader.
    pub bootloader: Bootloader,
}

fn any_exists(root: &HostRoot, paths: &[&str]) -> bool {
    paths.iter().any(|p| root.exists(p))
}

/// The first existing program among `paths`, as an absolute path.
pub fn program(root: &HostRoot, paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find(|p| root.exists(p))
        .map(|p| format!("/{p}"))
}

fn loader_entries(root: &HostRoot) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [
        "boot/loader/entries",
        "boot/efi/loader/entries",
        "efi/loader/entries",
    ] {
        for name in root.list_dir_optional(dir).unwrap_or_default() {
            if name.ends_with(".conf") {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out
}

/// Detects the initramfs generator and bootloader from the host's files.
pub fn detect(root: &HostRoot) -> BootSetup {
    let initramfs = if any_exists(
        root,
        &["usr/sbin/update-initramfs", "sbin/update-initramfs"],
    ) && root.exists("etc/initramfs-tools")
    {
        Initramfs::InitramfsTools
    } else if any_exists(root, &["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]) {
        Initramfs::Dracut
    } else if any_exists(root, &["usr/bin/mkinitcpio", "usr/sbin/mkinitcpio"]) {
        Initramfs::Mkinitcpio
    } else if any_exists(root, &["usr/bin/booster", "etc/booster.yaml"]) {
        Initramfs::Booster
    } else {
        Initramfs::Unknown
    };
    let entries = loader_entries(root);
    let bootloader = if any_exists(root, &["usr/bin/kernelstub"])
        && root.exists("etc/kernelstub/configuration")
    {
        Bootloader::Kernelstub
    } else if any_exists(root, &["usr/sbin/grubby", "usr/bin/grubby", "sbin/grubby"]) {
        Bootloader::Grubby
    } else if root.exists("etc/kernel/cmdline") {
        Bootloader::KernelCmdline {
            refresh: program(root, &["usr/sbin/proxmox-boot-tool"])
                .map(|p| vec![p, "refresh".into()]),
            entries,
        }
    } else if root.exists("etc/default/grub") {
        let update = if let Some(p) = program(root, &["usr/sbin/update-grub", "sbin/update-grub"]) {
            vec![p]
        } else if let Some(p) =
            program(root, &["usr/sbin/grub2-mkconfig", "usr/bin/grub2-mkconfig"])
        {
            vec![p, "-o".into(), "/boot/grub2/grub.cfg".into()]
        } else {
            let p = program(root, &["usr/sbin/grub-mkconfig", "usr/bin/grub-mkconfig"])
                .unwrap_or_else(|| "grub-mkconfig".into());
            vec![p, "-o".into(), "/boot/grub/grub.cfg".into()]
        };
        Bootloader::Grub {
            // Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg.
            dropin: root.exists("etc/default/grub.d"),
            update,
        }
    } else if !entries.is_empty() {
        Bootloader::LoaderEntries { entries }
    } else {
        Bootloader::Unknown
    };
    BootSetup {
        initramfs,
        bootloader,
    }
}

/// The value of a shell variable assignment in a file like `/etc/default/grub`
/// (`KEY="a b"`, `KEY='a b'`, `KEY=a`, `export KEY=…`; the last assignment wins), as
/// the shell reads it ([`crate::plan::enable::shell`]). `None` when it is not set, when its
/// value refers to a variable or runs a command, or when the file is more than plain
/// assignments: what only running the file could tell is never guessed.
pub fn shell_var(text: &str, key: &str) -> Option<String> {
    let list = crate::plan::enable::shell::assignments(text).ok()?;
    let (_, value) = crate::plan::enable::shell::last(&list, key)?
        .scalar()
        .ok()?;
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_default_values() {
        // Ubuntu 22.04's /etc/default/grub, with a user's edit.
        let text = r#"# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""
#GRUB_CMDLINE_LINUX_DEFAULT="quiet"
  GRUB_CMDLINE_LINUX_DEFAULT='quiet splash amd_pstate=active'
"#;
        assert_eq!(
            shell_var(text, "GRUB_CMDLINE_LINUX_DEFAULT").as_deref(),
            Some("quiet splash amd_pstate=active")
        );
        assert_eq!(shell_var(text, "GRUB_CMDLINE_LINUX").as_deref(), Some(""));
        assert_eq!(shell_var(text, "GRUB_TIMEOUT").as_deref(), Some("0"));
        assert_eq!(shell_var(text, "GRUB_TERMINAL"), None);
    }

    #[test]
    fn grub_default_values_with_escaped_quotes() {
        // A quoted argument inside the double-quoted value, as wiki guides write
        // acpi_osi: the backslash escapes are the shell's, the value holds the quotes.
        let text = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet acpi_osi=\\\"Windows 2015\\\" a\\\\b\"\n";
        assert_eq!(
            shell_var(text, "GRUB_CMDLINE_LINUX_DEFAULT").as_deref(),
            Some("quiet acpi_osi=\"Windows 2015\" a\\b")
        );
        // Outside quotes a backslash escapes any character; inside single quotes none.
        assert_eq!(shell_var("K=a\\ b\n", "K").as_deref(), Some("a b"));
        assert_eq!(shell_var("K='a\\\"b'\n", "K").as_deref(), Some("a\\\"b"));
        assert_eq!(shell_var("K=\"a\\nb\"\n", "K").as_deref(), Some("a\\nb"));
    }
}
