//! The units of private networks and stacks, rendered by pure functions like a VM's: a
//! network's switch as a service, `vmctl-net-NAME.service` (from `systemd/vmctl-net-
//! {system,user}.service.in`), which the units of the network's VMs require and systemd stops
//! when none of them runs; and a stack's target, `vmctl-stack-NAME.target` (from
//! `systemd/vmctl-stack.target.in`), which wants every VM unit of the stack, whose units are
//! `PartOf=` it, so starting and stopping the target starts and stops the whole stack.

use std::path::Path;

use crate::addr::NetName;
use crate::error::Result;
use crate::systemd::unit::{
    hardening_for, network_unit_name, stack_target_name, substitute, unit_path,
};
use crate::types::Scope;

const NET_SYSTEM_TEMPLATE: &str = include_str!("../../systemd/vmctl-net-system.service.in");
const NET_USER_TEMPLATE: &str = include_str!("../../systemd/vmctl-net-user.service.in");
const STACK_TEMPLATE: &str = include_str!("../../systemd/vmctl-stack.target.in");

/// The text of network `net`'s unit, for the home at `home` and the binary `vmctl`.
pub fn render_network(net: &NetName, scope: Scope, vmctl: &Path, home: &Path) -> Result<String> {
    let vmctl = unit_path(vmctl, "The vmctl binary")?;
    let home_text = unit_path(home, "The vmctl home")?;
    let netdir = home.join("networks").join(net.as_str());
    let netdir_text = unit_path(&netdir, "The network's folder")?;
    let (protect_home, private_tmp) = hardening_for(&[home]);
    let template = match scope {
        Scope::System => NET_SYSTEM_TEMPLATE,
        Scope::User => NET_USER_TEMPLATE,
    };
    Ok(substitute(
        template,
        &[
            ("UNIT", &network_unit_name(net)),
            ("NAME", net.as_str()),
            ("VMCTL", &vmctl),
            ("HOME", &home_text),
            ("NETDIR", &netdir_text),
            ("PROTECT_HOME", protect_home),
            ("PRIVATE_TMP", private_tmp),
        ],
    ))
}

/// The text of stack `stack`'s target, wanting `units` (its VMs' units); `file` is the stack
/// file it was installed from.
pub fn render_stack_target(stack: &NetName, scope: Scope, units: &[String], file: &Path) -> String {
    // After= as well: `systemctl start` of the target returns once every VM is up.
    let wants = if units.is_empty() {
        String::new()
    } else {
        format!("Wants={0}\nAfter={0}", units.join(" "))
    };
    let (wanted_by, when) = match scope {
        Scope::System => ("multi-user.target", "boot"),
        Scope::User => ("default.target", "login (or at boot with linger)"),
    };
    // A comment line cannot be ended by the file's name: control characters are escaped.
    let file_text: String = file
        .display()
        .to_string()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    substitute(
        STACK_TEMPLATE,
        &[
            ("UNIT", &stack_target_name(stack)),
            ("NAME", stack.as_str()),
            ("FILE", &file_text),
            ("WHEN", when),
            ("WANTS", &wants),
            ("WANTED_BY", wanted_by),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check as golden;

    #[test]
    fn network_units_golden() {
        let net: NetName = "shop-backend".parse().unwrap();
        for (scope, file) in [
            (Scope::System, "vmctl-net-system.service"),
            (Scope::User, "vmctl-net-user.service"),
        ] {
            let text = render_network(
                &net,
                scope,
                Path::new("/usr/local/bin/vmctl"),
                Path::new("/var/lib/vmctl"),
            )
            .unwrap();
            golden(file, &text);
        }
    }

    #[test]
    fn stack_target_golden() {
        let text = render_stack_target(
            &"shop".parse().unwrap(),
            Scope::System,
            &[
                "vmctl-shop-db.service".into(),
                "vmctl-shop-app.service".into(),
            ],
            Path::new("/srv/shop/vmctl-stack.toml"),
        );
        golden("vmctl-stack.target", &text);
        let forged = render_stack_target(
            &"shop".parse().unwrap(),
            Scope::User,
            &[],
            Path::new("/x\nWants=evil.service"),
        );
        assert!(
            !forged.lines().any(|l| l.starts_with("Wants=evil")),
            "{forged}"
        );
    }
}
