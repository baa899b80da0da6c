//! `vmctl start`: the VM's supervisor (`vmctl run`) spawned detached, or its systemd unit
//! started when one is installed in a running manager; with `--wait`, until the guest answers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::def::spec::VmSpec;
use crate::def::store::load;
use crate::error::{Error, IoContext, Result};
use crate::guest::scripts::ScriptsState;
use crate::paths::{Home, VmPaths};
use crate::runstate::{self, Liveness};
use crate::sys::fsutil;
use crate::types::{PortForward, VmName};

#[derive(Debug, Serialize)]
pub struct Started {
    pub name: String,
    pub pid: i32,
    pub accel: String,
    pub accel_reason: String,
    pub ports: Vec<PortForward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_seconds: Option<f64>,
    /// Resumed from its saved state rather than booted.
    pub restored: bool,
}

/// Start the VM's supervisor detached and wait until QEMU answers QMP; with `wait`, also until
/// the guest is up (see [`wait_ready`]). A VM with an installed unit in a running systemd is
/// started by `systemctl start` instead, which returns once the guest is up: started beside its
/// unit, it would keep the unit from starting and be left out of the host's shutdown.
pub fn start(home: &Home, name: &VmName, wait: Option<Duration>) -> Result<Started> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let t0 = std::time::Instant::now();
    if let Some(unit) = crate::systemd::install::managed_unit(home, name) {
        if let Liveness::Running { pid, .. } = runstate::liveness(&paths) {
            return Err(Error::State(format!(
                "VM {name} is already running (QEMU pid {pid})"
            )));
        }
        let restored = crate::saved::read(&paths).is_some();
        crate::systemd::manager::start(&unit)?;
        let Liveness::Running { pid, .. } = runstate::liveness(&paths) else {
            return Err(Error::Qemu(format!(
                "{} started, but VM {name} is not running",
                unit.name
            )));
        };
        if let Some(e) = scripts_failed(&paths, &spec) {
            return Err(e);
        }
        let mut s = started(&paths, &spec, pid);
        s.ready_seconds = Some(t0.elapsed().as_secs_f64());
        s.restored = restored;
        return Ok(s);
    }
    let pid = {
        let _lock = fsutil::lock_exclusive(&paths.lock())?;
        match runstate::liveness(&paths) {
            Liveness::Running { pid, .. } => {
                return Err(Error::State(format!(
                    "VM {name} is already running (QEMU pid {pid})"
                )));
            }
            Liveness::Stale => wait_for_the_last_run(&paths),
            Liveness::Stopped => {}
        }
        let restored = crate::saved::read(&paths).is_some();
        (spawn_supervisor(home, &paths, name)?, restored)
    };
    let (pid, restored) = pid;
    let mut started = started(&paths, &spec, pid);
    started.restored = restored;
    if let Some(timeout) = wait {
        wait_ready(&paths, &spec, t0 + timeout)?;
        started.ready_seconds = Some(t0.elapsed().as_secs_f64());
    }
    Ok(started)
}

/// A QEMU that just died leaves its supervisor finishing (ending its passt, recording the exit)
/// and its passt exiting, both holding the VM's forwards for a moment: wait for them, by the
/// pids the run folder names, so that the new start finds its host ports free. Bounded, and
/// nothing is signalled (a pid since reused only costs the wait).
fn wait_for_the_last_run(paths: &VmPaths) {
    let pids: Vec<i32> = [
        runstate::read_state(paths).map(|s| s.supervisor_pid),
        crate::net::state::read(paths).map(|n| n.passt_pid),
    ]
    .into_iter()
    .flatten()
    .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let _ = crate::sys::rt::block_on(async {
        for pid in pids {
            crate::sys::process::ExitWatch::new(pid)
                .wait_until(deadline)
                .await;
        }
        Ok(())
    });
}

/// What `start` reports of a VM whose QEMU runs as `pid`.
fn started(paths: &VmPaths, spec: &VmSpec, pid: i32) -> Started {
    let state = runstate::read_state(paths);
    Started {
        name: spec.name.to_string(),
        pid,
        accel: state
            .as_ref()
            .map(|s| s.accel.to_string())
            .unwrap_or_default(),
        accel_reason: state.map(|s| s.accel_reason).unwrap_or_default(),
        ports: spec.ports.clone(),
        ready_seconds: None,
        restored: false,
    }
}

fn spawn_supervisor(home: &Home, paths: &VmPaths, name: &VmName) -> Result<i32> {
    std::fs::create_dir_all(&paths.dir).path_ctx("create", &paths.dir)?;
    let log = fsutil::open_append(&paths.qemu_log())?;
    let exe = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(&home.root)
        .args(["run", "--notify-stdout", name.as_str()])
        // Not a service of whatever service manager runs this command.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // The supervisor outlives this command: its own session, no controlling terminal.
    crate::sys::process::detach_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .ctx(|| "Cannot start the VM supervisor".into())?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .ctx(|| "Cannot read from the VM supervisor".into())?;
    // Reap it in the background if it exits; it normally lives on (re-parented to init).
    std::thread::spawn(move || child.wait());
    if let Some(reply) = crate::supervisor::handshake::decode(&line) {
        return reply;
    }
    Err(Error::Qemu(format!(
        "The supervisor of VM {name} exited without starting QEMU; its log ({}) ends with:\n{}",
        paths.qemu_log().display(),
        fsutil::tail(&paths.qemu_log(), 10)
    )))
}

/// Wait until the guest is up, while its QEMU runs and until `deadline`: until its supervisor,
/// which checks (see [`crate::guest::health::Readiness`]), says so in `state.json`. (One
/// checker per VM: a second one here would double the connections a booting guest answers,
/// which under TCG slows the boot it waits for.)
fn wait_ready(paths: &VmPaths, spec: &VmSpec, deadline: std::time::Instant) -> Result<()> {
    const EVERY: Duration = Duration::from_millis(20);
    let mut checked = std::time::Instant::now();
    loop {
        if runstate::read_state(paths).is_some_and(|s| s.ready) {
            return Ok(());
        }
        if let Some(e) = scripts_failed(paths, spec) {
            return Err(e);
        }
        let now = std::time::Instant::now();
        // Whether QEMU still runs costs a few /proc reads: twice a second is enough.
        let stopped = now.duration_since(checked) >= Duration::from_millis(500) && {
            checked = now;
            !runstate::liveness(paths).is_running()
        };
        if stopped || now >= deadline {
            return Err(not_ready(paths, spec, stopped));
        }
        std::thread::sleep(EVERY);
    }
}

/// The error for a provisioning script that failed at this boot, as `state.json` has it: which,
/// its exit code and the end of its output.
fn scripts_failed(paths: &VmPaths, spec: &VmSpec) -> Option<Error> {
    let Some(ScriptsState::Failed {
        script,
        mode,
        code,
        tail,
    }) = runstate::read_state(paths)?.provision
    else {
        return None;
    };
    let name = &spec.name;
    let out = if tail.is_empty() {
        "  (no output)".to_string()
    } else {
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(Error::Provision(format!(
        "VM {name}: provisioning script {script} ({mode}) failed with exit code {code}; its output ends with:\n{out}\n\
         The VM keeps running (`vmctl ssh {name}` to look; `vmctl logs {name} --provision` has all the output); \
         the script runs again at the next boot."
    )))
}

/// Why `start --wait` gave up: the VM stopped, or it runs but is not up.
fn not_ready(paths: &VmPaths, spec: &VmSpec, stopped: bool) -> Error {
    let console = fsutil::tail(&paths.serial_log(), 15);
    if stopped {
        let said = fsutil::tail(&paths.qemu_log(), 8);
        return Error::Qemu(format!(
            "VM {} stopped while waiting for it; console log ends with:\n{console}\nqemu.log ends with:\n{said}",
            spec.name
        ));
    }
    let waited = crate::guest::health::Readiness::for_spec(spec).describe();
    let state = runstate::read_state(paths);
    let mut last = state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.last_failure.as_ref())
        .map(|why| format!(" (last check: {why})"))
        .unwrap_or_default();
    if state.is_some_and(|s| s.provision == Some(ScriptsState::Running)) {
        let name = &spec.name;
        last += &format!(
            "; its provisioning scripts are still running (`vmctl logs {name} --provision`)"
        );
    }
    Error::Timeout(format!(
        "VM {} is running but not ready in time (waiting for {waited}){last}\nconsole log ends with:\n{console}",
        spec.name
    ))
}
