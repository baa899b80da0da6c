//! `vmctl network create|ls|rm`'s handlers, and the hidden `network switch`, which runs a
//! network's switch in the foreground (as VMs start it, or its systemd unit).

use crate::cli::args_net::{NetLsArgs, NetNameArg, NetworkCreateArgs, SwitchArgs};
use crate::cli::output::{Show, done, print_json, show};
use crate::error::Result;
use crate::paths::Home;
use crate::vm::network::{self as vm_network, NetworkInfo};

pub fn create(home: &Home, a: NetworkCreateArgs) -> Result<u8> {
    let net = vm_network::create(home, &a.name, a.subnet, None)?;
    if a.json {
        print_json(
            &serde_json::json!({"name": net.name.to_string(), "subnet": net.subnet.to_string()}),
        );
    } else {
        println!(
            "Created network {} ({}); VMs join it with `--network {}` or networks = [\"{}\"]",
            net.name, net.subnet, net.name, net.name
        );
    }
    Ok(0)
}

pub fn ls(home: &Home, a: NetLsArgs) -> Result<u8> {
    show(&vm_network::list(home), a.json);
    Ok(0)
}

pub fn rm(home: &Home, a: NetNameArg) -> Result<u8> {
    vm_network::remove(home, &a.name)?;
    let line = format!("Removed network {}", a.name);
    done(
        "removed",
        serde_json::json!({"network": a.name.as_str()}),
        &[line],
    );
    Ok(0)
}

pub fn switch(home: &Home, a: SwitchArgs) -> Result<u8> {
    crate::def::network::load(home, &a.name)?;
    let user = crate::host::qemu_user::for_this_process()?;
    // Made before the switch gives up root (the notify socket is opened once).
    let notifier = crate::systemd::notify::Notifier::from_env();
    crate::net::switch::serve(
        &a.name,
        &home.network(&a.name),
        user.map(|u| u.identity),
        a.persist,
        || {
            crate::systemd::notify::notify(
                notifier.as_ref(),
                &[crate::systemd::notify::Field::Ready],
            )
        },
    )
}

impl Show for Vec<NetworkInfo> {
    fn text(&self) -> String {
        let mut out = format!("{:<16} {:<18} {:<7} VMS\n", "NAME", "SUBNET", "SWITCH");
        for n in self {
            let vms: Vec<String> = n
                .vms
                .iter()
                .map(|m| {
                    format!(
                        "{} {}{}",
                        m.name,
                        m.address
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "-".into()),
                        if m.running { " (running)" } else { "" }
                    )
                })
                .collect();
            out.push_str(&format!(
                "{:<16} {:<18} {:<7} {}\n",
                n.name,
                n.subnet,
                if n.active { "up" } else { "-" },
                if vms.is_empty() {
                    "-".to_string()
                } else {
                    vms.join(", ")
                }
            ));
        }
        out
    }
}
