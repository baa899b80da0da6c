//! VMs as systemd services. [`render`] is a pure function from a VM's spec and a few paths to the
//! text of its unit, `vmctl-NAME.service`, filled in from the templates in `systemd/` (embedded in
//! the binary; `@VAR@` placeholders, documented in systemd/README.md): system scope
//! (`/etc/systemd/system`, `WantedBy=multi-user.target`) or user scope
//! (`~/.config/systemd/user`, `WantedBy=default.target`). The unit runs `vmctl run NAME`, which
//! tells systemd when the guest is up and stops it gracefully on SIGTERM.
//!
//! [`install`] and [`uninstall`] put units in place and drive `systemctl`. Where systemd is not
//! running (PID 1 is something else, or no user manager), files are still written and
//! enablement still works (it is only symlinks); what needs the manager is reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::def::spec::VmSpec;
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::sys::fsutil;
use crate::types::{Scope, ServiceUnit, VmName};

const SYSTEM_TEMPLATE: &str = include_str!("../../systemd/vmctl-system.service.in");
const USER_TEMPLATE: &str = include_str!("../../systemd/vmctl-user.service.in");

/// The unit that runs a VM.
pub fn unit_name(vm: &VmName) -> String {
    format!("vmctl-{vm}.service")
}

/// The user's configuration directory: `$XDG_CONFIG_HOME` (the XDG spec ignores a relative
/// value), else `~/.config`.
pub fn config_dir(xdg_config_home: Option<&Path>, user_home: &Path) -> PathBuf {
    match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(c) => c.to_path_buf(),
        None => user_home.join(".config"),
    }
}

/// [`config_dir`] for this process's environment.
pub fn config_dir_here() -> PathBuf {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    config_dir(xdg.as_deref(), &home)
}

/// Where units of a scope are installed: `/etc/systemd/system`, or `$XDG_CONFIG_HOME/systemd/user`
/// (`~/.config/systemd/user`).
pub fn unit_dir(scope: Scope, xdg_config_home: Option<&Path>, user_home: &Path) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => config_dir(xdg_config_home, user_home).join("systemd/user"),
    }
}

/// [`unit_dir`] for this process's environment.
pub fn unit_dir_here(scope: Scope) -> PathBuf {
    match scope {
        Scope::System => unit_dir(scope, None, Path::new("/")),
        Scope::User => config_dir_here().join("systemd/user"),
    }
}

/// What made a unit, which its header comment and a few lines say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// `vmctl systemd generate|install`: written once, from the definition in the home.
    Installed,
    /// vmctl-generator, from the home's `vms/NAME/vm.toml` (`SourcePath=`).
    Generated(&'a Path),
    /// vmctl-generator, from a drop-in definition (`/etc/vmctl/vms/NAME.toml`): the unit's
    /// `ExecStartPre=` creates the VM from it, or brings the VM's definition up to date.
    DropIn(&'a Path),
}

/// Everything a unit is rendered from.
#[derive(Debug, Clone)]
pub struct UnitContext<'a> {
    pub spec: &'a VmSpec,
    pub origin: Origin<'a>,
    pub scope: Scope,
    /// Absolute path of the vmctl binary the unit runs.
    pub vmctl: &'a Path,
    /// The vmctl home holding the VM.
    pub home: &'a Path,
    /// The cache directory `vmctl run` uses (the KVM verdict).
    pub cache: &'a Path,
}

/// Base for `TimeoutStartSec=`: a Debian guest's boot under TCG plus readiness, with room.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Time after the graceful stop's own bound before systemd kills what is left.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// `TimeoutStartSec=`: [`START_TIMEOUT`], or longer when the health check's own limit for a
/// guest that never passes is longer (so vmctl, which says why, gives up first).
pub fn start_timeout(spec: &VmSpec) -> Duration {
    let health = spec.health.as_ref().map(|h| {
        crate::guest::health::give_up_after(h)
            + crate::guest::health::probe_timeout(h)
            + Duration::from_secs(60)
    });
    health.map_or(START_TIMEOUT, |h| h.max(START_TIMEOUT))
}

/// `TimeoutStopSec=`: the whole graceful stop (ACPI within stop_timeout, then quit, then kill)
/// plus a margin, so systemd's SIGKILL never cuts it short.
pub fn stop_timeout(spec: &VmSpec) -> Duration {
    crate::qemu::shutdown::bound(spec.stop_timeout) + STOP_MARGIN
}

/// The unit's text. Fails only for paths a unit file cannot carry verbatim.
pub fn render(cx: &UnitContext) -> Result<String> {
    let vmctl = unit_path(cx.vmctl, "The vmctl binary")?;
    let home = unit_path(cx.home, "The vmctl home")?;
    let cache = unit_path(cx.cache, "The vmctl cache directory")?;
    let unit = unit_name(&cx.spec.name);
    let name = cx.spec.name.as_str();
    let (origin, source_path, exec_start_pre) = match cx.origin {
        Origin::Installed => (
            format!(
                "# `vmctl systemd generate{} {name}` prints it again; change the VM's definition and\n# reinstall rather than editing this file.",
                if cx.scope == Scope::User {
                    " --user"
                } else {
                    ""
                }
            ),
            String::new(),
            String::new(),
        ),
        Origin::Generated(def) | Origin::DropIn(def) => {
            let def = unit_path(def, "The VM definition")?;
            let drop_in = matches!(cx.origin, Origin::DropIn(_));
            (
                if drop_in {
                    format!(
                        "# Made by vmctl-generator at boot and daemon-reload from {def}, which defines\n# the VM: each start creates it from that file, or updates its definition; edit that file."
                    )
                } else {
                    format!(
                        "# Made by vmctl-generator at boot and daemon-reload from {def}\n# (autostart = true); edit that file, not this one."
                    )
                },
                format!("SourcePath={def}"),
                if drop_in {
                    format!("ExecStartPre={vmctl} create {name} --from {def} --update")
                } else {
                    String::new()
                },
            )
        }
    };
    let deps: Vec<String> = cx.spec.after.iter().map(unit_name).collect();
    let dependencies = if deps.is_empty() {
        String::new()
    } else {
        let list = deps.join(" ");
        format!("After={list}\nRequires={list}")
    };
    // What the unit's processes read or write: a drop-in's `create` also reads the drop-in
    // and the public key it names.
    let mut used = vec![cx.home, cx.cache];
    if let Origin::DropIn(def) = cx.origin {
        used.push(def);
        used.extend(cx.spec.ssh_key.as_deref());
    }
    let under = |dirs: &[&str]| used.iter().any(|p| dirs.iter().any(|d| p.starts_with(d)));
    // A home below /home, /root or /run/user must stay visible (read-only, with the home itself
    // writable); one below /tmp would vanish behind a private /tmp.
    let protect_home = if under(&["/home", "/root", "/run/user"]) {
        "read-only"
    } else {
        "yes"
    };
    let private_tmp = if under(&["/tmp", "/var/tmp"]) {
        "no"
    } else {
        "yes"
    };
    let template = match cx.scope {
        Scope::System => SYSTEM_TEMPLATE,
        Scope::User => USER_TEMPLATE,
    };
    Ok(substitute(
        template,
        &[
            ("UNIT", &unit),
            ("NAME", name),
            ("ORIGIN", &origin),
            ("SOURCE_PATH", &source_path),
            ("EXEC_START_PRE", &exec_start_pre),
            ("VMCTL", &vmctl),
            ("HOME", &home),
            ("CACHE", &cache),
            ("DEPENDENCIES", &dependencies),
            ("START_TIMEOUT", &seconds(start_timeout(cx.spec))),
            ("STOP_TIMEOUT", &seconds(stop_timeout(cx.spec))),
            ("PROTECT_HOME", protect_home),
            ("PRIVATE_TMP", private_tmp),
        ],
    ))
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Replace each `@KEY@`; a line that held only placeholders and became empty is dropped.
fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        let mut l = line.to_string();
        for (k, v) in vars {
            l = l.replace(&format!("@{k}@"), v);
        }
        if l.is_empty() && !line.is_empty() {
            continue;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// A path as a unit file carries it: absolute, and free of what systemd would interpret
/// (whitespace and quotes split or quote words, `\` escapes, `%` specifiers, `$` variables).
fn unit_path(p: &Path, what: &str) -> Result<String> {
    let s = p.to_str().ok_or_else(|| {
        Error::Usage(format!(
            "{what} {} is not UTF-8; a systemd unit cannot name it",
            p.display()
        ))
    })?;
    if !p.is_absolute() {
        return Err(Error::Usage(format!(
            "{what} {s:?} is not an absolute path; a systemd unit needs one"
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'\\%$".contains(*c))
    {
        return Err(Error::Usage(format!(
            "{what} {s:?} contains {c:?}, which a systemd unit would interpret; use a path without whitespace, quotes, '\\', '%' or '$'"
        )));
    }
    Ok(s.to_string())
}

/// The vmctl home a unit file runs its VM from (its `Environment=VMCTL_HOME=` line).
pub fn unit_home(unit_text: &str) -> Option<PathBuf> {
    unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Environment=VMCTL_HOME="))
        .map(PathBuf::from)
}

/// The definition a generated unit was made from (its `SourcePath=` line).
pub fn unit_source(unit_text: &str) -> Option<PathBuf> {
    unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("SourcePath="))
        .map(PathBuf::from)
}

/// Where a scope's generators write units (their "normal" directory): `/run/systemd/generator`,
/// or `$XDG_RUNTIME_DIR/systemd/generator`.
pub fn generator_dir(scope: Scope) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/run/systemd/generator"),
        Scope::User => runtime_dir().join("systemd/generator"),
    }
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

/// `systemctl [--user] stop UNIT`: returns once the unit has stopped its VM.
pub fn stop(unit: &ServiceUnit) -> Result<()> {
    systemctl(unit.scope, &["stop", &unit.name]).map(|_| ())
}

/// The user's runtime directory (`$XDG_RUNTIME_DIR`, else `/run/user/UID`).
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid())))
}

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
fn systemctl(scope: Scope, args: &[&str]) -> Result<String> {
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

/// The unit text for a VM of `home`, with this binary and the cache `vmctl run` will use.
pub fn generate(home: &Home, spec: &VmSpec, scope: Scope) -> Result<String> {
    let vmctl = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let cache = cache_for(scope);
    render(&UnitContext {
        spec,
        origin: Origin::Installed,
        scope,
        vmctl: &vmctl,
        home: &home.root,
        cache: &cache,
    })
}

/// What `install` should do beyond writing the unit.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    pub enable: bool,
    pub now: bool,
    pub linger: bool,
}

/// Write the VM's unit, reload the manager, and enable (asked, or `autostart = true`), start
/// and linger as asked. Returns what was done, one line each. When the manager is not running,
/// the unit is written and enabled all the same (enabling is a symlink); starting it or
/// lingering is then an error (exit 4) that says so.
pub fn install(
    home: &Home,
    spec: &VmSpec,
    scope: Scope,
    opts: InstallOptions,
) -> Result<Vec<String>> {
    let text = generate(home, spec, scope)?;
    let dir = unit_dir_here(scope);
    let unit = unit_name(&spec.name);
    let path = dir.join(&unit);
    check_owner(&path, home, &spec.name, scope)?;
    for dep in &spec.after {
        if !dir.join(unit_name(dep)).exists() {
            return Err(Error::State(format!(
                "VM {} starts after {dep} (after = [\"{dep}\"]), but {} is not installed in {}; install it first: vmctl systemd install {dep}{}",
                spec.name,
                unit_name(dep),
                dir.display(),
                if scope == Scope::User { " --user" } else { "" }
            )));
        }
    }
    std::fs::create_dir_all(&dir).path_ctx("create", &dir)?;
    // The unit may write only there (ReadWritePaths=): without it the KVM verdict is not kept.
    let cache = cache_for(scope);
    std::fs::create_dir_all(&cache).path_ctx("create", &cache)?;
    fsutil::write_atomic(&path, text.as_bytes())?;
    let mut done = vec![format!("Wrote {}", path.display())];
    let mut missing = Vec::new();
    if scope == Scope::User {
        let user = user_name();
        if opts.linger {
            match linger(&user) {
                Ok(()) => done.push(format!(
                    "Enabled lingering for {user}: the user's VMs start at boot"
                )),
                Err(why) => missing.push(format!("enable lingering for {user} ({why})")),
            }
        } else if !Path::new("/var/lib/systemd/linger").join(&user).exists() {
            done.push(format!(
                "Note: user units start when {user} logs in; to start them at boot without a login: loginctl enable-linger {user} (or install with --linger)"
            ));
        }
    }
    let running = manager_running(scope);
    if running {
        systemctl(scope, &["daemon-reload"])?;
        done.push(format!("Reloaded the {} manager", scope_word(scope)));
    } else {
        tracing::warn!(
            "{} is not running here ({}): {unit} is in place for when it runs; it was not reloaded",
            scope_manager(scope),
            why_not_running(scope)
        );
    }
    if opts.enable || spec.autostart {
        enable(scope, &path, running)?;
        done.push(format!(
            "Enabled {unit}{}: it starts at {}",
            if opts.enable {
                ""
            } else {
                " (autostart = true)"
            },
            match scope {
                Scope::System => "boot",
                Scope::User => "login (or at boot with linger)",
            }
        ));
    }
    if opts.now {
        if running {
            systemctl(scope, &["start", &unit])?;
            done.push(format!("Started {unit}: VM {} is up", spec.name));
        } else {
            missing.push(format!("start {unit}"));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Host(format!(
            "{}; but could not {}: {} is not running here ({})",
            done.join("; "),
            missing.join(" or "),
            scope_manager(scope),
            why_not_running(scope)
        )));
    }
    Ok(done)
}

/// The cache directory `vmctl run` will use under this scope's manager.
pub fn cache_for(scope: Scope) -> PathBuf {
    match (std::env::var_os("VMCTL_CACHE_DIR"), scope) {
        (Some(c), _) => PathBuf::from(c),
        // A system unit runs as root, whoever renders it.
        (None, Scope::System) => PathBuf::from("/var/cache/vmctl"),
        (None, Scope::User) => crate::paths::cache_dir(),
    }
}

/// `loginctl enable-linger USER`, then wait (bounded) for the user manager it starts.
fn linger(user: &str) -> std::result::Result<(), String> {
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

/// The `.wants` link that enables a unit: what `systemctl enable` makes for its `WantedBy=`.
fn wants_link(scope: Scope, unit_path: &Path) -> PathBuf {
    let target = match scope {
        Scope::System => "multi-user.target.wants",
        Scope::User => "default.target.wants",
    };
    let dir = unit_path.parent().unwrap_or(Path::new("/"));
    dir.join(target)
        .join(unit_path.file_name().unwrap_or_default())
}

/// Enable: through `systemctl` when the manager runs, else by making its link (offline,
/// `systemctl` may refuse to work without a bus).
fn enable(scope: Scope, unit_path: &Path, running: bool) -> Result<()> {
    let unit = unit_path.file_name().unwrap_or_default().to_string_lossy();
    if running {
        return systemctl(scope, &["enable", &unit]).map(|_| ());
    }
    link_wanted(scope, unit_path)
}

/// Make the `.wants` link of a unit beside it (what `enable` does without a manager, and what
/// vmctl-generator does for `autostart = true`).
pub fn link_wanted(scope: Scope, unit_path: &Path) -> Result<()> {
    let link = wants_link(scope, unit_path);
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    let dir = link.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).path_ctx("create", dir)?;
    std::os::unix::fs::symlink(unit_path, &link).path_ctx("create", &link)
}

/// The reverse of [`enable`].
fn disable(scope: Scope, unit_path: &Path, running: bool) -> Result<()> {
    let unit = unit_path.file_name().unwrap_or_default().to_string_lossy();
    if running {
        return systemctl(scope, &["disable", &unit]).map(|_| ());
    }
    let link = wants_link(scope, unit_path);
    match std::fs::remove_file(&link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).path_ctx("remove", &link),
        _ => Ok(()),
    }
}

/// Refuse to overwrite or remove another home's unit of the same name.
fn check_owner(path: &Path, home: &Home, name: &VmName, scope: Scope) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    match unit_home(&text) {
        Some(h) if h != home.root && h.join("vms").join(name.as_str()).exists() => {
            Err(Error::State(format!(
                "{} runs VM {name} of another vmctl home ({}); use `vmctl --home {} systemd uninstall {name}{}` first",
                path.display(),
                h.display(),
                h.display(),
                if scope == Scope::User { " --user" } else { "" }
            )))
        }
        _ => Ok(()),
    }
}

/// Stop and disable the VM's unit, remove it and reload. Returns what was done, one line each.
pub fn uninstall(home: &Home, name: &VmName, scope: Scope) -> Result<Vec<String>> {
    let path = unit_dir_here(scope).join(unit_name(name));
    if !path.exists() {
        return Err(Error::NotFound {
            what: "unit",
            name: unit_name(name),
            hint: format!(" in {}", path.parent().unwrap_or(&path).display()),
        });
    }
    check_owner(&path, home, name, scope)?;
    remove_unit(&path, name, scope)
}

/// Stop (if the manager runs), disable, remove, reload: a unit is never left running its VM
/// after its file is gone, since a removed unit cannot run its stop.
fn remove_unit(path: &Path, name: &VmName, scope: Scope) -> Result<Vec<String>> {
    let unit = unit_name(name);
    let mut done = Vec::new();
    let running = manager_running(scope);
    if running {
        // Stopping an inactive or unloaded unit may fail; what counts is that it is not active.
        let stop = systemctl(scope, &["stop", &unit]);
        let state = systemctl(scope, &["is-active", &unit]).unwrap_or_default();
        if let ("active" | "activating" | "deactivating" | "reloading", Err(e)) =
            (state.trim(), &stop)
        {
            return Err(Error::State(format!(
                "{unit} is still {}: {e}",
                state.trim()
            )));
        }
        if stop.is_ok() {
            done.push(format!("Stopped {unit}"));
        }
    }
    disable(scope, path, running)?;
    done.push(format!("Disabled {unit}"));
    std::fs::remove_file(path).path_ctx("remove", path)?;
    done.push(format!("Removed {}", path.display()));
    if running {
        systemctl(scope, &["daemon-reload"])?;
        let _ = systemctl(scope, &["reset-failed", &unit]);
        done.push(format!("Reloaded the {} manager", scope_word(scope)));
    }
    Ok(done)
}

/// A unit file that runs a VM of this home: installed (`vmctl systemd install`), or made by
/// vmctl-generator.
struct UnitFile {
    scope: Scope,
    path: PathBuf,
    /// For a generated unit, the definition it was made from (its `SourcePath=`).
    generated_from: Option<PathBuf>,
}

/// The units (system, then the user's) that run VM `name` of this home: the installed one, or
/// else the one vmctl-generator made (an installed unit takes precedence in systemd too).
fn units_of(home: &Home, name: &VmName) -> Vec<UnitFile> {
    let file = unit_name(name);
    let runs_this_home = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| unit_home(t).is_some_and(|h| h == home.root))
    };
    let mut out = Vec::new();
    for scope in [Scope::System, Scope::User] {
        let installed = unit_dir_here(scope).join(&file);
        if installed.exists() {
            if runs_this_home(&installed).is_some() {
                out.push(UnitFile {
                    scope,
                    path: installed,
                    generated_from: None,
                });
            }
            continue;
        }
        let generated = generator_dir(scope).join(&file);
        if let Some(text) = runs_this_home(&generated) {
            out.push(UnitFile {
                scope,
                path: generated,
                generated_from: Some(unit_source(&text).unwrap_or_default()),
            });
        }
    }
    out
}

/// The unit that should start VM `name`: installed or generated for this home, in a running
/// manager.
pub fn managed_unit(home: &Home, name: &VmName) -> Option<ServiceUnit> {
    units_of(home, name)
        .into_iter()
        .find(|u| manager_running(u.scope))
        .map(|u| ServiceUnit {
            name: unit_name(name),
            scope: u.scope,
        })
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

/// `systemctl [--user] stop UNITS...`: returns once every one has stopped.
pub fn stop_units(scope: Scope, units: &[String]) -> Result<()> {
    let mut args = vec!["stop"];
    args.extend(units.iter().map(String::as_str));
    systemctl(scope, &args).map(|_| ())
}

/// `systemctl [--user] daemon-reload`, which also runs the generators.
pub fn daemon_reload(scope: Scope) -> Result<()> {
    systemctl(scope, &["daemon-reload"]).map(|_| ())
}

/// `systemctl [--user] start UNIT`: returns once the unit said READY=1 (the guest is up).
pub fn start(unit: &ServiceUnit) -> Result<()> {
    systemctl(unit.scope, &["start", &unit.name]).map(|_| ())
}

/// Remove every unit of this home's VM `name` (system, and the user's): for `vmctl rm`. A unit
/// vmctl-generator made is only stopped: the generator owns its file, and drops it at the next
/// daemon-reload once the definition is gone.
pub fn remove_units_of(home: &Home, name: &VmName) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for u in units_of(home, name) {
        let removed = match &u.generated_from {
            None => remove_unit(&u.path, name, u.scope),
            Some(from) => stop_generated(name, u.scope, from, &home.vm(name).definition()),
        };
        done.extend(removed.map_err(|e| {
            Error::State(format!(
                "Cannot remove VM {name}: its unit {} could not be stopped{}: {e}",
                u.path.display(),
                if u.generated_from.is_none() {
                    " and removed"
                } else {
                    ""
                }
            ))
        })?);
    }
    Ok(done)
}

/// Stop a generated unit (when its manager runs) and say what becomes of it.
fn stop_generated(
    name: &VmName,
    scope: Scope,
    from: &Path,
    home_definition: &Path,
) -> Result<Vec<String>> {
    let unit = unit_name(name);
    let mut done = Vec::new();
    if manager_running(scope) {
        systemctl(scope, &["stop", &unit])?;
        done.push(format!("Stopped {unit}"));
    }
    done.push(if from == home_definition {
        format!(
            "Note: {unit} was made by vmctl-generator from {}; it goes away at the next `{} daemon-reload` or boot",
            from.display(),
            scope.systemctl()
        )
    } else {
        format!(
            "Note: {unit} creates VM {name} again from {} when it next starts; delete that file and run `{} daemon-reload` to remove the VM for good",
            from.display(),
            scope.systemctl()
        )
    });
    Ok(done)
}

fn scope_word(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "system",
        Scope::User => "user",
    }
}

fn scope_manager(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "systemd",
        Scope::User => "the systemd user manager",
    }
}

fn why_not_running(scope: Scope) -> String {
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

fn user_name() -> String {
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

    fn spec(name: &str, toml: &str) -> VmSpec {
        let cfg = crate::def::config::VmConfig::parse(toml, "t").unwrap();
        let limits = crate::def::spec::Limits {
            host_memory: u64::MAX,
        };
        crate::def::spec::validate(&name.parse().unwrap(), &cfg, limits, "t").unwrap()
    }

    fn render_for(spec: &VmSpec, scope: Scope, home: &str) -> String {
        render(&UnitContext {
            spec,
            origin: Origin::Installed,
            scope,
            vmctl: Path::new("/usr/local/bin/vmctl"),
            home: Path::new(home),
            cache: Path::new("/var/cache/vmctl"),
        })
        .unwrap()
    }

    use crate::golden::check as golden;

    const WEB: &str = "ports = [\"5022:22\", \"5080:8080\"]\nstop_timeout = 60\n";

    #[test]
    fn system_unit() {
        let s = spec("web", WEB);
        golden(
            "vmctl-web-system.service",
            &render_for(&s, Scope::System, "/var/lib/vmctl"),
        );
    }

    #[test]
    fn user_unit() {
        let s = spec("web", WEB);
        golden(
            "vmctl-web-user.service",
            &render_for(&s, Scope::User, "/home/alice/.local/share/vmctl"),
        );
    }

    #[test]
    fn unit_with_dependencies_and_a_health_check() {
        let s = spec(
            "api",
            "ports = [\"5080:8080\"]\nstop_timeout = 120\nafter = [\"db\", \"cache\"]\n[health]\nhttp = \"8080/healthz\"\ninterval = \"30s\"\nretries = 5\nstart_period = \"10m\"\n",
        );
        golden(
            "vmctl-api-after.service",
            &render_for(&s, Scope::System, "/var/lib/vmctl"),
        );
    }

    #[test]
    fn every_placeholder_is_filled_and_empty_lines_are_dropped() {
        let s = spec("web", WEB);
        for scope in [Scope::System, Scope::User] {
            let u = render_for(&s, scope, "/var/lib/vmctl");
            assert!(!u.contains('@'), "{u}");
            assert!(!u.contains("Requires="), "{u}");
            assert!(u.contains("\nDescription=vmctl VM web\n"), "{u}");
        }
    }

    #[test]
    fn timeouts_follow_the_definition() {
        let s = spec("web", "stop_timeout = 60\n");
        assert_eq!(stop_timeout(&s), Duration::from_secs(60 + 10 + 5));
        assert_eq!(start_timeout(&s), START_TIMEOUT);
        let s = spec(
            "web",
            "ports = [\"80:80\"]\n[health]\ntcp = 80\ninterval = \"1m\"\nretries = 3\nstart_period = \"10m\"\n",
        );
        // 10 min + 3 × 1 min + the 5 s probe timeout + 60 s.
        assert_eq!(start_timeout(&s), Duration::from_secs(600 + 180 + 5 + 60));
    }

    #[test]
    fn homes_under_home_or_tmp_stay_reachable() {
        let s = spec("web", WEB);
        let u = render_for(&s, Scope::System, "/root/vmctl");
        assert!(u.contains("\nProtectHome=read-only\n"), "{u}");
        assert!(u.contains("\nPrivateTmp=yes\n"), "{u}");
        let u = render_for(&s, Scope::System, "/tmp/vmctl-t123");
        assert!(u.contains("\nProtectHome=yes\n"), "{u}");
        assert!(u.contains("\nPrivateTmp=no\n"), "{u}");
        assert!(
            u.contains("\nReadWritePaths=/tmp/vmctl-t123 -/var/cache/vmctl\n"),
            "{u}"
        );
    }

    #[test]
    fn paths_a_unit_cannot_carry_are_refused() {
        let s = spec("web", WEB);
        for (home, needle) in [
            ("/srv/my vms", "contains ' '"),
            ("/srv/100%", "contains '%'"),
            ("/srv/$HOME", "contains '$'"),
            ("relative", "not an absolute path"),
        ] {
            let e = render(&UnitContext {
                spec: &s,
                origin: Origin::Installed,
                scope: Scope::System,
                vmctl: Path::new("/usr/bin/vmctl"),
                home: Path::new(home),
                cache: Path::new("/var/cache/vmctl"),
            })
            .unwrap_err();
            assert_eq!(e.code(), crate::error::exit::USAGE);
            let msg = e.to_string();
            assert!(
                msg.contains("The vmctl home") && msg.contains(needle),
                "{msg}"
            );
        }
    }

    #[test]
    fn unit_directories() {
        let home = Path::new("/home/alice");
        assert_eq!(
            unit_dir(Scope::System, None, home),
            Path::new("/etc/systemd/system")
        );
        assert_eq!(
            unit_dir(Scope::User, None, home),
            Path::new("/home/alice/.config/systemd/user")
        );
        assert_eq!(
            unit_dir(Scope::User, Some(Path::new("/cfg")), home),
            Path::new("/cfg/systemd/user")
        );
        // The XDG spec says to ignore relative values.
        assert_eq!(
            unit_dir(Scope::User, Some(Path::new("cfg")), home),
            Path::new("/home/alice/.config/systemd/user")
        );
    }

    #[test]
    fn a_unit_names_its_home() {
        let s = spec("web", WEB);
        let u = render_for(&s, Scope::User, "/srv/vmctl");
        assert_eq!(unit_home(&u), Some(PathBuf::from("/srv/vmctl")));
        assert_eq!(unit_home("[Service]\nExecStart=/bin/true\n"), None);
    }

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
