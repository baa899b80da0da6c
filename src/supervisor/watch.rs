//! A started VM, watched until QEMU exits: guest events (`STOP`/`RESUME` pause the health
//! check), readiness, the `[health]` check's probes and its verdict, stop signals, and the
//! guest's passt (SIGHUP: new forwards from the definition; restarted should it die). Every
//! change goes to `state.json` (what `vmctl status` and `list` read) and, under systemd, to the
//! service manager (`READY=1`, `STATUS=`, `STOPPING=1`). An unhealthy guest under a service
//! manager gets `quit`, then SIGKILL, so that `Restart=` brings it back.

use std::time::Duration;

use tokio::time::Instant;

use crate::def::spec::{HealthSpec, VmSpec};
use crate::guest::health::{self, HealthStatus, Monitor, Readiness};
use crate::guest::scripts::{Follower, ScriptsState};
use crate::net::attach::Nics;
use crate::net::link::Link;
use crate::paths::{Home, VmPaths};
use crate::qemu::qmp::{Qmp, QmpEvent};
use crate::qemu::shutdown;
use crate::runstate::{self, RunState};
use crate::supervisor::clock::Clock;
use crate::supervisor::save;
use crate::sys::fsutil;
use crate::systemd::notify::{self, Field, Notifier};
use crate::types::PortForward;

/// How long an unhealthy guest's QEMU gets to `quit` before SIGKILL.
const UNHEALTHY_QUIT: Duration = Duration::from_secs(2);

/// How long after passt exits QEMU's own exit is waited for (passt ends when QEMU does).
const LINK_GRACE: Duration = Duration::from_secs(1);

/// QEMU's exit status, from the thread that reaps it.
pub type ExitReceiver = tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>;

/// Resolves when the guest's passt exits; never without one.
async fn link_exit(link: &mut Option<Link>) -> Option<std::process::ExitStatus> {
    match link {
        Some(l) => l.exited().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the guest's provisioning scripts are through; never without them.
async fn scripts_end(scripts: &mut Option<Follower>) -> ScriptsState {
    match scripts {
        Some(f) => f.outcome().await,
        None => std::future::pending().await,
    }
}

/// A health probe's verdict: why it failed, if it did.
type ProbeResult = std::result::Result<(), String>;

/// SIGTERM and SIGINT, taken over from the start so that one arriving while QEMU starts is
/// served as a graceful stop as soon as QEMU answers.
pub struct Signals {
    pub term: tokio::signal::unix::Signal,
    pub int: tokio::signal::unix::Signal,
    /// `vmctl port` changed the definition's forwards: passt should have them.
    pub hup: tokio::signal::unix::Signal,
}

/// Why QEMU ended.
pub enum Ending {
    /// SIGTERM/SIGINT asked for a stop; the step that ended QEMU, if the stop finished.
    Requested(Option<String>),
    /// The guest failed its health check and its unit will restart it; QEMU was stopped.
    Unhealthy,
    /// QEMU exited by itself: the guest powered off, QEMU crashed, or something killed it.
    Exited,
}

/// What connects the guest's NICs: its passt (none with `host_access`) and its private
/// networks' switches.
pub struct Links {
    pub passt: Option<Link>,
    pub nics: Nics,
}

/// A started VM, watched until QEMU exits: guest events, readiness, the health check, stop
/// signals; `state.json` and systemd hear of each change.
pub struct Running<'a> {
    spec: &'a VmSpec,
    home: &'a Home,
    paths: &'a VmPaths,
    /// The guest's passt and its NICs on private networks.
    pub links: Links,
    /// Work the guest is not ready before, besides its checks (a resumed guest's clock).
    pub before_ready: Option<tokio::task::JoinHandle<()>>,
    pid: i32,
    /// Run by a service manager (`NOTIFY_SOCKET`, or the VM's own unit), which restarts us.
    supervised: bool,
    notifier: Option<&'a Notifier>,
    state: RunState,
    started: Instant,
    monitor: Option<Monitor>,
    /// The `[health]` check and the forward it goes through.
    health: Option<(HealthSpec, PortForward)>,
    clock: Clock,
    /// Your provisioning scripts' lines on the console, followed until the run ends.
    scripts: Option<Follower>,
    /// The readiness checks passed (the guest is up once its scripts are done, too).
    checks_passed: bool,
}

impl<'a> Running<'a> {
    /// `state` is what `state.json` says now; `started` is when QEMU was spawned.
    pub fn new(
        spec: &'a VmSpec,
        home: &'a Home,
        paths: &'a VmPaths,
        notifier: Option<&'a Notifier>,
        state: RunState,
        started: Instant,
        links: Links,
    ) -> Running<'a> {
        let health = spec.health.as_ref().and_then(|h| {
            let via = *spec.forward_to(h.check.guest_port())?;
            Some((h.clone(), via))
        });
        // None for a guest restored from a saved state: it ran them before.
        let scripts = state.provision.is_some().then(|| Follower::new(paths));
        Running {
            spec,
            home,
            paths,
            links,
            before_ready: None,
            pid: state.qemu_pid,
            supervised: notifier.is_some() || state.unit.is_some(),
            notifier,
            monitor: spec.health.as_ref().map(Monitor::new),
            state,
            started,
            health,
            clock: Clock::new(started, spec.health.as_ref()),
            scripts,
            checks_passed: false,
        }
    }

    /// Watch until QEMU exits; what ended it.
    pub async fn watch(
        &mut self,
        qmp: &mut Qmp,
        exit_rx: &mut ExitReceiver,
        signals: &mut Signals,
    ) -> (Option<std::process::ExitStatus>, Ending) {
        let mut readiness = Readiness::for_spec(self.spec);
        self.status(&format!(
            "QEMU is up (pid {}, {}); waiting for {}",
            self.pid,
            self.state.accel,
            readiness.describe()
        ));
        let before = self.before_ready.take();
        let ready = async move {
            readiness.wait().await;
            if let Some(task) = before {
                let _ = task.await;
            }
        };
        tokio::pin!(ready);
        let far = self.started + Duration::from_secs(86400 * 365);
        let mut probes = tokio::task::JoinSet::new();
        let mut ending = Ending::Exited;
        let mut monitor_open = true;
        let status = loop {
            let stopping = !matches!(ending, Ending::Exited);
            let up = self.state.ready;
            let (give_up_at, probe_at) = (self.clock.give_up_at(), self.clock.probe_at());
            tokio::select! {
                status = &mut *exit_rx => break status.ok().and_then(|s| s.ok()),
                ev = qmp.next_event(Instant::now() + Duration::from_secs(3600)), if monitor_open => match ev {
                    Ok(Some(e)) => self.on_event(&e),
                    Ok(None) => {}
                    Err(_) => monitor_open = false,
                },
                _ = signals.term.recv() => ending = Ending::Requested(self.stop_on_signal(qmp, "SIGTERM").await),
                _ = signals.int.recv() => ending = Ending::Requested(self.stop_on_signal(qmp, "SIGINT").await),
                _ = signals.hup.recv(), if !stopping => self.reload_forwards(qmp).await,
                status = link_exit(&mut self.links.passt), if !stopping => {
                    // QEMU closing the link ends passt too: if QEMU is exiting, that is the news.
                    if let Ok(s) = tokio::time::timeout(LINK_GRACE, &mut *exit_rx).await {
                        break s.ok().and_then(|s| s.ok());
                    }
                    self.on_link_exit(status, qmp).await
                }
                i = self.links.nics.lost(), if !stopping => {
                    // The switch lets a NIC go when QEMU closes it: QEMU may be exiting.
                    if let Ok(s) = tokio::time::timeout(LINK_GRACE, &mut *exit_rx).await {
                        break s.ok().and_then(|s| s.ok());
                    }
                    self.on_switch_lost(i).await
                }
                _ = &mut ready, if !self.checks_passed && !stopping => self.on_checks_passed(),
                end = scripts_end(&mut self.scripts), if !stopping => self.on_scripts(end),
                _ = tokio::time::sleep_until(give_up_at.unwrap_or(far)), if give_up_at.is_some() && !up && !stopping => {
                    if self.on_give_up(qmp).await {
                        ending = Ending::Unhealthy;
                    }
                }
                _ = tokio::time::sleep_until(probe_at.unwrap_or(far)), if probe_at.is_some() && !stopping => {
                    self.start_probe(&mut probes);
                }
                Some(Ok((started, result))) = probes.join_next(), if !probes.is_empty() && !stopping => {
                    if self.on_probe_done(started, result, qmp).await {
                        ending = Ending::Unhealthy;
                    }
                }
            }
        };
        (status, ending)
    }

    /// SIGHUP: give the guest's passt the forwards the definition has now (`vmctl port`, which
    /// reads the outcome from `net.json`).
    async fn reload_forwards(&mut self, qmp: &mut Qmp) {
        let Some(link) = self.links.passt.as_mut() else {
            tracing::info!(vm = %self.spec.name, "SIGHUP: QEMU's user networking changes its forwards itself");
            return;
        };
        let ports = match crate::def::store::load(self.home, &self.spec.name) {
            Ok(spec) => spec.ports,
            Err(e) => {
                tracing::warn!(vm = %self.spec.name, "SIGHUP: cannot read the definition: {e}");
                return;
            }
        };
        match link.replace(&ports, qmp).await {
            Ok(()) => {
                tracing::info!(vm = %self.spec.name, pid = link.pid(), "passt has the new forwards")
            }
            Err(e) => {
                tracing::warn!(vm = %self.spec.name, "new forwards refused, the old kept: {e}")
            }
        }
    }

    /// The switch of a private network went away while QEMU runs: give the NIC to a new one.
    async fn on_switch_lost(&mut self, i: usize) {
        let (vm, net) = (&self.spec.name, self.links.nics.nic(i).network.clone());
        tracing::warn!(%vm, network = %net, "the network's switch went away; attaching to a new one");
        match self.links.nics.reattach(i).await {
            Ok(()) => tracing::info!(%vm, network = %net, "attached to the network's new switch"),
            Err(e) => tracing::error!(%vm, network = %net, "the guest is off network {net}: {e}"),
        }
    }

    /// The guest's passt died while QEMU runs: start another with the same forwards.
    async fn on_link_exit(&mut self, status: Option<std::process::ExitStatus>, qmp: &mut Qmp) {
        let Some(link) = self.links.passt.as_mut() else {
            return;
        };
        tracing::warn!(vm = %self.spec.name, status = ?status, "passt exited; starting it again");
        if let Err(e) = link.restart(qmp).await {
            tracing::error!(vm = %self.spec.name, "the guest has no network: {e}");
            self.links.passt = None;
        }
    }

    /// A guest event: logged; `STOP` and `RESUME` pause and resume the health check.
    fn on_event(&mut self, e: &QmpEvent) {
        tracing::info!(vm = %self.spec.name, event = %e.event, data = %e.data, "guest event");
        let now = Instant::now();
        match e.event.as_str() {
            "STOP" if self.clock.pause(now) => self.on_pause(true),
            "RESUME" if self.clock.resume(now, self.state.ready) => self.on_pause(false),
            _ => {}
        }
    }

    /// The guest did not pass its health check in time: one last check, which also says why it
    /// fails. True when the guest is unhealthy and QEMU was stopped.
    async fn on_give_up(&mut self, qmp: &mut Qmp) -> bool {
        self.clock.gave_up();
        let Some((h, via)) = self.health.clone() else {
            return false;
        };
        match health::probe(&h.check, &via, health::probe_timeout(&h)).await {
            Ok(()) => {
                self.on_checks_passed();
                false
            }
            Err(why) => {
                if let Some(m) = &mut self.monitor {
                    m.never_passed(why, fsutil::unix_now());
                }
                self.on_unhealthy(qmp).await
            }
        }
    }

    /// A probe is due: run it in the background (`join_next` brings its result).
    fn start_probe(&mut self, probes: &mut tokio::task::JoinSet<(Instant, ProbeResult)>) {
        self.clock.probe_started();
        if let Some((h, via)) = &self.health {
            let (check, via, timeout) = (h.check.clone(), *via, health::probe_timeout(h));
            probes
                .spawn(async move { (Instant::now(), health::probe(&check, &via, timeout).await) });
        }
    }

    /// A probe that started at `started` is done. True when it made the guest unhealthy and
    /// QEMU was stopped; else the next probe is scheduled (unless the probe overlapped a pause,
    /// which says nothing: `RESUME` schedules the next).
    async fn on_probe_done(
        &mut self,
        started: Instant,
        result: ProbeResult,
        qmp: &mut Qmp,
    ) -> bool {
        if !self.clock.probe_counts(started) {
            return false;
        }
        if self.on_probe(result) && self.on_unhealthy(qmp).await {
            return true;
        }
        self.clock.schedule_probe(Instant::now());
        false
    }

    fn status(&self, text: &str) {
        notify::notify(self.notifier, &[Field::Status(text)]);
    }

    fn save(&self) {
        if let Err(e) = runstate::write_state(self.paths, &self.state) {
            tracing::warn!(vm = %self.spec.name, "cannot record the VM's state: {e}");
        }
    }

    /// The readiness checks passed: the guest is up, unless its provisioning scripts still run
    /// (or failed).
    fn on_checks_passed(&mut self) {
        self.checks_passed = true;
        if matches!(self.state.provision, None | Some(ScriptsState::Done)) {
            self.on_ready();
        }
    }

    /// The provisioning scripts' run ended. Done: the guest is up once the checks pass (or now,
    /// if they did). Failed: recorded for `start --wait` and `status`, and the service manager
    /// hears that the start is over (READY=1, with the failure as its status), so that a unit's
    /// start does not wait for what will not come; the guest keeps running for a look inside.
    fn on_scripts(&mut self, end: ScriptsState) {
        self.scripts = None;
        self.state.provision = Some(end.clone());
        let vm = &self.spec.name;
        match &end {
            ScriptsState::Done => {
                tracing::info!(%vm, "provisioning scripts done");
                if self.checks_passed {
                    self.on_ready();
                    return;
                }
            }
            ScriptsState::Failed { .. } | ScriptsState::Running => {
                let what = end.describe();
                tracing::error!(%vm, "provisioning {what}; see `vmctl logs {vm} --provision`");
                notify::notify(
                    self.notifier,
                    &[
                        Field::Ready,
                        Field::Status(&format!(
                            "Provisioning {what} (vmctl logs {vm} --provision); the guest runs"
                        )),
                    ],
                );
            }
        }
        self.save();
    }

    /// The guest is up: tell systemd (READY=1) and `vmctl status`.
    fn on_ready(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(m) = &mut self.monitor {
            m.record(Ok(()), fsutil::unix_now());
            self.state.health = Some(m.state.clone());
        }
        self.state.ready = true;
        self.clock.schedule_probe(Instant::now());
        self.save();
        self.event(
            "ready",
            serde_json::json!({"seconds": (secs * 10.0).round() / 10.0}),
        );
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

    /// Record an event of this VM in the home's log.
    fn event(&self, event: &str, detail: serde_json::Value) {
        crate::events::record(self.home, self.spec.name.as_str(), event, detail);
    }

    /// The guest's CPUs stopped (or run again): `state.json` (so `vmctl list` says paused) and
    /// systemd's status line hear of it.
    fn on_pause(&mut self, paused: bool) {
        self.state.paused = paused;
        self.save();
        self.event(
            if paused { "paused" } else { "resumed" },
            serde_json::json!({}),
        );
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
            if before.status != now && now != HealthStatus::Starting {
                let detail = serde_json::json!({"check": check, "failing_streak": streak});
                self.event(now.as_str(), detail);
            }
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
        let (vm, pid, mut t) = (&self.spec.name, self.pid, self.spec.stop_timeout);
        if save::wanted(self.paths, self.spec) {
            // Half the stop timeout for the save, the rest for the power button should it fail.
            t /= 2;
            tracing::info!(%vm, pid, "{sig}: saving the guest's state");
            notify::notify(
                self.notifier,
                &[
                    Field::Stopping,
                    Field::Status(&format!("{sig}: saving the guest's state")),
                ],
            );
            match save::save(qmp, self.paths, pid, t).await {
                Ok(s) => {
                    tracing::info!(%vm, pid, seconds = s.seconds, "saved");
                    return Some(save::SAVED.to_string());
                }
                Err(e) => tracing::error!(%vm, pid, "the save failed, powering off instead: {e}"),
            }
        }
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
