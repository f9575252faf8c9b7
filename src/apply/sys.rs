//! The system calls that the standard library does not wrap, each behind a safe
//! function: the only `unsafe` code of the crate.
//!
//! Every block below states, in its `// SAFETY:` comment, why the call cannot touch
//! memory it does not own: descriptors are borrowed for the call's length, paths are
//! NUL-terminated, and out-buffers are valid for the size passed. Callers get
//! `io::Result`s (or the value the call cannot fail to return) and never a raw
//! descriptor they would have to close.
//!
//! The module lives in `apply/` because some of its calls change the host (signals
//! sent to processes, CPU affinity, locks, extended attributes, signal handlers);
//! the read-only ones (`openat2`, `openat`, `readlinkat`, `fstatat`, `fstat`,
//! `getdents64`, `geteuid`, the KVM version `ioctl`) serve the host reads of
//! [`crate::host::root`] as well, and change nothing.

#![allow(unsafe_code)]

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------
// Who we are.

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    geteuid() == 0
}

// ---------------------------------------------------------------------------------------
// Descriptor-relative file access (read-only): the calls of `host::root`.

/// A descriptor the kernel just returned (or -1) as an owned file.
fn owned(fd: libc::c_long) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `struct open_how` of `<linux/openat2.h>` (its first version, 24 bytes).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, {flags | O_CLOEXEC, resolve})`.
pub(crate) fn openat2(
    dir: &File,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<File> {
    let how = OpenHow {
        // The flags are a bit set; the sign bit is not one of them.
        flags: u64::from((flags | libc::O_CLOEXEC) as u32),
        mode: 0,
        resolve,
    };
    // SAFETY: `dir` is an open descriptor borrowed for the call, `path` is
    // NUL-terminated, and `how` is a live `open_how` whose exact size is passed;
    // the kernel only reads these. The result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd)
}

/// `openat(dir, name, flags | O_CLOEXEC)`.
pub(crate) fn openat(dir: &File, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated; the result is
    // a new descriptor or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    owned(libc::c_long::from(fd))
}

/// `readlinkat(dir, name)`; with an empty `name`, the target of the link that `dir`
/// itself is (opened `O_PATH | O_NOFOLLOW`).
pub(crate) fn readlinkat(dir: &File, name: &CStr) -> io::Result<PathBuf> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is valid for `buf.len()` bytes, `name` is NUL-terminated and
    // `dir` an open descriptor.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n == buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(PathBuf::from(OsStr::from_bytes(&buf[..n])))
}

/// The metadata of `name` in `dir` itself (`fstatat` with `AT_SYMLINK_NOFOLLOW`).
pub(crate) fn fstatat(dir: &File, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for one `struct stat`, which the call fills on success;
    // `name` is NUL-terminated and `dir` an open descriptor.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstatat` returned 0, so it wrote the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstat(file)`: the type and size of an open file, one system call.
pub(crate) fn fstat(file: &File) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for one `struct stat`, which the call fills on success;
    // `file` is an open descriptor.
    let rc = unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstat` returned 0, so it wrote the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `getdents64(dir, buf)`: fills `buf` with the next `struct linux_dirent64`
/// records of the directory `dir` (opened for reading); returns how many bytes,
/// 0 at the end.
pub(crate) fn getdents64(dir: &File, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, which is what the
    // kernel may fill; `dir` is an open descriptor.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `ioctl(file, KVM_GET_API_VERSION, 0)` (`_IO(KVMIO, 0x00)`, KVMIO = 0xAE) on an
/// open `/dev/kvm`: the API version, which proves the node is KVM, or -1.
pub(crate) fn kvm_get_api_version(file: &File) -> libc::c_int {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: the fd is open for the call's duration; this ioctl writes no memory and
    // its argument must be 0 (KVM answers EINVAL otherwise).
    unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) }
}

/// The device number `major:minor` as `st_rdev` holds it (for tests).
#[cfg(test)]
pub(crate) fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

/// The `(major, minor)` of a device number (`st_rdev`).
pub(crate) fn major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

// ---------------------------------------------------------------------------------------
// Locks, extended attributes, randomness.

/// `flock(file, op)` (`LOCK_EX | LOCK_NB`, `LOCK_UN`, …).
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor borrowed for the call; no memory involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), op) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getxattr(path, name)`: the attribute's value if it has one (up to 256 bytes).
pub(crate) fn getxattr(path: &CStr, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(len).ok().filter(|n| *n > 0)?;
    buf.truncate(len);
    Some(buf)
}

/// `setxattr(path, name, value, 0)`.
pub(crate) fn setxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid NUL-terminated strings and a value of the given length, which
    // the kernel only reads.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fills `buf` from the kernel's random pool (`getrandom`, flags 0); returns how
/// many bytes it filled.
pub(crate) fn getrandom(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

// ---------------------------------------------------------------------------------------
// Processes: pipes to children, signals, CPU affinity.

/// A pipe whose two ends are close-on-exec: `(read, write)`.
pub(crate) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just returned by the kernel and are owned by
    // nobody else.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Makes the child of `command` get a copy of `fd` as its descriptor 3, inherited
/// across `exec` (the original stays close-on-exec). `fd` must stay open until the
/// child is spawned.
pub(crate) fn pass_as_fd3(command: &mut Command, fd: RawFd) {
    let hook = move || {
        // SAFETY: dup2 touches no memory; a bad `fd` is an error it returns.
        let copied = unsafe { libc::dup2(fd, 3) } == 3;
        // dup2 onto itself keeps close-on-exec: clear it either way.
        // SAFETY: fcntl(F_SETFD) on a descriptor number touches no memory.
        if copied && unsafe { libc::fcntl(3, libc::F_SETFD, 0) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: the hook runs in the child between fork and exec, and does only what
    // is allowed there: it calls dup2 and fcntl, which are async-signal-safe, and
    // neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Sends `signal` to the process `pid` (a negative `pid` names a process group).
pub(crate) fn send_signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores the default action of SIGPIPE (Rust ignores it), so that a reader going
/// away ends the process quietly. Call it first thing in `main`.
pub(crate) fn default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` touches no memory; called before any thread
    // exists, so no handler is being replaced under another thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The last signal [`catch_signals`] recorded (0: none), and how many.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics: async-signal-safe.
    record_signal(sig);
}

/// Records `sig` as if it had been caught.
pub(crate) fn record_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// The last signal recorded since [`catch_signals`] (0: none), and how many were.
pub(crate) fn signals_received() -> (i32, usize) {
    (
        SIGNAL.load(Ordering::SeqCst),
        SIGNALS.load(Ordering::SeqCst),
    )
}

/// The actions [`catch_signals`] replaced; restored by [`restore_signals`].
#[derive(Debug)]
pub(crate) struct PreviousActions(Vec<(libc::c_int, libc::sigaction)>);

/// Catches `signals` (SA_RESTART) with a handler that only records them (see
/// [`signals_received`]), after clearing the record.
pub(crate) fn catch_signals(signals: &[libc::c_int]) -> PreviousActions {
    SIGNAL.store(0, Ordering::SeqCst);
    SIGNALS.store(0, Ordering::SeqCst);
    let mut old = Vec::new();
    for &sig in signals {
        // SAFETY: `sigaction` is plain data, for which all zeroes is a valid value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: sigemptyset writes only the set it is given.
        unsafe {
            libc::sigemptyset(&raw mut action.sa_mask);
        }
        // SAFETY: as above.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: the action's handler is an `extern "C" fn(c_int)` that only touches
        // atomics, and `previous` is a valid out pointer.
        if unsafe { libc::sigaction(sig, &raw const action, &raw mut previous) } == 0 {
            old.push((sig, previous));
        }
    }
    PreviousActions(old)
}

/// Puts back the actions [`catch_signals`] replaced.
pub(crate) fn restore_signals(previous: &PreviousActions) {
    for (sig, action) in &previous.0 {
        // SAFETY: restores an action sigaction itself returned; no out pointer.
        unsafe {
            libc::sigaction(*sig, action, std::ptr::null_mut());
        }
    }
}

/// The CPUs the calling thread may run on.
pub(crate) fn own_affinity() -> Vec<u32> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size it is given into `set`.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) }
        != 0
    {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads one bit of the set, at an index below its size.
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .filter_map(|c| u32::try_from(c).ok())
        .collect()
}

/// Sets the affinity of one thread (a Linux thread id) to `cpus`.
pub(crate) fn set_affinity(tid: i32, cpus: &[u32]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        let c = *c as usize;
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET writes one bit of the set, at an index below its size.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: sched_setaffinity reads exactly the set's size from a live set.
    if unsafe {
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Test fixtures.

/// Creates the FIFO `path` (mode 0666 less the umask). For the fixtures of `crate::testing`.
#[cfg(test)]
pub(crate) fn mkfifo(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated path that lives across the call; mkfifo
    // reads only it.
    if unsafe { libc::mkfifo(path.as_ptr(), 0o666) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates the block device node `path` (`major:minor`, mode 0600); root only. For
/// the fixtures of `crate::testing`.
#[cfg(test)]
pub(crate) fn mknod_block(path: &CStr, major: u32, minor: u32) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated path that lives across the call; mknod
    // reads only it.
    let rc = unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_child_reads_the_pipe_on_its_descriptor_3() {
        let (read, write) = pipe_cloexec().unwrap();
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "read -r line <&3 && test \"$line\" = go"])
            .stdin(std::process::Stdio::null());
        pass_as_fd3(&mut command, read.as_raw_fd());
        let mut child = command.spawn().unwrap();
        drop(read);
        File::from(write).write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_held_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        crate::testing::write(&path, "");
        let a = File::open(&path).unwrap();
        let b = File::open(&path).unwrap();
        flock(&a, libc::LOCK_EX | libc::LOCK_NB).unwrap();
        let e = flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
        flock(&a, libc::LOCK_UN).unwrap();
        flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    }

    #[test]
    fn directory_entries_links_and_metadata_relative_to_a_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write(dir.path().join("f"), "abc");
        crate::testing::symlink("f", dir.path().join("l"));
        let d = File::open(dir.path()).unwrap();
        let mut buf = [0u8; 4096];
        assert!(getdents64(&d, &mut buf).unwrap() > 0);
        assert_eq!(readlinkat(&d, c"l").unwrap(), PathBuf::from("f"));
        let st = fstatat(&d, c"l").unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let mut f = openat(&d, c"f", libc::O_RDONLY).unwrap();
        assert_eq!(fstat(&f).unwrap().st_size, 3);
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "abc");
        let e = openat2(&d, c"/f", libc::O_RDONLY, libc::RESOLVE_BENEATH).unwrap_err();
        assert!(matches!(
            e.raw_os_error(),
            Some(libc::EXDEV | libc::ENOSYS | libc::EPERM)
        ));
    }

    #[test]
    fn a_thread_keeps_the_affinity_it_is_given() {
        let cpus = own_affinity();
        assert!(!cpus.is_empty());
        std::thread::spawn(move || {
            set_affinity(0, &cpus[..1]).unwrap();
            assert_eq!(own_affinity(), cpus[..1]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn device_numbers_and_random_bytes() {
        assert_eq!(major_minor(makedev(8, 17)), (8, 17));
        let mut buf = [0u8; 8];
        assert_eq!(getrandom(&mut buf).unwrap(), 8);
    }
}
