//! The editor itself: reading the terminal into its own buffer, waiting on it and on a wake-up
//! socket, redrawing the line, and the printer other threads print messages through.
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

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read as _, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::term::lineedit::history::History;
use crate::term::lineedit::keys::{Key, decode};
use crate::term::lineedit::layout::{columns, layout};
use crate::term::lineedit::state::{Action, Completer, Read, State};
use crate::term::lineedit::tty::{RawMode, width};

/// How long the rest of an escape sequence may take to arrive before a lone Esc is just Esc.
const ESC_WAIT: Duration = Duration::from_millis(50);

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
