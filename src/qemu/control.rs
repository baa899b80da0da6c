//! The control socket one-shot commands share (`stop`, `status`, `pause`, snapshots, port
//! changes): QEMU serves one client per QMP socket, so a lock file queues them.

use crate::error::{Error, Result};
use crate::paths::VmPaths;
use crate::qemu::qmp::Qmp;
use crate::sys::fsutil;

/// Connect to the control socket, holding its lock so concurrent vmctl commands queue up
/// instead of timing out behind each other (QEMU serves one client per socket).
pub async fn ctl_connect(paths: &VmPaths) -> Result<(Qmp, fsutil::Lock)> {
    let lock = fsutil::lock_exclusive(&paths.ctl_lock())?;
    let q = connect(paths, crate::qemu::qmp::COMMAND_TIMEOUT).await?;
    Ok((q, lock))
}

/// As [`ctl_connect`], but `None` at once while another command holds the socket, and QEMU's
/// greeting waited for at most `timeout` (a sampler that must not queue behind a snapshot).
pub async fn ctl_connect_if_free(
    paths: &VmPaths,
    timeout: std::time::Duration,
) -> Result<Option<(Qmp, fsutil::Lock)>> {
    let Some(lock) = fsutil::try_lock_exclusive(&paths.ctl_lock())? else {
        return Ok(None);
    };
    Ok(Some((connect(paths, timeout).await?, lock)))
}

async fn connect(paths: &VmPaths, timeout: std::time::Duration) -> Result<Qmp> {
    Qmp::connect(&paths.qmp_ctl_socket(), timeout)
        .await
        .map_err(|e| {
            Error::Qemu(format!(
                "Cannot talk to QEMU at {}: {e}",
                paths.qmp_ctl_socket().display()
            ))
        })
}

/// QEMU's run state (`running`, `paused`, ...) from `query-status`.
pub async fn run_state(q: &mut Qmp) -> Result<String> {
    let s = q.execute(qapi::qmp::query_status {}).await?;
    Ok(serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "running".into()))
}
