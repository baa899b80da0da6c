//! Saving the guest when its stop asks for it — `vmctl suspend` (a request file in the run
//! directory, then SIGTERM), or a definition's `on_host_shutdown = "save"` when its unit is
//! stopped — instead of powering it off: the state goes to a temporary file
//! that becomes `saved.state` only once QEMU says the save completed; `run::finish` records
//! what it fits once QEMU is gone.

use std::time::Duration;

use tokio::time::Instant;

use crate::def::spec::{OnHostShutdown, VmSpec};
use crate::error::{IoContext, Result};
use crate::paths::VmPaths;
use crate::qemu::qmp::Qmp;
use crate::qemu::save::Saved;
use crate::sys::fsutil;

/// The step a saved VM's `last-exit.json` names (`stopped_by`).
pub const SAVED: &str = "save";

/// Whether this stop should save the guest: what a command asked for, else what the
/// definition says a host shutdown does.
pub fn wanted(paths: &VmPaths, spec: &VmSpec) -> bool {
    match std::fs::read_to_string(paths.stop_request()) {
        Ok(asked) => asked.trim() == SAVED,
        Err(_) => spec.on_host_shutdown == OnHostShutdown::Save,
    }
}

/// Save the guest of QEMU `pid` within `limit` and end QEMU; on failure the guest runs on and
/// no state is left behind.
pub async fn save(qmp: &mut Qmp, paths: &VmPaths, pid: i32, limit: Duration) -> Result<Saved> {
    let _ = std::fs::remove_file(paths.stop_request());
    let (state, tmp) = (
        paths.saved_state(),
        paths.saved_state().with_extension("tmp"),
    );
    let file = fsutil::create_new_file(&tmp)?;
    match crate::qemu::save::save(qmp, &file, pid, Instant::now() + limit).await {
        Ok(saved) => {
            file.sync_all()
                .and_then(|()| std::fs::rename(&tmp, &state))
                .path_ctx("write", &state)?;
            Ok(saved)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
