//! What each VM uses, sampled without changing it: for `vmctl stats` and the Prometheus
//! endpoint. State and readiness come from the run state on disk, CPU time and memory from
//! /proc (QEMU's process and its vCPU threads), the disk's size from its file, and its I/O from
//! QMP `query-blockstats` on the control socket — skipped, not waited for, while another
//! command holds that socket (a snapshot being saved, say).

use serde::Serialize;

use crate::def::store::{load, names};
use crate::error::Result;
use crate::paths::{Home, VmPaths};
use crate::qemu::control::ctl_connect_if_free;
use crate::runstate::{self, Liveness};
use crate::sys::fsutil;
use crate::sys::procfs;
use crate::types::VmName;

/// One VM's use at one moment. Counters (`*_seconds`, `*_bytes` of I/O) grow over a run and
/// start again at zero with the next QEMU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmStats {
    pub name: String,
    /// running, paused, stopped, saved or crashed.
    pub state: String,
    pub pid: Option<i32>,
    pub image: String,
    pub arch: String,
    /// What QEMU runs on (kvm, tcg) while it runs.
    pub accel: Option<String>,
    pub cpus: u32,
    /// The guest's RAM as defined.
    pub memory_bytes: u64,
    /// CPU time of QEMU's process (every thread) and of its vCPU threads alone.
    pub cpu_seconds: Option<f64>,
    pub vcpu_seconds: Option<f64>,
    /// Share of one host CPU over the last interval, QEMU's whole process and its vCPU threads
    /// (`stats` fills them in from two samples).
    pub cpu_percent: Option<f64>,
    pub vcpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub disk_virtual_bytes: u64,
    /// What the VM's own disk layer takes on the host (not its image).
    pub disk_allocated_bytes: u64,
    pub disk_read_bytes: Option<u64>,
    pub disk_written_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
    pub starts: u64,
    pub restarts: u64,
    /// Whether the guest is up (its checks answered) while it runs.
    pub ready: Option<bool>,
    /// The `[health]` check's verdict: starting, healthy, unhealthy.
    pub health: Option<String>,
    /// QEMU's exit status the last time it ended by itself (absent after a signal).
    pub last_exit_code: Option<i32>,
}

/// The VMs named (every VM of the home when none is), in name order.
pub fn sample(home: &Home, only: &[VmName]) -> Result<Vec<VmStats>> {
    let all = if only.is_empty() {
        names(home)
    } else {
        only.to_vec()
    };
    let mut out = Vec::new();
    for name in all {
        match one(home, &name) {
            Ok(s) => out.push(s),
            // A VM named on the command line must exist; one that vanished mid-listing is left out.
            Err(e) if !only.is_empty() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(out)
}

fn one(home: &Home, name: &VmName) -> Result<VmStats> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let counters = runstate::read_counters(&paths);
    let mut s = VmStats {
        name: name.to_string(),
        state: "stopped".into(),
        pid: None,
        image: spec.image.clone(),
        arch: spec.arch.to_string(),
        accel: None,
        cpus: spec.cpus,
        memory_bytes: spec.memory.0,
        cpu_seconds: None,
        vcpu_seconds: None,
        cpu_percent: None,
        vcpu_percent: None,
        rss_bytes: None,
        disk_virtual_bytes: spec.disk.0,
        disk_allocated_bytes: allocated(&paths),
        disk_read_bytes: None,
        disk_written_bytes: None,
        uptime_secs: None,
        starts: counters.starts,
        restarts: counters.restarts,
        ready: None,
        health: None,
        last_exit_code: runstate::read_last_exit(&paths).and_then(|e| e.code),
    };
    match runstate::liveness(&paths) {
        Liveness::Stopped if crate::saved::read(&paths).is_some() => s.state = "saved".into(),
        Liveness::Stopped => {}
        Liveness::Stale => s.state = "crashed".into(),
        Liveness::Running { pid, state } => {
            s.pid = Some(pid);
            s.state = "running".into();
            if let Some(st) = state {
                if st.paused {
                    s.state = "paused".into();
                }
                s.accel = Some(st.accel.to_string());
                s.uptime_secs = Some(fsutil::unix_now().saturating_sub(st.started_at));
                s.ready = Some(st.ready);
                s.health = st.health.as_ref().map(|h| h.status.as_str().to_string());
            }
            if let Some(u) = procfs::usage(pid, "CPU ") {
                (s.cpu_seconds, s.vcpu_seconds) = (Some(u.cpu_seconds), Some(u.thread_seconds));
                s.rss_bytes = Some(u.rss_bytes);
            }
            if let Some((read, written)) = block_io(&paths) {
                (s.disk_read_bytes, s.disk_written_bytes) = (Some(read), Some(written));
            }
        }
    }
    Ok(s)
}

/// The blocks the VM's disk file holds on the host.
fn allocated(paths: &VmPaths) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(paths.disk()).map_or(0, |m| m.blocks() * 512)
}

/// Bytes read from and written to the VM's disk (`disk0`) since QEMU started, when the
/// control socket is free now.
fn block_io(paths: &VmPaths) -> Option<(u64, u64)> {
    let reply = crate::sys::rt::block_on(async {
        let wait = std::time::Duration::from_secs(2);
        let Some((mut q, _lock)) = ctl_connect_if_free(paths, wait).await? else {
            return Ok(None);
        };
        let reply = q.execute_raw("query-blockstats", None).await?;
        Ok::<_, crate::error::Error>(Some(reply))
    })
    .ok()??;
    disk_io(&reply)
}

/// `disk0`'s read and written bytes in a `query-blockstats` reply.
fn disk_io(reply: &serde_json::Value) -> Option<(u64, u64)> {
    let disk = reply.as_array()?.iter().find(|d| d["device"] == "disk0")?;
    let stats = &disk["stats"];
    Some((stats["rd_bytes"].as_u64()?, stats["wr_bytes"].as_u64()?))
}

/// The CPU share between two samples of the same VMs: the process's CPU seconds over the wall
/// seconds between them, in percent of one host CPU (QEMU with two busy vCPUs can show 200).
pub fn fill_cpu_percent(before: &[VmStats], after: &mut [VmStats], seconds: f64) {
    let share = |b: Option<f64>, a: Option<f64>| match (b, a) {
        (Some(b), Some(a)) if seconds > 0.0 => {
            Some(((a - b).max(0.0) / seconds * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    for a in after.iter_mut() {
        let b = before.iter().find(|b| b.name == a.name && b.pid == a.pid);
        a.cpu_percent = share(b.and_then(|b| b.cpu_seconds), a.cpu_seconds);
        a.vcpu_percent = share(b.and_then(|b| b.vcpu_seconds), a.vcpu_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_disk_is_found_among_the_block_devices() {
        let reply = serde_json::json!([
            {"device": "seed", "stats": {"rd_bytes": 5, "wr_bytes": 0}},
            {"device": "disk0", "stats": {"rd_bytes": 4096, "wr_bytes": 512}},
        ]);
        assert_eq!(disk_io(&reply), Some((4096, 512)));
        assert_eq!(disk_io(&serde_json::json!([])), None);
        assert_eq!(disk_io(&serde_json::json!({"error": 1})), None);
    }

    fn at(cpu: Option<f64>, pid: Option<i32>) -> VmStats {
        VmStats {
            name: "web".into(),
            state: "running".into(),
            pid,
            image: "tiny".into(),
            arch: "x86_64".into(),
            accel: None,
            cpus: 1,
            memory_bytes: 1,
            cpu_seconds: cpu,
            vcpu_seconds: None,
            cpu_percent: None,
            vcpu_percent: None,
            rss_bytes: None,
            disk_virtual_bytes: 0,
            disk_allocated_bytes: 0,
            disk_read_bytes: None,
            disk_written_bytes: None,
            uptime_secs: None,
            starts: 0,
            restarts: 0,
            ready: None,
            health: None,
            last_exit_code: None,
        }
    }

    #[test]
    fn cpu_share_is_the_growth_of_cpu_time_over_wall_time() {
        let mut before = [at(Some(10.0), Some(7))];
        before[0].vcpu_seconds = Some(8.0);
        let mut after = [at(Some(10.5), Some(7))];
        after[0].vcpu_seconds = Some(8.25);
        fill_cpu_percent(&before, &mut after, 1.0);
        assert_eq!(after[0].cpu_percent, Some(50.0));
        assert_eq!(after[0].vcpu_percent, Some(25.0));
        // Another QEMU (a restart between the samples) has no share yet.
        let mut other = [at(Some(0.2), Some(8))];
        fill_cpu_percent(&before, &mut other, 1.0);
        assert_eq!(other[0].cpu_percent, None);
    }
}
