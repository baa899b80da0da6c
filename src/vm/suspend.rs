//! `vmctl suspend` (`stop --save`) and `start --fresh`: the guest's RAM and devices saved to
//! its folder and QEMU stopped, so that the next start resumes it instead of booting; or that
//! saved state thrown away. The supervisor does the save (it owns QEMU, and a unit's stop goes
//! through it too): asked by a request file in the run directory and SIGTERM, or through
//! `systemctl stop` for a VM its unit runs.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::def::store::load;
use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::qemu::shutdown;
use crate::runstate::{self, Liveness};
use crate::saved::{self, SavedMeta};
use crate::supervisor::save::SAVED;
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::VmName;

#[derive(Debug, Serialize)]
pub struct Suspended {
    pub name: String,
    pub seconds: f64,
    #[serde(flatten)]
    pub saved: SavedMeta,
}

/// Save the running VM `name` and stop its QEMU. Refused for a VM that is not running, and
/// for one with shared folders (QEMU 7.2 cannot save virtio-fs devices).
pub fn suspend(home: &Home, name: &VmName) -> Result<Suspended> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let t0 = std::time::Instant::now();
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let Liveness::Running { state, .. } = runstate::liveness(&paths) else {
        return Err(Error::State(format!(
            "VM {name} is not running; only a running VM's state can be saved"
        )));
    };
    if !spec.mounts.is_empty() {
        return Err(Error::State(format!(
            "VM {name} has shared folders, and QEMU cannot save a guest with virtio-fs devices; stop it instead"
        )));
    }
    let state = state
        .ok_or_else(|| Error::State(format!("VM {name} is starting; try again once it runs")))?;
    fsutil::write_atomic(&paths.stop_request(), SAVED.as_bytes())?;
    let unit = state
        .unit
        .as_ref()
        .filter(|u| crate::systemd::manager::manager_running(u.scope));
    match unit {
        // Its unit would restart a VM stopped behind its back: stop it through the unit.
        Some(unit) => crate::systemd::manager::stop(unit)?,
        None => {
            crate::sys::process::signal(state.supervisor_pid, nix::sys::signal::Signal::SIGTERM);
            let bound = shutdown::bound(spec.stop_timeout) + Duration::from_secs(5);
            let gone = block_on(async {
                let mut w = crate::sys::process::ExitWatch::new(state.supervisor_pid);
                Ok::<_, Error>(w.wait_until(Instant::now() + bound).await)
            })?;
            if !gone {
                return Err(Error::Timeout(format!(
                    "the supervisor of VM {name} (pid {}) is still running after {} s",
                    state.supervisor_pid,
                    bound.as_secs()
                )));
            }
        }
    }
    let _ = std::fs::remove_file(paths.stop_request());
    match saved::read(&paths) {
        Some(meta) => Ok(Suspended {
            name: name.to_string(),
            seconds: t0.elapsed().as_secs_f64(),
            saved: meta,
        }),
        None => Err(Error::Qemu(format!(
            "VM {name} was not saved and is stopped: {}; why is in {}",
            last_step(&paths),
            paths.qemu_log().display()
        ))),
    }
}

/// How the VM's QEMU ended, in words.
fn last_step(paths: &VmPaths) -> String {
    runstate::read_last_exit(paths)
        .and_then(|e| e.stopped_by)
        .and_then(|s| shutdown::StopStep::parse(&s))
        .map(|s| s.describe().to_string())
        .unwrap_or_else(|| "it ended without a save".into())
}

/// Throw away the stopped VM `name`'s saved state (`start --fresh`); refused when it has none.
pub fn discard(home: &Home, name: &VmName) -> Result<()> {
    let paths = home.defined(name)?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    if !paths.saved_state().exists() && !paths.saved_meta().exists() {
        return Err(Error::State(format!(
            "VM {name} has no saved state to discard; `vmctl start {name}` boots it"
        )));
    }
    if runstate::liveness(&paths).is_running() {
        return Err(Error::State(format!("VM {name} is running")));
    }
    saved::discard(&paths);
    Ok(())
}
