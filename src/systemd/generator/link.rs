//! `vmctl systemd install-generator` and `uninstall-generator`: the link in systemd's generator
//! directory through which the vmctl binary runs as `vmctl-generator`, and the reload that
//! runs it.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::sys::fsutil;
use crate::systemd::dirs::generator_dir;
use crate::systemd::generator::find::drop_in_dir;
use crate::systemd::generator::run::{PROGRAM, plan_here};
use crate::systemd::manager::{active_units, daemon_reload, manager_running, stop_units};
use crate::types::Scope;

/// Where the generator's link goes: `/etc/systemd/system-generators/vmctl-generator`, or
/// `/etc/systemd/user-generators/vmctl-generator` (every user's manager runs it).
pub fn link_path(scope: Scope) -> PathBuf {
    let dir = match scope {
        Scope::System => "/etc/systemd/system-generators",
        Scope::User => "/etc/systemd/user-generators",
    };
    Path::new(dir).join(PROGRAM)
}

/// `vmctl systemd install-generator [--user]`: link the generator to this binary, make the
/// system drop-in directory, and reload the system manager so the generator runs now. Returns
/// what was done, one line each; problems found in the definitions are logged as warnings.
pub fn install(scope: Scope) -> Result<Vec<String>> {
    let exe = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let link = link_path(scope);
    let mut done = Vec::new();
    // The units it makes keep /etc read-only: QEMU's user is made now, if it must be.
    crate::host::qemu_user::for_this_process()?;
    // Generators run before /home, /var and other late file systems are mounted.
    if !["/usr", "/bin", "/sbin", "/opt", "/etc"]
        .iter()
        .any(|d| exe.starts_with(d))
    {
        tracing::warn!(
            "{} may not be mounted yet when systemd runs generators at boot; install vmctl below /usr (e.g. /usr/local/bin) and run this again from there",
            exe.display()
        );
    }
    place_link(&link, &exe, &mut done)?;
    if scope == Scope::User {
        done.push(format!(
            "Users' managers run it when they start (at login, or at boot with linger) and at `systemctl --user daemon-reload`; each user drops definitions in {}",
            drop_in_dir(scope, Path::new("~/.config")).display()
        ));
        return Ok(done);
    }
    let drop_ins = drop_in_dir(scope, Path::new("/"));
    if !drop_ins.is_dir() {
        fsutil::create_dirs_public(&drop_ins)?;
        done.push(format!("Created {}", drop_ins.display()));
    }
    if let Some(p) = plan_here(scope)? {
        for m in &p.messages {
            tracing::warn!("{}", m.text);
        }
        let units: Vec<String> = p
            .units
            .iter()
            .map(|u| {
                format!(
                    "{}{}",
                    u.file_name(),
                    if u.autostart { " (autostart)" } else { "" }
                )
            })
            .collect();
        done.push(if units.is_empty() {
            format!(
                "No VM to generate a unit for yet: drop NAME.toml in {}, or set autostart = true in a VM's vm.toml",
                drop_ins.display()
            )
        } else {
            format!("It makes: {}", units.join(", "))
        });
    }
    done.extend(reload(scope)?);
    Ok(done)
}

/// Make `link` a link to `exe`, unless it is one already: what was done goes to `done`.
fn place_link(link: &Path, exe: &Path, done: &mut Vec<String>) -> Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(Error::State(format!(
                "{} exists and is not a link to vmctl; remove it first",
                link.display()
            )));
        }
        Ok(_) if std::fs::read_link(link).is_ok_and(|t| t == exe) => {
            done.push(format!(
                "{} already links to {}",
                link.display(),
                exe.display()
            ));
        }
        Ok(_) => {
            std::fs::remove_file(link).path_ctx("remove", link)?;
            std::os::unix::fs::symlink(exe, link).path_ctx("create", link)?;
            done.push(format!("Linked {} to {}", link.display(), exe.display()));
        }
        Err(_) => {
            let dir = link.parent().unwrap_or(Path::new("/"));
            fsutil::create_dirs_public(dir)?;
            std::os::unix::fs::symlink(exe, link).path_ctx("create", link)?;
            done.push(format!("Linked {} to {}", link.display(), exe.display()));
        }
    }
    Ok(())
}

/// `vmctl systemd uninstall-generator [--user]`: stop the VMs that generated units run (a unit
/// that loses its file at the reload could no longer stop its guest gracefully), remove the link
/// and reload, which drops the generated units.
pub fn uninstall(scope: Scope) -> Result<Vec<String>> {
    let link = link_path(scope);
    match std::fs::symlink_metadata(&link) {
        Err(_) => {
            return Err(Error::NotFound {
                what: "generator",
                name: PROGRAM.into(),
                hint: format!(" ({} does not exist)", link.display()),
            });
        }
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(Error::State(format!(
                "{} is not a link to vmctl; not removing it",
                link.display()
            )));
        }
        Ok(_) => {}
    }
    let mut done = Vec::new();
    if scope == Scope::System && manager_running(scope) {
        let mut generated: Vec<String> = std::fs::read_dir(generator_dir(scope))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|f| f.starts_with("vmctl-") && f.ends_with(".service"))
            .collect();
        generated.sort();
        let active = active_units(scope, &generated);
        if !active.is_empty() {
            stop_units(scope, &active)?;
            done.push(format!("Stopped {}", active.join(", ")));
        }
    }
    std::fs::remove_file(&link).path_ctx("remove", &link)?;
    done.push(format!("Removed {}", link.display()));
    match scope {
        Scope::System => done.extend(reload(scope)?),
        Scope::User => done.push(
            "Users' managers drop its units at their next daemon-reload or start; stop VMs that run under them first (systemctl --user stop vmctl-NAME), since a unit that lost its file cannot stop its guest gracefully".into(),
        ),
    }
    Ok(done)
}

/// `systemctl daemon-reload` when the system manager runs, which runs the generators.
fn reload(scope: Scope) -> Result<Vec<String>> {
    if manager_running(scope) {
        daemon_reload(scope)?;
        Ok(vec![format!(
            "Reloaded the system manager: generated units are in {}",
            generator_dir(scope).display()
        )])
    } else {
        tracing::warn!("systemd is not running here: the generator runs when it starts");
        Ok(Vec::new())
    }
}
