//! Test fixtures: the files, directories and device nodes that unit tests lay out in a
//! temporary directory, standing for a host's tree (`sys/…`, `proc/…`, `etc/…`, read
//! through a [`crate::host::root::HostRoot`] on that directory) or for a VM's files.
//! Unit tests write through these helpers only, so every write a test makes is here;
//! the module is compiled for tests only, and a failed write fails the test.

use std::path::Path;

/// Writes `content` to `path`, creating the directories above it.
#[track_caller]
pub(crate) fn write(path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    let path = path.as_ref();
    mkdir(path.parent().expect("a file in a directory"));
    // Test fixture: a file in a temporary directory.
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Creates the directory `path` and those above it.
#[track_caller]
pub(crate) fn mkdir(path: impl AsRef<Path>) {
    let path = path.as_ref();
    // Test fixture: a directory in a temporary directory.
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

/// Removes the file (or symlink) `path`.
#[track_caller]
pub(crate) fn remove(path: impl AsRef<Path>) {
    let path = path.as_ref();
    // Test fixture: a file of a temporary directory taken away.
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
}

/// Moves `from` to `to`.
#[track_caller]
pub(crate) fn mv(from: impl AsRef<Path>, to: impl AsRef<Path>) {
    let (from, to) = (from.as_ref(), to.as_ref());
    // Test fixture: a file of a temporary directory moved within it.
    std::fs::rename(from, to)
        .unwrap_or_else(|e| panic!("mv {} {}: {e}", from.display(), to.display()));
}

/// Sets the permission bits of `path` to `mode`.
#[track_caller]
pub(crate) fn chmod(path: impl AsRef<Path>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    // Test fixture: the mode of a file in a temporary directory.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Gives `path` to the user `uid` (the caller is root).
#[track_caller]
pub(crate) fn chown(path: impl AsRef<Path>, uid: u32) {
    let path = path.as_ref();
    // Test fixture: the owner of a file in a temporary directory.
    std::os::unix::fs::chown(path, Some(uid), None)
        .unwrap_or_else(|e| panic!("chown {uid} {}: {e}", path.display()));
}

/// Makes `link` a symbolic link to `target`.
#[track_caller]
pub(crate) fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    let (target, link) = (target.as_ref(), link.as_ref());
    // Test fixture: a link in a temporary directory.
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("ln -s {} {}: {e}", target.display(), link.display()));
}

/// Creates the FIFO (named pipe) `path`, as `mkfifo(1)` does (mode 0666 less the umask).
#[track_caller]
pub(crate) fn mkfifo(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // Test fixture: a FIFO in a temporary directory (nothing opens it for writing).
    crate::apply::sys::mkfifo(&c).unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Creates the block device node `path` (`major:minor`, mode 0600); root only.
#[track_caller]
pub(crate) fn block_device(path: impl AsRef<Path>, major: u32, minor: u32) {
    let path = path.as_ref();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // Test fixture: a device node in a temporary directory (the device is not opened).
    crate::apply::sys::mknod_block(&c, major, minor)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sys/devices/d/vendor");
        write(&f, "0x8086\n");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "0x8086\n");
        chmod(&f, 0o600);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let g = dir.path().join("sys/devices/e");
        mv(f.parent().unwrap(), &g);
        remove(g.join("vendor"));
        mkdir(g.join("x/y"));
        assert!(g.join("x/y").is_dir() && !g.join("vendor").exists());
        symlink("x", g.join("l"));
        assert_eq!(std::fs::read_link(g.join("l")).unwrap(), Path::new("x"));
        mkfifo(g.join("p"));
        use std::os::unix::fs::FileTypeExt;
        assert!(g.join("p").metadata().unwrap().file_type().is_fifo());
    }
}
