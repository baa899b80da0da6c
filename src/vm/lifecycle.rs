//! The lifecycle commands: create, start, stop, kill, restart, rm, list, status, logs, show-cmd,
//! and pause, resume and reset of a running guest over the control QMP socket. Each takes the
//! VM's lock for what it changes; results are returned as data for `cli` to print as text or JSON.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::def::config::VmConfig;
use crate::def::spec::{self, VmSpec};
use crate::def::store::{limits, load, names, port_owner};
use crate::error::{Error, FieldError, IoContext, Result};
use crate::image;
use crate::paths::{Home, VmPaths};
use crate::qemu::control::{ctl_connect, run_state};
use crate::qemu::shutdown::{self, StopOutcome};
use crate::runstate::{self, LastExit, Liveness};
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::{PortForward, VmName};

pub fn create(home: &Home, name: &VmName, cfg: &VmConfig, source_name: &str) -> Result<VmSpec> {
    create_as(home, name, cfg, source_name, None)
}

/// `create`; `defined_by` names the file the definition is kept in line with (`--update`).
fn create_as(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    source_name: &str,
    defined_by: Option<&Path>,
) -> Result<VmSpec> {
    let spec = spec::validate(name, cfg, limits(), source_name)?;
    let paths = home.vm(name);
    // Check everything before touching the home, so bad input leaves nothing behind; the checks
    // that race with other vmctl processes are repeated under the lock.
    let img = precheck(home, &spec, source_name)?;
    let vms = home.vms_dir();
    std::fs::create_dir_all(&vms).path_ctx("create", &vms)?;
    let _lock = fsutil::lock_exclusive(&home.vms_lock())?;
    precheck(home, &spec, source_name)?;
    // Build the VM in a temporary directory and rename it into place: all or nothing.
    let tmp = fsutil::TempDir::new(&vms, &format!(".create-{name}-"))?;
    let staging = VmPaths {
        dir: tmp.path().to_path_buf(),
    };
    crate::qemu::img::create(&staging.disk(), spec.disk, Some(&img.disk()))?;
    let spec = crate::guest::provision::setup(&spec, &img, &staging, &paths)?;
    fsutil::write_atomic(
        &staging.definition(),
        definition_text(&spec, defined_by).as_bytes(),
    )?;
    if let Some(f) = defined_by {
        write_drop_in_record(&staging.drop_in_record(), f)?;
    }
    std::fs::rename(tmp.path(), &paths.dir).path_ctx("create", &paths.dir)?;
    Ok(spec)
}

/// Name free, sockets fit, image built, disk large enough, host ports not in another definition.
fn precheck(home: &Home, spec: &VmSpec, source_name: &str) -> Result<image::store::Image> {
    let name = &spec.name;
    let paths = home.vm(name);
    if paths.dir.exists() {
        return Err(Error::Usage(format!(
            "VM {name} already exists ({}); pick another name or `vmctl rm {name}` first",
            paths.dir.display()
        )));
    }
    paths.check_socket_paths()?;
    let mut problems = Vec::new();
    let img = match image::store::find(home, &spec.image, spec.arch) {
        Ok(img) => Some(img),
        Err(e) => {
            problems.push(FieldError {
                field: "image".into(),
                message: e.to_string(),
            });
            None
        }
    };
    if let Some(img) = &img {
        crate::guest::provision::precheck(spec, img, &mut problems);
        if spec.disk.bytes() < img.manifest.virtual_size {
            problems.push(FieldError {
                field: "disk".into(),
                message: format!(
                    "{} is smaller than image {} ({})",
                    spec.disk,
                    spec.image,
                    crate::types::ByteSize(img.manifest.virtual_size)
                ),
            });
        }
    }
    for (i, f) in spec.ports.iter().enumerate() {
        if let Some((vm, p)) = port_owner(home, name, f) {
            problems.push(FieldError {
                field: format!("ports[{i}]"),
                message: format!("host port {} is already forwarded by VM {vm} ({p})", f.host),
            });
        }
    }
    match img {
        Some(img) if problems.is_empty() => Ok(img),
        _ => Err(Error::Invalid {
            source_name: source_name.to_string(),
            problems,
        }),
    }
}

fn definition_text(spec: &VmSpec, defined_by: Option<&Path>) -> String {
    let header = match defined_by {
        None => format!(
            "# VM {} — written by vmctl; edit while the VM is stopped.",
            spec.name
        ),
        Some(f) => format!(
            "# VM {} — written by vmctl from {} (`vmctl create --update`, which each start of its\n# unit runs): edit that file, not this one.",
            spec.name,
            f.display()
        ),
    };
    format!("{header}\n{}", spec.to_config().to_toml())
}

/// What `create --update` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created,
    /// The stored definition already says what the file says.
    Unchanged,
    /// The fields that changed, `field: old → new`.
    Updated(Vec<String>),
}

/// Fields that the VM's disk or its provisioning at create depend on: changing them takes a
/// new VM.
const FIXED_AT_CREATE: [&str; 5] = ["image", "arch", "disk", "user", "ssh_key"];

/// `create --from FILE --update`: create the VM from `file` if it does not exist; else bring
/// its stored definition in line with the file, which must then be stopped. Fields fixed at
/// create (image, arch, disk, user, ssh_key) cannot change this way; `user` and `ssh_key` left
/// out of the file keep what create resolved for them.
pub fn create_or_update(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    file: &Path,
) -> Result<(VmSpec, Applied)> {
    let file = &std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let source_name = file.display().to_string();
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return create_as(home, name, cfg, &source_name, Some(file)).map(|s| (s, Applied::Created));
    }
    let mut wanted = spec::validate(name, cfg, limits(), &source_name)?;
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let stored = load(home, name)?;
    if wanted.user.is_none() {
        wanted.user = stored.user.clone();
    }
    wanted.ssh_key = match wanted.ssh_key.take() {
        Some(k) => Some(std::path::absolute(&k).unwrap_or(k)),
        None => stored.ssh_key.clone(),
    };
    // The file defines the VM from now on (also one made by `vmctl create` before).
    let record = paths.drop_in_record();
    if std::fs::read_to_string(&record).ok().as_deref() != file.to_str() {
        write_drop_in_record(&record, file)?;
    }
    let changes = config_changes(&stored.to_config(), &wanted.to_config());
    if changes.is_empty() {
        return Ok((stored, Applied::Unchanged));
    }
    let def = paths.definition();
    let mut problems: Vec<FieldError> = changes
        .iter()
        .filter(|(field, ..)| FIXED_AT_CREATE.contains(&field.as_str()))
        .map(|(field, old, new)| FieldError {
            field: field.clone(),
            message: format!(
                "VM {name} has {old} ({}); {new} takes a new VM: `vmctl rm {name}` (its disk is lost), then create it again",
                def.display()
            ),
        })
        .collect();
    for (i, f) in wanted.ports.iter().enumerate() {
        if let Some((vm, p)) = port_owner(home, name, f) {
            problems.push(FieldError {
                field: format!("ports[{i}]"),
                message: format!("host port {} is already forwarded by VM {vm} ({p})", f.host),
            });
        }
    }
    if problems.is_empty() {
        if let Ok(img) = image::store::find(home, &wanted.image, wanted.arch) {
            crate::guest::provision::precheck(&wanted, &img, &mut problems);
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid {
            source_name,
            problems,
        });
    }
    let changed: Vec<String> = changes
        .iter()
        .map(|(field, old, new)| format!("{field}: {old} → {new}"))
        .collect();
    if let Liveness::Running { pid, .. } = runstate::liveness(&paths) {
        return Err(Error::State(format!(
            "VM {name} is running (QEMU pid {pid}); stop it to apply {} ({})",
            file.display(),
            changed.join(", ")
        )));
    }
    fsutil::write_atomic(&def, definition_text(&wanted, Some(file)).as_bytes())?;
    Ok((wanted, Applied::Updated(changed)))
}

fn write_drop_in_record(record: &Path, file: &Path) -> Result<()> {
    fsutil::write_atomic(record, file.as_os_str().as_encoded_bytes())
}

/// Top-level fields whose values differ, as (field, old, new) in TOML notation ("-" for unset).
fn config_changes(old: &VmConfig, new: &VmConfig) -> Vec<(String, String, String)> {
    let table = |c: &VmConfig| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (old, new) = (table(old), table(new));
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let show = |v: Option<&toml::Value>| match v {
        None => "-".to_string(),
        Some(toml::Value::Table(t)) => {
            format!("{{ {} }}", t.to_string().trim().replace('\n', ", "))
        }
        Some(v) => v.to_string(),
    };
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| (k.clone(), show(old.get(k)), show(new.get(k))))
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Started {
    pub name: String,
    pub pid: i32,
    pub accel: String,
    pub accel_reason: String,
    pub ports: Vec<PortForward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_seconds: Option<f64>,
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
        crate::systemd::manager::start(&unit)?;
        let Liveness::Running { pid, .. } = runstate::liveness(&paths) else {
            return Err(Error::Qemu(format!(
                "{} started, but VM {name} is not running",
                unit.name
            )));
        };
        let mut s = started(&paths, &spec, pid);
        s.ready_seconds = Some(t0.elapsed().as_secs_f64());
        return Ok(s);
    }
    let pid = {
        let _lock = fsutil::lock_exclusive(&paths.lock())?;
        if let Liveness::Running { pid, .. } = runstate::liveness(&paths) {
            return Err(Error::State(format!(
                "VM {name} is already running (QEMU pid {pid})"
            )));
        }
        spawn_supervisor(home, &paths, name)?
    };
    let mut started = started(&paths, &spec, pid);
    if let Some(timeout) = wait {
        wait_ready(&paths, &spec, t0 + timeout)?;
        started.ready_seconds = Some(t0.elapsed().as_secs_f64());
    }
    Ok(started)
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
    }
}

fn spawn_supervisor(home: &Home, paths: &VmPaths, name: &VmName) -> Result<i32> {
    std::fs::create_dir_all(&paths.dir).path_ctx("create", &paths.dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.qemu_log())
        .path_ctx("open", &paths.qemu_log())?;
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

/// Wait until the guest is up (see [`crate::guest::health::Readiness`]), while its QEMU runs and until
/// `deadline`.
fn wait_ready(paths: &VmPaths, spec: &VmSpec, deadline: std::time::Instant) -> Result<()> {
    block_on(async {
        let mut readiness = crate::guest::health::Readiness::for_spec(spec);
        let stopped = {
            let ready = readiness.wait();
            tokio::pin!(ready);
            let mut liveness = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = &mut ready => return Ok(()),
                    _ = tokio::time::sleep_until(deadline.into()) => break false,
                    _ = liveness.tick() => if !runstate::liveness(paths).is_running() {
                        break true;
                    },
                }
            }
        };
        let console = fsutil::tail(&paths.serial_log(), 15);
        Err(if stopped {
            Error::Qemu(format!(
                "VM {} stopped while waiting for it; console log ends with:\n{console}",
                spec.name
            ))
        } else {
            Error::Timeout(format!(
                "VM {} is running but not ready in time:\n{}\nconsole log ends with:\n{console}",
                spec.name,
                readiness.report()
            ))
        })
    })
}

#[derive(Debug, Serialize)]
pub struct Stopped {
    pub name: String,
    /// False when the VM was not running.
    pub was_running: bool,
    #[serde(flatten)]
    pub outcome: Option<StopOutcome>,
    pub exit: Option<LastExit>,
}

/// How a stop should proceed.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    Graceful(Duration),
    /// `quit`, then SIGKILL.
    Force,
    /// SIGKILL at once.
    Kill,
}

pub fn stop(home: &Home, name: &VmName, mode: StopMode) -> Result<Stopped> {
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return Err(Error::vm_not_found(name.as_str()));
    }
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let (pid, state) = match runstate::liveness(&paths) {
        Liveness::Running { pid, state } => (pid, state),
        Liveness::Stale => {
            runstate::clean(&paths);
            return Ok(Stopped {
                name: name.to_string(),
                was_running: false,
                outcome: None,
                exit: runstate::read_last_exit(&paths),
            });
        }
        Liveness::Stopped => {
            return Ok(Stopped {
                name: name.to_string(),
                was_running: false,
                outcome: None,
                exit: None,
            });
        }
    };
    if let Some(unit) = state.as_ref().and_then(|s| s.unit.clone()) {
        // Its unit would restart a VM stopped behind its back (Restart=always).
        if !matches!(mode, StopMode::Kill) && crate::systemd::manager::manager_running(unit.scope) {
            return stop_unit(&paths, name, &unit);
        }
    }
    let outcome = block_on(async {
        let mut qmp = match mode {
            StopMode::Kill => None,
            _ => ctl_connect(&paths).await.ok(),
        };
        let outcome = match mode {
            StopMode::Graceful(t) => shutdown::graceful(qmp.as_mut().map(|(q, _)| q), pid, t).await,
            StopMode::Force => shutdown::force(qmp.as_mut().map(|(q, _)| q), pid).await,
            StopMode::Kill => {
                let mut w = crate::sys::process::ExitWatch::new(pid);
                shutdown::kill(&mut w, pid, Instant::now(), 0).await
            }
        }?;
        // The supervisor records the exit status and cleans up; wait for it to finish.
        if let Some(s) = &state {
            let mut w = crate::sys::process::ExitWatch::new(s.supervisor_pid);
            if !w.wait_until(Instant::now() + Duration::from_secs(5)).await {
                tracing::warn!("the supervisor (pid {}) is still running", s.supervisor_pid);
            }
        }
        Ok::<_, Error>(outcome)
    })?;
    if runstate::liveness(&paths).is_running() {
        return Err(Error::Other(format!("VM {name} is still running")));
    }
    runstate::clean(&paths);
    Ok(Stopped {
        name: name.to_string(),
        was_running: true,
        outcome: Some(outcome),
        exit: runstate::read_last_exit(&paths),
    })
}

/// Stop a VM that a systemd unit runs, through the unit: its `vmctl run` stops the guest
/// gracefully (within the VM's stop_timeout) and records how.
fn stop_unit(paths: &VmPaths, name: &VmName, unit: &crate::types::ServiceUnit) -> Result<Stopped> {
    let t0 = std::time::Instant::now();
    let since = fsutil::unix_now();
    crate::systemd::manager::stop(unit)?;
    if runstate::liveness(paths).is_running() {
        return Err(Error::Other(format!(
            "VM {name} is still running after stopping {}",
            unit.name
        )));
    }
    // No fresh record: systemd killed the supervisor (its stop timed out).
    let exit = runstate::read_last_exit(paths).filter(|e| e.at >= since);
    let step = exit
        .as_ref()
        .and_then(|e| e.stopped_by.as_deref())
        .and_then(shutdown::StopStep::parse)
        .unwrap_or(shutdown::StopStep::Kill);
    Ok(Stopped {
        name: name.to_string(),
        was_running: true,
        outcome: Some(StopOutcome {
            step,
            seconds: t0.elapsed().as_secs_f64(),
            presses: 0,
        }),
        exit,
    })
}

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
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return Err(Error::vm_not_found(name.as_str()));
    }
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

/// Delete a VM. Its systemd units (of this home) are stopped, disabled and removed first: a unit
/// left behind would restart a VM whose definition is gone, and could not run its stop. Returns
/// what was done to units, one line each.
pub fn rm(home: &Home, name: &VmName, force: bool) -> Result<Vec<String>> {
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return Err(Error::vm_not_found(name.as_str()));
    }
    if let Liveness::Running { state, .. } = runstate::liveness(&paths) {
        if !force {
            let stop_how = match state.and_then(|s| s.unit) {
                Some(u) => format!(
                    "its unit runs it: `{} stop {}`",
                    match u.scope {
                        crate::types::Scope::System => "systemctl",
                        crate::types::Scope::User => "systemctl --user",
                    },
                    u.name
                ),
                None => format!("`vmctl stop {name}`"),
            };
            return Err(Error::State(format!(
                "VM {name} is running; stop it first ({stop_how}) or use `vmctl rm --force {name}`"
            )));
        }
    }
    let done = crate::systemd::install::remove_units_of(home, name)?;
    if runstate::liveness(&paths).is_running() {
        stop(home, name, StopMode::Kill)?;
    }
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    if runstate::liveness(&paths).is_running() {
        return Err(Error::State(format!(
            "VM {name} was started again meanwhile"
        )));
    }
    // Rename first so a half-deleted directory never looks like a VM.
    let trash = home
        .vms_dir()
        .join(format!(".trash-{name}-{}", std::process::id()));
    std::fs::rename(&paths.dir, &trash).path_ctx("remove", &paths.dir)?;
    std::fs::remove_dir_all(&trash).path_ctx("remove", &trash)?;
    Ok(done)
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
    /// running, paused, stopped, crashed, or QEMU's own run state.
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
    pub serial_log: String,
    pub last_exit: Option<LastExit>,
    /// Whether the guest answers yet (its health check, or its forwarded ports), while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The `[health]` check: starting, healthy or unhealthy, while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::guest::health::HealthState>,
    /// The systemd unit running the VM, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
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
        serial_log: paths.serial_log().display().to_string(),
        last_exit: runstate::read_last_exit(&paths),
        ready: None,
        health: None,
        unit: None,
    };
    match runstate::liveness(&paths) {
        Liveness::Stopped => {}
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

/// Print the guest's console log; with `follow`, keep printing what it appends.
pub fn logs(home: &Home, name: &VmName, follow: bool) -> Result<()> {
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return Err(Error::vm_not_found(name.as_str()));
    }
    let path = paths.serial_log();
    let mut out = std::io::stdout().lock();
    let mut pos = 0u64;
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
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

/// The exact argv `start` runs (the recorded one while the VM runs).
pub fn show_cmd(home: &Home, name: &VmName) -> Result<Vec<String>> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    if let Liveness::Running { state: Some(s), .. } = runstate::liveness(&paths) {
        return Ok(s.argv);
    }
    Ok(crate::supervisor::plan::plan(home, &spec)?.argv)
}
