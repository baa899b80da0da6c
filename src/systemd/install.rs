//! Installing VMs' units. [`install`] and [`uninstall`] put units in place and drive
//! `systemctl`; [`remove_units_of`] removes whatever unit runs a VM of this home, installed or
//! made by vmctl-generator. Where systemd is not running (PID 1 is something else, or no user
//! manager), files are still written and enablement still works (it is only symlinks); what
//! needs the manager is reported.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::addr::NetName;
use crate::def::spec::VmSpec;
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::sys::fsutil;
use crate::systemd::dirs::{cache_for, generator_dir, unit_dir_here};
use crate::systemd::manager::{
    linger, manager_running, scope_manager, scope_word, systemctl, user_name, why_not_running,
};
use crate::systemd::unit::{Origin, UnitContext, render, unit_home, unit_name, unit_source};
use crate::types::{Scope, ServiceUnit, VmName};

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
    check_after(spec, scope, &dir)?;
    // The unit's sandbox keeps /etc read-only: QEMU's user is made now, if it must be.
    crate::host::qemu_user::for_this_process()?;
    fsutil::create_dirs_public(&dir)?;
    let mut done = write_network_units(home, spec, scope)?;
    // The unit may write only there (ReadWritePaths=): without it the KVM verdict is not kept.
    let cache = cache_for(scope);
    std::fs::create_dir_all(&cache).path_ctx("create", &cache)?;
    fsutil::write_atomic(&path, text.as_bytes())?;
    // A unit holds no secret; systemd's tools read it as any user.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .path_ctx("set the mode of", &path)?;
    done.push(format!("Wrote {}", path.display()));
    let mut missing = Vec::new();
    if scope == Scope::User {
        user_linger(opts.linger, &mut done, &mut missing);
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

/// Write the units of the switches of `spec`'s networks, which its unit requires.
fn write_network_units(home: &Home, spec: &VmSpec, scope: Scope) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for a in &spec.networks {
        done.extend(write_network_unit(home, &a.network, scope)?);
    }
    Ok(done)
}

/// Write the unit of network `net`'s switch where it is missing or differs (the units of the
/// network's VMs require it); "Wrote PATH" when it was written.
pub fn write_network_unit(home: &Home, net: &NetName, scope: Scope) -> Result<Option<String>> {
    let vmctl = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let text = crate::systemd::netunit::render_network(net, scope, &vmctl, &home.root)?;
    write_unit_file(scope, &crate::systemd::unit::network_unit_name(net), &text)
}

/// Write `text` as unit `name` of `scope` (0644: no secret) unless it holds that already;
/// "Wrote PATH" when it was written.
pub fn write_unit_file(scope: Scope, name: &str, text: &str) -> Result<Option<String>> {
    let dir = unit_dir_here(scope);
    fsutil::create_dirs_public(&dir)?;
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
        return Ok(None);
    }
    fsutil::write_atomic(&path, text.as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .path_ctx("set the mode of", &path)?;
    Ok(Some(format!("Wrote {}", path.display())))
}

/// Refuse a unit whose VM starts after one without an installed unit: it could never start.
fn check_after(spec: &VmSpec, scope: Scope, dir: &Path) -> Result<()> {
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
    Ok(())
}

/// For a user unit: enable lingering when asked (what fails goes to `missing`), else note that
/// the unit starts only at login.
fn user_linger(linger_asked: bool, done: &mut Vec<String>, missing: &mut Vec<String>) {
    let user = user_name();
    if linger_asked {
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
pub fn enable(scope: Scope, unit_path: &Path, running: bool) -> Result<()> {
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
    fsutil::create_dirs_public(dir)?;
    std::os::unix::fs::symlink(unit_path, &link).path_ctx("create", &link)
}

/// The reverse of [`enable`].
pub(crate) fn disable(scope: Scope, unit_path: &Path, running: bool) -> Result<()> {
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
        Some(h) if h != home.root && Home { root: h.clone() }.vm(name).dir.exists() => {
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
