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
    pub fn parse(_text: &str) -> Self {
        unimplemented!()
    }

    /// Every value given for `key` (matching `-` and `_` alike), in order; a bare
    /// flag gives `None`.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let _ = key;
        std::iter::empty::<Option<&'a str>>()
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
