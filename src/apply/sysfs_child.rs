//! The body of `passthru __sysfs-write FILE VALUE` (see [`super::SYSFS_WRITE_ARG`]):
//! the child process [`super::Applier::write_sysfs`] runs for each driver write, so
//! that a write stuck in the kernel (a driver that never returns from `unbind`)
//! holds up that child, not passthru. It writes VALUE to FILE in one `write`, as
//! sysfs wants, and nothing else; the command line only dispatches here.

use std::ffi::OsString;

use super::SYSFS_WRITE_ARG;

/// Why the child's write failed; printed on its standard error, which the parent
/// reports as what the kernel said.
#[derive(Debug, thiserror::Error)]
pub enum SysfsChildError {
    /// Not called as `__sysfs-write FILE VALUE`.
    #[error("{SYSFS_WRITE_ARG} takes FILE VALUE")]
    Usage,
    /// The kernel refused the write (its errno, as the driver returned it).
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// Writes VALUE to FILE; `args` are the arguments after `__sysfs-write`.
pub fn run(args: &[OsString]) -> Result<(), SysfsChildError> {
    use std::os::unix::ffi::OsStrExt;
    let [file, value] = args else {
        return Err(SysfsChildError::Usage);
    };
    std::fs::write(file, value.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_value_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nr_hugepages");
        run(&[file.clone().into(), "128".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "128");
        let e = run(&[file.into()]).unwrap_err().to_string();
        assert_eq!(e, "__sysfs-write takes FILE VALUE");
        let e = run(&[dir.path().join("no/such").into(), "1".into()]).unwrap_err();
        assert!(matches!(e, SysfsChildError::Write(_)), "{e}");
    }
}
