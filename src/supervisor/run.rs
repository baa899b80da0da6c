//! `vmctl run NAME`: the process that owns a running QEMU. It prepares the launch (image,
//! accelerator, free host ports), spawns QEMU in its own process group, holds the primary QMP
//! connection (logging guest events), records how QEMU ended, and removes the runtime files.
//! On SIGTERM/SIGINT it stops the guest gracefully (see `shutdown`). `vmctl start` runs it
//! detached and reads one line from its stdout: `READY <pid>` or `ERROR <code> <message>`.
//!
//! Run by a systemd unit (`vmctl run NAME`, `Type=notify`), it tells systemd `READY=1` once the
//! guest is up (`health::Readiness`), `STOPPING=1` when a stop begins, and its progress as
//! `STATUS=`; it runs the `[health]` check and, when the guest turns unhealthy, stops QEMU and
//! exits with status 8 so that `Restart=` brings the VM back. Exit status: 0 after a requested
//! stop or when the guest powered itself off, 8 when unhealthy, else QEMU's own (128+N for a
//! signal N).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::def::spec::VmSpec;
use crate::error::{Error, IoContext, Result};
use crate::guest::health::{self, HealthStatus, Monitor, Readiness};
use crate::host::accel::{self, Decision};
use crate::image;
use crate::paths::Home;
use crate::qemu::argv::{self, Launch};
use crate::qemu::qmp::Qmp;
use crate::qemu::shutdown;
use crate::runstate::{self, LastExit, Liveness, RunState};
use crate::sys::fsutil;
use crate::systemd::notify::{self, Field};
use crate::types::{PortForward, Protocol, VmName};

/// How long QEMU may take to answer its monitor after being spawned.
const QMP_STARTUP: Duration = Duration::from_secs(30);
/// How long an unhealthy guest's QEMU gets to `quit` before SIGKILL.
const UNHEALTHY_QUIT: Duration = Duration::from_secs(2);

/// Everything needed to spawn QEMU, decided before anything is started.
pub struct Plan {
    pub argv: Vec<String>,
    pub image: image::store::Image,
    pub decision: Decision,
    pub qemu_version: String,
}

/// Resolve image, accelerator and binary into the exact argv. Also used by `show-cmd`.
pub fn plan(home: &Home, spec: &VmSpec) -> Result<Plan> {
    let paths = home.vm(&spec.name);
    paths.check_socket_paths()?;
    let img = image::store::find(home, &spec.image, spec.arch)?;
    let binary = crate::host::facts::find_in_path(spec.arch.qemu_binary()).ok_or_else(|| {
        Error::Host(format!(
            "{} is not installed (apt-get install {})",
            spec.arch.qemu_binary(),
            match spec.arch {
                crate::types::Arch::X86_64 => "qemu-system-x86",
                crate::types::Arch::Aarch64 => "qemu-system-arm",
            }
        ))
    })?;
    let qemu_version = crate::host::facts::qemu_version(&binary).unwrap_or_default();
    let decision = accel::choose(spec.accel, spec.arch, &|arch| {
        image::store::probe_kernel(home, arch)
    })?;
    let argv = argv::argv(&Launch {
        spec,
        accel: decision.accel,
        paths: &paths,
        binary,
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: img.manifest.cmdline.clone(),
        set_hostname: img.manifest.provision == image::recipe::Provision::Vmctl,
        boot_files: crate::guest::provision::planned(&paths, &img),
    });
    Ok(Plan {
        argv,
        image: img,
        decision,
        qemu_version,
    })
}

/// Refuse forwards whose host port is taken, naming the port and, when it is one, the VM.
pub fn check_ports_free(home: &Home, spec: &VmSpec) -> Result<()> {
    for (i, f) in spec.ports.iter().enumerate() {
        check_port_free(home, &spec.name, f, &format!("ports[{i}] ({f})"))?;
    }
    Ok(())
}

/// Refuse a forward whose host port cannot be bound now, naming it (`what`) and, when it is
/// one, the VM that forwards it.
pub fn check_port_free(home: &Home, me: &VmName, f: &PortForward, what: &str) -> Result<()> {
    let addr = std::net::SocketAddr::from((f.addr, f.host));
    let free = match f.proto {
        Protocol::Tcp => std::net::TcpListener::bind(addr).map(|_| ()),
        Protocol::Udp => std::net::UdpSocket::bind(addr).map(|_| ()),
    };
    if let Err(e) = free {
        let owner = crate::def::store::port_owner(home, me, f)
            .map(|(vm, p)| format!("VM {vm} forwards it ({p})"))
            .unwrap_or_else(|| format!("another process holds it ({e})"));
        return Err(Error::State(format!(
            "Host port {}:{}/{} of {what} is already in use: {owner}",
            f.addr, f.host, f.proto
        )));
    }
    Ok(())
}

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
            let msg = e.to_string().replace('\n', "\\n");
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ERROR {} {msg}", e.code());
            let _ = out.flush();
        }
    }
    result
}

async fn run_async(home: &Home, spec: &VmSpec, mode: Mode) -> Result<u8> {
    // Sockets, pidfile and logs are the VM owner's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // From here on SIGTERM/SIGINT are ours: one that arrives while QEMU starts is served as a
    // graceful stop as soon as QEMU answers, instead of killing this process mid-launch.
    let mut sigterm = signal(SignalKind::terminate()).ctx(|| "Cannot handle SIGTERM".into())?;
    let mut sigint = signal(SignalKind::interrupt()).ctx(|| "Cannot handle SIGINT".into())?;
    let (notifier, unit) = match mode {
        Mode::Foreground => (
            notify::Notifier::from_env(),
            crate::systemd::manager::own_unit(&spec.name),
        ),
        Mode::Notify => (None, None),
    };
    let paths = home.vm(&spec.name);
    let lock = match mode {
        Mode::Foreground => Some(fsutil::lock_exclusive(&paths.lock())?),
        Mode::Notify => None,
    };
    match runstate::liveness(&paths) {
        Liveness::Running { pid, .. } => {
            return Err(Error::State(format!(
                "VM {} is already running (QEMU pid {pid})",
                spec.name
            )));
        }
        Liveness::Stale => runstate::clean(&paths),
        Liveness::Stopped => {}
    }
    let plan = plan(home, spec)?;
    check_ports_free(home, spec)?;
    if !paths.disk().exists() {
        return Err(Error::Other(format!(
            "Disk {} of VM {} is missing",
            paths.disk().display(),
            spec.name
        )));
    }
    let accel = plan.decision.accel;
    tracing::info!(vm = %spec.name, %accel, reason = %plan.decision.reason, "starting");
    if accel == crate::types::Accel::Tcg && spec.accel == crate::types::AccelChoice::Auto {
        tracing::warn!(vm = %spec.name, "using TCG (software emulation): {}", plan.decision.reason);
    }
    notify::notify(
        notifier.as_ref(),
        &[Field::Status(&format!(
            "Starting QEMU ({accel}: {})",
            plan.decision.reason
        ))],
    );
    crate::guest::provision::boot_files(&paths, spec, &plan.image)?;
    let run_dir = paths.run_dir();
    std::fs::create_dir_all(&run_dir).path_ctx("create", &run_dir)?;
    rotate(&paths.serial_log());
    tracing::debug!(argv = %argv::shell_quote(&plan.argv), "spawning QEMU");

    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.qemu_log())
        .path_ctx("open", &paths.qemu_log())?;
    let log_offset = qemu_log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = Command::new(&plan.argv[0])
        .args(&plan.argv[1..])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone().path_ctx("open", &paths.qemu_log())?)
        .stderr(qemu_log)
        .process_group(0)
        .spawn()
        .ctx(|| format!("Cannot run {}", plan.argv[0]))?;
    let pid = child.id() as i32;
    let started = Instant::now();
    let started_unix = fsutil::unix_now();

    // Reap QEMU on a thread; the async side learns of the exit through the channel.
    let exited = Arc::new(AtomicBool::new(false));
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel();
    {
        let exited = exited.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            exited.store(true, Ordering::SeqCst);
            let _ = exit_tx.send(status);
        });
    }

    let qmp = {
        let exited = exited.clone();
        Qmp::connect_retry(
            &paths.qmp_socket(),
            Instant::now() + QMP_STARTUP,
            move || !exited.load(Ordering::SeqCst),
        )
        .await
    };
    let mut qmp = match qmp {
        Ok(q) => q,
        Err(e) => {
            crate::sys::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            let status = (&mut exit_rx).await.ok().and_then(|s| s.ok());
            runstate::clean(&paths);
            let log = log_since(&paths.qemu_log(), log_offset);
            return Err(Error::Qemu(format!(
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
            )));
        }
    };
    if let Ok(k) = qmp.execute(qapi::qmp::query_kvm {}).await {
        let want = accel == crate::types::Accel::Kvm;
        if k.enabled != want {
            tracing::warn!(
                kvm_enabled = k.enabled,
                "QEMU reports a different accelerator than chosen"
            );
        }
    }
    let monitor = spec.health.as_ref().map(Monitor::new);
    let state = RunState {
        qemu_pid: pid,
        supervisor_pid: std::process::id() as i32,
        accel,
        accel_reason: plan.decision.reason.clone(),
        started_at: started_unix,
        qemu_version: plan.qemu_version.clone(),
        argv: plan.argv.clone(),
        unit,
        ready: false,
        health: monitor.as_ref().map(|m| m.state.clone()),
        paused: false,
    };
    runstate::write_state(&paths, &state)?;
    tracing::info!(vm = %spec.name, pid, %accel, "QEMU is up");
    if mode == Mode::Notify {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "READY {pid}");
        let _ = out.flush();
        detach_stdout();
    }
    drop(lock);

    let mut vm = Running {
        spec,
        paths: &paths,
        pid,
        supervised: notifier.is_some() || state.unit.is_some(),
        notifier: notifier.as_ref(),
        state,
        monitor,
        started,
    };
    let (status, ending) = vm
        .watch(&mut qmp, &mut exit_rx, &mut sigterm, &mut sigint)
        .await;
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
        uptime_secs: started.elapsed().as_secs(),
        stopped_by: match &ending {
            Ending::Requested(step) => step.clone(),
            Ending::Unhealthy => Some("health-check".into()),
            Ending::Exited => None,
        },
    };
    let shown = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    tracing::info!(vm = %spec.name, pid, code = %shown(code), signal = %shown(sig), "QEMU exited");
    runstate::write_last_exit(&paths, &last)?;
    runstate::clean(&paths);
    Ok(match (ending, code, sig) {
        (Ending::Unhealthy, _, _) => crate::error::exit::UNHEALTHY,
        (Ending::Requested(_), _, _) => 0,
        (Ending::Exited, Some(c), _) => c.clamp(0, 255) as u8,
        (Ending::Exited, None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (Ending::Exited, None, None) => 1,
    })
}

/// Why QEMU ended.
enum Ending {
    /// SIGTERM/SIGINT asked for a stop; the step that ended QEMU, if the stop finished.
    Requested(Option<String>),
    /// The guest failed its health check and its unit will restart it; QEMU was stopped.
    Unhealthy,
    /// QEMU exited by itself: the guest powered off, QEMU crashed, or something killed it.
    Exited,
}

/// A started VM, watched until QEMU exits: guest events, readiness, the health check, stop
/// signals; `state.json` and systemd hear of each change.
struct Running<'a> {
    spec: &'a VmSpec,
    paths: &'a crate::paths::VmPaths,
    pid: i32,
    /// Run by a service manager (`NOTIFY_SOCKET`, or the VM's own unit), which restarts us.
    supervised: bool,
    notifier: Option<&'a notify::Notifier>,
    state: RunState,
    monitor: Option<Monitor>,
    started: Instant,
}

impl Running<'_> {
    async fn watch(
        &mut self,
        qmp: &mut Qmp,
        exit_rx: &mut tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
        sigterm: &mut tokio::signal::unix::Signal,
        sigint: &mut tokio::signal::unix::Signal,
    ) -> (Option<std::process::ExitStatus>, Ending) {
        let spec = self.spec;
        let mut readiness = Readiness::for_spec(spec);
        self.status(&format!(
            "QEMU is up (pid {}, {}); waiting for {}",
            self.pid,
            self.state.accel,
            readiness.describe()
        ));
        let ready = readiness.wait();
        tokio::pin!(ready);
        let health = spec.health.as_ref().and_then(|h| {
            let via = *spec.forward_to(h.check.guest_port())?;
            Some((h.clone(), via))
        });
        let far = self.started + Duration::from_secs(86400 * 365);
        let mut give_up = health
            .as_ref()
            .map_or(far, |(h, _)| self.started + health::give_up_after(h));
        let mut gave_up = false;
        let mut next_probe = None;
        let mut probes = tokio::task::JoinSet::new();
        let mut ending = Ending::Exited;
        let mut monitor_open = true;
        // While the guest's CPUs are stopped its health cannot be judged: no probes, and the
        // time does not count toward giving up.
        let mut paused_since: Option<Instant> = None;
        let mut resumed_at: Option<Instant> = None;
        let status = loop {
            let stopping = !matches!(ending, Ending::Exited);
            tokio::select! {
                status = &mut *exit_rx => break status.ok().and_then(|s| s.ok()),
                ev = qmp.next_event(Instant::now() + Duration::from_secs(3600)), if monitor_open => match ev {
                    Ok(Some(e)) => {
                        tracing::info!(vm = %spec.name, event = %e.event, data = %e.data, "guest event");
                        match e.event.as_str() {
                            "STOP" if paused_since.is_none() => {
                                paused_since = Some(Instant::now());
                                self.on_pause(true);
                            }
                            "RESUME" => {
                                if let Some(t) = paused_since.take() {
                                    give_up += t.elapsed();
                                    resumed_at = Some(Instant::now());
                                    self.on_pause(false);
                                    if self.state.ready {
                                        next_probe = health.as_ref().map(|(h, _)| Instant::now() + h.interval);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => {}
                    Err(_) => monitor_open = false,
                },
                _ = sigterm.recv() => ending = Ending::Requested(self.stop_on_signal(qmp, "SIGTERM").await),
                _ = sigint.recv() => ending = Ending::Requested(self.stop_on_signal(qmp, "SIGINT").await),
                _ = &mut ready, if !self.state.ready && !stopping => {
                    self.on_ready();
                    next_probe = health.as_ref().map(|(h, _)| Instant::now() + h.interval);
                }
                _ = tokio::time::sleep_until(give_up), if !self.state.ready && !gave_up && !stopping && paused_since.is_none() => {
                    gave_up = true;
                    let Some((h, via)) = &health else { continue };
                    // One last check, which also says why the guest fails it.
                    match health::probe(&h.check, via, health::probe_timeout(h)).await {
                        Ok(()) => {
                            self.on_ready();
                            next_probe = Some(Instant::now() + h.interval);
                        }
                        Err(why) => {
                            if let Some(m) = &mut self.monitor {
                                m.never_passed(why, fsutil::unix_now());
                            }
                            if self.on_unhealthy(qmp).await {
                                ending = Ending::Unhealthy;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_probe.unwrap_or(far)), if next_probe.is_some() && !stopping && paused_since.is_none() => {
                    next_probe = None;
                    if let Some((h, via)) = &health {
                        let (check, via, timeout) = (h.check.clone(), *via, health::probe_timeout(h));
                        probes.spawn(async move {
                            (Instant::now(), health::probe(&check, &via, timeout).await)
                        });
                    }
                }
                Some(Ok((started, result))) = probes.join_next(), if !probes.is_empty() && !stopping => {
                    if paused_since.is_some() || resumed_at.is_some_and(|r| started < r) {
                        // It overlapped a pause, so it says nothing; RESUME schedules the next.
                    } else if self.on_probe(result) && self.on_unhealthy(qmp).await {
                        ending = Ending::Unhealthy;
                    } else {
                        next_probe = health.as_ref().map(|(h, _)| Instant::now() + h.interval);
                    }
                }
            }
        };
        (status, ending)
    }

    fn status(&self, text: &str) {
        notify::notify(self.notifier, &[Field::Status(text)]);
    }

    fn save(&self) {
        if let Err(e) = runstate::write_state(self.paths, &self.state) {
            tracing::warn!(vm = %self.spec.name, "cannot record the VM's state: {e}");
        }
    }

    /// The guest answers: tell systemd (READY=1) and `vmctl status`.
    fn on_ready(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(m) = &mut self.monitor {
            m.record(Ok(()), fsutil::unix_now());
            self.state.health = Some(m.state.clone());
        }
        self.state.ready = true;
        self.save();
        let (vm, pid, accel) = (&self.spec.name, self.pid, self.state.accel);
        tracing::info!(%vm, pid, %accel, seconds = format!("{secs:.1}"), "the guest is up");
        notify::notify(
            self.notifier,
            &[
                Field::Ready,
                Field::Status(&format!(
                    "Guest is up after {secs:.1} s (QEMU pid {pid}, {accel})"
                )),
            ],
        );
    }

    /// The guest's CPUs stopped (or run again): `state.json` (so `vmctl list` says paused) and
    /// systemd's status line hear of it.
    fn on_pause(&mut self, paused: bool) {
        self.state.paused = paused;
        self.save();
        let (vm, pid) = (&self.spec.name, self.pid);
        if paused {
            tracing::info!(%vm, pid, "the guest is paused; health checks wait until it resumes");
            self.status("Paused (its CPUs are stopped); health checks wait until it resumes");
        } else {
            tracing::info!(%vm, pid, "the guest runs again");
            self.status(&format!(
                "Running again (QEMU pid {pid}, {})",
                self.state.accel
            ));
        }
    }

    /// Record a health check's result; true when it made the guest unhealthy.
    fn on_probe(&mut self, result: std::result::Result<(), String>) -> bool {
        let Some(m) = &mut self.monitor else {
            return false;
        };
        let before = m.state.clone();
        let failure = result.as_ref().err().cloned();
        let now = m.record(result, fsutil::unix_now());
        let after = m.state.clone();
        let (vm, check, streak) = (&self.spec.name, &after.check, after.failing_streak);
        match (&failure, before.status) {
            (Some(why), _) => {
                tracing::warn!(%vm, pid = self.pid, "health check {check} failed ({streak} in a row): {why}")
            }
            (None, HealthStatus::Healthy) => {}
            (None, _) => tracing::info!(%vm, pid = self.pid, "health check {check} passes again"),
        }
        if before.status != now || before.failing_streak != streak {
            self.status(&match &failure {
                Some(why) => format!(
                    "Health: {} ({check}; {streak} failed in a row, last: {why})",
                    now.as_str()
                ),
                None => format!("Health: {} ({check})", now.as_str()),
            });
            self.state.health = Some(after);
            self.save();
        }
        now == HealthStatus::Unhealthy
    }

    /// The guest is unhealthy. Run by a service manager, stop QEMU (`quit`, then SIGKILL: the
    /// guest is not expected to shut down well) so that `Restart=` brings it back, and return
    /// true. Elsewhere (`vmctl start`) nothing would restart it: report, and keep it running.
    async fn on_unhealthy(&mut self, qmp: &mut Qmp) -> bool {
        let Some(m) = &self.monitor else {
            return false;
        };
        self.state.health = Some(m.state.clone());
        self.save();
        let why = m.state.last_failure.clone().unwrap_or_default();
        let (vm, pid, check) = (&self.spec.name, self.pid, m.state.check.clone());
        if !self.supervised {
            tracing::error!(%vm, pid, "the guest is unhealthy ({check}: {why}); nothing would restart it, so it keeps running");
            return false;
        }
        tracing::error!(%vm, pid, "the guest is unhealthy ({check}: {why}); stopping QEMU so that systemd restarts the VM");
        notify::notify(
            self.notifier,
            &[
                Field::Stopping,
                Field::Status(&format!("Unhealthy ({check}: {why}); stopping QEMU")),
            ],
        );
        // A hung QEMU does not answer `quit` either: bound it, then SIGKILL.
        let quit = tokio::time::timeout(UNHEALTHY_QUIT, shutdown::force(Some(qmp), pid)).await;
        let killed = match quit {
            Ok(r) => r,
            Err(_) => {
                let mut watch = crate::sys::process::ExitWatch::new(pid);
                shutdown::kill(&mut watch, pid, Instant::now(), 0).await
            }
        };
        if let Err(e) = killed {
            tracing::error!(%vm, pid, "stop failed: {e}");
        }
        true
    }

    async fn stop_on_signal(&mut self, qmp: &mut Qmp, sig: &str) -> Option<String> {
        let (vm, pid, t) = (&self.spec.name, self.pid, self.spec.stop_timeout);
        tracing::info!(%vm, pid, "{sig}: stopping the guest");
        notify::notify(
            self.notifier,
            &[
                Field::Stopping,
                Field::Status(&format!(
                    "{sig}: stopping the guest (ACPI power button, at most {} s)",
                    t.as_secs()
                )),
            ],
        );
        match shutdown::graceful(Some(qmp), pid, t).await {
            Ok(o) => {
                tracing::info!(%vm, pid, step = o.step.as_str(), seconds = o.seconds, "stopped");
                Some(o.step.as_str().to_string())
            }
            Err(e) => {
                tracing::error!(%vm, pid, "stop failed: {e}");
                None
            }
        }
    }
}

/// Keep the previous boot's console log as `serial.log.1`.
fn rotate(log: &std::path::Path) {
    if log.exists() {
        let mut old = log.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(log, old);
    }
}

fn log_since(path: &std::path::Path, offset: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = (offset as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// After `READY`, nobody reads our stdout any more: point it at /dev/null so a later write does
/// not kill us with SIGPIPE.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}
