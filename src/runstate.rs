//! A VM's runtime state on disk: whether its QEMU is alive (the pid the supervisor recorded, and
//! that process's start time, so a reused pid is never taken for it), what the supervisor
//! recorded at start (`state.json`) and how QEMU last ended (`last-exit.json`), and cleaning what
//! a crash leaves behind.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::paths::VmPaths;
use crate::sys::fsutil;
use crate::types::Accel;

/// Written by the supervisor once QEMU answers QMP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub qemu_pid: i32,
    pub supervisor_pid: i32,
    pub accel: Accel,
    pub accel_reason: String,
    /// Unix seconds.
    pub started_at: u64,
    pub qemu_version: String,
    pub argv: Vec<String>,
    /// The systemd unit the supervisor runs in, when it is the VM's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<crate::types::ServiceUnit>,
    /// Whether the guest is up (see `health::Readiness`); rewritten when it is.
    #[serde(default)]
    pub ready: bool,
    /// The `[health]` check's state, rewritten as it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::guest::health::HealthState>,
    /// The guest's CPUs are stopped (QMP `STOP` event until `RESUME`: `vmctl pause`, the QMP
    /// shell, a snapshot being saved or loaded); rewritten as it changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Your provisioning scripts' run (absent without scripts): running, done, or which failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<crate::guest::scripts::ScriptsState>,
}

/// How QEMU last ended, written by the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastExit {
    /// Exit status, when QEMU exited normally.
    pub code: Option<i32>,
    /// The signal that killed it, otherwise.
    pub signal: Option<i32>,
    /// Unix seconds.
    pub at: u64,
    pub uptime_secs: u64,
    /// What stopped it when the supervisor did (acpi, quit, kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}

impl LastExit {
    /// QEMU ended by itself with a failure or a signal (a crash, a `kill -9`), or vmctl ended it
    /// for failing its health check: what a service manager restarts.
    pub fn failed(&self) -> bool {
        match self.stopped_by.as_deref() {
            Some(step) => step == "health-check",
            None => self.signal.is_some() || self.code.is_some_and(|c| c != 0),
        }
    }
}

/// Starts of a VM over its life, and how many of them followed a failed run (crash, killed,
/// unhealthy, or a supervisor that died): `vmctl stats` and `vmctl_vm_restarts_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub starts: u64,
    pub restarts: u64,
}

pub fn read_counters(paths: &VmPaths) -> Counters {
    std::fs::read_to_string(paths.counters())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Count a start; `after_failure` when the run before it failed. The caller holds the VM's
/// lock (two starts cannot both count from the same number).
pub fn count_start(paths: &VmPaths, after_failure: bool) -> Result<Counters> {
    let mut c = read_counters(paths);
    c.starts += 1;
    c.restarts += u64::from(after_failure);
    fsutil::write_atomic(
        &paths.counters(),
        serde_json::to_string(&c).expect("serializes").as_bytes(),
    )?;
    Ok(c)
}

#[derive(Debug)]
pub enum Liveness {
    Running {
        pid: i32,
        state: Option<Box<RunState>>,
    },
    Stopped,
    /// Runtime files of a QEMU that is gone (crash, `kill -9`, host reboot).
    Stale,
}

impl Liveness {
    pub fn is_running(&self) -> bool {
        matches!(self, Liveness::Running { .. })
    }
}

pub fn read_pid(paths: &VmPaths) -> Option<i32> {
    std::fs::read_to_string(paths.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn read_state(paths: &VmPaths) -> Option<RunState> {
    serde_json::from_str(&std::fs::read_to_string(paths.state()).ok()?).ok()
}

pub fn read_last_exit(paths: &VmPaths) -> Option<LastExit> {
    serde_json::from_str(&std::fs::read_to_string(paths.last_exit()).ok()?).ok()
}

pub fn write_state(paths: &VmPaths, s: &RunState) -> Result<()> {
    fsutil::write_atomic(
        &paths.state(),
        serde_json::to_string_pretty(s)
            .expect("serializes")
            .as_bytes(),
    )
}

pub fn write_last_exit(paths: &VmPaths, e: &LastExit) -> Result<()> {
    fsutil::write_atomic(
        &paths.last_exit(),
        serde_json::to_string_pretty(e)
            .expect("serializes")
            .as_bytes(),
    )
}

/// Record that QEMU runs as `pid`: its start time first, then the pid, each whole.
pub fn write_pid(paths: &VmPaths, pid: i32) -> Result<()> {
    let start = crate::sys::process::start_time(pid).unwrap_or(0);
    fsutil::write_atomic(&paths.qemu_start(), format!("{start}\n").as_bytes())?;
    fsutil::write_atomic(&paths.pidfile(), format!("{pid}\n").as_bytes())
}

/// Is this VM's QEMU running? A pid counts only if that process started when the supervisor
/// recorded it did.
pub fn liveness(paths: &VmPaths) -> Liveness {
    if let Some(pid) = read_pid(paths) {
        if crate::sys::process::alive(pid) && is_our_qemu(paths, pid) {
            return Liveness::Running {
                pid,
                state: read_state(paths).map(Box::new),
            };
        }
        return Liveness::Stale;
    }
    if paths.run_dir().exists() {
        return Liveness::Stale;
    }
    Liveness::Stopped
}

fn is_our_qemu(paths: &VmPaths, pid: i32) -> bool {
    let recorded = std::fs::read_to_string(paths.qemu_start())
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match recorded {
        Some(start) => crate::sys::process::start_time(pid) == Some(start),
        // A QEMU started by an older vmctl wrote its own pidfile and named its control socket
        // in its argv: the exact option, not any argument that contains the path.
        None => {
            let option = format!(
                "socket,id=qmp-ctl,path={},server=on,wait=off",
                paths.qmp_ctl_socket().display()
            );
            crate::sys::process::cmdline(pid).is_some_and(|argv| argv.contains(&option))
        }
    }
}

/// Remove the runtime directory (sockets, pidfile, state). Callers hold the VM lock and have
/// checked that no QEMU of this VM is alive.
pub fn clean(paths: &VmPaths) {
    let run = paths.run_dir();
    if run.exists() {
        tracing::info!(dir = %run.display(), "removing stale runtime state");
        let _ = std::fs::remove_dir_all(&run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Accel;
    use std::process::{Command, Stdio};

    fn state(pid: i32) -> RunState {
        RunState {
            qemu_pid: pid,
            supervisor_pid: std::process::id() as i32,
            accel: Accel::Tcg,
            accel_reason: "TCG requested".into(),
            started_at: 1,
            qemu_version: "7.2.22".into(),
            argv: vec!["qemu-system-x86_64".into()],
            unit: None,
            ready: true,
            health: None,
            paused: false,
            provision: None,
        }
    }

    /// A process that lives until its stdin closes, with `args` after `sh -c CMD`; returned
    /// once it runs (right after exec, /proc may not have its argv yet).
    fn stand_in(args: &[String]) -> std::process::Child {
        let mut child = Command::new("sh")
            .args(["-c", "echo up; read x"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut up = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut up,
        )
        .unwrap();
        child
    }

    fn stop(mut child: std::process::Child) {
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    #[test]
    fn a_vm_runs_only_while_the_process_recorded_for_it_lives() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            dir: d.path().join("web"),
        };
        assert!(matches!(liveness(&paths), Liveness::Stopped));
        std::fs::create_dir_all(paths.run_dir()).unwrap();
        assert!(
            matches!(liveness(&paths), Liveness::Stale),
            "runtime files without a pidfile"
        );
        let qemu = stand_in(&[]);
        let pid = qemu.id() as i32;
        write_pid(&paths, pid).unwrap();
        write_state(&paths, &state(pid)).unwrap();
        match liveness(&paths) {
            Liveness::Running { pid: p, state } => {
                assert_eq!(p, pid);
                assert_eq!(state.unwrap().qemu_pid, pid);
            }
            other => panic!("{other:?}"),
        }
        // A live process that is not the one recorded (a reused pid) does not count: init
        // started long before.
        std::fs::write(paths.pidfile(), "1").unwrap();
        assert!(matches!(liveness(&paths), Liveness::Stale));
        std::fs::write(paths.pidfile(), pid.to_string()).unwrap();
        stop(qemu);
        assert!(matches!(liveness(&paths), Liveness::Stale), "QEMU is gone");
        clean(&paths);
        assert!(matches!(liveness(&paths), Liveness::Stopped));
    }

    /// A QEMU of an older vmctl (no start time recorded) counts when its argv holds this VM's
    /// control socket option exactly: a process that only mentions the path, or another home's
    /// longer path that ends with it, does not.
    #[test]
    fn an_older_qemu_is_known_by_its_exact_socket_option() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            dir: d.path().join("web"),
        };
        std::fs::create_dir_all(paths.run_dir()).unwrap();
        let sock = paths.qmp_ctl_socket().display().to_string();
        let ours = stand_in(&[format!("socket,id=qmp-ctl,path={sock},server=on,wait=off")]);
        let mentions = stand_in(&[format!("--note={sock}")]);
        let other_home = stand_in(&[format!(
            "socket,id=qmp-ctl,path=/other{sock},server=on,wait=off"
        )]);
        for (child, running) in [(&ours, true), (&mentions, false), (&other_home, false)] {
            std::fs::write(paths.pidfile(), child.id().to_string()).unwrap();
            assert_eq!(liveness(&paths).is_running(), running, "{:?}", child.id());
        }
        for c in [ours, mentions, other_home] {
            stop(c);
        }
    }

    #[test]
    fn the_last_exit_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            dir: d.path().to_path_buf(),
        };
        assert!(read_last_exit(&paths).is_none());
        let e = LastExit {
            code: None,
            signal: Some(9),
            at: 5,
            uptime_secs: 3,
            stopped_by: Some("kill".into()),
        };
        write_last_exit(&paths, &e).unwrap();
        let back = read_last_exit(&paths).unwrap();
        assert_eq!(
            (back.code, back.signal, back.stopped_by.as_deref()),
            (None, Some(9), Some("kill"))
        );
    }
}
