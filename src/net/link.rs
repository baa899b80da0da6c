//! passt beside QEMU. QEMU listens on the VM's `net.sock` (on a descriptor the supervisor
//! bound); the supervisor connects to it and hands that connection to passt, which runs as
//! QEMU's user, in its own process group, killed with the supervisor and reaped by it, its
//! complaints in `qemu.log`. passt is up once each forward is bound by its user and QEMU has
//! accepted its connection (QMP's `NETDEV_STREAM_CONNECTED`). New forwards (`vmctl port` on a
//! running VM) take a new passt, since passt reads its forwards only when it starts: the old
//! one is stopped, QEMU accepts the new one's connection, and QEMU announces the guest
//! (`announce-self`, also right after the first start) so that passt learns the guest's address
//! at once. Connections through the old passt are cut.
//!
//! The announcement waits for QEMU's accept: QEMU 7.2 sets up a listening stream netdev after
//! its main loop starts, and a frame sent to it before then is written to a connection it does
//! not have yet (a NULL channel: QEMU dies of SIGSEGV in `announce-self`).

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, IoContext, Result};
use crate::net::{passt, sockets, state};
use crate::paths::VmPaths;
use crate::qemu::argv::NETDEV;
use crate::qemu::qmp::{Qmp, QmpEvent};
use crate::sys::child::{Child, Identity};
use crate::sys::{fsutil, process};
use crate::types::PortForward;

/// How long passt may take to bind its forwards, QEMU to accept its connection, and passt to
/// exit when asked.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

type ExitReceiver = tokio::sync::oneshot::Receiver<std::io::Result<ExitStatus>>;

/// What every passt of this VM is started with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub binary: PathBuf,
    /// Run as this identity (QEMU's) instead of ours.
    pub identity: Option<Identity>,
}

/// The running passt of a VM.
pub struct Link {
    setup: Setup,
    paths: VmPaths,
    pid: i32,
    /// Its exit, until reaped.
    exit_rx: Option<ExitReceiver>,
    ports: Vec<PortForward>,
    generation: u64,
}

impl Link {
    /// Start passt for `ports`, connected to QEMU's `net.sock`, wait until it has bound every
    /// forward and QEMU has accepted it, and announce the guest; record it in `net.json`.
    /// `qmp` must be connected before: the accept is learnt from its event.
    pub async fn start(
        setup: Setup,
        paths: &VmPaths,
        ports: &[PortForward],
        qmp: &mut Qmp,
    ) -> Result<Link> {
        let (pid, exit_rx) = spawn(&setup, paths, ports).await?;
        let mut link = Link {
            setup,
            paths: paths.clone(),
            pid,
            exit_rx: Some(exit_rx),
            ports: ports.to_vec(),
            generation: 1,
        };
        if let Err(e) = accepted(qmp).await {
            link.stop().await;
            return Err(e);
        }
        announce(qmp).await;
        link.record(None)?;
        Ok(link)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves when passt exits (it should not while QEMU runs); never once it is reaped.
    pub async fn exited(&mut self) -> Option<ExitStatus> {
        let Some(rx) = self.exit_rx.as_mut() else {
            return std::future::pending().await;
        };
        let status = rx.await.ok().and_then(|s| s.ok());
        self.exit_rx = None;
        status
    }

    /// Start a passt again with the forwards it had (after it died).
    pub async fn restart(&mut self, qmp: &mut Qmp) -> Result<()> {
        let ports = self.ports.clone();
        self.replace(&ports, qmp).await
    }

    /// Bring the forwards in line with `ports`: a new passt in place of this one. If the new one
    /// cannot start, one with the old forwards takes its place, and `net.json` says why.
    pub async fn replace(&mut self, ports: &[PortForward], qmp: &mut Qmp) -> Result<()> {
        self.stop().await;
        self.generation += 1;
        let result = match spawn(&self.setup, &self.paths, ports).await {
            Ok((pid, rx)) => {
                (self.pid, self.exit_rx, self.ports) = (pid, Some(rx), ports.to_vec());
                Ok(())
            }
            Err(e) => {
                let (pid, rx) = spawn(&self.setup, &self.paths, &self.ports).await?;
                (self.pid, self.exit_rx) = (pid, Some(rx));
                Err(e)
            }
        };
        match accepted(qmp).await {
            Ok(()) => announce(qmp).await,
            Err(e) => tracing::warn!("{e}; the guest is not announced to passt"),
        }
        self.record(result.as_ref().err().map(|e| e.to_string()))?;
        result
    }

    /// Ask passt to exit (SIGTERM, then SIGKILL) and reap it.
    pub async fn stop(&mut self) {
        let Some(mut rx) = self.exit_rx.take() else {
            return;
        };
        process::signal(self.pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, &mut rx).await.is_err() {
            process::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.await;
        }
    }

    fn record(&self, error: Option<String>) -> Result<()> {
        state::write(
            &self.paths,
            &state::NetState {
                generation: self.generation,
                passt_pid: self.pid,
                ports: self.ports.iter().map(|p| p.to_string()).collect(),
                error,
            },
        )
    }
}

/// Wait until QEMU has accepted passt's connection (its `NETDEV_STREAM_CONNECTED` event for
/// the guest's netdev); other events stay queued for the watch loop.
async fn accepted(qmp: &mut Qmp) -> Result<()> {
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    let is_ours = |e: &QmpEvent| {
        e.event == "NETDEV_STREAM_CONNECTED" && e.data["netdev-id"].as_str() == Some(NETDEV)
    };
    match qmp.wait_for_event(is_ours, deadline).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::Host(format!(
            "QEMU did not accept passt's connection within {ACCEPT_TIMEOUT:?}"
        ))),
        Err(e) => Err(Error::Qemu(format!(
            "QEMU went away before it accepted passt's connection: {e}"
        ))),
    }
}

/// Have QEMU announce the guest's NIC (RARP frames from its MAC, and the guest's own gratuitous
/// ARP where its driver can): passt learns where to send only from a frame of the guest's, and a
/// quiet guest (a static address, no IPv6) might send none before a forward's first connection.
/// (QEMU's migration defaults: 5 rounds, 50 ms apart at first.)
async fn announce(qmp: &mut Qmp) {
    let rounds = serde_json::json!({"initial": 50, "max": 550, "rounds": 5, "step": 50});
    if let Err(e) = qmp.execute_raw("announce-self", Some(rounds)).await {
        tracing::warn!("announce-self for passt: {e}");
    }
}

/// Spawn a passt for `ports` and wait until its forwards are bound: its pid and exit channel.
async fn spawn(
    setup: &Setup,
    paths: &VmPaths,
    ports: &[PortForward],
) -> Result<(i32, ExitReceiver)> {
    let sock = paths.net_socket();
    let tap = UnixStream::connect(&sock).path_ctx("connect to", &sock)?;
    let argv = passt::argv(&setup.binary, ports);
    let log = fsutil::open_append(&paths.qemu_log())?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(&argv[0]);
    process::not_a_service(cmd.args(&argv[1..]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().path_ctx("open", &paths.qemu_log())?)
        .stderr(log)
        .process_group(0);
    let mut child = Child::new(setup.identity.clone());
    child.pass(tap, passt::TAP_FD)?;
    child.apply(&mut cmd);
    tracing::debug!(argv = %crate::sys::quote::argv(&argv), "spawning passt");
    let mut proc = cmd.spawn().ctx(|| format!("Cannot run {}", argv[0]))?;
    drop(cmd);
    let pid = proc.id() as i32;
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(proc.wait());
    });
    let uid = setup
        .identity
        .as_ref()
        .map_or_else(|| nix::unistd::geteuid().as_raw(), |i| i.uid);
    let deadline = Instant::now() + BIND_TIMEOUT;
    loop {
        let missing: Vec<&PortForward> = ports
            .iter()
            .filter(|f| !sockets::is_bound_by(f, uid, &sockets::bound_now(f.proto)))
            .collect();
        if missing.is_empty() {
            return Ok((pid, rx));
        }
        let why = match rx.try_recv() {
            Ok(status) => Some(format!(
                "passt exited ({})",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            )),
            Err(_) if Instant::now() >= deadline => {
                process::signal(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = (&mut rx).await;
                Some(format!("passt did not bind {} in time", missing[0]))
            }
            Err(_) => None,
        };
        if let Some(why) = why {
            let said = fsutil::tail_since(&paths.qemu_log(), log_offset, 5);
            return Err(Error::Host(format!(
                "{why}{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!("; it said: {said}")
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
