//! `vmctl console NAME`: the terminal attached to the guest's serial port. QEMU listens on the
//! VM's `console.sock` and writes all the guest's serial output to the console log as well, so
//! `vmctl logs` has the same lines whether anyone is attached or not. One console at a time
//! (`console.lock`, else exit 7); Ctrl-] detaches, as in `virsh console`; the guest stopping
//! ends it too.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use rustix::event::{PollFd, PollFlags, poll};

use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::runstate;
use crate::sys::fsutil;
use crate::types::VmName;

/// The byte Ctrl-] sends: detach.
pub const ESCAPE: u8 = 0x1d;

/// How an attached console ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    /// Ctrl-] (or the end of standard input, when it is not a terminal).
    ByUser,
    /// The guest's serial port went away: the VM stopped.
    VmStopped,
}

/// Attach the terminal (or standard input and output) to VM `name`'s serial console until
/// Ctrl-], the end of input, or the VM's end.
pub fn attach(home: &Home, name: &VmName) -> Result<Detached> {
    let paths = home.defined(name)?;
    if !runstate::liveness(&paths).is_running() {
        return Err(Error::not_running(name));
    }
    let Some(_lock) = fsutil::try_lock_exclusive(&paths.console_lock())? else {
        return Err(Error::State(format!(
            "A console is attached to VM {name} already; one at a time (detach it with Ctrl-])"
        )));
    };
    let sock = paths.console_socket();
    let conn = UnixStream::connect(&sock).map_err(|e| {
        Error::State(format!(
            "VM {name} has no console socket ({e}); it was started by an older vmctl: restart it"
        ))
    })?;
    let stdin = std::io::stdin();
    let raw = if std::io::IsTerminal::is_terminal(&stdin) {
        Some(
            crate::term::lineedit::tty::RawMode::enter(stdin.as_fd())
                .ctx(|| "Cannot put the terminal in raw mode".into())?,
        )
    } else {
        None
    };
    eprint!("Connected to the serial console of VM {name} (Ctrl-] detaches)\r\n");
    let how = relay(&conn)?;
    drop(raw);
    match how {
        Detached::ByUser => eprintln!("\nDetached from VM {name}'s console"),
        Detached::VmStopped => eprintln!("\nVM {name} stopped; its console closed"),
    }
    Ok(how)
}

/// Copy standard input to the console and the console to standard output until Ctrl-] in the
/// input, its end, or the console's.
fn relay(conn: &UnixStream) -> Result<Detached> {
    let (stdin, mut stdout) = (std::io::stdin(), std::io::stdout());
    let mut conn_r = conn;
    let mut conn_w = conn;
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(&stdin, PollFlags::IN),
            PollFd::new(conn, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            r => r
                .map_err(std::io::Error::from)
                .ctx(|| "Cannot wait for the console".into())?,
        };
        let (input, output) = (fds[0].revents(), fds[1].revents());
        if !output.is_empty() {
            let n = conn_r.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return Ok(Detached::VmStopped);
            }
            stdout
                .write_all(&buf[..n])
                .ctx(|| "Cannot write the console's output".into())?;
            stdout
                .flush()
                .ctx(|| "Cannot write the console's output".into())?;
        }
        if !input.is_empty() {
            // The descriptor itself: a buffered read could keep input that poll no longer sees.
            let n = rustix::io::read(&stdin, &mut buf).unwrap_or(0);
            if n == 0 {
                return Ok(Detached::ByUser);
            }
            let (send, escaped) = match buf[..n].iter().position(|b| *b == ESCAPE) {
                Some(i) => (&buf[..i], true),
                None => (&buf[..n], false),
            };
            if conn_w.write_all(send).is_err() {
                return Ok(Detached::VmStopped);
            }
            if escaped {
                return Ok(Detached::ByUser);
            }
        }
    }
}
