//! The interactive QMP shell's line editor: one line edited in place, a history file, Tab
//! completion, reverse search, and messages (QMP events) printed above the prompt the moment they
//! arrive, also while a half-typed line waits.
//!
//! Why not a line-editing crate: rustyline 17's external printer waits in `select()` on the
//! terminal while typed-ahead bytes sit unseen in its own read buffer, so a paste stalls until the
//! next key press; reedline asks the terminal where the cursor is before each prompt and stalls
//! for two seconds where nothing answers. This editor reads the terminal into its own buffer and
//! waits (poll) on the terminal and on a wake-up socket only when that buffer is empty, so neither
//! typed-ahead keys nor messages wait for each other. A line wider than the terminal scrolls
//! sideways (as in linenoise), so redrawing never needs to know which row the cursor is on. A
//! terminal that takes no control sequences (`TERM=dumb`, as in Emacs' shell mode, or standard
//! output not the terminal) gets plain lines: the prompt, and messages on lines of their own.
//!
//! The pure parts (bytes to keys, editing, layout of the visible part, history, search) are unit
//! tested here; the terminal part (raw mode, poll, printing above the prompt) is driven through a
//! pseudo-terminal by the QMP shell's integration test.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read as _, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use unicode_width::UnicodeWidthChar;

use crate::error::IoContext;
use crate::sys::fsutil;

/// How long the rest of an escape sequence may take to arrive before a lone Esc is just Esc.
const ESC_WAIT: Duration = Duration::from_millis(50);

/// How `read_line` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// Ctrl-C: the line was dropped.
    Interrupted,
    /// Ctrl-D on an empty line, or the terminal closed.
    Eof,
}

/// Completion: for the line and the cursor's byte offset, where the word being completed starts
/// (a byte offset) and what may replace it.
pub type Completer = Box<dyn Fn(&str, usize) -> (usize, Vec<String>)>;

/// A line editor on standard input (a terminal) and standard output.
pub struct Editor {
    history: History,
    complete: Completer,
    printer: Printer,
    wake: UnixStream,
    /// Bytes read from the terminal and not yet turned into keys (type-ahead survives between
    /// lines).
    input: VecDeque<u8>,
    /// The terminal reported end of file.
    hangup: bool,
    /// No control sequences: lines as the terminal's line discipline gives them.
    plain: bool,
}

/// Whether the terminal takes the editor's control sequences: standard output is the terminal
/// and `TERM` is not one that cannot (linenoise's list: dumb, cons25, emacs).
fn capable_terminal() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    io::stdout().is_terminal() && !matches!(term.as_str(), "dumb" | "cons25" | "emacs")
}

/// A handle other threads print through: above the prompt while a line is being edited, straight
/// to standard output otherwise.
#[derive(Clone)]
pub struct Printer {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<PrintState>,
    wake: UnixStream,
}

#[derive(Default)]
struct PrintState {
    editing: bool,
    pending: Vec<String>,
}

impl Printer {
    /// Print one message (a line, or several).
    pub fn print(&self, msg: String) {
        let mut st = self.shared.lock();
        if st.editing {
            st.pending.push(msg);
            // A full socket already holds a wake-up; the message is queued either way.
            let _ = (&self.shared.wake).write(&[1]);
        } else {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{msg}");
            let _ = out.flush();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PrintState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The messages queued since the last call.
    fn take_pending(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().pending)
    }
}

impl Editor {
    /// An editor whose history lives in `history` (read now if it exists, rewritten after each
    /// line); it completes nothing until `set_completer`.
    pub fn new(history: Option<PathBuf>) -> io::Result<Editor> {
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        Ok(Editor {
            history: History::load(history, 1000),
            complete: Box::new(|_, pos| (pos, Vec::new())),
            printer: Printer {
                shared: Arc::new(Shared {
                    state: Mutex::default(),
                    wake: wake_tx,
                }),
            },
            wake,
            input: VecDeque::new(),
            hangup: false,
            plain: !capable_terminal(),
        })
    }

    pub fn set_completer(&mut self, complete: Completer) {
        self.complete = complete;
    }

    pub fn printer(&self) -> Printer {
        self.printer.clone()
    }

    /// Add `line` to the history and save the history file.
    pub fn add_history(&mut self, line: &str) -> crate::error::Result<()> {
        self.history.add(line)
    }

    /// Edit one line after `prompt`: in raw mode on a capable terminal, else (`plain`) as the
    /// terminal's own line discipline gives it.
    pub fn read_line(&mut self, prompt: &str) -> io::Result<Read> {
        let stdin = io::stdin();
        let raw = if self.plain {
            None
        } else {
            Some(RawMode::enter(stdin.as_fd())?)
        };
        self.printer.shared.lock().editing = true;
        let result = match &raw {
            Some(raw) => {
                let mut state = State::new(prompt, self.history.entries.len());
                self.edit(&mut state, raw)
            }
            None => self.read_plain(prompt, stdin.as_fd()),
        };
        // Messages that came after the last redraw go under the finished line.
        let late = {
            let mut st = self.printer.shared.lock();
            st.editing = false;
            std::mem::take(&mut st.pending)
        };
        let mut out = io::stdout().lock();
        for m in late {
            let _ = write!(out, "{}\r\n", m.replace('\n', "\r\n"));
        }
        let _ = out.flush();
        drop(raw);
        result
    }

    /// A line without control sequences, for a terminal that cannot take them (Emacs' shell
    /// mode edits the line itself): the prompt, and messages on lines of their own, each
    /// followed by the prompt again.
    fn read_plain(&mut self, prompt: &str, tty: BorrowedFd<'_>) -> io::Result<Read> {
        let mut out = io::stdout();
        write!(out, "{prompt}")?;
        loop {
            let pending = self.printer.shared.take_pending();
            if !pending.is_empty() {
                writeln!(out)?;
                for m in pending {
                    writeln!(out, "{m}")?;
                }
                write!(out, "{prompt}")?;
            }
            out.flush()?;
            if let Some(i) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                return Ok(Read::Line(line.trim_end_matches(['\n', '\r']).to_string()));
            }
            if self.hangup {
                // End of input (Ctrl-D): a last line without its newline still counts.
                if self.input.is_empty() {
                    return Ok(Read::Eof);
                }
                let line: Vec<u8> = self.input.drain(..).collect();
                return Ok(Read::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            self.fill(tty, None)?;
        }
    }

    fn edit(&mut self, state: &mut State, raw: &RawMode<'_>) -> io::Result<Read> {
        let tty = raw.fd;
        let mut out = io::stdout();
        // Redraw once the keys at hand are used up, not after each key of a paste.
        let mut dirty = true;
        loop {
            let pending = self.printer.shared.take_pending();
            if !pending.is_empty() {
                let mut s = String::from("\r\x1b[0K");
                for m in pending {
                    s.push_str(&m.replace('\n', "\r\n"));
                    s.push_str("\r\n");
                }
                out.write_all(s.as_bytes())?;
                dirty = true;
            }
            if dirty && self.input.is_empty() {
                self.redraw(&mut out, state, tty)?;
                dirty = false;
            }
            out.flush()?;
            let key = match self.next_key(tty)? {
                Some(k) => k,
                None => continue, // a wake-up: print what came
            };
            let action = state.key(key, &self.history, &self.complete);
            match action {
                Action::Redraw => dirty = true,
                Action::Bell => out.write_all(b"\x07")?,
                Action::List(cands) => {
                    let mut s = String::from("\r\n");
                    s.push_str(&columns(cands.iter().map(String::as_str), width(tty)));
                    out.write_all(s.replace('\n', "\r\n").as_bytes())?;
                    dirty = true;
                }
                Action::ClearScreen => {
                    out.write_all(b"\x1b[H\x1b[2J")?;
                    dirty = true;
                }
                Action::Suspend => {
                    out.write_all(b"\r\n")?;
                    out.flush()?;
                    raw.suspend()?;
                    dirty = true;
                }
                Action::Done(r) => {
                    // The whole line, wrapped by the terminal, stays in the scrollback.
                    let text = match &r {
                        Read::Line(l) => l.clone(),
                        Read::Interrupted => format!("{}^C", state.line.text()),
                        Read::Eof => String::new(),
                    };
                    write!(out, "\r{}{text}\x1b[0K\r\n", state.prompt)?;
                    out.flush()?;
                    return Ok(r);
                }
            }
        }
    }

    fn redraw(&self, out: &mut impl Write, state: &State, tty: BorrowedFd<'_>) -> io::Result<()> {
        let (prompt, line, pos) = state.view(&self.history);
        let (visible, col) = layout(&prompt, &line, pos, width(tty));
        let mut s = format!("\r{prompt}{visible}\x1b[0K\r");
        if col > 0 {
            s.push_str(&format!("\x1b[{col}C"));
        }
        out.write_all(s.as_bytes())?;
        out.flush()
    }

    /// The next key, or None after a wake-up (messages to print).
    fn next_key(&mut self, tty: BorrowedFd<'_>) -> io::Result<Option<Key>> {
        loop {
            let bytes = self.input.make_contiguous();
            if !bytes.is_empty() {
                match decode(bytes) {
                    Some((key, n)) => {
                        self.input.drain(..n);
                        return Ok(Some(key));
                    }
                    // Part of a sequence: wait briefly for the rest (a wake-up meanwhile only
                    // delays the messages), else take its first byte alone.
                    None => {
                        let deadline = Instant::now() + ESC_WAIT;
                        loop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                let b = self.input.pop_front();
                                return Ok(Some(if b == Some(0x1b) {
                                    Key::Esc
                                } else {
                                    Key::Ignored
                                }));
                            }
                            if self.fill(tty, Some(left))? {
                                break;
                            }
                        }
                        continue;
                    }
                }
            }
            if self.hangup {
                return Ok(Some(Key::Hangup));
            }
            if !self.fill(tty, None)? {
                return Ok(None);
            }
        }
    }

    /// Wait for the terminal or a wake-up; read what the terminal has. False on a wake-up or
    /// timeout.
    fn fill(&mut self, tty: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        let (tty_ready, woken) = loop {
            let mut fds = [
                PollFd::new(&tty, PollFlags::IN),
                PollFd::new(&self.wake, PollFlags::IN),
            ];
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) => break (!fds[0].revents().is_empty(), !fds[1].revents().is_empty()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if woken {
            let mut buf = [0u8; 64];
            while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        }
        if !tty_ready {
            return Ok(false);
        }
        let mut buf = [0u8; 1024];
        let n = loop {
            match rustix::io::read(tty, &mut buf) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.hangup = true;
        }
        self.input.extend(&buf[..n]);
        Ok(true)
    }
}

/// Raw mode on the terminal for as long as this lives.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
    raw: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> io::Result<RawMode<'a>> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Now, not after draining: what was typed ahead is kept for the editor.
        tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { fd, saved, raw })
    }

    /// Ctrl-Z: stop as a cooked-mode program would (the shell takes the terminal), and take raw
    /// mode again when continued.
    fn suspend(&self) -> io::Result<()> {
        tcsetattr(self.fd, OptionalActions::Now, &self.saved)?;
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTSTP);
        Ok(tcsetattr(self.fd, OptionalActions::Now, &self.raw)?)
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

fn width(tty: BorrowedFd<'_>) -> usize {
    match tcgetwinsize(tty) {
        Ok(w) if w.ws_col > 0 => w.ws_col as usize,
        _ => 80,
    }
}

/// `words` in columns that fit `width`, a row per line, each line ending in a newline.
pub fn columns<'a>(words: impl Iterator<Item = &'a str>, width: usize) -> String {
    let words: Vec<&str> = words.collect();
    let w = words.iter().map(|w| w.len()).max().unwrap_or(0) + 2;
    let per = (width.saturating_sub(2) / w).max(1);
    let mut s = String::new();
    for row in words.chunks(per) {
        let mut line = String::from("  ");
        for word in row {
            line.push_str(&format!("{word:<w$}"));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// A key, after decoding the bytes a terminal sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Char(char),
    Enter,
    Tab,
    Backspace,
    Delete,
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Up,
    Down,
    KillEnd,
    KillStart,
    KillWordBack,
    KillWordForward,
    Transpose,
    ClearScreen,
    Interrupt,
    EofOrDelete,
    Suspend,
    Search,
    Cancel,
    Esc,
    /// The terminal closed.
    Hangup,
    /// A sequence this editor does not use.
    Ignored,
}

/// The first key in `b` (not empty) and how many bytes it took, or None when `b` holds only the
/// start of a sequence.
fn decode(b: &[u8]) -> Option<(Key, usize)> {
    let key = match b[0] {
        0x1b => return decode_escape(b),
        b'\r' if b.get(1) == Some(&b'\n') => return Some((Key::Enter, 2)),
        b'\r' | b'\n' => Key::Enter,
        0x01 => Key::Home,
        0x02 => Key::Left,
        0x03 => Key::Interrupt,
        0x04 => Key::EofOrDelete,
        0x05 => Key::End,
        0x06 => Key::Right,
        0x07 => Key::Cancel,
        0x08 | 0x7f => Key::Backspace,
        b'\t' => Key::Tab,
        0x0b => Key::KillEnd,
        0x0c => Key::ClearScreen,
        0x0e => Key::Down,
        0x10 => Key::Up,
        0x12 => Key::Search,
        0x14 => Key::Transpose,
        0x15 => Key::KillStart,
        0x17 => Key::KillWordBack,
        0x1a => Key::Suspend,
        c if c < 0x20 => Key::Ignored,
        c => {
            let len = match c {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                0x80.. => return Some((Key::Ignored, 1)),
                _ => 1,
            };
            if b.len() < len {
                return None;
            }
            return Some(match std::str::from_utf8(&b[..len]) {
                Ok(s) => (Key::Char(s.chars().next().unwrap_or(' ')), len),
                Err(_) => (Key::Ignored, 1),
            });
        }
    };
    Some((key, 1))
}

fn decode_escape(b: &[u8]) -> Option<(Key, usize)> {
    let arrow = |c: u8| match c {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' => Key::Right,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        _ => Key::Ignored,
    };
    match b.get(1)? {
        b'[' => {
            let end = b[2..].iter().position(|c| (0x40..=0x7e).contains(c));
            let Some(end) = end.map(|i| i + 2) else {
                // A sequence that never ends is not one.
                return if b.len() > 16 {
                    Some((Key::Ignored, b.len()))
                } else {
                    None
                };
            };
            let params = &b[2..end];
            let key = match (params, b[end]) {
                (b"", c) => arrow(c),
                (b"1;5" | b"1;3", b'C') => Key::WordRight,
                (b"1;5" | b"1;3", b'D') => Key::WordLeft,
                (b"1" | b"7", b'~') => Key::Home,
                (b"4" | b"8", b'~') => Key::End,
                (b"3", b'~') => Key::Delete,
                _ => Key::Ignored,
            };
            Some((key, end + 1))
        }
        b'O' => Some((arrow(*b.get(2)?), 3)),
        b'b' => Some((Key::WordLeft, 2)),
        b'f' => Some((Key::WordRight, 2)),
        b'd' => Some((Key::KillWordForward, 2)),
        0x7f | 0x08 => Some((Key::KillWordBack, 2)),
        _ => Some((Key::Esc, 1)),
    }
}

/// The line being edited: characters and the cursor (an index into them).
#[derive(Debug, Default, Clone, PartialEq)]
struct Line {
    chars: Vec<char>,
    pos: usize,
}

impl Line {
    fn text(&self) -> String {
        self.chars.iter().collect()
    }

    fn set(&mut self, s: &str) {
        self.chars = s.chars().collect();
        self.pos = self.chars.len();
    }

    fn byte_pos(&self) -> usize {
        self.chars[..self.pos].iter().map(|c| c.len_utf8()).sum()
    }

    fn word_left(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    fn word_right(&self) -> usize {
        let mut i = self.pos;
        let n = self.chars.len();
        while i < n && self.chars[i].is_whitespace() {
            i += 1;
        }
        while i < n && !self.chars[i].is_whitespace() {
            i += 1;
        }
        i
    }

    /// Apply an editing key; false when the key is not an edit.
    fn edit(&mut self, key: &Key) -> bool {
        let n = self.chars.len();
        match key {
            Key::Char(c) => {
                self.chars.insert(self.pos, *c);
                self.pos += 1;
            }
            Key::Backspace if self.pos > 0 => {
                self.pos -= 1;
                self.chars.remove(self.pos);
            }
            Key::Delete | Key::EofOrDelete if self.pos < n => {
                self.chars.remove(self.pos);
            }
            Key::Left => self.pos = self.pos.saturating_sub(1),
            Key::Right => self.pos = (self.pos + 1).min(n),
            Key::Home => self.pos = 0,
            Key::End => self.pos = n,
            Key::WordLeft => self.pos = self.word_left(),
            Key::WordRight => self.pos = self.word_right(),
            Key::KillEnd => self.chars.truncate(self.pos),
            Key::KillStart => {
                self.chars.drain(..self.pos);
                self.pos = 0;
            }
            Key::KillWordBack => {
                let i = self.word_left();
                self.chars.drain(i..self.pos);
                self.pos = i;
            }
            Key::KillWordForward => {
                let i = self.word_right();
                self.chars.drain(self.pos..i);
            }
            Key::Transpose if n >= 2 && self.pos > 0 => {
                let i = if self.pos == n { n - 1 } else { self.pos };
                self.chars.swap(i - 1, i);
                self.pos = (i + 1).min(n);
            }
            Key::Backspace | Key::Delete | Key::EofOrDelete | Key::Transpose => {}
            _ => return false,
        }
        true
    }

    /// Replace the bytes `start..cursor` with `with`.
    fn replace_word(&mut self, start: usize, with: &str) {
        let text = self.text();
        let end = self.byte_pos();
        let start = start.min(end);
        let rest: Vec<char> = text[end..].chars().collect();
        self.set(&format!("{}{with}", &text[..start]));
        let pos = self.chars.len();
        self.chars.extend(rest);
        self.pos = pos;
    }
}

/// The part of `line` that fits in `width` columns after `prompt`, keeping the cursor (`pos`)
/// in view, and the cursor's column.
fn layout(prompt: &str, line: &[char], pos: usize, width: usize) -> (String, usize) {
    let w = |c: &char| c.width().unwrap_or(0);
    let pw: usize = prompt.chars().map(|c| w(&c)).sum();
    // Keep the last column free: a character there would wrap the cursor to the next row.
    let room = width.saturating_sub(pw + 1).max(1);
    let mut start = 0;
    let mut before: usize = line[..pos].iter().map(w).sum();
    while before > room && start < pos {
        before -= w(&line[start]);
        start += 1;
    }
    let mut end = pos;
    let mut used = before;
    while end < line.len() && used + w(&line[end]) <= room {
        used += w(&line[end]);
        end += 1;
    }
    (line[start..end].iter().collect(), pw + before)
}

/// Past lines, oldest first, kept in a file (a line each; `#` lines are ignored, so an older
/// vmctl's rustyline history file still loads). A line is appended to the file as it is added;
/// the file is rewritten (atomically, with the newest `max`) only once it holds twice that.
struct History {
    entries: Vec<String>,
    path: Option<PathBuf>,
    max: usize,
    /// Lines in the file.
    in_file: usize,
}

impl History {
    fn load(path: Option<PathBuf>, max: usize) -> History {
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

    fn add(&mut self, line: &str) -> crate::error::Result<()> {
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
    fn search(&self, query: &str, from: usize) -> Option<usize> {
        let from = from.min(self.entries.len().checked_sub(1)?);
        (0..=from).rev().find(|&i| self.entries[i].contains(query))
    }
}

/// Reverse incremental search (Ctrl-R): the query and the entry it found.
#[derive(Debug)]
struct Search {
    query: String,
    found: Option<usize>,
    /// The line as it was before the search, restored by Ctrl-G.
    before: Line,
}

/// What the terminal should do after a key.
#[derive(Debug, PartialEq)]
enum Action {
    Redraw,
    Bell,
    List(Vec<String>),
    ClearScreen,
    Suspend,
    Done(Read),
}

/// One `read_line`'s editing state.
struct State {
    prompt: String,
    line: Line,
    /// The history entry shown (`entries.len()` is the line being typed).
    hist: usize,
    /// The line being typed, kept while Up/Down show history.
    draft: Line,
    search: Option<Search>,
    tabbed: bool,
}

impl State {
    fn new(prompt: &str, history_len: usize) -> State {
        State {
            prompt: prompt.to_string(),
            line: Line::default(),
            hist: history_len,
            draft: Line::default(),
            search: None,
            tabbed: false,
        }
    }

    /// The prompt, line and cursor to show.
    fn view(&self, history: &History) -> (String, Vec<char>, usize) {
        match &self.search {
            Some(s) => {
                let (found, pos) = match s.found {
                    Some(i) => {
                        let e = &history.entries[i];
                        let b = e.find(&s.query).unwrap_or(0);
                        (e.chars().collect(), e[..b].chars().count())
                    }
                    None => (Vec::new(), 0),
                };
                let fail = if s.found.is_none() && !s.query.is_empty() {
                    "failed "
                } else {
                    ""
                };
                (
                    format!("({fail}reverse-i-search)`{}': ", s.query),
                    found,
                    pos,
                )
            }
            None => (self.prompt.clone(), self.line.chars.clone(), self.line.pos),
        }
    }

    fn key(&mut self, key: Key, history: &History, complete: &Completer) -> Action {
        if self.search.is_some() {
            if let Some(a) = self.search_key(&key, history) {
                return a;
            }
        }
        let tabbed = std::mem::replace(&mut self.tabbed, false);
        match key {
            Key::Enter => Action::Done(Read::Line(self.line.text())),
            Key::Interrupt => Action::Done(Read::Interrupted),
            Key::Hangup => Action::Done(Read::Eof),
            Key::EofOrDelete if self.line.chars.is_empty() => Action::Done(Read::Eof),
            Key::Tab => self.complete(complete, tabbed),
            Key::Up | Key::Down => self.browse(key == Key::Up, history),
            Key::Search => {
                self.search = Some(Search {
                    query: String::new(),
                    found: None,
                    before: self.line.clone(),
                });
                Action::Redraw
            }
            Key::ClearScreen => Action::ClearScreen,
            // A lone Esc (or Esc then a key this editor does not bind) does nothing.
            Key::Esc => Action::Redraw,
            Key::Suspend => Action::Suspend,
            k => {
                if self.line.edit(&k) {
                    Action::Redraw
                } else {
                    Action::Bell
                }
            }
        }
    }

    /// A key during Ctrl-R; None when it ends the search and should then act on the line.
    fn search_key(&mut self, key: &Key, history: &History) -> Option<Action> {
        let s = self.search.as_mut()?;
        match key {
            Key::Char(c) => {
                s.query.push(*c);
                s.found = history.search(&s.query, s.found.unwrap_or(usize::MAX));
            }
            Key::Backspace => {
                s.query.pop();
                s.found = history.search(&s.query, usize::MAX);
            }
            Key::Search => {
                let older = s
                    .found
                    .map(|i| i.checked_sub(1))
                    .unwrap_or(Some(usize::MAX));
                match older.and_then(|from| history.search(&s.query, from)) {
                    Some(i) => s.found = Some(i),
                    None => return Some(Action::Bell),
                }
            }
            Key::Cancel | Key::Interrupt | Key::Esc => {
                self.line = s.before.clone();
                self.search = None;
            }
            _ => {
                // Any other key takes the match into the line and then does its usual job.
                if let Some(i) = s.found {
                    self.line.set(&history.entries[i]);
                }
                self.search = None;
                return None;
            }
        }
        Some(Action::Redraw)
    }

    fn browse(&mut self, up: bool, history: &History) -> Action {
        let n = history.entries.len();
        let to = match (up, self.hist) {
            (true, 0) => return Action::Bell,
            (true, i) => i - 1,
            (false, i) if i >= n => return Action::Bell,
            (false, i) => i + 1,
        };
        if self.hist == n {
            self.draft = self.line.clone();
        }
        self.hist = to;
        if to == n {
            self.line = self.draft.clone();
        } else {
            self.line.set(&history.entries[to]);
        }
        Action::Redraw
    }

    /// Tab: one candidate replaces the word; several extend it to what they share, and a second
    /// Tab lists them.
    fn complete(&mut self, complete: &Completer, tabbed: bool) -> Action {
        let text = self.line.text();
        let (start, cands) = complete(&text, self.line.byte_pos());
        let word = &text[start.min(text.len())..self.line.byte_pos()];
        match cands.as_slice() {
            [] => Action::Bell,
            [one] => {
                self.line.replace_word(start, one);
                Action::Redraw
            }
            many => {
                let common = common_prefix(many);
                if common.len() > word.len() {
                    self.line.replace_word(start, &common);
                    self.tabbed = true;
                    Action::Redraw
                } else if tabbed {
                    Action::List(cands)
                } else {
                    self.tabbed = true;
                    Action::Bell
                }
            }
        }
    }
}

fn common_prefix(words: &[String]) -> String {
    let mut p = words[0].as_str();
    for w in &words[1..] {
        while !w.starts_with(p) {
            p = &p[..p.char_indices().last().map_or(0, |(i, _)| i)];
        }
    }
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut out = Vec::new();
        let mut b = bytes;
        while !b.is_empty() {
            let (k, n) = decode(b).expect("complete input");
            out.push(k);
            b = &b[n..];
        }
        out
    }

    fn history(entries: &[&str]) -> History {
        let mut h = History::load(None, 3);
        for e in entries {
            h.push(e);
        }
        h
    }

    fn completer() -> Completer {
        Box::new(|line: &str, pos: usize| {
            let start = line[..pos].rfind(' ').map(|i| i + 1).unwrap_or(0);
            let word = &line[start..pos];
            let c = ["query-status", "query-stats", "query-name", "quit"]
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| c.to_string())
                .collect();
            (start, c)
        })
    }

    /// Type `bytes` into a fresh state; the actions and the state after.
    fn typed(bytes: &[u8], h: &History) -> (Vec<Action>, State) {
        let mut s = State::new("> ", h.entries.len());
        let c = completer();
        let actions = keys(bytes).into_iter().map(|k| s.key(k, h, &c)).collect();
        (actions, s)
    }

    #[test]
    fn bytes_decode_into_keys() {
        use Key::*;
        assert_eq!(
            keys(b"a\xc3\xa9\r\n\x1b[A\x1bOB\x1b[1;5C\x1b[3~\x1bb\x01\x7f\t\x12\x1b[200~"),
            vec![
                Char('a'),
                Char('é'),
                Enter,
                Up,
                Down,
                WordRight,
                Delete,
                WordLeft,
                Home,
                Backspace,
                Tab,
                Search,
                Ignored
            ]
        );
        // The start of a sequence or of a character waits for more.
        assert_eq!(decode(b"\x1b"), None);
        assert_eq!(decode(b"\x1b[1;"), None);
        assert_eq!(decode(b"\xe2\x82"), None);
        // A stray continuation byte is skipped, not fatal.
        assert_eq!(decode(b"\x82a"), Some((Key::Ignored, 1)));
    }

    #[test]
    fn editing_keys_change_the_line_and_cursor() {
        let h = history(&[]);
        let (_, s) = typed(b"query-status now\x17name\x01\x1bfX", &h);
        assert_eq!(s.line.text(), "query-statusX name");
        let (_, s) = typed(b"abc\x02\x02\x0b", &h);
        assert_eq!((s.line.text().as_str(), s.line.pos), ("a", 1));
        let (_, s) = typed(b"abc\x02\x15", &h);
        assert_eq!((s.line.text().as_str(), s.line.pos), ("c", 0));
        let (_, s) = typed(b"ab\x14", &h);
        assert_eq!(s.line.text(), "ba");
        let (a, _) = typed(b"ab\x7f\x7f\x7f", &h);
        assert_eq!(
            a.last(),
            Some(&Action::Redraw),
            "Backspace at the start is harmless"
        );
        let (a, _) = typed(b"x\x03", &h);
        assert_eq!(a.last(), Some(&Action::Done(Read::Interrupted)));
        let (a, _) = typed(b"\x04", &h);
        assert_eq!(a, vec![Action::Done(Read::Eof)]);
        let (a, s) = typed(b"ab\x02\x04\r", &h);
        assert_eq!(a.last(), Some(&Action::Done(Read::Line("a".into()))));
        assert_eq!(s.line.text(), "a", "Ctrl-D on a line deletes");
    }

    #[test]
    fn tab_completes_then_lists() {
        let h = history(&[]);
        let (a, s) = typed(b"query-st\t", &h);
        assert_eq!(s.line.text(), "query-stat");
        assert_eq!(a.last(), Some(&Action::Redraw));
        let (a, _) = typed(b"query-st\t\t", &h);
        assert_eq!(
            a.last(),
            Some(&Action::List(vec![
                "query-status".into(),
                "query-stats".into()
            ]))
        );
        // One candidate replaces the word under the cursor, keeping what follows.
        let (_, s) = typed(b"x query-n\t", &h);
        assert_eq!(s.line.text(), "x query-name");
        let (_, s) = typed(b"qu zz\x01\x06\x06\t", &h);
        assert_eq!(
            s.line.text(),
            "qu zz",
            "q has several candidates: unchanged"
        );
        let (a, _) = typed(b"nothing\t", &h);
        assert_eq!(a.last(), Some(&Action::Bell));
    }

    #[test]
    fn history_browses_keeps_the_draft_and_searches() {
        let h = history(&["query-status", "hmp info status", "query-name"]);
        let (_, s) = typed(b"dra\x1b[A\x1b[A", &h);
        assert_eq!(s.line.text(), "hmp info status");
        let (_, s) = typed(b"dra\x1b[A\x1b[A\x1b[B\x1b[B", &h);
        assert_eq!(
            s.line.text(),
            "dra",
            "Down past the newest entry restores the draft"
        );
        let (a, _) = typed(b"\x1b[B", &h);
        assert_eq!(a, vec![Action::Bell]);
        // Ctrl-R: newest match first, Ctrl-R again goes older, a movement key takes the match.
        let (_, s) = typed(b"\x12stat", &h);
        assert_eq!(s.search.as_ref().unwrap().found, Some(1));
        let (_, s) = typed(b"\x12stat\x12\x05", &h);
        assert!(s.search.is_none());
        assert_eq!(s.line.text(), "query-status");
        let (a, _) = typed(b"\x12stat\x12\x12", &h);
        assert_eq!(a.last(), Some(&Action::Bell), "no older match");
        let (_, s) = typed(b"keep\x12zzz\x07", &h);
        assert_eq!(s.line.text(), "keep", "Ctrl-G restores the line");
        let (a, _) = typed(b"\x12name\r", &h);
        assert_eq!(
            a.last(),
            Some(&Action::Done(Read::Line("query-name".into())))
        );
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

    #[test]
    fn a_long_line_scrolls_sideways_around_the_cursor() {
        let line: Vec<char> = "0123456789abcdefghij".chars().collect();
        // Fits: all of it, cursor after the prompt and the text before it.
        assert_eq!(layout("> ", &line[..5], 3, 80), ("01234".into(), 5));
        // Cursor at the end of a line wider than the room (12 - 2 - 1 = 9 columns).
        let (shown, col) = layout("> ", &line, 20, 12);
        assert_eq!((shown.as_str(), col), ("bcdefghij", 11));
        // Cursor at the start: the start is shown.
        let (shown, col) = layout("> ", &line, 0, 12);
        assert_eq!((shown.as_str(), col), ("012345678", 2));
        // Wide characters count twice.
        let wide: Vec<char> = "日本語".chars().collect();
        assert_eq!(layout("", &wide, 3, 80), ("日本語".into(), 6));
    }

    #[test]
    fn columns_fit_the_width() {
        let s = columns(["aa", "bbbb", "c"].into_iter(), 14);
        assert_eq!(s, "  aa    bbbb\n  c\n");
        assert_eq!(
            common_prefix(&["query-status".into(), "query-stats".into()]),
            "query-stat"
        );
    }
}
