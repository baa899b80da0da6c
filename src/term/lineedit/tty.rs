//! The terminal as a device: raw mode for as long as a line is edited (left and taken again
//! around Ctrl-Z), and its width.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Raw mode on the terminal for as long as this lives.
pub struct RawMode<'a> {
    pub fd: BorrowedFd<'a>,
    saved: Termios,
    raw: Termios,
}

impl<'a> RawMode<'a> {
    pub fn enter(fd: BorrowedFd<'a>) -> io::Result<RawMode<'a>> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Now, not after draining: what was typed ahead is kept for the editor.
        tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { fd, saved, raw })
    }

    /// Ctrl-Z: stop as a cooked-mode program would (the shell takes the terminal), and take raw
    /// mode again when continued.
    pub(super) fn suspend(&self) -> io::Result<()> {
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

pub(super) fn width(tty: BorrowedFd<'_>) -> usize {
    match tcgetwinsize(tty) {
        Ok(w) if w.ws_col > 0 => w.ws_col as usize,
        _ => 80,
    }
}
