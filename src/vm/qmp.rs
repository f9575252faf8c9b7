//! QMP, the QEMU Machine Protocol, spoken over QEMU's unix socket
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
//! power down (`system_powerdown`, an ACPI power-button press) or QEMU to quit. The
//! messages are parsed here; the client that talks to QEMU is
//! [`crate::apply::qmp::Qmp`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    // Lines captured from QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18) run with
    // `-machine q35 -accel tcg -smp 2 -S -qmp stdio`, answering qmp_capabilities,
    // query-cpus-fast, system_powerdown, an unknown command and quit.
    pub(crate) const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;
    pub(crate) const CPUS: &str = r#"{"return": [{"thread-id": 25800, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}, {"thread-id": 25801, "props": {"core-id": 1, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]}"#;
    pub(crate) const POWERDOWN_EVENT: &str =
        r#"{"timestamp": {"seconds": 1795570872, "microseconds": 872194}, "event": "POWERDOWN"}"#;
    pub(crate) const NOT_FOUND: &str = r#"{"error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}"#;
    pub(crate) const SHUTDOWN_EVENT: &str = r#"{"timestamp": {"seconds": 1795570872, "microseconds": 874226}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;

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
}
