//! A QMP client over a unix socket: greeting and capability negotiation, typed commands from the
//! `qapi` crate's schema, raw JSON commands for anything version-sensitive, and the event stream.
//!
//! The transport is our own (tokio, JSON lines) rather than `qapi`'s stream, because that stream
//! deserializes every event into the schema's closed enum and breaks on events an older or newer
//! QEMU sends. Commands carry an `id` so a reply is never confused with another; events that arrive
//! while waiting for a reply are queued for `next_event`. Every read is bounded by a timeout.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout_at};

use crate::error::Error;

/// Default bound for one command's reply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QEMU closed the QMP connection")]
    Eof,
    #[error("no QMP reply within {0:?}")]
    Timeout(Duration),
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP command {command} failed: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("unexpected QMP message: {0}")]
    Protocol(String),
}

impl QmpError {
    /// A peer that went away mid-write or mid-read is an EOF, not an I/O failure: QEMU exits
    /// while we talk to it whenever the guest powers off.
    fn from_io(e: std::io::Error) -> QmpError {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => QmpError::Eof,
            _ => QmpError::Io(e),
        }
    }
}

impl From<QmpError> for Error {
    fn from(e: QmpError) -> Self {
        match e {
            QmpError::Timeout(_) => Error::Timeout(e.to_string()),
            _ => Error::Qemu(e.to_string()),
        }
    }
}

/// An asynchronous QMP event, kept as JSON so unknown events never break the stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QmpEvent {
    pub event: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
    pub timestamp: f64,
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: VecDeque<QmpEvent>,
    /// The line being read: kept across a cancelled read (a `select!` branch that lost), so
    /// that no message is ever cut in two.
    partial: Vec<u8>,
    next_id: u64,
    /// QEMU's version as announced in the greeting, e.g. (7, 2, 22).
    pub version: (u64, u64, u64),
    pub timeout: Duration,
}

impl Qmp {
    /// Connect once, read the greeting and leave capability negotiation mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout(timeout))??;
        Qmp::handshake(stream, timeout).await
    }

    /// Read the greeting on a connected stream and leave capability negotiation mode.
    async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: VecDeque::new(),
            partial: Vec::new(),
            next_id: 1,
            version: (0, 0, 0),
            timeout,
        };
        let greeting = qmp.read_message(Instant::now() + timeout).await?;
        let v = greeting.pointer("/QMP/version/qemu").ok_or_else(|| {
            QmpError::Protocol(format!("expected a QMP greeting, got {greeting}"))
        })?;
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        qmp.version = (n("major"), n("minor"), n("micro"));
        qmp.execute(qapi::qmp::qmp_capabilities { enable: None })
            .await?;
        Ok(qmp)
    }

    /// Run a command from the `qapi` schema and decode its typed reply.
    pub async fn execute<C: qapi::Command>(&mut self, command: C) -> Result<C::Ok, QmpError> {
        let id = self.take_id();
        let msg = serde_json::to_value(qapi::Execute::<C, u64>::new(command, Some(id)))
            .map_err(|e| QmpError::Protocol(e.to_string()))?;
        let reply = self.roundtrip(C::NAME, id, msg).await?;
        serde_json::from_value(reply)
            .map_err(|e| QmpError::Protocol(format!("reply to {}: {e}", C::NAME)))
    }

    /// Run any command by name with JSON arguments; the reply's `return` value comes back as JSON.
    pub async fn execute_raw(
        &mut self,
        name: &str,
        args: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.take_id();
        let mut msg = json!({ "execute": name, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        self.roundtrip(name, id, msg).await
    }

    /// A human monitor command. HMP reports failures as plain text in a successful reply; callers
    /// that need errors use [`Qmp::hmp_checked`].
    pub async fn hmp(&mut self, line: &str) -> Result<String, QmpError> {
        self.execute(qapi::qmp::human_monitor_command {
            command_line: line.to_string(),
            cpu_index: None,
        })
        .await
    }

    /// Wait for the next event until `deadline`; `Ok(None)` when the deadline passes first.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<QmpEvent>, QmpError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        loop {
            let msg = match self.read_message(deadline).await {
                Ok(m) => m,
                Err(QmpError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(ev) = parse_event(&msg) {
                return Ok(Some(ev));
            }
            tracing::debug!(%msg, "QMP: ignoring a reply nobody waits for");
        }
    }

    /// Wait until an event that `wanted` accepts arrives, until `deadline`; every other event
    /// stays queued for [`Qmp::next_event`]. `Ok(None)` when the deadline passes first.
    pub async fn wait_for_event(
        &mut self,
        wanted: impl Fn(&QmpEvent) -> bool,
        deadline: Instant,
    ) -> Result<Option<QmpEvent>, QmpError> {
        if let Some(i) = self.events.iter().position(&wanted) {
            return Ok(self.events.remove(i));
        }
        loop {
            let msg = match self.read_message(deadline).await {
                Ok(m) => m,
                Err(QmpError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            match parse_event(&msg) {
                Some(ev) if wanted(&ev) => return Ok(Some(ev)),
                Some(ev) => self.events.push_back(ev),
                None => tracing::debug!(%msg, "QMP: ignoring a reply nobody waits for"),
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Run a command by name with `fd` handed to QEMU along with it (`SCM_RIGHTS`), as `getfd`
    /// and `add-fd` take one.
    pub async fn execute_with_fd(
        &mut self,
        name: &str,
        args: Value,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        let id = self.take_id();
        let msg = json!({ "execute": name, "id": id, "arguments": args });
        let line = format!("{msg}\n");
        tracing::debug!(target: "vmctl::qmp", "-> {} (with a descriptor)", line.trim_end());
        let stream: &UnixStream = self.writer.as_ref();
        let sent = loop {
            stream.writable().await.map_err(QmpError::from_io)?;
            let once = || {
                use std::os::fd::AsRawFd;
                let iov = [std::io::IoSlice::new(line.as_bytes())];
                let fds = [fd.as_raw_fd()];
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
                nix::sys::socket::sendmsg::<()>(
                    stream.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            };
            match stream.try_io(tokio::io::Interest::WRITABLE, once) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(QmpError::from_io(e)),
            }
        };
        // The descriptor went with the first byte; the rest of the line follows plainly.
        self.writer
            .write_all(&line.as_bytes()[sent..])
            .await
            .map_err(QmpError::from_io)?;
        self.reply(name, id).await
    }

    async fn roundtrip(&mut self, name: &str, id: u64, msg: Value) -> Result<Value, QmpError> {
        let mut line = msg.to_string();
        tracing::debug!(target: "vmctl::qmp", "-> {line}");
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(QmpError::from_io)?;
        self.reply(name, id).await
    }

    /// The reply to command `id`; events that come first are queued.
    async fn reply(&mut self, name: &str, id: u64) -> Result<Value, QmpError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let reply = self.read_message(deadline).await?;
            if let Some(ev) = parse_event(&reply) {
                self.events.push_back(ev);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                tracing::debug!(%reply, "QMP: reply with a foreign id ignored");
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: name.to_string(),
                    class: err["class"].as_str().unwrap_or("GenericError").to_string(),
                    desc: err["desc"].as_str().unwrap_or("").to_string(),
                });
            }
            return reply
                .get("return")
                .cloned()
                .ok_or_else(|| QmpError::Protocol(reply.to_string()));
        }
    }

    /// The next JSON message. Cancel-safe: what a cancelled call read of a line waits in
    /// `partial` for the next call (`read_until` keeps what it read; `read_line` would not).
    async fn read_message(&mut self, deadline: Instant) -> Result<Value, QmpError> {
        loop {
            let n = timeout_at(deadline, self.reader.read_until(b'\n', &mut self.partial))
                .await
                .map_err(|_| QmpError::Timeout(self.timeout))?
                .map_err(QmpError::from_io)?;
            if n == 0 {
                return Err(QmpError::Eof);
            }
            let bytes = std::mem::take(&mut self.partial);
            let line = String::from_utf8_lossy(&bytes);
            if line.trim().is_empty() {
                continue;
            }
            tracing::debug!(target: "vmctl::qmp", "<- {}", line.trim_end());
            return serde_json::from_str(&line)
                .map_err(|e| QmpError::Protocol(format!("{e}: {}", line.trim_end())));
        }
    }
}

fn parse_event(msg: &Value) -> Option<QmpEvent> {
    let event = msg.get("event")?.as_str()?.to_string();
    let ts = msg.get("timestamp");
    let secs = ts
        .and_then(|t| t.get("seconds"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let usecs = ts
        .and_then(|t| t.get("microseconds"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    Some(QmpEvent {
        event,
        data: msg.get("data").cloned().unwrap_or(Value::Null),
        timestamp: secs + usecs / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_with_timestamps() {
        let v: Value = serde_json::from_str(
            r#"{"timestamp": {"seconds": 10, "microseconds": 500000}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        )
        .unwrap();
        let e = parse_event(&v).unwrap();
        assert_eq!(e.event, "SHUTDOWN");
        assert_eq!(e.timestamp, 10.5);
        assert_eq!(e.data["reason"], "guest-shutdown");
        assert!(parse_event(&json!({"return": {}})).is_none());
    }

    /// A QMP peer on the other end of a socket pair: it greets, acknowledges
    /// `qmp_capabilities`, then writes each part of `script` as it is (a message may be split
    /// anywhere), `None` being a pause of 100 ms.
    async fn peer(script: Vec<Option<String>>) -> (Qmp, tokio::task::JoinHandle<()>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move {
            let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}"#;
            let greeting = format!("{greeting}\n");
            theirs.write_all(greeting.as_bytes()).await.unwrap();
            let mut line = String::new();
            BufReader::new(&mut theirs)
                .read_line(&mut line)
                .await
                .unwrap();
            theirs
                .write_all(b"{\"return\": {}, \"id\": 1}\n")
                .await
                .unwrap();
            for part in script {
                match part {
                    Some(text) => theirs.write_all(text.as_bytes()).await.unwrap(),
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            // Hold the connection open while the test reads.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let qmp = Qmp::handshake(ours, Duration::from_secs(5)).await.unwrap();
        (qmp, task)
    }

    fn event_line(name: &str, netdev: &str) -> Option<String> {
        Some(
            format!(
                r#"{{"timestamp": {{"seconds": 1, "microseconds": 0}}, "event": "{name}", "data": {{"netdev-id": "{netdev}"}}}}"#
            ) + "\n",
        )
    }

    #[test]
    fn waiting_for_one_event_keeps_the_others_in_order() {
        crate::sys::rt::block_on(async {
            let (mut qmp, _task) = peer(vec![
                event_line("STOP", ""),
                event_line("NETDEV_STREAM_CONNECTED", "net1"),
                event_line("NETDEV_STREAM_CONNECTED", "net0"),
                event_line("RESUME", ""),
            ])
            .await;
            let deadline = Instant::now() + Duration::from_secs(5);
            let got = qmp
                .wait_for_event(|e| e.data["netdev-id"] == "net0", deadline)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.event, "NETDEV_STREAM_CONNECTED");
            let mut rest = Vec::new();
            for _ in 0..3 {
                let e = qmp.next_event(deadline).await.unwrap().unwrap();
                rest.push(format!(
                    "{} {}",
                    e.event,
                    e.data["netdev-id"].as_str().unwrap()
                ));
            }
            assert_eq!(rest, ["STOP ", "NETDEV_STREAM_CONNECTED net1", "RESUME "]);
            // An event that never comes is None at the deadline, not an error.
            let soon = Instant::now() + Duration::from_millis(50);
            assert!(qmp.wait_for_event(|_| true, soon).await.unwrap().is_none());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_read_cut_off_mid_line_loses_nothing() {
        crate::sys::rt::block_on(async {
            // The event comes in two writes 200 ms apart: a read that gives up between them
            // leaves the first half for the next read.
            let (mut qmp, _task) = peer(vec![
                Some(r#"{"timestamp": {"seconds": 1, "microseconds": 0}, "ev"#.to_string()),
                None,
                None,
                Some("ent\": \"SHUTDOWN\"}\n".to_string()),
            ])
            .await;
            let early = Instant::now() + Duration::from_millis(50);
            assert!(qmp.next_event(early).await.unwrap().is_none());
            let later = Instant::now() + Duration::from_secs(5);
            assert_eq!(
                qmp.next_event(later).await.unwrap().unwrap().event,
                "SHUTDOWN"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn typed_commands_serialize_with_id() {
        let v = serde_json::to_value(qapi::Execute::<_, u64>::new(
            qapi::qmp::query_status {},
            Some(7),
        ))
        .unwrap();
        assert_eq!(v["execute"], "query-status");
        assert_eq!(v["id"], 7);
    }
}
