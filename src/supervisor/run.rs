//! `vmctl run NAME`: the process that owns a running QEMU, in the phases of its life: prepare
//! the launch (no QEMU of this VM alive, the plan, free host ports, the disk), spawn QEMU in its
//! own process group with the guest's boot files, connect to its primary QMP socket (or reap a
//! QEMU that never answered), announce it (`state.json`, and `READY <pid>` to a waiting `vmctl
//! start`), watch it (`watch`), and finish: record how QEMU ended and remove the runtime files.
//!
//! Run by a systemd unit (`vmctl run NAME`, `Type=notify`), it tells systemd `READY=1` once the
//! guest is up, `STOPPING=1` when a stop begins, and its progress as `STATUS=`; when the guest
//! turns unhealthy it stops QEMU and exits with status 8 so that `Restart=` brings the VM back.
//! Exit status: 0 after a requested stop or when the guest powered itself off, 8 when
//! unhealthy, else QEMU's own (128+N for a signal N); see [`exit_status`].

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::def::spec::VmSpec;
use crate::error::{Error, IoContext, Result, exit};
use crate::guest::health::Monitor;
use crate::guest::scripts::ScriptsState;
use crate::net::attach::Nics;
use crate::paths::{Home, VmPaths};
use crate::qemu::qmp::Qmp;
use crate::runstate::{self, LastExit, Liveness, RunState};
use crate::saved::Fit;
use crate::supervisor::plan::{LaunchPlan, check_ports_free, plan};
use crate::supervisor::save::SAVED;
use crate::supervisor::watch::{Ending, ExitReceiver, Links, Running, Signals};
use crate::supervisor::{handshake, launch};
use crate::sys::{fsutil, process};
use crate::systemd::notify::{self, Field, Notifier};
use crate::types::{Accel, AccelChoice, ServiceUnit};

/// How long QEMU may take to answer its monitor after being spawned.
const QMP_STARTUP: Duration = Duration::from_secs(30);
/// How long the guest agent of a resumed guest may take to set its clock.
const AGENT_LIMIT: Duration = Duration::from_secs(10);
/// How long loading a saved state may take (a few GiB from disk).
const RESTORE_LIMIT: Duration = Duration::from_secs(300);

/// How `run` reports to a parent `vmctl start`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Foreground (systemd, or a person): take the VM lock for the launch ourselves.
    Foreground,
    /// Spawned by `vmctl start`, which holds the lock and reads our first stdout line.
    Notify,
}

pub fn run(home: &Home, spec: &VmSpec, mode: Mode) -> Result<u8> {
    let result = crate::sys::rt::block_on(run_async(home, spec, mode));
    if mode == Mode::Notify {
        if let Err(e) = &result {
            // The parent is waiting for one line; it prints the error.
            handshake::send(&handshake::error(e));
        }
    }
    result
}

async fn run_async(home: &Home, spec: &VmSpec, mode: Mode) -> Result<u8> {
    // Sockets, pidfile and logs are the VM owner's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // From here on SIGTERM/SIGINT are ours: one that arrives while QEMU starts is served as a
    // graceful stop as soon as QEMU answers, instead of killing this process mid-launch.
    let mut signals = Signals {
        term: signal(SignalKind::terminate()).ctx(|| "Cannot handle SIGTERM".into())?,
        int: signal(SignalKind::interrupt()).ctx(|| "Cannot handle SIGINT".into())?,
        hup: signal(SignalKind::hangup()).ctx(|| "Cannot handle SIGHUP".into())?,
    };
    let (notifier, unit) = match mode {
        Mode::Foreground => (
            Notifier::from_env(),
            crate::systemd::manager::own_unit(&spec.name),
        ),
        Mode::Notify => (None, None),
    };
    let paths = home.vm(&spec.name);
    let lock = match mode {
        Mode::Foreground => Some(fsutil::lock_exclusive(&paths.lock())?),
        Mode::Notify => None,
    };
    let plan = prepare(home, spec, &paths)?;
    starting(spec, &plan, notifier.as_ref());
    let mut qemu = spawn(spec, &paths, &plan)?;
    // QMP first: the guest's network is up when QEMU says it accepted passt (an event).
    let mut qmp = qemu.connect(spec, &paths).await?;
    let passt = match &plan.net {
        Some(setup) => Some(qemu.link(setup, spec, &paths, &mut qmp).await?),
        None => None,
    };
    let nics = qemu.attach(home, spec, &paths, plan.nics.clone()).await?;
    let restored = matches!(plan.saved, Fit::Loads(_));
    let mut clock = None;
    if restored {
        qemu.restore(spec, &paths, &mut qmp).await?;
        // The guest runs from here: its clock is set while `start` returns and the guest
        // answers; the VM counts as ready once it is.
        if plan.agent {
            clock = Some(tokio::spawn(set_clock(
                spec.name.to_string(),
                paths.agent_socket(),
            )));
        }
    }
    check_accel(&mut qmp, plan.decision.accel).await;
    let state = announce(spec, &paths, &plan, &qemu, unit, mode, restored)?;
    let detail = serde_json::json!({"pid": qemu.pid, "accel": state.accel.to_string(), "restored": restored});
    crate::events::record(home, spec.name.as_str(), "started", detail);
    drop(lock);
    let mut vm = Running::new(
        spec,
        home,
        &paths,
        notifier.as_ref(),
        state,
        qemu.started,
        Links { passt, nics },
    );
    vm.before_ready = clock;
    let (status, ending) = vm.watch(&mut qmp, &mut qemu.exit_rx, &mut signals).await;
    if let Some(link) = vm.links.passt.as_mut() {
        link.stop().await;
    }
    finish(home, spec, &plan, &qemu, status, ending)
}

/// Refuse a VM that runs already (and clean what a crashed one left); plan the launch; refuse
/// host ports that are taken and a missing disk.
fn prepare(home: &Home, spec: &VmSpec, paths: &VmPaths) -> Result<LaunchPlan> {
    let liveness = runstate::liveness(paths);
    // A supervisor that died left no last exit: that run failed too.
    let after_failure = matches!(liveness, Liveness::Stale)
        || runstate::read_last_exit(paths).is_some_and(|e| e.failed());
    match liveness {
        Liveness::Running { pid, .. } => {
            return Err(Error::State(format!(
                "VM {} is already running (QEMU pid {pid})",
                spec.name
            )));
        }
        Liveness::Stale => runstate::clean(paths),
        Liveness::Stopped => {}
    }
    let plan = plan(home, spec)?;
    if let Fit::Stale(why) = &plan.saved {
        return Err(Error::State(format!(
            "VM {name} has a saved state that no longer fits: {why}. `vmctl start {name} --fresh` discards it and boots",
            name = spec.name
        )));
    }
    if let Some(user) = &plan.user {
        launch::open_image_to(home, &plan, user)?;
    }
    check_ports_free(home, spec)?;
    if !paths.disk().exists() {
        return Err(Error::Other(format!(
            "Disk {} of VM {} is missing",
            paths.disk().display(),
            spec.name
        )));
    }
    let counted = runstate::count_start(paths, after_failure)?;
    if after_failure {
        let detail = serde_json::json!({"restarts": counted.restarts});
        crate::events::record(home, spec.name.as_str(), "restarted", detail);
    }
    Ok(plan)
}

/// Say what is about to start, and on what (a warning when `auto` fell back to TCG).
fn starting(spec: &VmSpec, plan: &LaunchPlan, notifier: Option<&Notifier>) {
    let (accel, reason) = (plan.decision.accel, &plan.decision.reason);
    tracing::info!(vm = %spec.name, %accel, %reason, "starting");
    if accel == Accel::Tcg && spec.accel == AccelChoice::Auto {
        tracing::warn!(vm = %spec.name, "using TCG (software emulation): {reason}");
    }
    notify::notify(
        notifier,
        &[Field::Status(&format!("Starting QEMU ({accel}: {reason})"))],
    );
}

/// A spawned QEMU: its pid, when it started, and the channel its reaper thread reports its exit
/// on.
struct Qemu {
    pid: i32,
    started: Instant,
    started_unix: u64,
    exit_rx: ExitReceiver,
    /// Where this launch's lines in `qemu.log` begin.
    log_offset: u64,
}

/// Write the guest's boot files, rotate the console log and spawn QEMU (stdout and stderr to
/// `qemu.log`, its own process group, its descriptors from `launch`, as its user), reaped on a
/// thread; record its pid.
fn spawn(spec: &VmSpec, paths: &VmPaths, plan: &LaunchPlan) -> Result<Qemu> {
    let boot = crate::guest::provision::boot_files(paths, spec, &plan.image, &plan.guest_net)?;
    let run_dir = paths.run_dir();
    std::fs::create_dir_all(&run_dir).path_ctx("create", &run_dir)?;
    rotate(&paths.serial_log())?;
    let shares = launch::start_shares(paths, plan)?;
    let handed = launch::child(paths, plan, &boot, shares)?;
    tracing::debug!(argv = %crate::sys::quote::argv(&plan.argv), "spawning QEMU");
    let qemu_log = fsutil::open_append(&paths.qemu_log())?;
    let log_offset = qemu_log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(&plan.argv[0]);
    process::not_a_service(cmd.args(&plan.argv[1..]))
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone().path_ctx("open", &paths.qemu_log())?)
        .stderr(qemu_log)
        .process_group(0);
    handed.apply(&mut cmd);
    let mut child = cmd.spawn().ctx(|| format!("Cannot run {}", plan.argv[0]))?;
    // Our copies of what QEMU was given close here: only QEMU holds its sockets and files.
    drop(cmd);
    let pid = child.id() as i32;
    let (started, started_unix) = (Instant::now(), fsutil::unix_now());
    // Reap QEMU on a thread; the async side learns of the exit through the channel.
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    runstate::write_pid(paths, pid)?;
    Ok(Qemu {
        pid,
        started,
        started_unix,
        exit_rx,
        log_offset,
    })
}

impl Qemu {
    /// Start the passt that networks the guest. If it cannot start, QEMU is killed and reaped,
    /// and the error says why.
    async fn link(
        &mut self,
        setup: &crate::net::link::Setup,
        spec: &VmSpec,
        paths: &VmPaths,
        qmp: &mut Qmp,
    ) -> Result<crate::net::link::Link> {
        match crate::net::link::Link::start(setup.clone(), paths, &spec.ports, qmp).await {
            Ok(link) => Ok(link),
            Err(e) => {
                process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = (&mut self.exit_rx).await;
                runstate::clean(paths);
                Err(Error::Host(format!(
                    "The network of VM {} did not come up: {e}",
                    spec.name
                )))
            }
        }
    }

    /// Attach the guest's NICs on private networks to their switches. If one cannot be,
    /// QEMU is killed and reaped, and the error says why.
    async fn attach(
        &mut self,
        home: &Home,
        spec: &VmSpec,
        paths: &VmPaths,
        nics: Vec<crate::net::attach::Nic>,
    ) -> Result<Nics> {
        match Nics::attach(home, spec.name.as_str(), nics).await {
            Ok(n) => Ok(n),
            Err(e) => {
                process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = (&mut self.exit_rx).await;
                runstate::clean(paths);
                Err(e)
            }
        }
    }

    /// Let QEMU load the saved state it was started with, then run the guest, and forget the
    /// state (the guest moves on from it). A state QEMU cannot load ends QEMU: the error quotes
    /// what it logged and keeps the state for another try or `--fresh`.
    async fn restore(&mut self, spec: &VmSpec, paths: &VmPaths, qmp: &mut Qmp) -> Result<()> {
        let t0 = Instant::now();
        match crate::qemu::save::wait_loaded(qmp, t0 + RESTORE_LIMIT).await {
            Ok(()) => {
                crate::saved::discard(paths);
                tracing::info!(vm = %spec.name, seconds = t0.elapsed().as_secs_f64(), "restored from the saved state");
                Ok(())
            }
            Err(e) => {
                process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = (&mut self.exit_rx).await;
                runstate::clean(paths);
                let log = fsutil::tail_since(&paths.qemu_log(), self.log_offset, 15);
                Err(Error::Qemu(format!(
                    "VM {name} could not be restored from its saved state: {e}{}\n`vmctl start {name} --fresh` discards the state and boots",
                    if log.is_empty() {
                        String::new()
                    } else {
                        format!("\nQEMU said:\n{log}")
                    },
                    name = spec.name
                )))
            }
        }
    }

    /// Connect to the primary QMP socket while QEMU starts. A QEMU that does not answer in time
    /// is killed and reaped, and the error quotes what it logged.
    async fn connect(&mut self, spec: &VmSpec, paths: &VmPaths) -> Result<Qmp> {
        // The socket listens already (QEMU was given it): the greeting comes once QEMU's
        // monitor runs, or the connection ends if QEMU exits first.
        let qmp = Qmp::connect(&paths.qmp_socket(), QMP_STARTUP).await;
        let e = match qmp {
            Ok(mut q) => {
                q.timeout = crate::qemu::qmp::COMMAND_TIMEOUT;
                return Ok(q);
            }
            Err(e) => e,
        };
        process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
        let status = (&mut self.exit_rx).await.ok().and_then(|s| s.ok());
        runstate::clean(paths);
        let log = fsutil::tail_since(&paths.qemu_log(), self.log_offset, 15);
        Err(Error::Qemu(format!(
            "QEMU for VM {} did not come up ({}): {e}{}",
            spec.name,
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed".into()),
            if log.is_empty() {
                String::new()
            } else {
                format!("\nQEMU said:\n{log}")
            }
        )))
    }
}

/// A resumed guest's clock stood still while it was saved: set it to the host's through the
/// guest agent (bounded; a guest whose agent does not answer keeps its clock, and says so).
async fn set_clock(vm: String, agent: std::path::PathBuf) {
    let t0 = Instant::now();
    match crate::guest::agent::set_time(&agent, t0 + AGENT_LIMIT).await {
        Ok(()) => {
            tracing::info!(%vm, seconds = t0.elapsed().as_secs_f64(), "the guest's clock is set")
        }
        Err(e) => {
            tracing::warn!(%vm, "the guest's clock is behind by the time it was saved: {e}")
        }
    }
}

/// What QEMU really runs on, against what was chosen.
async fn check_accel(qmp: &mut Qmp, accel: Accel) {
    if let Ok(k) = qmp.execute(qapi::qmp::query_kvm {}).await {
        if k.enabled != (accel == Accel::Kvm) {
            tracing::warn!(
                kvm_enabled = k.enabled,
                "QEMU reports a different accelerator than chosen"
            );
        }
    }
}

/// QEMU answers: record the run state and tell a waiting `vmctl start` (`READY <pid>`).
fn announce(
    spec: &VmSpec,
    paths: &VmPaths,
    plan: &LaunchPlan,
    qemu: &Qemu,
    unit: Option<ServiceUnit>,
    mode: Mode,
    restored: bool,
) -> Result<RunState> {
    let state = RunState {
        qemu_pid: qemu.pid,
        supervisor_pid: std::process::id() as i32,
        accel: plan.decision.accel,
        accel_reason: plan.decision.reason.clone(),
        started_at: qemu.started_unix,
        qemu_version: plan.qemu_version.clone(),
        argv: plan.argv.clone(),
        unit,
        ready: false,
        health: spec.health.as_ref().map(|h| Monitor::new(h).state),
        paused: false,
        // A restored guest ran its scripts before it was saved.
        provision: (!spec.scripts.is_empty() && !restored).then_some(ScriptsState::Running),
    };
    runstate::write_state(paths, &state)?;
    tracing::info!(vm = %spec.name, pid = qemu.pid, accel = %state.accel, "QEMU is up");
    if mode == Mode::Notify {
        handshake::send(&handshake::ready(qemu.pid));
        detach_stdout();
    }
    Ok(state)
}

/// QEMU is gone: record how it ended (`last-exit.json`), remove the runtime files, and say
/// what `vmctl run` exits with.
fn finish(
    home: &Home,
    spec: &VmSpec,
    plan: &LaunchPlan,
    qemu: &Qemu,
    status: Option<std::process::ExitStatus>,
    ending: Ending,
) -> Result<u8> {
    let paths = &home.vm(&spec.name);
    let (code, sig) = match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            (s.code(), s.signal())
        }
        None => (None, None),
    };
    let last = LastExit {
        code,
        signal: sig,
        at: fsutil::unix_now(),
        uptime_secs: qemu.started.elapsed().as_secs(),
        stopped_by: match &ending {
            Ending::Requested(step) => step.clone(),
            Ending::Unhealthy => Some("health-check".into()),
            Ending::Exited => None,
        },
    };
    let shown = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    tracing::info!(vm = %spec.name, pid = qemu.pid, code = %shown(code), signal = %shown(sig), "QEMU exited");
    runstate::write_last_exit(paths, &last)?;
    // A `vmctl stop` or `kill` records its own event, with the step that stopped QEMU.
    let asked = paths.stop_request().exists() && last.stopped_by.is_none();
    if !asked {
        let mut d =
            serde_json::json!({"code": code, "signal": sig, "uptime_secs": last.uptime_secs});
        let event = ended(&last);
        if event != "crashed" {
            let step = last.stopped_by.clone().unwrap_or_else(|| "guest".into());
            d["step"] = step.into();
        }
        crate::events::record(home, spec.name.as_str(), event, d);
    }
    if last.stopped_by.as_deref() == Some(SAVED) {
        record_save(paths, plan)?;
    }
    runstate::clean(paths);
    Ok(exit_status(&ending, code, sig))
}

/// The event of QEMU's end no command asked for: `saved`, `crashed` (a signal or a failure
/// status), or `stopped` (a service manager's stop, a failed health check, the guest's own
/// poweroff).
fn ended(last: &LastExit) -> &'static str {
    match last.stopped_by.as_deref() {
        Some(SAVED) => "saved",
        None if last.failed() => "crashed",
        _ => "stopped",
    }
}

/// QEMU saved the guest and exited: record what the state fits (the disk as QEMU left it).
fn record_save(paths: &VmPaths, plan: &LaunchPlan) -> Result<()> {
    let id = |p: &std::path::Path| crate::saved::FileId::of(p).path_ctx("read", p);
    let meta = crate::saved::SavedMeta {
        saved_at: fsutil::unix_now(),
        bytes: std::fs::metadata(paths.saved_state())
            .map(|m| m.len())
            .unwrap_or(0),
        qemu_version: plan.qemu_version.clone(),
        machine: plan.machine.clone(),
        disk: id(&paths.disk())?,
        base: id(&plan.image.disk())?,
    };
    crate::saved::write(paths, &meta)
}

/// `vmctl run`'s exit status: 8 when the guest was unhealthy, 0 after a requested stop, else
/// QEMU's own (128+N when signal N killed it).
pub fn exit_status(ending: &Ending, code: Option<i32>, signal: Option<i32>) -> u8 {
    match (ending, code, signal) {
        (Ending::Unhealthy, _, _) => exit::UNHEALTHY,
        (Ending::Requested(_), _, _) => 0,
        (Ending::Exited, Some(c), _) => c.clamp(0, 255) as u8,
        (Ending::Exited, None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (Ending::Exited, None, None) => 1,
    }
}

/// Keep the previous boot's console log as `serial.log.1`. A symbolic link in its place is
/// removed, never followed (the new log is created afresh, `O_NOFOLLOW`).
fn rotate(log: &std::path::Path) -> Result<()> {
    let Ok(m) = std::fs::symlink_metadata(log) else {
        return Ok(());
    };
    if m.file_type().is_symlink() {
        tracing::warn!(
            "removing the symbolic link {} in place of the console log",
            log.display()
        );
        return std::fs::remove_file(log).path_ctx("remove", log);
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let _ = std::fs::rename(log, old);
    Ok(())
}

/// After `READY`, nobody reads our stdout any more: point it at /dev/null so a later write does
/// not kill us with SIGPIPE.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_what_ended_qemu() {
        let step = || Ending::Requested(Some("acpi".into()));
        assert_eq!(exit_status(&Ending::Unhealthy, Some(0), None), 8);
        assert_eq!(exit_status(&step(), Some(1), None), 0);
        assert_eq!(exit_status(&Ending::Requested(None), None, Some(9)), 0);
        assert_eq!(exit_status(&Ending::Exited, Some(0), None), 0);
        assert_eq!(exit_status(&Ending::Exited, Some(1), None), 1);
        assert_eq!(exit_status(&Ending::Exited, None, Some(9)), 137);
        assert_eq!(exit_status(&Ending::Exited, None, Some(15)), 143);
        assert_eq!(exit_status(&Ending::Exited, None, None), 1);
    }
}
