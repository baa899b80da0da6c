//! Talking to a running systemd manager: whether a scope's manager runs (and why not),
//! `systemctl` (start, stop, is-active, daemon-reload), lingering, and which unit this process
//! runs in.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::systemd::dirs::runtime_dir;
use crate::systemd::unit::unit_name;
use crate::types::{Scope, ServiceUnit, VmName};

/// Can `systemctl` talk to this scope's manager? The system manager runs when PID 1 is systemd
/// (`/run/systemd/system` exists); a user manager when its private socket exists too.
pub fn manager_running(scope: Scope) -> bool {
    let booted = Path::new("/run/systemd/system").is_dir();
    match scope {
        Scope::System => booted,
        Scope::User => booted && runtime_dir().join("systemd/private").exists(),
    }
}

/// Run `systemctl [--user] ARGS`; its stderr becomes the error.
pub fn systemctl(scope: Scope, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("systemctl");
    cmd.args(scope.flag()).args(args);
    if scope == Scope::User && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // `su`/`nsenter` sessions lack it; the user manager's socket is there all the same.
        cmd.env("XDG_RUNTIME_DIR", runtime_dir());
    }
    let out = cmd
        .output()
        .ctx(|| "Cannot run systemctl (is systemd installed?)".into())?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "`{} {}` failed: {}",
            scope.systemctl(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The systemd unit a process runs in, from its `/proc/PID/cgroup` (cgroup v2 or the systemd
/// hierarchy of v1): the last path component, if it is a service.
pub fn unit_from_cgroup(cgroup: &str) -> Option<ServiceUnit> {
    let path = cgroup.lines().find_map(|l| {
        l.strip_prefix("0::")
            .or_else(|| l.strip_prefix("1:name=systemd:"))
    })?;
    let name = path.rsplit('/').next()?;
    if !name.ends_with(".service") {
        return None;
    }
    Some(ServiceUnit {
        name: name.to_string(),
        scope: if path.contains("/user@") {
            Scope::User
        } else {
            Scope::System
        },
    })
}

/// The unit this process runs in, when it is VM `vm`'s own unit (a `vmctl run` started from a
/// shell inside some other service is not run by that service). A user manager also says so by
/// `$MANAGERPID`, whatever its cgroup is called.
pub fn own_unit(vm: &VmName) -> Option<ServiceUnit> {
    std::env::var_os("INVOCATION_ID")?;
    let mut unit = unit_from_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?)
        .filter(|u| u.name == unit_name(vm))?;
    if std::env::var_os("MANAGERPID").is_some() {
        unit.scope = Scope::User;
    }
    Some(unit)
}

/// `systemctl [--user] start UNIT`: returns once the unit said READY=1 (the guest is up).
pub fn start(unit: &ServiceUnit) -> Result<()> {
    systemctl(unit.scope, &["start", &unit.name]).map(|_| ())
}

/// `systemctl [--user] stop UNIT`: returns once the unit has stopped its VM.
pub fn stop(unit: &ServiceUnit) -> Result<()> {
    systemctl(unit.scope, &["stop", &unit.name]).map(|_| ())
}

/// `systemctl [--user] stop UNITS...`: returns once every one has stopped.
pub fn stop_units(scope: Scope, units: &[String]) -> Result<()> {
    let mut args = vec!["stop"];
    args.extend(units.iter().map(String::as_str));
    systemctl(scope, &args).map(|_| ())
}

/// The units of `units` that are active (or activating, deactivating, reloading).
pub fn active_units(scope: Scope, units: &[String]) -> Vec<String> {
    if units.is_empty() {
        return Vec::new();
    }
    // `is-active` prints one state per unit, and fails when any is inactive.
    let out = Command::new("systemctl")
        .args(scope.flag())
        .arg("is-active")
        .args(units)
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .zip(units)
        .filter(|(state, _)| {
            matches!(
                state.trim(),
                "active" | "activating" | "deactivating" | "reloading"
            )
        })
        .map(|(_, u)| u.clone())
        .collect()
}

/// `systemctl [--user] daemon-reload`, which also runs the generators.
pub fn daemon_reload(scope: Scope) -> Result<()> {
    systemctl(scope, &["daemon-reload"]).map(|_| ())
}

/// `loginctl enable-linger USER`, then wait (bounded) for the user manager it starts.
pub fn linger(user: &str) -> std::result::Result<(), String> {
    let out = Command::new("loginctl")
        .args(["enable-linger", user])
        .output()
        .map_err(|e| format!("cannot run loginctl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !manager_running(Scope::User) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn why_not_running(scope: Scope) -> String {
    if !Path::new("/run/systemd/system").is_dir() {
        return "PID 1 is not systemd".into();
    }
    match scope {
        Scope::System => "systemd is not PID 1".into(),
        Scope::User => format!(
            "no {}/systemd/private; log in as the user or enable lingering",
            runtime_dir().display()
        ),
    }
}

pub fn scope_word(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "system",
        Scope::User => "user",
    }
}

pub fn scope_manager(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "systemd",
        Scope::User => "the systemd user manager",
    }
}

pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_cgroups() {
        let unit = |name: &str, scope| {
            Some(ServiceUnit {
                name: name.into(),
                scope,
            })
        };
        for (cgroup, want) in [
            (
                "0::/system.slice/vmctl-web.service\n",
                unit("vmctl-web.service", Scope::System),
            ),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/vmctl-db.service\n",
                unit("vmctl-db.service", Scope::User),
            ),
            (
                "12:pids:/x\n1:name=systemd:/system.slice/vmctl-a.service\n",
                unit("vmctl-a.service", Scope::System),
            ),
            ("0::/user.slice/user-0.slice/session-3.scope\n", None),
            ("0::/\n", None),
        ] {
            assert_eq!(unit_from_cgroup(cgroup), want, "{cgroup}");
        }
    }
}
