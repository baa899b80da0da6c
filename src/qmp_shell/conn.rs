//! The shell's QMP connection: a plain blocking socket with a reader thread. Replies go to the
//! waiting command through a channel; events go to the line editor's printer, which prints them
//! at once, above the prompt while it waits (keeping a half-typed line) and in line while a
//! command runs. Also how replies and events read as one line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::sys::fsutil;

/// Bound for one command's reply (long enough for a QMP command that does real work).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

type EventSink = Box<dyn FnMut(String) + Send>;

/// A QMP connection on a blocking socket; a reader thread sorts replies from events.
pub(super) struct Conn {
    writer: UnixStream,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    _lock: fsutil::Lock,
}

impl Conn {
    pub(super) fn open(
        socket: &Path,
        lock: fsutil::Lock,
        on_event: Option<EventSink>,
    ) -> Result<Conn> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Qemu(format!("Cannot talk to QEMU at {}: {e}", socket.display()))
        };
        let stream = UnixStream::connect(socket).map_err(|e| fail(&e))?;
        stream
            .set_read_timeout(Some(crate::qemu::qmp::COMMAND_TIMEOUT))
            .map_err(|e| fail(&e))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| fail(&e))?);
        let mut writer = stream;
        let greeting = read_json(&mut reader).map_err(|e| fail(&e))?;
        if greeting.get("QMP").is_none() {
            return Err(fail(&format!("expected a QMP greeting, got {greeting}")));
        }
        writer
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .map_err(|e| fail(&e))?;
        loop {
            let v = read_json(&mut reader).map_err(|e| fail(&e))?;
            if let Some(e) = v.get("error") {
                return Err(fail(&e));
            }
            if v.get("return").is_some() {
                break;
            }
        }
        writer.set_read_timeout(None).map_err(|e| fail(&e))?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || read_loop(reader, tx, on_event));
        Ok(Conn {
            writer,
            replies,
            next_id: 1,
            _lock: lock,
        })
    }

    /// Send a command; the whole reply (`return` or `error`) comes back, without its id.
    pub(super) fn execute(&mut self, name: &str, args: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": name, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        tracing::debug!(target: "vmctl::qmp", "-> {msg}");
        let gone = || Error::Qemu("QEMU closed the QMP connection (did the VM stop?)".into());
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|_| gone())?;
        loop {
            let mut reply = match self.replies.recv_timeout(REPLY_TIMEOUT) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout(format!(
                        "No reply to {name} within {REPLY_TIMEOUT:?}"
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
            };
            if reply.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(o) = reply.as_object_mut() {
                    o.remove("id");
                }
                return Ok(reply);
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the reader thread's blocking read.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

fn read_json(r: &mut impl BufRead) -> std::io::Result<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if !line.trim().is_empty() {
            tracing::debug!(target: "vmctl::qmp", "<- {}", line.trim_end());
            return serde_json::from_str(&line).map_err(std::io::Error::other);
        }
    }
}

fn read_loop(mut r: impl BufRead, tx: mpsc::Sender<Value>, mut on_event: Option<EventSink>) {
    while let Ok(v) = read_json(&mut r) {
        if let Some(ev) = v.get("event").and_then(Value::as_str) {
            if let Some(sink) = on_event.as_mut() {
                sink(format_event(ev, &v));
            }
        } else if tx.send(v).is_err() {
            return;
        }
    }
}

fn format_event(name: &str, v: &Value) -> String {
    let secs = v["timestamp"]["seconds"].as_i64().unwrap_or(0);
    let usecs = v["timestamp"]["microseconds"].as_i64().unwrap_or(0);
    match v.get("data") {
        Some(d) => format!("event {name} at {secs}.{usecs:06}: {d}"),
        None => format!("event {name} at {secs}.{usecs:06}"),
    }
}

/// A QMP error reply as one line: `CommandNotFound: The command foo has not been found`.
pub fn format_error(reply: &Value) -> Option<String> {
    let e = reply.get("error")?;
    Some(format!(
        "{}: {}",
        e["class"].as_str().unwrap_or("GenericError"),
        e["desc"].as_str().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_events_print_on_one_line() {
        let r = json!({"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}});
        assert_eq!(
            format_error(&r).unwrap(),
            "CommandNotFound: The command foo has not been found"
        );
        assert!(format_error(&json!({"return": {}})).is_none());
        let e = json!({"event": "STOP", "timestamp": {"seconds": 5, "microseconds": 42}});
        assert_eq!(format_event("STOP", &e), "event STOP at 5.000042");
    }
}
