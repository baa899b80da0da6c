//! Processes vmctl does not necessarily own: liveness by signal 0 plus a command-line check
//! (a recycled pid is not our QEMU), waiting for exit through a pidfd (no polling), signals.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The process exists (signal 0 succeeds, or fails only for lack of permission).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => !is_zombie(pid),
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// When the process started, in clock ticks since boot (`/proc/PID/stat` field 22): with the
/// pid, it names one process for good (a pid is reused; a pid and a start time are not).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold spaces), field 3 is the state.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process's argv, from /proc.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

pub fn signal(pid: i32, sig: Signal) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), sig).is_ok()
}

/// Waits for a process to exit. Uses a pidfd where the kernel has them (5.3+); polls otherwise.
pub struct ExitWatch {
    pid: i32,
    fd: Option<AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    pub fn new(pid: i32) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1;
        // no memory is shared with the kernel.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = (fd >= 0).then(|| {
            // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            owned
        });
        ExitWatch {
            pid,
            fd: fd.and_then(|f| {
                // SAFETY: `f` is an OwnedFd moved into the AsyncFd, so it stays open and names the
                // same pidfd for the AsyncFd's whole lifetime; OwnedFd::as_raw_fd never changes.
                #[allow(unsafe_code)]
                let r = unsafe { AsyncFd::register(f) };
                r.ok()
            }),
        }
    }

    /// Resolves when the process has exited.
    pub async fn exited(&mut self) {
        if let Some(fd) = &self.fd {
            if let Ok(mut guard) = fd.readable().await {
                guard.retain_ready();
            }
            return;
        }
        while alive(self.pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True if the process exited before `deadline`.
    pub async fn wait_until(&mut self, deadline: Instant) -> bool {
        if !alive(self.pid) {
            return true;
        }
        tokio::time::timeout_at(deadline, self.exited())
            .await
            .is_ok()
            || !alive(self.pid)
    }
}

/// Run the command in a new session (no controlling terminal), so it outlives ours.
pub fn detach_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe and touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Ignore SIGINT while alive (a foreground child handles Ctrl-C and we clean up after it).
pub struct IgnoreInterrupts {
    old: Option<nix::sys::signal::SigAction>,
}

impl IgnoreInterrupts {
    pub fn new() -> IgnoreInterrupts {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        #[allow(unsafe_code)]
        let old = unsafe { sigaction(Signal::SIGINT, &ignore) }.ok();
        IgnoreInterrupts { old }
    }
}

impl Default for IgnoreInterrupts {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            // SAFETY: restores the disposition that was in place before `new`.
            #[allow(unsafe_code)]
            unsafe {
                let _ = nix::sys::signal::sigaction(Signal::SIGINT, old);
            }
        }
    }
}

/// A child is not a service of whatever service manager runs us: it gets none of the
/// variables (`NOTIFY_SOCKET`, the watchdog's) that would make it speak for us.
pub fn not_a_service(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn an_exit_is_seen_when_it_happens() {
        let mut child = Command::new("sh")
            .args(["-c", "echo up; read x", "vmctl-test-child"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Its argv is in /proc once it runs (right after exec, the kernel may not have set it).
        let mut up = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut up,
        )
        .unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        assert!(
            cmdline(pid)
                .unwrap()
                .iter()
                .any(|a| a == "vmctl-test-child")
        );
        let mut watch = ExitWatch::new(pid);
        assert!(
            !watch
                .wait_until(Instant::now() + Duration::from_millis(50))
                .await,
            "it waits on its stdin"
        );
        drop(child.stdin.take());
        // Unreaped, the child is a zombie: it has exited all the same.
        assert!(
            watch
                .wait_until(Instant::now() + Duration::from_secs(10))
                .await
        );
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(-1) && !alive(0));
    }

    #[test]
    fn a_child_is_no_service_of_ours() {
        let mut cmd = Command::new("true");
        not_a_service(&mut cmd);
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(removed, ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"]);
    }
}
