//! Stopping QEMU politely: the ACPI power button over QMP, pressed again until the guest reacts
//! (presses before the guest's driver loads are lost), bounded by the VM's stop timeout; then QMP
//! `quit`; then SIGKILL. Returns only once the process is gone, and says which step ended it.
//! Shared by `vmctl stop` (over the control socket) and the supervisor (on SIGTERM).

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::qemu::qmp::{Qmp, QmpError};
use crate::sys::process::{self, ExitWatch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopStep {
    /// The guest powered itself off after the ACPI power button.
    Acpi,
    /// QEMU quit on the QMP `quit` command.
    Quit,
    /// QEMU was killed with SIGKILL.
    Kill,
    /// QEMU ended during the stop without the guest powering off: a signal from another
    /// process (e.g. a service manager's SIGTERM) or a crash.
    Other,
}

impl StopStep {
    pub fn describe(self) -> &'static str {
        match self {
            StopStep::Acpi => "ACPI power-off by the guest",
            StopStep::Quit => "QMP quit (the guest did not power off in time)",
            StopStep::Kill => "SIGKILL (QEMU did not quit)",
            StopStep::Other => "QEMU ended without a guest power-off (a signal from elsewhere?)",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StopStep::Acpi => "acpi",
            StopStep::Quit => "quit",
            StopStep::Kill => "kill",
            StopStep::Other => "other",
        }
    }
    /// The step named by [`StopStep::as_str`] (as recorded in `last-exit.json`).
    pub fn parse(s: &str) -> Option<StopStep> {
        [
            StopStep::Acpi,
            StopStep::Quit,
            StopStep::Kill,
            StopStep::Other,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StopOutcome {
    pub step: StopStep,
    pub seconds: f64,
    pub presses: u32,
}

/// How long `quit` and SIGKILL each get before the next step.
const QUIT_GRACE: Duration = Duration::from_secs(5);
const FIRST_PRESS_INTERVAL: Duration = Duration::from_millis(250);
const MAX_PRESS_INTERVAL: Duration = Duration::from_secs(2);

/// The longest a [`graceful`] stop with this timeout takes: the timeout, then `quit`, then
/// SIGKILL, each with its grace period.
pub fn bound(timeout: Duration) -> Duration {
    timeout + QUIT_GRACE * 2
}

/// ACPI → quit → kill. `qmp` is `None` when no monitor answers (then it goes straight to kill).
pub async fn graceful(qmp: Option<&mut Qmp>, pid: i32, timeout: Duration) -> Result<StopOutcome> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut watch = ExitWatch::new(pid);
    let mut presses = 0;
    let mut qmp = qmp;
    // Whether QEMU reported a SHUTDOWN the guest asked for: only then did the power button work.
    let mut by_guest = false;
    if let Some(q) = qmp.as_deref_mut() {
        let mut interval = FIRST_PRESS_INTERVAL;
        let mut reacted = false;
        'press: while Instant::now() < deadline {
            if !reacted {
                match q.execute(qapi::qmp::system_powerdown {}).await {
                    Ok(_) => presses += 1,
                    Err(QmpError::Eof) => break 'press,
                    Err(e) => tracing::warn!("system_powerdown: {e}"),
                }
            }
            let tick = (Instant::now() + interval).min(deadline);
            loop {
                tokio::select! {
                    _ = watch.exited() => {
                        by_guest |= drain_shutdown(q).await;
                        return Ok(outcome(ended_step(by_guest), started, presses));
                    }
                    ev = q.next_event(tick) => match ev {
                        Ok(Some(e)) if e.event == "SHUTDOWN" => {
                            tracing::info!(data = %e.data, "guest is shutting down");
                            by_guest |= is_guest_shutdown(&e.data);
                            reacted = true;
                        }
                        Ok(Some(e)) => tracing::debug!(event = %e.event, "QMP event"),
                        Ok(None) => break,
                        Err(_) => break 'press,
                    }
                }
            }
            interval = (interval * 2).min(MAX_PRESS_INTERVAL);
        }
    }
    // The monitor went away (QEMU is exiting) or the time is up.
    if watch.wait_until(deadline).await {
        if let Some(q) = qmp.as_deref_mut() {
            by_guest |= drain_shutdown(q).await;
        }
        return Ok(outcome(ended_step(by_guest), started, presses));
    }
    force_inner(qmp, &mut watch, pid, started, presses).await
}

/// `quit`, then SIGKILL: for `stop --force` and after a graceful stop timed out.
pub async fn force(qmp: Option<&mut Qmp>, pid: i32) -> Result<StopOutcome> {
    let mut watch = ExitWatch::new(pid);
    force_inner(qmp, &mut watch, pid, Instant::now(), 0).await
}

async fn force_inner(
    qmp: Option<&mut Qmp>,
    watch: &mut ExitWatch,
    pid: i32,
    started: Instant,
    presses: u32,
) -> Result<StopOutcome> {
    if let Some(q) = qmp {
        match q.execute(qapi::qmp::quit {}).await {
            Ok(_) | Err(QmpError::Eof) => {}
            Err(e) => tracing::warn!("quit: {e}"),
        }
        if watch.wait_until(Instant::now() + QUIT_GRACE).await {
            return Ok(outcome(StopStep::Quit, started, presses));
        }
    }
    kill(watch, pid, started, presses).await
}

/// SIGKILL and wait for the process to be gone.
pub async fn kill(
    watch: &mut ExitWatch,
    pid: i32,
    started: Instant,
    presses: u32,
) -> Result<StopOutcome> {
    process::signal(pid, Signal::SIGKILL);
    if watch.wait_until(Instant::now() + QUIT_GRACE).await {
        return Ok(outcome(StopStep::Kill, started, presses));
    }
    Err(Error::Timeout(format!(
        "QEMU (pid {pid}) is still alive {:?} after SIGKILL",
        QUIT_GRACE
    )))
}

/// A SHUTDOWN event's data says the guest asked for it (`"guest": true`), as opposed to QEMU
/// ending on a host signal (`"reason": "host-signal"`) or a QMP command.
fn is_guest_shutdown(data: &serde_json::Value) -> bool {
    data.get("guest").and_then(serde_json::Value::as_bool) == Some(true)
}

/// Events QEMU sent before it exited but that were not read yet: whether one was the guest's
/// SHUTDOWN.
async fn drain_shutdown(q: &mut Qmp) -> bool {
    let until = Instant::now() + Duration::from_millis(200);
    let mut by_guest = false;
    while let Ok(Some(e)) = q.next_event(until).await {
        if e.event == "SHUTDOWN" {
            by_guest |= is_guest_shutdown(&e.data);
        }
    }
    by_guest
}

fn ended_step(by_guest: bool) -> StopStep {
    if by_guest {
        StopStep::Acpi
    } else {
        StopStep::Other
    }
}

fn outcome(step: StopStep, started: Instant, presses: u32) -> StopOutcome {
    StopOutcome {
        step,
        seconds: started.elapsed().as_secs_f64(),
        presses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_guest_shutdown_counts_as_acpi() {
        assert!(is_guest_shutdown(
            &json!({"guest": true, "reason": "guest-shutdown"})
        ));
        assert!(!is_guest_shutdown(
            &json!({"guest": false, "reason": "host-signal"})
        ));
        assert!(!is_guest_shutdown(&serde_json::Value::Null));
        assert_eq!(ended_step(true), StopStep::Acpi);
        assert_eq!(ended_step(false), StopStep::Other);
    }

    #[test]
    fn steps_round_trip_through_their_names() {
        for step in [
            StopStep::Acpi,
            StopStep::Quit,
            StopStep::Kill,
            StopStep::Other,
        ] {
            assert_eq!(StopStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(StopStep::parse("nope"), None);
    }
}
