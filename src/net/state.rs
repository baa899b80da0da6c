//! `run/net.json`: what the VM's running passt forwards, written by the supervisor each time it
//! starts one, and how `vmctl port` asks for a new one: it saves the definition, sends the
//! supervisor SIGHUP and waits until `generation` moves on, then reads whether the new
//! forwards took (`error` says why not; the supervisor then keeps the forwards it had).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::VmPaths;
use crate::sys::{fsutil, process};
use crate::types::PortForward;

/// How long `vmctl port` waits for the supervisor to bring passt in line with the definition.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// Counts the passts this supervisor started: 1 for the first, one more per reload.
    pub generation: u64,
    pub passt_pid: i32,
    /// What the running passt forwards.
    pub ports: Vec<String>,
    /// Why the last reload could not apply the definition's forwards (then `ports` are the ones
    /// kept from before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NetState {
    pub fn forwards(&self) -> Vec<PortForward> {
        self.ports.iter().filter_map(|p| p.parse().ok()).collect()
    }
}

pub fn read(paths: &VmPaths) -> Option<NetState> {
    serde_json::from_str(&std::fs::read_to_string(paths.net_state()).ok()?).ok()
}

pub fn write(paths: &VmPaths, s: &NetState) -> Result<()> {
    let text = serde_json::to_string_pretty(s).expect("serializes");
    fsutil::write_atomic(&paths.net_state(), text.as_bytes())
}

/// Ask the supervisor (`supervisor_pid`) of the running VM `name` to bring its passt in line
/// with the definition, and wait for the result: the new state, or the reason it kept the old.
pub fn reload(paths: &VmPaths, name: &str, supervisor_pid: i32) -> Result<NetState> {
    let before = read(paths).ok_or_else(|| {
        Error::State(format!(
            "VM {name} runs without passt's network record ({}); restart it to change its forwards",
            paths.net_state().display()
        ))
    })?;
    if !process::signal(supervisor_pid, nix::sys::signal::Signal::SIGHUP) {
        return Err(Error::State(format!(
            "Cannot reach the supervisor of VM {name} (pid {supervisor_pid})"
        )));
    }
    let t0 = Instant::now();
    while t0.elapsed() < RELOAD_TIMEOUT {
        if let Some(now) = read(paths).filter(|s| s.generation > before.generation) {
            return match &now.error {
                None => Ok(now),
                Some(why) => Err(Error::State(format!("VM {name} keeps its forwards: {why}"))),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Timeout(format!(
        "The supervisor of VM {name} did not apply the new forwards within {}s",
        RELOAD_TIMEOUT.as_secs()
    )))
}
