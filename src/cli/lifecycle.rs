//! The lifecycle commands' handlers: create, clone, start (and `--fresh`), stop, suspend, restart,
//! kill, pause, resume, reset, rm and run; each calls its `vm` command and shows the result.

use std::path::Path;
use std::time::Duration;

use crate::cli::args::{
    CreateArgs, NameArg, NameJsonArgs, RestartArgs, RmArgs, RunArgs, StartArgs, StopArgs,
};
use crate::cli::args_state::CloneArgs;
use crate::cli::inspect::describe_exit;
use crate::cli::output::{Show, done, json_mode, show};
use crate::def::config::{FileProblem, VmConfig, read_text};
use crate::def::spec::VmSpec;
use crate::def::store::load;
use crate::error::{Error, Result};
use crate::paths::Home;
use crate::supervisor::{handshake, run::Mode};
use crate::sys::fsutil;
use crate::types::{VmName, human_bytes};
use crate::vm::clone::{self as vm_clone, Cloned};
use crate::vm::control::{Control, control};
use crate::vm::create::{self as vm_create, Applied};
use crate::vm::start::{self as vm_start, Started};
use crate::vm::stop::{self as vm_stop, StopMode, Stopped};
use crate::vm::suspend::{self as vm_suspend, Suspended};
use serde_json::json;

pub fn create(home: &Home, a: CreateArgs) -> Result<u8> {
    let (base, source) = match &a.from {
        Some(f) => (from_file(f)?, f.display().to_string()),
        None => (VmConfig::default(), "command line".to_string()),
    };
    let mut over = a.as_config();
    if let Some(f) = &a.cloud_init {
        over.cloud_init = Some(read_flag_file(
            "--cloud-init",
            f,
            crate::guest::cloudmerge::MAX_BYTES as u64,
            "a cloud-config is YAML text",
        )?);
    }
    let cfg = base.overlay(over);
    let (true, Some(file)) = (a.update, &a.from) else {
        let spec = vm_create::create(home, &a.name, &cfg, &source)?;
        done(
            "created",
            json!({"vm": spec.name.as_str()}),
            &[created(&spec)],
        );
        note_missing_after(home, &spec);
        return Ok(0);
    };
    let (spec, applied) = vm_create::create_or_update(home, &a.name, &cfg, file)?;
    match applied {
        Applied::Created => done(
            "created",
            json!({"vm": spec.name.as_str()}),
            &[created(&spec)],
        ),
        Applied::Unchanged => {
            let line = format!("VM {} is up to date with {}", spec.name, file.display());
            done("unchanged", json!({"vm": spec.name.as_str()}), &[line]);
            return Ok(0);
        }
        Applied::Updated(changes) => {
            let line = format!(
                "Updated VM {} from {}: {}",
                spec.name,
                file.display(),
                changes.join("; ")
            );
            done(
                "updated",
                json!({"vm": spec.name.as_str(), "changes": changes}),
                &[line],
            );
        }
        Applied::Differs(_) => unreachable!("create_or_update refuses a running VM that differs"),
    }
    note_missing_after(home, &spec);
    Ok(0)
}

/// `--from FILE`: a path with a control character (it would reach files vmctl writes), or a file
/// that cannot be read or cannot be a definition, is a usage error naming it.
fn from_file(f: &Path) -> Result<VmConfig> {
    if f.as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(u8::is_ascii_control)
    {
        return Err(Error::Usage(format!(
            "--from: the path has a control character; got {f:?}; rename the file"
        )));
    }
    let text = read_text(f).map_err(|e| file_problem("--from", f, e))?;
    let mut cfg = VmConfig::parse(&text, &f.display().to_string())?;
    // Provisioning scripts named by file are read now, beside the definition file, and your
    // app's directories are found there.
    let base = crate::sys::fsutil::folder_of(f);
    let mut p = crate::error::Problems::default();
    cfg.resolve_files(&base, &mut p);
    p.into_result(&f.display().to_string())?;
    Ok(cfg)
}

/// A file a flag names, as text (at most `max` bytes; `what` says what it should be).
fn read_flag_file(flag: &str, f: &Path, max: u64, what: &str) -> Result<String> {
    crate::sys::fsutil::read_text(f, max, what).map_err(|e| file_problem(flag, f, e))
}

/// Why `flag`'s file `f` gives no text, as a usage error naming both.
fn file_problem(flag: &str, f: &Path, e: FileProblem) -> Error {
    Error::Usage(match e {
        FileProblem::Io(e) => format!(
            "{flag}: cannot read {}: {}",
            f.display(),
            match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            }
        ),
        FileProblem::Content(why) => format!("{flag}: {} {why}", f.display()),
    })
}

/// A VM to start after that is not in this home is allowed (it may be created later), with a
/// note: until it exists, this VM's unit cannot start.
fn note_missing_after(home: &Home, spec: &VmSpec) {
    for a in &spec.after {
        if home.defined(a).is_err() {
            eprintln!(
                "Note: after: VM {a} does not exist in this home; the unit of VM {} will fail to start until it does",
                spec.name
            );
        }
    }
}

fn created(spec: &VmSpec) -> String {
    let ports = if spec.ports.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = spec.ports.iter().map(|p| p.to_string()).collect();
        format!(", ports {}", list.join(" "))
    };
    format!(
        "Created VM {}: {} CPU, {} RAM, {} disk on image {} ({}){ports}",
        spec.name, spec.cpus, spec.memory, spec.disk, spec.image, spec.arch,
    )
}

pub fn start(home: &Home, a: StartArgs) -> Result<u8> {
    if a.fresh {
        fresh(home, &a.name, a.force)?;
    }
    let wait = a.wait.then(|| Duration::from_secs(a.timeout));
    show(&vm_start::start(home, &a.name, wait)?, a.json);
    Ok(0)
}

/// `start --fresh`: the saved state discarded, after a yes on a terminal or with `--force`.
fn fresh(home: &Home, name: &VmName, force: bool) -> Result<()> {
    use std::io::IsTerminal;
    let paths = home.defined(name)?;
    if !force {
        let when = crate::saved::read(&paths)
            .map(|m| {
                format!(
                    " (saved {} s ago)",
                    fsutil::unix_now().saturating_sub(m.saved_at)
                )
            })
            .unwrap_or_default();
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "--fresh throws away VM {name}'s saved state{when}: answer on a terminal, or add --force"
            )));
        }
        eprint!("Discard the saved state of VM {name}{when} and boot afresh? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Error::State(format!(
                "VM {name}'s saved state kept; nothing started"
            )));
        }
    }
    vm_suspend::discard(home, name)
}

pub fn suspend(home: &Home, a: NameJsonArgs) -> Result<u8> {
    show(&vm_suspend::suspend(home, &a.name)?, a.json);
    Ok(0)
}

impl Show for Suspended {
    fn text(&self) -> String {
        format!(
            "Saved VM {} in {:.1} s ({} MiB of state); `vmctl start {}` resumes it\n",
            self.name,
            self.seconds,
            self.saved.bytes.div_ceil(1 << 20),
            self.name
        )
    }
}

impl Show for Started {
    fn text(&self) -> String {
        let (verb, from) = match self.restored {
            true => ("Resumed", " from its saved state"),
            false => ("Started", ""),
        };
        let mut s = format!(
            "{verb} VM {}{from} (QEMU pid {}, {}: {}){}\n",
            self.name,
            self.pid,
            self.accel,
            self.accel_reason,
            self.ready_seconds
                .map(|t| format!("; ready after {t:.1} s"))
                .unwrap_or_default()
        );
        for p in &self.ports {
            s.push_str(&format!(
                "  {}:{} -> guest {}/{}\n",
                p.addr, p.host, p.guest, p.proto
            ));
        }
        s
    }
}

pub fn stop(home: &Home, a: StopArgs) -> Result<u8> {
    if a.save {
        return suspend(
            home,
            NameJsonArgs {
                name: a.name,
                json: a.json,
            },
        );
    }
    let mode = if a.force {
        StopMode::Force
    } else {
        StopMode::Graceful(stop_timeout(home, &a.name, a.timeout)?)
    };
    show(&vm_stop::stop(home, &a.name, mode)?, a.json);
    Ok(0)
}

/// `--timeout SECS`, else the VM's `stop_timeout`.
fn stop_timeout(home: &Home, name: &VmName, flag: Option<u64>) -> Result<Duration> {
    match flag {
        Some(t) => Ok(Duration::from_secs(t)),
        None => Ok(load(home, name)?.stop_timeout),
    }
}

impl Show for Stopped {
    fn text(&self) -> String {
        match &self.outcome {
            None => format!("VM {} is not running\n", self.name),
            Some(o) => format!(
                "Stopped VM {} in {:.1} s: {}{}\n",
                self.name,
                o.seconds,
                o.step.describe(),
                self.exit
                    .as_ref()
                    .map(|e| format!("; {}", describe_exit(e)))
                    .unwrap_or_default()
            ),
        }
    }
}

pub fn restart(home: &Home, a: RestartArgs) -> Result<u8> {
    let t = stop_timeout(home, &a.name, a.timeout)?;
    let stopped = vm_stop::stop(home, &a.name, StopMode::Graceful(t))?;
    if !json_mode() {
        print!("{}", stopped.text());
    }
    let wait = a.wait.then(|| Duration::from_secs(300));
    let s = vm_start::start(home, &a.name, wait)?;
    let line = format!("Started VM {} (QEMU pid {}, {})", s.name, s.pid, s.accel);
    done(
        "restarted",
        json!({"vm": a.name.as_str(), "pid": s.pid}),
        &[line],
    );
    Ok(0)
}

pub fn kill(home: &Home, a: NameArg) -> Result<u8> {
    show(&vm_stop::stop(home, &a.name, StopMode::Kill)?, json_mode());
    Ok(0)
}

pub fn pause(home: &Home, a: NameArg) -> Result<u8> {
    control(home, &a.name, Control::Pause)?;
    done(
        "paused",
        json!({"vm": a.name.as_str()}),
        &[format!("Paused VM {}", a.name)],
    );
    Ok(0)
}

pub fn resume(home: &Home, a: NameArg) -> Result<u8> {
    control(home, &a.name, Control::Resume)?;
    done(
        "resumed",
        json!({"vm": a.name.as_str()}),
        &[format!("Resumed VM {}", a.name)],
    );
    Ok(0)
}

pub fn reset(home: &Home, a: NameArg) -> Result<u8> {
    control(home, &a.name, Control::Reset)?;
    done(
        "reset",
        json!({"vm": a.name.as_str()}),
        &[format!("Reset VM {}", a.name)],
    );
    Ok(0)
}

pub fn rm(home: &Home, a: RmArgs) -> Result<u8> {
    let mut lines = crate::vm::rm::rm(home, &a.name, a.force)?;
    lines.push(format!("Removed VM {}", a.name));
    done("removed", json!({"vm": a.name.as_str()}), &lines);
    Ok(0)
}

/// `vmctl run`: the supervisor, in the foreground or (`--notify-stdout`) for a waiting
/// `vmctl start`, which hears of a definition that does not load through the handshake too.
pub fn run(home: &Home, a: RunArgs) -> Result<u8> {
    let mode = if a.notify_stdout {
        Mode::Notify
    } else {
        Mode::Foreground
    };
    let spec = load(home, &a.name).inspect_err(|e| {
        if a.notify_stdout {
            handshake::send(&handshake::error(e));
        }
    })?;
    crate::supervisor::run::run(home, &spec, mode)
}

pub fn clone(home: &Home, a: CloneArgs) -> Result<u8> {
    let ports = (!a.ports.is_empty()).then_some(a.ports.as_slice());
    show(
        &vm_clone::clone(home, &a.source, &a.name, ports, a.full)?,
        a.json,
    );
    Ok(0)
}

impl Show for Cloned {
    fn text(&self) -> String {
        let mut s = format!(
            "Cloned VM {} as {} in {:.1} s ({} disk, {} on the host)\n",
            self.from,
            self.name,
            self.seconds,
            if self.full {
                "a standalone"
            } else {
                "its image and a copy of what differs: a linked"
            },
            human_bytes(self.disk_bytes)
        );
        for p in &self.ports {
            s.push_str(&format!(
                "  {}:{} -> guest {}/{}\n",
                p.addr, p.host, p.guest, p.proto
            ));
        }
        s
    }
}
