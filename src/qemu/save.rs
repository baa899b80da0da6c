//! The guest's state to a file and back, through QEMU's migration stream: `save` stops the
//! vCPUs, hands QEMU the open file (`getfd`, so QEMU opens no path), migrates into it at full
//! speed and, once QEMU says it completed, quits QEMU; `wait_loaded` follows a QEMU started
//! with `-S -incoming fd:N` until the state is in, and lets the guest run. libvirt's
//! `managedsave` works the same way.

use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::qemu::qmp::{Qmp, QmpError};
use crate::qemu::shutdown::{self, StopOutcome};

/// The name QEMU knows the state file's descriptor by.
const FD_NAME: &str = "vmctl-save";
/// How often QEMU is asked how far it is: a save or load takes seconds, so 20 ms is noise.
const POLL: Duration = Duration::from_millis(20);
/// Migration's default bandwidth cap (32 MiB/s in QEMU 7.2) is for live migration over a
/// network; a file takes what the disk gives.
const NO_CAP: u64 = 1 << 40;

/// How a save went.
#[derive(Debug, Clone)]
pub struct Saved {
    pub seconds: f64,
    /// How QEMU ended after the save (normally `quit`).
    pub stop: StopOutcome,
}

/// Save the guest of QEMU `pid` into `file` and end QEMU. On failure before QEMU quits, the
/// guest runs on as before and the error says why (e.g. a device QEMU cannot migrate).
pub async fn save(
    qmp: &mut Qmp,
    file: &std::fs::File,
    pid: i32,
    deadline: Instant,
) -> Result<Saved> {
    let started = Instant::now();
    qmp.execute_raw(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": NO_CAP })),
    )
    .await?;
    let was_running = status(qmp).await? == "running";
    qmp.execute_raw("stop", None).await?;
    if let Err(e) = migrate(qmp, file, deadline).await {
        if was_running {
            if let Err(c) = qmp.execute_raw("cont", None).await {
                tracing::error!("the guest stays paused after the failed save: {c}");
            }
        }
        let _ = qmp
            .execute_raw("closefd", Some(json!({ "fdname": FD_NAME })))
            .await;
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let stop = shutdown::force(Some(qmp), pid).await?;
    Ok(Saved { seconds, stop })
}

/// Hand QEMU the file and migrate into it; back when QEMU says the migration completed.
async fn migrate(qmp: &mut Qmp, file: &std::fs::File, deadline: Instant) -> Result<()> {
    qmp.execute_with_fd("getfd", json!({ "fdname": FD_NAME }), file.as_fd())
        .await?;
    qmp.execute_raw("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") })))
        .await?;
    loop {
        let m = qmp.execute_raw("query-migrate", None).await?;
        match m.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = m
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                return Err(Error::Qemu(format!("QEMU could not save the guest: {why}")));
            }
            _ if Instant::now() >= deadline => {
                let _ = qmp.execute_raw("migrate_cancel", None).await;
                return Err(Error::Timeout(
                    "saving the guest's state took too long; the save was cancelled".into(),
                ));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// QEMU's run state (`running`, `paused`, `inmigrate`, ...).
async fn status(qmp: &mut Qmp) -> std::result::Result<String, QmpError> {
    let s = qmp.execute_raw("query-status", None).await?;
    Ok(s.get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// A QEMU started with `-S -incoming fd:N`: wait until it has loaded the state, then let the
/// guest run. A state QEMU cannot load ends QEMU (the caller sees the monitor close).
pub async fn wait_loaded(qmp: &mut Qmp, deadline: Instant) -> Result<()> {
    loop {
        let s = status(qmp).await?;
        match s.as_str() {
            "inmigrate" | "prelaunch" if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await
            }
            "inmigrate" | "prelaunch" => {
                return Err(Error::Timeout(
                    "loading the saved state took too long".into(),
                ));
            }
            "paused" | "postmigrate" | "running" => break,
            other => {
                return Err(Error::Qemu(format!(
                    "QEMU is in state {other:?} after loading the saved state"
                )));
            }
        }
    }
    qmp.execute_raw("cont", None).await?;
    Ok(())
}
