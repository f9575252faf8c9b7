//! The kernel command line (`/proc/cmdline`).
//!
//! Arguments are separated by spaces; a value may be double-quoted to hold spaces
//! (`foo="a b"`); the same key may appear several times (the kernel generally takes
//! the last, and some parameters such as `vfio-pci.ids` are comma lists). Everything
//! after a lone `--` belongs to init, not to the kernel. In parameter names the kernel
//! treats `-` and `_` alike (`vfio-pci.ids` = `vfio_pci.ids`).

use serde::Serialize;

/// One argument: `key` or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// The parameter name as written.
    pub key: String,
    /// The value, unquoted; `None` for a bare flag.
    pub value: Option<String>,
}

/// A parsed kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cmdline {
    /// The text as read (trimmed), for evidence.
    pub raw: String,
    /// The kernel's arguments in order (those after `--` excluded).
    pub args: Vec<Arg>,
}

impl Cmdline {
    /// Parses a command line.
    ///
    /// Splitting follows the kernel's own `next_arg()`: arguments are separated by
    /// whitespace (spaces, tabs, newlines) outside double quotes; the quotes
    /// themselves are removed (`foo="a b"` and `"foo=a b"` both give `foo` = `a b`);
    /// only the first `=` separates key and value (`root=UUID=...`); a lone `--`
    /// ends the kernel's arguments (the rest goes to init and is not kept in
    /// [`Cmdline::args`], though it stays in [`Cmdline::raw`]).
    pub fn parse(text: &str) -> Self {
        let raw = text.trim().to_string();
        let mut args = Vec::new();
        let mut chars = raw.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let mut token = String::new();
            let mut quoted_anywhere = false;
            let mut in_quote = false;
            while let Some(c) = chars.next_if(|c| in_quote || !c.is_whitespace()) {
                if c == '"' {
                    in_quote = !in_quote;
                    quoted_anywhere = true;
                } else {
                    token.push(c);
                }
            }
            if token == "--" && !quoted_anywhere {
                break;
            }
            let arg = match token.split_once('=') {
                Some((key, value)) => Arg {
                    key: key.to_string(),
                    value: Some(value.to_string()),
                },
                None => Arg {
                    key: token,
                    value: None,
                },
            };
            args.push(arg);
        }
        Self { raw, args }
    }

    /// Every value given for `key` (matching `-` and `_` alike), in order; a bare
    /// flag gives `None`.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.args
            .iter()
            .filter(move |a| same_param(&a.key, key))
            .map(|a| a.value.as_deref())
    }

    /// The last value for `key`, the one the kernel uses: `None` when absent,
    /// `Some(None)` for a bare flag.
    pub fn last<'a>(&'a self, key: &'a str) -> Option<Option<&'a str>> {
        self.values(key).last()
    }

    /// Whether `key` appears at all.
    pub fn contains(&self, key: &str) -> bool {
        self.values(key).next().is_some()
    }
}

/// Whether two parameter names are the same for the kernel, which treats `-` and
/// `_` alike everywhere in a name (`parameqn()` in kernel/params.c).
fn same_param(a: &str, b: &str) -> bool {
    let norm = |c: char| if c == '-' { '_' } else { c };
    a.len() == b.len() && a.chars().map(norm).eq(b.chars().map(norm))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn arg(key: &str, value: Option<&str>) -> Arg {
        Arg {
            key: key.to_string(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn debian_vfio_command_line() {
        // A Debian 12 /proc/cmdline as GRUB writes it for a VFIO host (the UUID is
        // a real-looking one; the shape is what update-grub produces).
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz-6.1.0-13-amd64 root=UUID=5a2b1c3d-9e8f-4a7b-8c6d-0e1f2a3b4c5d ro quiet intel_iommu=on iommu=pt vfio-pci.ids=10de:2484,10de:228b\n",
        );
        assert_eq!(c.args.len(), 7);
        assert_eq!(
            c.args[0],
            arg("BOOT_IMAGE", Some("/vmlinuz-6.1.0-13-amd64"))
        );
        // Only the first `=` splits.
        assert_eq!(
            c.last("root"),
            Some(Some("UUID=5a2b1c3d-9e8f-4a7b-8c6d-0e1f2a3b4c5d"))
        );
        assert_eq!(c.last("ro"), Some(None));
        assert_eq!(c.last("intel_iommu"), Some(Some("on")));
        assert_eq!(c.last("iommu"), Some(Some("pt")));
        // `-` and `_` are the same to the kernel.
        assert_eq!(c.last("vfio_pci.ids"), Some(Some("10de:2484,10de:228b")));
        assert_eq!(c.last("vfio-pci.ids"), Some(Some("10de:2484,10de:228b")));
        assert!(c.contains("quiet"));
        assert!(!c.contains("amd_iommu"));
        assert!(!c.contains("intel"), "prefixes must not match");
        assert!(!c.raw.ends_with('\n'));
    }

    #[test]
    fn fedora_command_line_with_lvm() {
        // Fedora's default (grubby) command line on LVM.
        let c = Cmdline::parse(
            "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.5.6-300.fc39.x86_64 root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root rd.lvm.lv=fedora/swap rhgb quiet amd_iommu=on iommu=pt rd.driver.pre=vfio-pci",
        );
        let lvs: Vec<_> = c.values("rd.lvm.lv").collect();
        assert_eq!(lvs, vec![Some("fedora/root"), Some("fedora/swap")]);
        // The last one is the one the kernel uses.
        assert_eq!(c.last("rd.lvm.lv"), Some(Some("fedora/swap")));
        assert_eq!(
            c.last("BOOT_IMAGE"),
            Some(Some("(hd0,gpt2)/vmlinuz-6.5.6-300.fc39.x86_64"))
        );
        assert_eq!(c.last("rd.driver.pre"), Some(Some("vfio-pci")));
        // Only `-` and `_` are interchangeable, not `.`.
        assert_eq!(c.last("rd_driver.pre"), None);
        assert_eq!(c.args.len(), 10);
    }

    #[test]
    fn everything_after_double_dash_belongs_to_init() {
        // Firecracker-style boot arguments: the init's own flags follow `--`.
        let c = Cmdline::parse(
            "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw -- --firecracker-init quiet=no",
        );
        assert_eq!(c.args.len(), 6);
        assert!(!c.contains("--firecracker-init"));
        assert!(!c.contains("quiet"));
        assert_eq!(c.last("pci"), Some(Some("off")));
        assert!(
            c.raw.contains("--firecracker-init"),
            "raw keeps the whole text"
        );
    }

    #[test]
    fn quotes_spaces_tabs_and_newlines() {
        let c =
            Cmdline::parse("foo=\"a b\"\tbar\n \"dyndbg=file drivers/vfio/* +p\" empty= x=\"\" ");
        assert_eq!(
            c.args,
            vec![
                arg("foo", Some("a b")),
                arg("bar", None),
                arg("dyndbg", Some("file drivers/vfio/* +p")),
                arg("empty", Some("")),
                arg("x", Some("")),
            ]
        );
        // A quoted `--` is an argument, not the end marker.
        let q = Cmdline::parse("a \"--\" b");
        assert_eq!(q.args.len(), 3);
        assert_eq!(q.args[1], arg("--", None));
    }

    #[test]
    fn repeated_flags_and_empty_lines() {
        let c = Cmdline::parse("vfio-pci.ids=1234:11e8 vfio_pci.ids=8086:10d3 nomodeset");
        let ids: Vec<_> = c.values("vfio-pci.ids").collect();
        assert_eq!(ids, vec![Some("1234:11e8"), Some("8086:10d3")]);
        assert_eq!(c.last("nomodeset"), Some(None));
        assert_eq!(c.last("absent"), None);

        let empty = Cmdline::parse("  \n");
        assert!(empty.args.is_empty());
        assert_eq!(empty.raw, "");
        // An unterminated quote runs to the end, as in the kernel.
        let open = Cmdline::parse("a=\"b c");
        assert_eq!(open.args, vec![arg("a", Some("b c"))]);
    }
}
