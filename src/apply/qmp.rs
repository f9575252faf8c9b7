//! A small blocking client of QMP over QEMU's unix socket (the protocol and its
//! messages: [`crate::vm::qmp`]): `vm run` reads the vCPU threads through it, and
//! presses the guest's power button or tells QEMU to quit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::vm::qmp::{parse_message, parse_vcpus, Message, QmpError, VcpuThread};

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    buf: Vec<u8>,
    /// QEMU's version from the greeting.
    pub version: String,
    timeout: Duration,
}

impl Qmp {
    /// Connects to `path`, retrying until `connect_within` has passed (QEMU creates
    /// the socket early in its start-up), reads the greeting and negotiates
    /// capabilities. Each later reply is awaited at most `timeout`.
    pub fn connect(
        path: &Path,
        connect_within: Duration,
        timeout: Duration,
    ) -> Result<Self, QmpError> {
        let deadline = Instant::now() + connect_within;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(source) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Self::handshake(stream, connect_within.max(timeout), timeout)
    }

    /// Reads the greeting (waiting at most `greeting_within`: a QEMU still setting up
    /// its devices answers late) and sends `qmp_capabilities`.
    pub fn handshake(
        stream: UnixStream,
        greeting_within: Duration,
        timeout: Duration,
    ) -> Result<Self, QmpError> {
        let mut q = Self {
            stream,
            buf: Vec::new(),
            version: String::new(),
            timeout: greeting_within,
        };
        match parse_message(&q.read_line()?)? {
            Message::Greeting(v) => q.version = v,
            other => {
                return Err(QmpError::Protocol(format!(
                    "expected a greeting: {other:?}"
                )))
            }
        }
        q.timeout = timeout;
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_line(&mut self) -> Result<String, QmpError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::Timeout(self.timeout));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(QmpError::Timeout(self.timeout))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(QmpError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `command` (with `arguments`) and returns its `return` value; events that
    /// arrive meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                QmpError::Closed
            } else {
                e.into()
            }
        })?;
        loop {
            match parse_message(&self.read_line()?)? {
                Message::Return(v) => return Ok(v),
                Message::Error(class, desc) => {
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class,
                        desc,
                    })
                }
                Message::Event(_) | Message::Greeting(_) => {}
            }
        }
    }

    /// The vCPUs and their host threads (`query-cpus-fast`).
    pub fn vcpu_threads(&mut self) -> Result<Vec<VcpuThread>, QmpError> {
        parse_vcpus(&self.execute("query-cpus-fast", None)?)
    }

    /// Presses the guest's ACPI power button (`system_powerdown`): a guest that
    /// handles it shuts down cleanly, and QEMU exits.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(|_| ())
    }

    /// Ends QEMU at once (`quit`): the guest gets no chance to shut down.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            // QEMU may close the socket before its reply arrives.
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::qmp::tests::{CPUS, GREETING, NOT_FOUND, POWERDOWN_EVENT, SHUTDOWN_EVENT};

    /// A scripted QEMU on the other end of a socket pair: what it receives, and the
    /// real lines it answers with, including events between command and reply.
    #[test]
    fn a_session_skips_events_and_reports_refusals() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut got = String::new();
            let mut reader = std::io::BufReader::new(theirs.try_clone().unwrap());
            let mut next = |got: &mut String| {
                let mut l = String::new();
                std::io::BufRead::read_line(&mut reader, &mut l).unwrap();
                got.push_str(&l);
            };
            writeln!(theirs, "{GREETING}").unwrap();
            next(&mut got);
            writeln!(theirs, "{{\"return\": {{}}}}").unwrap();
            next(&mut got);
            writeln!(theirs, "{CPUS}").unwrap();
            next(&mut got);
            // The event comes before the reply, as QEMU sends it.
            writeln!(theirs, "{POWERDOWN_EVENT}\n{{\"return\": {{}}}}").unwrap();
            next(&mut got);
            writeln!(theirs, "{NOT_FOUND}").unwrap();
            next(&mut got);
            // quit: the event, then the connection closes before the reply.
            writeln!(theirs, "{SHUTDOWN_EVENT}").unwrap();
            got
        });
        let t = Duration::from_secs(10);
        let mut q = Qmp::handshake(ours, t, t).unwrap();
        assert_eq!(q.version, "7.2.22");
        assert_eq!(q.vcpu_threads().unwrap().len(), 2);
        q.system_powerdown().unwrap();
        let err = q.execute("nosuch", None).unwrap_err().to_string();
        assert_eq!(
            err,
            "QEMU refused nosuch: The command nosuch has not been found (CommandNotFound)"
        );
        q.quit().unwrap();
        let sent = server.join().unwrap();
        assert_eq!(
            sent,
            "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-cpus-fast\"}\n\
             {\"execute\":\"system_powerdown\"}\n{\"execute\":\"nosuch\"}\n{\"execute\":\"quit\"}\n"
        );
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let err = Qmp::handshake(ours, Duration::from_millis(100), Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout(_)), "{err}");
    }

    #[test]
    fn a_missing_socket_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let err = Qmp::connect(&path, Duration::from_millis(100), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("qmp.sock"), "{err}");
    }

    /// The real QEMU, when installed: connect, negotiate, read vCPU threads, quit.
    #[test]
    fn talks_to_the_real_qemu() {
        if std::process::Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED talks_to_the_real_qemu: no qemu-system-x86_64");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let mut child = std::process::Command::new("qemu-system-x86_64")
            .args(["-machine", "q35", "-accel", "tcg", "-smp", "2", "-m", "64"])
            .args(["-nodefaults", "-display", "none", "-S", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .spawn()
            .unwrap();
        let t = Duration::from_secs(30);
        let mut q = Qmp::connect(&sock, t, t).unwrap();
        let cpus = q.vcpu_threads().unwrap();
        assert_eq!(cpus.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1]);
        // Each vCPU thread is a thread of QEMU's process.
        for c in &cpus {
            let task = format!("/proc/{}/task/{}", child.id(), c.thread_id);
            assert!(Path::new(&task).exists(), "{task}");
        }
        q.quit().unwrap();
        assert!(child.wait().unwrap().success());
    }
}
