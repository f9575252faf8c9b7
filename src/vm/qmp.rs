//! A small blocking client of QMP, the QEMU Machine Protocol, over QEMU's unix socket
//! (`-qmp unix:STATE/qmp.sock,server=on,wait=off`, see [`super::render::qemu_argv`]).
//!
//! QMP is line-delimited JSON. On connect QEMU sends a greeting
//! (`{"QMP": {"version": …, "capabilities": ["oob"]}}`) and accepts nothing but
//! `qmp_capabilities` until it is answered; then each command
//! (`{"execute": "query-cpus-fast"}`) gets exactly one reply, `{"return": …}` or
//! `{"error": {"class": …, "desc": …}}`. Asynchronous events (`{"event": "POWERDOWN",
//! …}`) may come between a command and its reply: they are skipped here.
//!
//! `vm run` uses it for the vCPU thread ids (to pin them), and to ask the guest to
//! power down (`system_powerdown`, an ACPI power-button press) or QEMU to quit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to in time.
    #[error("cannot connect to QEMU's QMP socket {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the connection (it exited).
    #[error("QEMU closed the QMP connection")]
    Closed,
    /// No reply in time.
    #[error("QEMU did not answer on QMP within {} s", .0.as_secs())]
    Timeout(Duration),
    /// A line that is not QMP.
    #[error("QEMU sent something that is not QMP: {0}")]
    Protocol(String),
    /// QEMU refused a command.
    #[error("QEMU refused {command}: {desc} ({class})")]
    Command {
        /// The command.
        command: String,
        /// QMP's error class (`CommandNotFound`, `GenericError`, …).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// One line from QEMU, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting, with QEMU's version (`7.2.22`).
    Greeting(String),
    /// A command's result.
    Return(Value),
    /// A command's failure: class and description.
    Error(String, String),
    /// An asynchronous event, by name.
    Event(String),
}

/// Parses one line of QMP.
pub fn parse_message(line: &str) -> Result<Message, QmpError> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))?;
    if let Some(g) = v.get("QMP") {
        let q = &g["version"]["qemu"];
        let n = |k: &str| q[k].as_u64().map_or_else(|| "?".into(), |n| n.to_string());
        return Ok(Message::Greeting(format!(
            "{}.{}.{}",
            n("major"),
            n("minor"),
            n("micro")
        )));
    }
    if let Some(r) = v.get("return") {
        return Ok(Message::Return(r.clone()));
    }
    if let Some(e) = v.get("error") {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        return Ok(Message::Error(s("class"), s("desc")));
    }
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        return Ok(Message::Event(name.to_string()));
    }
    Err(QmpError::Protocol(line.to_string()))
}

/// One vCPU as `query-cpus-fast` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VcpuThread {
    /// The vCPU's number (QEMU's `cpu-index`).
    #[serde(rename = "cpu-index")]
    pub index: u32,
    /// The host thread running it (a Linux thread id, in `/proc/PID/task/`).
    #[serde(rename = "thread-id")]
    pub thread_id: i32,
}

/// Parses the `return` of `query-cpus-fast`.
pub fn parse_vcpus(ret: &Value) -> Result<Vec<VcpuThread>, QmpError> {
    let mut v: Vec<VcpuThread> = serde_json::from_value(ret.clone())
        .map_err(|e| QmpError::Protocol(format!("query-cpus-fast: {e}")))?;
    v.sort_by_key(|c| c.index);
    Ok(v)
}

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

    // Lines captured from QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18) run with
    // `-machine q35 -accel tcg -smp 2 -S -qmp stdio`, answering qmp_capabilities,
    // query-cpus-fast, system_powerdown, an unknown command and quit.
    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
    const CPUS: &str = r#"{"return": [{"thread-id": 25800, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}, {"thread-id": 25801, "props": {"core-id": 1, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]}"#;
    const POWERDOWN_EVENT: &str =
        r#"{"timestamp": {"seconds": 1795570872, "microseconds": 872194}, "event": "POWERDOWN"}"#;
    const NOT_FOUND: &str = r#"{"error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}"#;
    const SHUTDOWN_EVENT: &str = r#"{"timestamp": {"seconds": 1795570872, "microseconds": 874226}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;

    #[test]
    fn classifies_real_qemu_lines() {
        assert_eq!(
            parse_message(GREETING).unwrap(),
            Message::Greeting("7.2.22".into())
        );
        assert_eq!(
            parse_message(r#"{"return": {}}"#).unwrap(),
            Message::Return(json!({}))
        );
        assert_eq!(
            parse_message(POWERDOWN_EVENT).unwrap(),
            Message::Event("POWERDOWN".into())
        );
        assert_eq!(
            parse_message(NOT_FOUND).unwrap(),
            Message::Error(
                "CommandNotFound".into(),
                "The command nosuch has not been found".into()
            )
        );
        assert!(matches!(
            parse_message("{\"hello\": 1}"),
            Err(QmpError::Protocol(_))
        ));
        assert!(matches!(
            parse_message("garbage"),
            Err(QmpError::Protocol(_))
        ));
    }

    #[test]
    fn reads_vcpu_thread_ids() {
        let Message::Return(ret) = parse_message(CPUS).unwrap() else {
            panic!("not a return")
        };
        assert_eq!(
            parse_vcpus(&ret).unwrap(),
            vec![
                VcpuThread {
                    index: 0,
                    thread_id: 25800
                },
                VcpuThread {
                    index: 1,
                    thread_id: 25801
                }
            ]
        );
        assert!(parse_vcpus(&json!({})).is_err());
    }

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
