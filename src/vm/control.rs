//! `vmctl pause`, `resume` and `reset`: QMP `stop`, `cont` and `system_reset` on a running
//! guest, over the control socket.

use crate::error::{Error, Result};
use crate::paths::Home;
use crate::qemu::control::{ctl_connect, run_state};
use crate::runstate;
use crate::sys::rt::block_on;
use crate::types::VmName;

/// What [`control`] does to a running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Freeze the vCPUs (QMP `stop`); the guest keeps its memory and devices.
    Pause,
    /// Let a paused guest run on (QMP `cont`).
    Resume,
    /// Press the reset button (QMP `system_reset`): the guest reboots without shutting down.
    Reset,
}

/// Pause, resume or reset a running VM; returns QEMU's run state afterwards. Pausing a paused
/// VM, or resuming one that is not paused, is refused (exit 7) rather than silently ignored.
pub fn control(home: &Home, name: &VmName, what: Control) -> Result<String> {
    let paths = home.defined(name)?;
    if !runstate::liveness(&paths).is_running() {
        return Err(Error::not_running(name));
    }
    block_on(async {
        let (mut q, _lock) = ctl_connect(&paths).await?;
        let before = run_state(&mut q).await?;
        match what {
            Control::Pause if before == "paused" => {
                return Err(Error::State(format!("VM {name} is already paused")));
            }
            Control::Pause => {
                q.execute(qapi::qmp::stop {}).await?;
            }
            Control::Resume if before == "running" => {
                return Err(Error::State(format!(
                    "VM {name} is not paused (it is {before})"
                )));
            }
            Control::Resume => {
                q.execute(qapi::qmp::cont {}).await?;
            }
            Control::Reset => {
                q.execute(qapi::qmp::system_reset {}).await?;
            }
        }
        run_state(&mut q).await
    })
}
