//! The metrics endpoint as a service: its unit (a pure renderer from
//! `systemd/vmctl-metrics.service.in`, golden-tested) and `vmctl systemd install-metrics`, which
//! writes it, reloads the manager and enables or starts it as asked (`uninstall-metrics` undoes it).

use std::net::SocketAddr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::paths::Home;
use crate::systemd::dirs::unit_dir_here;
use crate::systemd::install::{disable, enable, write_unit_file};
use crate::systemd::manager::{manager_running, systemctl};
use crate::systemd::unit::{hardening_for, substitute, unit_path};
use crate::types::Scope;

const TEMPLATE: &str = include_str!("../../systemd/vmctl-metrics.service.in");

/// The endpoint's unit: one per scope.
pub const UNIT: &str = "vmctl-metrics.service";

/// The unit's text for the home at `home`, served on `listen` by the binary at `vmctl`.
pub fn render(scope: Scope, vmctl: &Path, home: &Path, listen: SocketAddr) -> Result<String> {
    let vmctl = unit_path(vmctl, "The vmctl binary")?;
    let home_text = unit_path(home, "The vmctl home")?;
    let (protect_home, private_tmp) = hardening_for(&[home]);
    let wanted_by = match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    };
    Ok(substitute(
        TEMPLATE,
        &[
            ("UNIT", UNIT),
            ("VMCTL", &vmctl),
            ("HOME", &home_text),
            ("LISTEN", &listen.to_string()),
            ("PROTECT_HOME", protect_home),
            ("PRIVATE_TMP", private_tmp),
            ("WANTED_BY", wanted_by),
        ],
    ))
}

/// Write the unit, reload the manager, and enable and start it as asked; what was done.
pub fn install(
    home: &Home,
    scope: Scope,
    listen: SocketAddr,
    enable_it: bool,
    now: bool,
) -> Result<Vec<String>> {
    let vmctl = std::env::current_exe()
        .map_err(|e| Error::Other(format!("Cannot find the vmctl binary: {e}")))?;
    let text = render(scope, &vmctl, &home.root, listen)?;
    let mut done: Vec<String> = write_unit_file(scope, UNIT, &text)?.into_iter().collect();
    let running = manager_running(scope);
    if running {
        systemctl(scope, &["daemon-reload"])?;
    }
    if enable_it {
        enable(scope, &unit_dir_here(scope).join(UNIT), running)?;
        done.push(format!("Enabled {UNIT}"));
    }
    if now {
        if !running {
            return Err(Error::Host(format!(
                "{UNIT} is written, but no service manager runs here to start it"
            )));
        }
        // A new text or a new address needs the running endpoint replaced.
        systemctl(scope, &["restart", UNIT])?;
        done.push(format!("Started {UNIT}: http://{listen}/metrics"));
    }
    Ok(done)
}

/// Stop and disable the endpoint's unit, remove it and reload; what was done.
pub fn uninstall(scope: Scope) -> Result<Vec<String>> {
    let path = unit_dir_here(scope).join(UNIT);
    if !path.exists() {
        return Err(Error::NotFound {
            what: "unit",
            name: path.display().to_string(),
            hint: String::new(),
        });
    }
    let running = manager_running(scope);
    if running {
        systemctl(scope, &["stop", UNIT])?;
    }
    disable(scope, &path, running)?;
    std::fs::remove_file(&path).map_err(|e| Error::Io {
        context: format!("Cannot remove {}", path.display()),
        source: e,
    })?;
    if running {
        systemctl(scope, &["daemon-reload"])?;
    }
    Ok(vec![format!("Stopped, disabled and removed {UNIT}")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check as golden;

    #[test]
    fn the_metrics_units_of_both_scopes() {
        let listen: SocketAddr = "127.0.0.1:9187".parse().unwrap();
        let vmctl = Path::new("/usr/bin/vmctl");
        let system = render(Scope::System, vmctl, Path::new("/var/lib/vmctl"), listen).unwrap();
        golden("vmctl-metrics-system.service", &system);
        let user = render(
            Scope::User,
            vmctl,
            Path::new("/home/alice/.local/share/vmctl"),
            listen,
        )
        .unwrap();
        golden("vmctl-metrics-user.service", &user);
    }
}
