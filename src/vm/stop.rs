//! `vmctl stop` and `vmctl kill`: the polite stop (ACPI power button, then `quit`, then
//! SIGKILL) over the control socket, or `systemctl stop` for a VM its unit runs; returns once
//! QEMU is gone and the supervisor has recorded how it ended.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::qemu::control::ctl_connect;
use crate::qemu::shutdown::{self, StopOutcome};
use crate::runstate::{self, LastExit, Liveness};
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::VmName;

#[derive(Debug, Serialize)]
pub struct Stopped {
    pub name: String,
    /// False when the VM was not running.
    pub was_running: bool,
    #[serde(flatten)]
    pub outcome: Option<StopOutcome>,
    pub exit: Option<LastExit>,
}

/// How a stop should proceed.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    Graceful(Duration),
    /// `quit`, then SIGKILL.
    Force,
    /// SIGKILL at once.
    Kill,
}

pub fn stop(home: &Home, name: &VmName, mode: StopMode) -> Result<Stopped> {
    let paths = home.defined(name)?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let (pid, state) = match runstate::liveness(&paths) {
        Liveness::Running { pid, state } => (pid, state),
        Liveness::Stale => {
            runstate::clean(&paths);
            return Ok(Stopped {
                name: name.to_string(),
                was_running: false,
                outcome: None,
                exit: runstate::read_last_exit(&paths),
            });
        }
        Liveness::Stopped => {
            return Ok(Stopped {
                name: name.to_string(),
                was_running: false,
                outcome: None,
                exit: None,
            });
        }
    };
    if let Some(unit) = state.as_ref().and_then(|s| s.unit.clone()) {
        // Its unit would restart a VM stopped behind its back (Restart=always).
        if !matches!(mode, StopMode::Kill) && crate::systemd::manager::manager_running(unit.scope) {
            return stop_unit(&paths, name, &unit);
        }
    }
    // The supervisor sees QEMU end: this says a command asked (the event is recorded here,
    // with the step that stopped it).
    let asked: &[u8] = if matches!(mode, StopMode::Kill) {
        b"kill"
    } else {
        b"poweroff"
    };
    fsutil::write_atomic(&paths.stop_request(), asked)?;
    let outcome = block_on(async {
        let mut qmp = match mode {
            StopMode::Kill => None,
            _ => ctl_connect(&paths).await.ok(),
        };
        let outcome = match mode {
            StopMode::Graceful(t) => shutdown::graceful(qmp.as_mut().map(|(q, _)| q), pid, t).await,
            StopMode::Force => shutdown::force(qmp.as_mut().map(|(q, _)| q), pid).await,
            StopMode::Kill => {
                let mut w = crate::sys::process::ExitWatch::new(pid);
                shutdown::kill(&mut w, pid, Instant::now(), 0).await
            }
        }?;
        // The supervisor records the exit status and cleans up; wait for it to finish.
        if let Some(s) = &state {
            let mut w = crate::sys::process::ExitWatch::new(s.supervisor_pid);
            if !w.wait_until(Instant::now() + Duration::from_secs(5)).await {
                tracing::warn!("the supervisor (pid {}) is still running", s.supervisor_pid);
            }
        }
        Ok::<_, Error>(outcome)
    })?;
    if runstate::liveness(&paths).is_running() {
        return Err(Error::Other(format!("VM {name} is still running")));
    }
    runstate::clean(&paths);
    let detail = serde_json::json!({"step": outcome.step.as_str(), "seconds": (outcome.seconds * 10.0).round() / 10.0});
    crate::events::record(home, name.as_str(), "stopped", detail);
    Ok(Stopped {
        name: name.to_string(),
        was_running: true,
        outcome: Some(outcome),
        exit: runstate::read_last_exit(&paths),
    })
}

/// Stop a VM that a systemd unit runs, through the unit: its `vmctl run` stops the guest
/// gracefully (within the VM's stop_timeout) and records how.
fn stop_unit(paths: &VmPaths, name: &VmName, unit: &crate::types::ServiceUnit) -> Result<Stopped> {
    let t0 = std::time::Instant::now();
    let since = fsutil::unix_now();
    // A power-off, whatever the definition's on_host_shutdown says a unit's stop does.
    fsutil::write_atomic(&paths.stop_request(), b"poweroff")?;
    crate::systemd::manager::stop(unit)?;
    if runstate::liveness(paths).is_running() {
        return Err(Error::Other(format!(
            "VM {name} is still running after stopping {}",
            unit.name
        )));
    }
    // No fresh record: systemd killed the supervisor (its stop timed out).
    let exit = runstate::read_last_exit(paths).filter(|e| e.at >= since);
    let step = exit
        .as_ref()
        .and_then(|e| e.stopped_by.as_deref())
        .and_then(shutdown::StopStep::parse)
        .unwrap_or(shutdown::StopStep::Kill);
    Ok(Stopped {
        name: name.to_string(),
        was_running: true,
        outcome: Some(StopOutcome {
            step,
            seconds: t0.elapsed().as_secs_f64(),
            presses: 0,
        }),
        exit,
    })
}
