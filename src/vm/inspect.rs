//! What a VM is and does, without changing it: `vmctl list` (from the files alone: no QMP, no
//! processes), `status` (with QEMU's own run state and accelerator), `logs` (the serial console)
//! and `show-cmd` (the exact QEMU argv).

use std::io::{Read, Seek, Write};
use std::time::Duration;

use serde::Serialize;

use crate::def::store::{load, names};
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::qemu::control::{ctl_connect, run_state};
use crate::runstate::{self, LastExit, Liveness};
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::VmName;

/// A VM's place on one of its private networks.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkAddress {
    pub network: String,
    pub address: Option<std::net::Ipv4Addr>,
    pub mac: String,
}

impl NetworkAddress {
    pub fn of(spec: &crate::def::spec::VmSpec) -> Vec<NetworkAddress> {
        spec.networks
            .iter()
            .map(|a| NetworkAddress {
                network: a.network.to_string(),
                address: a.address,
                mac: a.mac.to_string(),
            })
            .collect()
    }
}

impl std::fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(a) => write!(f, "{}={a}", self.network),
            None => write!(f, "{}", self.network),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub state: String,
    pub pid: Option<i32>,
    pub cpus: Option<u32>,
    pub memory: Option<String>,
    pub disk: Option<String>,
    pub image: Option<String>,
    pub arch: Option<String>,
    pub accel: Option<String>,
    pub ports: Vec<String>,
    /// Its private networks and its address on each.
    pub networks: Vec<NetworkAddress>,
    /// Internal snapshots in the VM's disk (from the qcow2 header).
    pub snapshots: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every VM with its state from the pidfile and its snapshot count from the disk's header (no
/// QMP round trips, no processes: `list` stays fast).
pub fn list(home: &Home) -> Vec<Summary> {
    names(home)
        .into_iter()
        .map(|n| {
            let paths = home.vm(&n);
            let live = runstate::liveness(&paths);
            let (state, pid, accel) = match &live {
                Liveness::Running { pid, state } => (
                    if state.as_ref().is_some_and(|s| s.paused) {
                        "paused"
                    } else {
                        "running"
                    },
                    Some(*pid),
                    state.as_ref().map(|s| s.accel.to_string()),
                ),
                Liveness::Stopped if crate::saved::read(&paths).is_some() => ("saved", None, None),
                Liveness::Stopped => ("stopped", None, None),
                Liveness::Stale => ("crashed", None, None),
            };
            let snapshots = crate::qemu::img::snapshot_count(&paths.disk());
            match load(home, &n) {
                Ok(s) => Summary {
                    name: n.to_string(),
                    state: state.into(),
                    pid,
                    cpus: Some(s.cpus),
                    memory: Some(s.memory.to_string()),
                    disk: Some(s.disk.to_string()),
                    image: Some(s.image.clone()),
                    arch: Some(s.arch.to_string()),
                    accel,
                    ports: s.ports.iter().map(|p| p.to_string()).collect(),
                    networks: NetworkAddress::of(&s),
                    snapshots,
                    error: None,
                },
                Err(e) => Summary {
                    name: n.to_string(),
                    state: state.into(),
                    pid,
                    cpus: None,
                    memory: None,
                    disk: None,
                    image: None,
                    arch: None,
                    accel,
                    ports: vec![],
                    networks: vec![],
                    snapshots,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub name: String,
    /// running, paused, stopped, saved, crashed, or QEMU's own run state.
    pub state: String,
    pub pid: Option<i32>,
    pub accel: Option<String>,
    pub accel_reason: Option<String>,
    pub qemu_version: Option<String>,
    pub uptime_secs: Option<u64>,
    pub cpus: u32,
    pub memory: String,
    pub disk: String,
    pub image: String,
    pub arch: String,
    pub ports: Vec<String>,
    pub networks: Vec<NetworkAddress>,
    pub serial_log: String,
    pub last_exit: Option<LastExit>,
    /// Whether the guest answers yet (its health check, or its forwarded ports), while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The `[health]` check: starting, healthy or unhealthy, while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::guest::health::HealthState>,
    /// Your provisioning scripts' run at this boot, while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provision: Option<crate::guest::scripts::ScriptsState>,
    /// The systemd unit running the VM, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The saved state the next start resumes (state `saved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<crate::saved::SavedMeta>,
}

pub fn status(home: &Home, name: &VmName) -> Result<Status> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let mut st = Status {
        name: name.to_string(),
        state: "stopped".into(),
        pid: None,
        accel: None,
        accel_reason: None,
        qemu_version: None,
        uptime_secs: None,
        cpus: spec.cpus,
        memory: spec.memory.to_string(),
        disk: spec.disk.to_string(),
        image: spec.image.clone(),
        arch: spec.arch.to_string(),
        ports: spec.ports.iter().map(|p| p.to_string()).collect(),
        networks: NetworkAddress::of(&spec),
        serial_log: paths.serial_log().display().to_string(),
        last_exit: runstate::read_last_exit(&paths),
        ready: None,
        health: None,
        provision: None,
        unit: None,
        saved: None,
    };
    match runstate::liveness(&paths) {
        Liveness::Stopped => {
            st.saved = crate::saved::read(&paths);
            if st.saved.is_some() {
                st.state = "saved".into();
            }
        }
        Liveness::Stale => st.state = "crashed".into(),
        Liveness::Running { pid, state } => {
            st.pid = Some(pid);
            if let Some(s) = &state {
                st.accel = Some(s.accel.to_string());
                st.accel_reason = Some(s.accel_reason.clone());
                st.qemu_version = Some(s.qemu_version.clone());
                st.uptime_secs = Some(fsutil::unix_now().saturating_sub(s.started_at));
                st.ready = Some(s.ready);
                st.health = s.health.clone();
                st.provision = s.provision.clone();
                st.unit = s.unit.as_ref().map(|u| u.name.clone());
            }
            let (run_state, kvm) = block_on(async {
                let (mut q, _lock) = ctl_connect(&paths).await?;
                let s = run_state(&mut q).await?;
                let k = q.execute(qapi::qmp::query_kvm {}).await?;
                Ok::<_, Error>((s, k))
            })?;
            st.state = run_state;
            // What QEMU really runs on, whatever was planned.
            st.accel = Some(if kvm.enabled { "kvm" } else { "tcg" }.into());
        }
    }
    Ok(st)
}

/// Print the guest's console log (or, with `provision`, its provisioning scripts' output); with
/// `follow`, keep printing what is appended.
pub fn logs(home: &Home, name: &VmName, follow: bool, provision: bool) -> Result<()> {
    let paths = home.defined(name)?;
    let path = if provision {
        paths.provision_log()
    } else {
        paths.serial_log()
    };
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    loop {
        let file = match fsutil::open_read(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // A link in place of the log is refused, not followed (its target is not printed).
            Err(e) => return Err(e).path_ctx("read", &path),
        };
        if let Some(mut f) = file {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // a new boot rotated the log
            }
            f.seek(std::io::SeekFrom::Start(pos))
                .path_ctx("read", &path)?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).path_ctx("read", &path)?;
            pos += buf.len() as u64;
            if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                return Ok(()); // reader went away (broken pipe)
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The exact command lines `start` runs: QEMU's (the recorded one while the VM runs) and, unless
/// the VM has `host_access`, passt's (with the forwards it has while the VM runs).
pub fn show_cmd(home: &Home, name: &VmName) -> Result<Vec<Vec<String>>> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let passt = |ports: &[crate::types::PortForward]| -> Result<Vec<String>> {
        let binary = crate::supervisor::plan::passt_binary()?;
        Ok(crate::net::passt::argv(&binary, ports))
    };
    if let Liveness::Running { state: Some(s), .. } = runstate::liveness(&paths) {
        let mut lines = vec![s.argv];
        if let Some(net) = crate::net::state::read(&paths) {
            lines.push(passt(&net.forwards())?);
        }
        if !spec.mounts.is_empty() {
            let binary = crate::share::virtiofsd::binary()?;
            for m in &spec.mounts {
                if let Ok(owner) = crate::def::mounts::check_host(m, &home.root) {
                    lines.push(crate::share::virtiofsd::argv(&binary, m, owner));
                }
            }
        }
        return Ok(lines);
    }
    let plan = crate::supervisor::plan::plan(home, &spec)?;
    let mut lines = vec![plan.argv];
    if plan.net.is_some() {
        lines.push(passt(&spec.ports)?);
    }
    for sh in &plan.shares {
        lines.push(crate::share::virtiofsd::argv(
            &sh.binary, &sh.mount, sh.owner,
        ));
    }
    Ok(lines)
}
