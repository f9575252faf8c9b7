//! The kernel's build configuration (`CONFIG_*`), from `/proc/config.gz` (when the
//! kernel was built with `CONFIG_IKCONFIG_PROC`) or `/boot/config-<release>`.
//!
//! Each option is built in (`=y`), a module (`=m`), a value (`="..."`, `=123`), or
//! not set (`# CONFIG_X is not set`, or simply absent).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use crate::host::root::{HostError, HostRoot};

/// The state of one option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigValue {
    /// `=y`.
    Builtin,
    /// `=m`.
    Module,
    /// Not set, or absent from the file.
    NotSet,
    /// Any other value, unquoted.
    Value(String),
}

/// A parsed kernel configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelConfig {
    /// Where it was read, relative to the host root (`/proc/config.gz`, …).
    pub source: PathBuf,
    /// Every option named in the file, `CONFIG_` prefix included.
    pub options: BTreeMap<String, ConfigValue>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] HostError),
    /// `config.gz` is not valid gzip.
    #[error("{} is not a valid gzip file", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
}

impl KernelConfig {
    /// Parses the text of a `.config` file.
    ///
    /// `CONFIG_X=y` is built in, `=m` a module, `=n` (seen in hand-edited files)
    /// and `# CONFIG_X is not set` are not set; other values are kept, strings
    /// without their quotes and with Kconfig's `\"` and `\\` escapes undone. Other
    /// comments and blank lines are ignored, and so are lines that do not look like
    /// an option.
    pub fn parse(text: &str, source: impl Into<PathBuf>) -> Self {
        // Collected first and built into the map in one step (sorted, the last of
        // equal names kept): a distribution's config names about 10,000 options, and
        // inserting them one by one costs a few times more.
        let mut options: Vec<(&str, ConfigValue)> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    if is_option_name(name) {
                        options.push((name, ConfigValue::NotSet));
                    }
                }
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if !is_option_name(name) {
                continue;
            }
            let value = match value {
                "y" => ConfigValue::Builtin,
                "m" => ConfigValue::Module,
                "n" => ConfigValue::NotSet,
                v => ConfigValue::Value(unquote(v)),
            };
            options.push((name, value));
        }
        // A stable sort keeps equal names in file order; of each run the last wins,
        // as a later line overrides an earlier one.
        options.sort_by(|a, b| a.0.cmp(b.0));
        let mut unique: Vec<(String, ConfigValue)> = Vec::with_capacity(options.len());
        let mut options = options.into_iter().peekable();
        while let Some((name, value)) = options.next() {
            if options.peek().is_some_and(|(next, _)| *next == name) {
                continue;
            }
            unique.push((name.to_string(), value));
        }
        Self {
            source: source.into(),
            options: unique.into_iter().collect(),
        }
    }

    /// Reads `proc/config.gz`, else `boot/config-<release>`; `Ok(None)` when neither
    /// exists.
    pub fn read(root: &HostRoot, release: Option<&str>) -> Result<Option<Self>, ConfigError> {
        const PROC: &str = "proc/config.gz";
        match root.read_bytes(PROC) {
            Ok(bytes) => {
                let mut text = Vec::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut text)
                    .map_err(|source| ConfigError::Gzip {
                        path: root.path(PROC),
                        source,
                    })?;
                let text = String::from_utf8_lossy(&text);
                return Ok(Some(Self::parse(&text, "/proc/config.gz")));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // A release is one path component; anything else cannot name a file there.
        let Some(release) = release.filter(|r| !r.is_empty() && !r.contains('/') && *r != "..")
        else {
            return Ok(None);
        };
        let rel = format!("boot/config-{release}");
        Ok(root
            .read_optional(&rel)?
            .map(|text| Self::parse(&text, format!("/{rel}"))))
    }

    /// The state of `name` (with or without the `CONFIG_` prefix); absent is `NotSet`.
    pub fn get(&self, name: &str) -> ConfigValue {
        let found = if name.starts_with("CONFIG_") {
            self.options.get(name)
        } else {
            self.options.get(&format!("CONFIG_{name}"))
        };
        found.cloned().unwrap_or(ConfigValue::NotSet)
    }
}

/// Whether `name` looks like a Kconfig symbol (`CONFIG_` then letters, digits, `_`).
fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Removes the quotes of a string value and undoes Kconfig's escapes; other values
/// are returned as they are.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An excerpt of Debian 12's `/boot/config-6.1.0-13-amd64` (linux-image-amd64):
    /// the IOMMU and VFIO options, as `make olddefconfig` writes them.
    const DEBIAN_EXCERPT: &str = "\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.55 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"
CONFIG_GCC_VERSION=120200
CONFIG_IKCONFIG=m
# CONFIG_IKCONFIG_PROC is not set

CONFIG_IOMMU_SUPPORT=y
CONFIG_AMD_IOMMU=y
CONFIG_AMD_IOMMU_V2=m
CONFIG_INTEL_IOMMU=y
# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set
CONFIG_IRQ_REMAP=y
CONFIG_VFIO=m
CONFIG_VFIO_IOMMU_TYPE1=m
CONFIG_VFIO_PCI=m
CONFIG_VFIO_PCI_VGA=y
CONFIG_LOCALVERSION=\"\"
CONFIG_SYSTEM_TRUSTED_KEYS=\"debian/certs/debian-uefi-certs.pem\"
";

    #[test]
    fn a_later_line_overrides_an_earlier_one() {
        let c = KernelConfig::parse(
            "CONFIG_VFIO=y\nCONFIG_KVM=m\n# CONFIG_VFIO is not set\nCONFIG_VFIO=m\nCONFIG_KVM=y\nCONFIG_A=1\n",
            "/boot/config",
        );
        assert_eq!(c.get("VFIO"), ConfigValue::Module);
        assert_eq!(c.get("KVM"), ConfigValue::Builtin);
        assert_eq!(c.get("A"), ConfigValue::Value("1".into()));
        assert_eq!(c.options.len(), 3);
    }

    #[test]
    fn parses_every_kind_of_line() {
        let c = KernelConfig::parse(DEBIAN_EXCERPT, "/boot/config-6.1.0-13-amd64");
        assert_eq!(c.source, PathBuf::from("/boot/config-6.1.0-13-amd64"));
        assert_eq!(c.get("CONFIG_INTEL_IOMMU"), ConfigValue::Builtin);
        assert_eq!(c.get("VFIO_PCI"), ConfigValue::Module);
        assert_eq!(c.get("INTEL_IOMMU_DEFAULT_ON"), ConfigValue::NotSet);
        assert!(c.options.contains_key("CONFIG_INTEL_IOMMU_DEFAULT_ON"));
        assert_eq!(c.get("GCC_VERSION"), ConfigValue::Value("120200".into()));
        assert_eq!(
            c.get("CONFIG_CC_VERSION_TEXT"),
            ConfigValue::Value("gcc-12 (Debian 12.2.0-14) 12.2.0".into())
        );
        assert_eq!(c.get("LOCALVERSION"), ConfigValue::Value(String::new()));
        // Absent options are not set.
        assert_eq!(c.get("VFIO_NOIOMMU"), ConfigValue::NotSet);
        assert!(!c.options.contains_key("CONFIG_VFIO_NOIOMMU"));
        // The header comments are not options.
        assert_eq!(c.options.len(), 16);
    }

    #[test]
    fn escapes_and_odd_lines() {
        let c = KernelConfig::parse(
            "CONFIG_CMDLINE=\"console=ttyS0 x=\\\"q\\\"\"\nnot an option\nFOO=y\n# CONFIG_ is not set\nCONFIG_X=n\n",
            "/proc/config.gz",
        );
        assert_eq!(
            c.get("CMDLINE"),
            ConfigValue::Value("console=ttyS0 x=\"q\"".into())
        );
        assert_eq!(c.get("X"), ConfigValue::NotSet);
        assert_eq!(c.options.len(), 2, "{:?}", c.options);
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_proc_config_gz_first() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("proc"));
        crate::testing::mkdir(dir.path().join("boot"));
        crate::testing::write(dir.path().join("proc/config.gz"), gzip(DEBIAN_EXCERPT));
        crate::testing::write(
            dir.path().join("boot/config-6.1.0-13-amd64"),
            "CONFIG_VFIO_PCI=y\n",
        );
        let root = HostRoot::new(dir.path());
        let c = KernelConfig::read(&root, Some("6.1.0-13-amd64"))
            .unwrap()
            .unwrap();
        assert_eq!(c.source, PathBuf::from("/proc/config.gz"));
        assert_eq!(c.get("VFIO_PCI"), ConfigValue::Module);
    }

    #[test]
    fn falls_back_to_boot_config() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("boot"));
        crate::testing::write(
            dir.path().join("boot/config-6.1.0-13-amd64"),
            DEBIAN_EXCERPT,
        );
        let root = HostRoot::new(dir.path());
        let c = KernelConfig::read(&root, Some("6.1.0-13-amd64"))
            .unwrap()
            .unwrap();
        assert_eq!(c.source, PathBuf::from("/boot/config-6.1.0-13-amd64"));
        assert_eq!(c.get("VFIO_PCI_VGA"), ConfigValue::Builtin);
        // Another release, or none known: nothing to read.
        assert!(KernelConfig::read(&root, Some("6.5.0")).unwrap().is_none());
        assert!(KernelConfig::read(&root, None).unwrap().is_none());
        assert!(
            KernelConfig::read(&root, Some("../boot/config-6.1.0-13-amd64"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn nothing_to_read_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert!(KernelConfig::read(&root, Some("6.1.0-13-amd64"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn corrupt_gzip_is_an_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mkdir(dir.path().join("proc"));
        // A gzip header followed by garbage: a truncated or damaged capture.
        let mut bytes = gzip(DEBIAN_EXCERPT);
        bytes.truncate(20);
        bytes.extend_from_slice(b"not deflate data at all");
        crate::testing::write(dir.path().join("proc/config.gz"), &bytes);
        let root = HostRoot::new(dir.path());
        let err = KernelConfig::read(&root, None).unwrap_err();
        match &err {
            ConfigError::Gzip { path, .. } => assert!(path.ends_with("proc/config.gz")),
            other => panic!("expected a gzip error, got {other:?}"),
        }
        assert!(err.to_string().contains("not a valid gzip file"), "{err}");

        // Plain text where gzip is expected is corrupt too.
        crate::testing::write(dir.path().join("proc/config.gz"), DEBIAN_EXCERPT);
        assert!(matches!(
            KernelConfig::read(&root, None),
            Err(ConfigError::Gzip { .. })
        ));
    }
}
