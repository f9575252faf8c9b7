//! The Debian package of the `passthru` under test, built by `packaging/build-deb` as a
//! user builds it, from the binary the tests run ([`super::passthru_bin`], passed as
//! `--binary`: the script strips it and packages it, nothing is compiled again). The
//! script generates the completions and man pages with that binary, so a test that
//! installs the package tests them too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::kernel::{failed, require_program, run, testbed_dir, PrepareError};

/// The script that builds the package.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-deb")
}

/// A built `.deb`, in a directory of its own that is removed when this is dropped.
#[derive(Debug)]
pub struct Deb {
    _dir: tempfile::TempDir,
    /// The package file, `passthru_<version>_<arch>.deb`.
    pub path: PathBuf,
    /// How long the script took.
    pub took: Duration,
}

/// Builds the package with `packaging/build-deb --binary <passthru under test>`. Its
/// tools (Debian's `dpkg-deb`, `dpkg-shlibdeps`, `strip`, `gzip`) missing is
/// [`PrepareError::Missing`]; the script failing otherwise is [`PrepareError::Failed`].
pub fn build() -> Result<Deb, PrepareError> {
    for (program, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("strip", "binutils"),
        ("gzip", "gzip"),
    ] {
        require_program(program, package)?;
    }
    let runs = testbed_dir().join("run");
    std::fs::create_dir_all(&runs).map_err(|err| failed(format!("{}: {err}", runs.display())))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("deb-{}-", std::process::id()))
        .tempdir_in(&runs)
        .map_err(|err| failed(format!("{}: {err}", runs.display())))?;
    let started = Instant::now();
    let stdout = run(Command::new("bash")
        .arg(build_script())
        .arg("--binary")
        .arg(super::passthru_bin())
        .arg("--out")
        .arg(dir.path()))
    .map_err(failed)?;
    let took = started.elapsed();
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !path.is_file() || path.parent() != Some(dir.path()) {
        return Err(failed(format!(
            "build-deb printed {stdout:?}, not the path of a .deb in {}",
            dir.path().display()
        )));
    }
    Ok(Deb {
        _dir: dir,
        path,
        took,
    })
}

/// The package, or `None` after printing `SKIPPED` when a tool is missing outside CI.
/// Panics in CI, and when the build fails.
pub fn deb_or_skip(test: &str) -> Option<Deb> {
    match build() {
        Ok(deb) => Some(deb),
        Err(PrepareError::Missing(why)) if !super::in_ci() => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
        Err(PrepareError::Missing(why)) => {
            panic!("testbed prerequisite missing (CI=true makes this a failure): {why}")
        }
        Err(PrepareError::Failed(why)) => panic!("packaging/build-deb failed: {why}"),
    }
}
