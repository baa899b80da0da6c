//! A child that gets no more than it needs: run as another user from its first instruction
//! (the drop happens between fork and exec, so the program never runs with our privileges),
//! killed when its parent dies, and given open descriptors at fixed numbers instead of paths
//! to open — files and sockets prepared by the parent, and data to read from a pipe it owns.
//!
//! Everything in the `pre_exec` closure runs in the forked child before exec, so it calls only
//! async-signal-safe system calls on memory prepared before the fork.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::{IoContext, Result};

/// The identity a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. `kvm`, for /dev/kvm).
    pub groups: Vec<u32>,
}

impl Identity {
    /// Become this identity for good (this process, every thread): for a long-lived process
    /// that set up what needed privileges first. Call it before starting any thread.
    pub fn assume(&self) -> std::io::Result<()> {
        use nix::unistd::{Gid, Uid};
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups)?;
        let gid = Gid::from_raw(self.gid);
        nix::unistd::setresgid(gid, gid, gid)?;
        let uid = Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid)?;
        // No way back to privileges through an exec of a set-uid program.
        nix::sys::prctl::set_no_new_privs()?;
        Ok(())
    }
}

/// What a child is given at exec.
#[derive(Debug, Default)]
pub struct Child {
    /// Run as this identity instead of ours (needs the privilege to change it: root).
    pub identity: Option<Identity>,
    /// Descriptors to pass, each at its number in the child.
    fds: Vec<(OwnedFd, RawFd)>,
    /// Data the child reads from a pipe at this number (`/dev/fd/N`); made after the identity
    /// change, so the child can also reopen it by that path.
    pipes: Vec<(Vec<u8>, RawFd)>,
}

/// What a pipe can take before a write blocks: a child's pipe is filled before it runs, so it
/// must hold all of it.
pub const PIPE_MAX: usize = 65536;

impl Child {
    pub fn new(identity: Option<Identity>) -> Child {
        Child {
            identity,
            ..Child::default()
        }
    }

    /// Pass `fd` as descriptor `number` (3 or more) of the child.
    pub fn pass(&mut self, fd: impl Into<OwnedFd>, number: RawFd) -> Result<()> {
        let fd: OwnedFd = fd.into();
        // A copy above any number a child is given, so that putting one descriptor in place
        // never closes another still to be placed; close-on-exec, so only the copy at its
        // number reaches the child (and no other child gets it).
        let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1000))
            .map_err(std::io::Error::from)
            .ctx(|| format!("Cannot prepare descriptor {number} for a child"))?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor, which nothing else owns.
        #[allow(unsafe_code)]
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        self.fds.push((high, number));
        Ok(())
    }

    /// Let the child read `data` from a pipe at descriptor `number`.
    pub fn pipe(&mut self, data: Vec<u8>, number: RawFd) {
        assert!(
            data.len() <= PIPE_MAX,
            "a child's pipe holds {PIPE_MAX} bytes"
        );
        self.pipes.push((data, number));
    }

    /// Set `cmd` up to exec as this child: the identity change, death with the parent, and the
    /// descriptors. Consumes the descriptors (they close in the parent when `cmd` is dropped).
    pub fn apply(self, cmd: &mut Command) {
        let parent = std::process::id() as libc::pid_t;
        let Child {
            identity,
            fds,
            pipes,
        } = self;
        // The child keeps its standard streams and what it is given, nothing else of ours.
        let mut keep: Vec<RawFd> = vec![0, 1, 2];
        keep.extend(fds.iter().map(|(_, n)| *n));
        keep.extend(pipes.iter().map(|(_, n)| *n));
        keep.sort_unstable();
        keep.dedup();
        // SAFETY: the closure runs in the forked child before exec. It calls only
        // async-signal-safe system calls (setgroups, setresgid, setresuid, prctl, getppid,
        // pipe2, write, close, dup2, fcntl, close_range, _exit) on data allocated before the
        // fork (`identity`, `fds`, `pipes`, `keep`), and allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                if let Some(id) = &identity {
                    check(libc::setgroups(id.groups.len(), id.groups.as_ptr()))?;
                    check(libc::setresgid(id.gid, id.gid, id.gid))?;
                    check(libc::setresuid(id.uid, id.uid, id.uid))?;
                }
                // After the identity change, which would clear it. If the parent died before
                // this, nothing would ever send the signal: leave instead.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                for (data, number) in &pipes {
                    let mut ends = [0 as libc::c_int; 2];
                    check(libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC))?;
                    let mut done = 0;
                    while done < data.len() {
                        let n =
                            libc::write(ends[1], data[done..].as_ptr().cast(), data.len() - done);
                        if n < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        done += n as usize;
                    }
                    libc::close(ends[1]);
                    place(ends[0], *number)?;
                }
                for (fd, number) in &fds {
                    place(fd.as_raw_fd(), *number)?;
                }
                // Close every other descriptor (inherited ones without close-on-exec too).
                for pair in keep.windows(2) {
                    if pair[1] > pair[0] + 1 {
                        close_range(pair[0] + 1, pair[1] - 1)?;
                    }
                }
                close_range(keep[keep.len() - 1] + 1, RawFd::MAX)?;
                Ok(())
            });
        }
    }
}

/// Put `fd` at `number` for the child, open across exec.
///
/// # Safety
/// Called in a forked child only (see [`Child::apply`]).
#[allow(unsafe_code)]
unsafe fn place(fd: RawFd, number: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl on descriptors of this process; no memory is shared.
    unsafe {
        if fd == number {
            let flags = check(libc::fcntl(fd, libc::F_GETFD))?;
            check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
        } else {
            check(libc::dup2(fd, number))?;
        }
    }
    Ok(())
}

/// Close descriptors `first..=last`.
///
/// # Safety
/// Called in a forked child only (see [`Child::apply`]).
#[allow(unsafe_code)]
unsafe fn close_range(first: RawFd, last: RawFd) -> std::io::Result<()> {
    // SAFETY: close_range(2) closes descriptors of this process only; the callers keep what
    // the child is given out of the range.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Stdio;

    #[test]
    fn a_child_gets_its_descriptors_and_pipes_at_their_numbers() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "from a file\n").unwrap();
        let mut c = Child::new(None);
        c.pass(std::fs::File::open(&f).unwrap(), 7).unwrap();
        c.pipe(b"from a pipe\n".to_vec(), 9);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat <&7; cat /dev/fd/9; ls /proc/self/fd"])
            .stdout(Stdio::piped());
        c.apply(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("from a file\nfrom a pipe\n"), "{text:?}");
        // Nothing else of ours leaked through (0-2, 7, 9, and the one `ls` reads /proc with).
        let fds: Vec<i32> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.parse().ok())
            .collect();
        assert!(
            fds.iter().all(|f| [0, 1, 2, 3, 7, 9].contains(f)),
            "{fds:?}"
        );
    }

    /// As root, the child runs as the identity it was given from its first instruction on.
    #[test]
    fn a_child_runs_as_its_identity() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let nobody = Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "id -u; id -g; id -G"])
            .stdout(Stdio::piped());
        Child::new(Some(nobody)).apply(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..3], ["65534", "65534", "65534"], "{out}");
    }
}
