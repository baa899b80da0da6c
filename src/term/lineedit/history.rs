//! The history of past lines: bounded, without blanks and repeats, searched by Ctrl-R, and kept
//! in a file that is appended to and only now and then rewritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::error::IoContext;
use crate::sys::fsutil;

/// Past lines, oldest first, kept in a file (a line each; `#` lines are ignored, so an older
/// vmctl's rustyline history file still loads). A line is appended to the file as it is added;
/// the file is rewritten (atomically, with the newest `max`) only once it holds twice that.
pub(super) struct History {
    pub(super) entries: Vec<String>,
    path: Option<PathBuf>,
    max: usize,
    /// Lines in the file.
    in_file: usize,
}

impl History {
    pub(super) fn load(path: Option<PathBuf>, max: usize) -> History {
        let text = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut h = History {
            entries: Vec::new(),
            path,
            max,
            in_file: text.lines().count(),
        };
        for l in text.lines() {
            if !l.starts_with('#') {
                h.push(l);
            }
        }
        h
    }

    fn push(&mut self, line: &str) -> bool {
        let line = line.trim();
        if line.is_empty() || self.entries.last().is_some_and(|l| l == line) {
            return false;
        }
        self.entries.push(line.to_string());
        if self.entries.len() > self.max {
            let extra = self.entries.len() - self.max;
            self.entries.drain(..extra);
        }
        true
    }

    pub(super) fn add(&mut self, line: &str) -> crate::error::Result<()> {
        if !self.push(line) {
            return Ok(());
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.in_file < 2 * self.max {
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{}\n", line.trim()).as_bytes()));
            appended.path_ctx("append to", path)?;
            self.in_file += 1;
            return Ok(());
        }
        let mut text = String::new();
        for e in &self.entries {
            text.push_str(e);
            text.push('\n');
        }
        fsutil::write_atomic(path, text.as_bytes())?;
        self.in_file = self.entries.len();
        Ok(())
    }

    /// The newest entry at or before `from` that contains `query`.
    pub(super) fn search(&self, query: &str, from: usize) -> Option<usize> {
        let from = from.min(self.entries.len().checked_sub(1)?);
        (0..=from).rev().find(|&i| self.entries[i].contains(query))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::term::lineedit) fn history(entries: &[&str]) -> History {
        let mut h = History::load(None, 3);
        for e in entries {
            h.push(e);
        }
        h
    }

    #[test]
    fn history_skips_blanks_and_repeats_and_is_bounded() {
        let mut h = history(&["a", "a", " ", "b", "c", "d"]);
        assert_eq!(h.entries, vec!["b", "c", "d"]);
        assert!(h.add("d").is_ok());
        assert_eq!(h.entries.len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hist");
        std::fs::write(&path, "#V2\nquery-status\nhmp info status\n").unwrap();
        let mut h = History::load(Some(path.clone()), 10);
        assert_eq!(h.entries, vec!["query-status", "hmp info status"]);
        h.add("query-name").unwrap();
        let again = History::load(Some(path.clone()), 10);
        assert_eq!(again.entries.last().unwrap(), "query-name");
        // Appended until the file holds twice the bound, then rewritten with the newest.
        let mut h = History::load(Some(path.clone()), 2);
        for l in ["a", "b", "c"] {
            h.add(l).unwrap();
        }
        let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
        // The file held 4 lines: "a" rewrote it with the newest 2, "b" and "c" were appended.
        assert_eq!(lines(&path), 4);
        assert_eq!(History::load(Some(path.clone()), 2).entries, vec!["b", "c"]);
        h.add("d").unwrap();
        assert_eq!(lines(&path), 2, "rewritten at twice the bound");
        assert_eq!(History::load(Some(path), 2).entries, vec!["c", "d"]);
    }
}
