//! What happens to the home's VMs, as it happens: one JSON line per event appended to
//! `events.jsonl` by whichever vmctl process saw it (the supervisor: started, ready, health,
//! paused, resumed, stopped, saved, crashed, restarted; the commands: created, removed,
//! snapshot, reverted, port added or removed), read back by `vmctl events`. A line is written
//! with one `write` to a file opened for appending, so lines from several processes never
//! mix; past 4 MiB the file is renamed to `events.jsonl.1` (one generation kept).

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::paths::Home;
use crate::sys::fsutil;

/// Past this size the log is rotated.
const ROTATE_AT: u64 = 4 << 20;

/// One event of one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UTC, to the millisecond: `2026-12-06T21:30:00.123Z`.
    pub time: String,
    pub vm: String,
    /// created, started, ready, healthy, unhealthy, paused, resumed, snapshot, reverted,
    /// port-added, port-removed, stopped, saved, crashed, restarted, removed.
    pub event: String,
    /// What goes with it (`{"step": "acpi"}`, `{"signal": 9}`, `{"tag": "before"}`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn new(vm: &str, event: &str, detail: serde_json::Value) -> Event {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Event {
            time: format!(
                "{}.{:03}Z",
                crate::types::format_utc(now.as_secs() as i64, ':'),
                now.subsec_millis()
            ),
            vm: vm.to_string(),
            event: event.to_string(),
            detail: match detail {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// `2026-12-06T21:30:00.123Z web stopped step=acpi`.
    pub fn line(&self) -> String {
        let mut s = format!("{} {} {}", self.time, self.vm, self.event);
        for (k, v) in &self.detail {
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(t) => s.push_str(&format!(" {k}={t}")),
                other => s.push_str(&format!(" {k}={other}")),
            }
        }
        s
    }
}

/// Append `event` to the home's log. Never fails the caller: an event that cannot be written
/// is logged and dropped (the VM's own files stay the truth).
pub fn emit(home: &Home, event: Event) {
    // In the journal too (a service's log), with the VM and the event as fields.
    let detail = serde_json::Value::Object(event.detail.clone());
    tracing::info!(vm = %event.vm, event = %event.event, %detail, "event: {}", event.line());
    if let Err(e) = append(home, &event) {
        tracing::warn!(vm = %event.vm, "cannot record event {}: {e}", event.event);
    }
}

/// `result`, with `event` recorded for `vm` when it is a success (`detail` from the value).
pub fn after<T>(
    home: &Home,
    vm: &str,
    event: &str,
    detail: impl FnOnce(&T) -> serde_json::Value,
    result: crate::error::Result<T>,
) -> crate::error::Result<T> {
    if let Ok(v) = &result {
        record(home, vm, event, detail(v));
    }
    result
}

/// `emit` of an event made here.
pub fn record(home: &Home, vm: &str, event: &str, detail: serde_json::Value) {
    emit(home, Event::new(vm, event, detail));
}

fn append(home: &Home, event: &Event) -> crate::error::Result<()> {
    let path = home.events_log();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > ROTATE_AT) {
        // Whoever sees it large renames it; a second renamer finds it small (or gone).
        let _ = std::fs::rename(&path, path.with_extension("jsonl.1"));
    }
    let mut line = serde_json::to_string(event).expect("serializes");
    line.push('\n');
    let mut f = fsutil::open_append(&path)?;
    f.write_all(line.as_bytes())
        .map_err(|e| crate::error::Error::Io {
            context: format!("Cannot append to {}", path.display()),
            source: e,
        })
}

/// Reads the log as it grows: from its end (or start), across its rotation.
pub struct Follower {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    inode: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Follow `path` from its end, or from its start when `from_start`.
    pub fn open(path: &std::path::Path, from_start: bool) -> Follower {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            partial: Vec::new(),
        };
        f.reopen(!from_start);
        f
    }

    fn reopen(&mut self, at_end: bool) {
        use std::io::Seek;
        use std::os::unix::fs::MetadataExt;
        self.partial.clear();
        self.file = fsutil::open_read(&self.path).ok().map(|mut f| {
            if at_end {
                let _ = f.seek(std::io::SeekFrom::End(0));
            }
            f
        });
        self.inode = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.ino());
    }

    /// The events appended since the last call (a line still being written waits).
    pub fn next_events(&mut self) -> Vec<Event> {
        use std::os::unix::fs::MetadataExt;
        let mut got = self.read_rest();
        // The log was rotated (or made): what the old one had last, then the new one from
        // its start.
        if std::fs::metadata(&self.path).map_or(0, |m| m.ino()) != self.inode {
            self.reopen(false);
            got.extend(self.read_rest());
        }
        got
    }

    fn read_rest(&mut self) -> Vec<Event> {
        use std::io::Read;
        let mut buf = Vec::new();
        if let Some(f) = self.file.as_mut() {
            let _ = f.read_to_end(&mut buf);
        }
        self.take_lines(buf)
    }

    fn take_lines(&mut self, buf: Vec<u8>) -> Vec<Event> {
        self.partial.extend(buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return vec![];
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        parse(&String::from_utf8_lossy(&whole))
    }

    /// Wait a little for more (the log is polled, as `tail -f` does: 100 ms between looks).
    pub fn wait(&self) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The events in `text` (lines of the log; a line cut short by a crash is skipped).
pub fn parse(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_and_shows_its_detail() {
        let e = Event::new(
            "web",
            "stopped",
            serde_json::json!({"step": "acpi", "code": 0}),
        );
        assert!(e.time.ends_with('Z') && e.time.len() == 24, "{}", e.time);
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            parse(&format!("{line}\n{{\"cut\n{line}\n")),
            vec![e.clone(), e.clone()]
        );
        assert!(
            e.line().ends_with(" web stopped code=0 step=acpi"),
            "{}",
            e.line()
        );
    }

    #[test]
    fn a_follower_reads_what_is_appended_and_follows_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            root: dir.path().to_path_buf(),
        };
        record(&home, "a", "created", serde_json::json!({}));
        let mut f = Follower::open(&home.events_log(), false);
        assert!(f.next_events().is_empty(), "from the end");
        record(&home, "a", "started", serde_json::json!({}));
        // Half a line stays until its end is written.
        std::fs::OpenOptions::new()
            .append(true)
            .open(home.events_log())
            .unwrap()
            .write_all(b"{\"time\":\"t\",\"vm\":\"a\",")
            .unwrap();
        assert_eq!(
            f.next_events()
                .iter()
                .map(|e| e.event.as_str())
                .collect::<Vec<_>>(),
            ["started"]
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(home.events_log())
            .unwrap()
            .write_all(b"\"event\":\"paused\"}\n")
            .unwrap();
        assert_eq!(f.next_events()[0].event, "paused");
        std::fs::rename(home.events_log(), dir.path().join("old")).unwrap();
        record(&home, "a", "stopped", serde_json::json!({}));
        assert_eq!(
            f.next_events()[0].event,
            "stopped",
            "the new log, from its start"
        );
        let all = Follower::open(&home.events_log(), true).next_events();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn events_append_and_the_log_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            root: dir.path().to_path_buf(),
        };
        record(&home, "a", "created", serde_json::json!({}));
        record(&home, "b", "started", serde_json::json!({"pid": 7}));
        let got = parse(&std::fs::read_to_string(home.events_log()).unwrap());
        assert_eq!(
            got.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["created", "started"]
        );
        std::fs::write(home.events_log(), vec![b'x'; ROTATE_AT as usize + 1]).unwrap();
        record(&home, "a", "removed", serde_json::json!({}));
        let got = parse(&std::fs::read_to_string(home.events_log()).unwrap());
        assert_eq!(got.len(), 1, "a new log after the rotation");
        assert!(home.events_log().with_extension("jsonl.1").exists());
    }
}
