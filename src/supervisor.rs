//! `vmctl run NAME`: the process that owns a running QEMU. It prepares the launch (image,
//! accelerator, free host ports), spawns QEMU in its own process group, holds the primary QMP
//! connection (logging guest events), records how QEMU ended, and removes the runtime files.
//! On SIGTERM/SIGINT it stops the guest gracefully (see `shutdown`). `vmctl start` runs it
//! detached and reads one line from its stdout: `READY <pid>` or `ERROR <code> <message>`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::accel::{self, Decision};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::image;
use crate::paths::Home;
use crate::qemu::{self, Launch};
use crate::qmp::Qmp;
use crate::runtime::{self, LastExit, Liveness, RunState};
use crate::shutdown;
use crate::spec::VmSpec;
use crate::units::Protocol;

/// How long QEMU may take to answer its monitor after being spawned.
const QMP_STARTUP: Duration = Duration::from_secs(30);

/// Everything needed to spawn QEMU, decided before anything is started.
pub struct Plan {
    pub argv: Vec<String>,
    pub image: image::Image,
    pub decision: Decision,
    pub qemu_version: String,
}

/// Resolve image, accelerator and binary into the exact argv. Also used by `show-cmd`.
pub fn plan(home: &Home, spec: &VmSpec) -> Result<Plan> {
    let paths = home.vm(&spec.name);
    paths.check_socket_paths()?;
    let img = image::find(home, &spec.image, spec.arch)?;
    let binary = crate::host::find_in_path(spec.arch.qemu_binary()).ok_or_else(|| {
        Error::Host(format!(
            "{} is not installed (apt-get install {})",
            spec.arch.qemu_binary(),
            match spec.arch {
                crate::units::Arch::X86_64 => "qemu-system-x86",
                crate::units::Arch::Aarch64 => "qemu-system-arm",
            }
        ))
    })?;
    let qemu_version = crate::host::qemu_version(&binary).unwrap_or_default();
    let decision = accel::choose(home, spec.accel, spec.arch)?;
    let argv = qemu::argv(&Launch {
        spec,
        accel: decision.accel,
        paths: &paths,
        binary,
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: img.manifest.cmdline.clone(),
        provision: img.manifest.provision,
        boot_files: crate::provision::planned(&paths, &img),
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
        let addr = std::net::SocketAddr::from((f.addr, f.host));
        let free = match f.proto {
            Protocol::Tcp => std::net::TcpListener::bind(addr).map(|_| ()),
            Protocol::Udp => std::net::UdpSocket::bind(addr).map(|_| ()),
        };
        if let Err(e) = free {
            let owner = crate::vm::port_owner(home, &spec.name, f)
                .map(|(vm, p)| format!("VM {vm} forwards it ({p})"))
                .unwrap_or_else(|| format!("another process holds it ({e})"));
            return Err(Error::State(format!(
                "Host port {}:{}/{} of ports[{i}] ({f}) is already in use: {owner}",
                f.addr, f.host, f.proto
            )));
        }
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
    let result = crate::vm::block_on(run_async(home, spec, mode));
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
    let paths = home.vm(&spec.name);
    let lock = match mode {
        Mode::Foreground => Some(fsutil::lock_exclusive(&paths.lock())?),
        Mode::Notify => None,
    };
    match runtime::liveness(&paths) {
        Liveness::Running { pid, .. } => {
            return Err(Error::State(format!(
                "VM {} is already running (QEMU pid {pid})",
                spec.name
            )));
        }
        Liveness::Stale => runtime::clean(&paths),
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
    tracing::info!(vm = %spec.name, accel = %plan.decision.accel, reason = %plan.decision.reason, "starting");
    if plan.decision.accel == accel::Accel::Tcg && spec.accel == crate::units::AccelChoice::Auto {
        tracing::warn!(vm = %spec.name, "using TCG (software emulation): {}", plan.decision.reason);
    }
    crate::provision::boot_files(&paths, spec, &plan.image)?;
    let run_dir = paths.run_dir();
    std::fs::create_dir_all(&run_dir).path_ctx("create", &run_dir)?;
    rotate(&paths.serial_log());
    tracing::debug!(argv = %qemu::shell_quote(&plan.argv), "spawning QEMU");

    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.qemu_log())
        .path_ctx("open", &paths.qemu_log())?;
    let log_offset = qemu_log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = Command::new(&plan.argv[0])
        .args(&plan.argv[1..])
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
            crate::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            let status = (&mut exit_rx).await.ok().and_then(|s| s.ok());
            runtime::clean(&paths);
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
        let want = plan.decision.accel == accel::Accel::Kvm;
        if k.enabled != want {
            tracing::warn!(
                kvm_enabled = k.enabled,
                "QEMU reports a different accelerator than chosen"
            );
        }
    }
    let state = RunState {
        qemu_pid: pid,
        supervisor_pid: std::process::id() as i32,
        accel: plan.decision.accel,
        accel_reason: plan.decision.reason.clone(),
        started_at: started_unix,
        qemu_version: plan.qemu_version.clone(),
        argv: plan.argv.clone(),
    };
    runtime::write_state(&paths, &state)?;
    tracing::info!(vm = %spec.name, pid, "QEMU is up");
    if mode == Mode::Notify {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "READY {pid}");
        let _ = out.flush();
        detach_stdout();
    }
    drop(lock);

    let mut sigterm = signal(SignalKind::terminate()).ctx(|| "Cannot handle SIGTERM".into())?;
    let mut sigint = signal(SignalKind::interrupt()).ctx(|| "Cannot handle SIGINT".into())?;
    let mut stopped_by = None;
    let mut monitor_open = true;
    let status = loop {
        tokio::select! {
            status = &mut exit_rx => break status.ok().and_then(|s| s.ok()),
            ev = qmp.next_event(Instant::now() + Duration::from_secs(3600)), if monitor_open => match ev {
                Ok(Some(e)) => tracing::info!(vm = %spec.name, event = %e.event, data = %e.data, "guest event"),
                Ok(None) => {}
                Err(_) => monitor_open = false,
            },
            _ = sigterm.recv() => {
                stopped_by = Some(stop_on_signal(&mut qmp, pid, spec, "SIGTERM").await);
            }
            _ = sigint.recv() => {
                stopped_by = Some(stop_on_signal(&mut qmp, pid, spec, "SIGINT").await);
            }
        }
    };
    let uptime = started.elapsed().as_secs();
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
        uptime_secs: uptime,
        stopped_by: stopped_by.flatten(),
    };
    tracing::info!(vm = %spec.name, ?code, signal = ?sig, "QEMU exited");
    runtime::write_last_exit(&paths, &last)?;
    runtime::clean(&paths);
    Ok(match (code, sig) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => 1,
    })
}

async fn stop_on_signal(qmp: &mut Qmp, pid: i32, spec: &VmSpec, sig: &str) -> Option<String> {
    tracing::info!(vm = %spec.name, "{sig}: stopping the guest");
    match shutdown::graceful(Some(qmp), pid, spec.stop_timeout).await {
        Ok(o) => {
            tracing::info!(vm = %spec.name, step = o.step.as_str(), seconds = o.seconds, "stopped");
            Some(o.step.as_str().to_string())
        }
        Err(e) => {
            tracing::error!(vm = %spec.name, "stop failed: {e}");
            None
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
