//! `vmctl rm`: a VM's units stopped and removed first, then its directory renamed aside and
//! deleted, so a half-deleted VM never looks like one.

use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::runstate::{self, Liveness};
use crate::sys::fsutil;
use crate::types::VmName;
use crate::vm::stop::{StopMode, stop};

/// Delete a VM. Its systemd units (of this home) are stopped, disabled and removed first: a unit
/// left behind would restart a VM whose definition is gone, and could not run its stop. Returns
/// what was done to units, one line each.
pub fn rm(home: &Home, name: &VmName, force: bool) -> Result<Vec<String>> {
    let removed = remove(home, name, force);
    crate::events::after(
        home,
        name.as_str(),
        "removed",
        |_| serde_json::json!({}),
        removed,
    )
}

fn remove(home: &Home, name: &VmName, force: bool) -> Result<Vec<String>> {
    let paths = home.defined(name)?;
    if let Liveness::Running { state, .. } = runstate::liveness(&paths) {
        if !force {
            let stop_how = match state.and_then(|s| s.unit) {
                Some(u) => format!(
                    "its unit runs it: `{} stop {}`",
                    match u.scope {
                        crate::types::Scope::System => "systemctl",
                        crate::types::Scope::User => "systemctl --user",
                    },
                    u.name
                ),
                None => format!("`vmctl stop {name}`"),
            };
            return Err(Error::State(format!(
                "VM {name} is running; stop it first ({stop_how}) or use `vmctl rm --force {name}`"
            )));
        }
    }
    let done = crate::systemd::install::remove_units_of(home, name)?;
    if runstate::liveness(&paths).is_running() {
        stop(home, name, StopMode::Kill)?;
    }
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    if runstate::liveness(&paths).is_running() {
        return Err(Error::State(format!(
            "VM {name} was started again meanwhile"
        )));
    }
    // Rename first so a half-deleted directory never looks like a VM.
    let trash = home
        .vms_dir()
        .join(format!(".trash-{name}-{}", std::process::id()));
    std::fs::rename(&paths.dir, &trash).path_ctx("remove", &paths.dir)?;
    std::fs::remove_dir_all(&trash).path_ctx("remove", &trash)?;
    Ok(done)
}
