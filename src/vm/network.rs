//! `vmctl network create|ls|rm`: the home's private networks. Creating one writes its
//! definition (a free /24 of 10.89.0.0/16 unless a subnet is given, refused when it overlaps
//! another's); listing shows each with its VMs and whether its switch runs; removing one is
//! refused while a VM's definition joins it. Both take the networks lock, and `rm` the VMs'
//! lock too, so no VM joins a network that is being removed.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::addr::{NetName, Subnet};
use crate::def::network::{self, Network};
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::runstate;
use crate::sys::fsutil;

/// Create network `name`; `stack` marks one a stack made.
pub fn create(
    home: &Home,
    name: &NetName,
    subnet: Option<Subnet>,
    stack: Option<&str>,
) -> Result<Network> {
    let dir = home.networks_dir();
    std::fs::create_dir_all(&dir).path_ctx("create", &dir)?;
    let _lock = fsutil::lock_exclusive(&home.networks_lock())?;
    let paths = home.network(name);
    if paths.dir.exists() {
        return Err(Error::Usage(format!(
            "Network {name} already exists ({}); pick another name or `vmctl network rm {name}` first",
            paths.dir.display()
        )));
    }
    let all = network::all(home);
    let subnet = match subnet {
        Some(s) => {
            if let Some(other) = network::overlapping(&all, &s) {
                return Err(Error::Usage(format!(
                    "--subnet {s} overlaps network {} ({}); choose another subnet",
                    other.name, other.subnet
                )));
            }
            s
        }
        None => network::free_subnet(&all)?,
    };
    let net = Network {
        name: name.clone(),
        subnet,
        stack: stack.map(str::to_string),
    };
    let tmp = fsutil::TempDir::new(&dir, &format!(".create-{name}-"))?;
    let text = toml::to_string(&net.to_config()).expect("a network serializes");
    let def = tmp.path().join("network.toml");
    fsutil::write_atomic(
        &def,
        format!("# Network {name} — written by vmctl.\n{text}").as_bytes(),
    )?;
    std::fs::rename(tmp.path(), &paths.dir).path_ctx("create", &paths.dir)?;
    Ok(net)
}

/// A network as `vmctl network ls` shows it.
#[derive(Debug, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub subnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Its switch runs (some VM on it runs).
    pub active: bool,
    pub vms: Vec<MemberInfo>,
}

#[derive(Debug, Serialize)]
pub struct MemberInfo {
    pub name: String,
    pub address: Option<Ipv4Addr>,
    pub mac: String,
    pub running: bool,
}

pub fn list(home: &Home) -> Vec<NetworkInfo> {
    network::all(home)
        .into_iter()
        .map(|net| NetworkInfo {
            active: crate::net::switch::is_running(&home.network(&net.name)),
            vms: network::members(home, &net.name)
                .into_iter()
                .map(|m| MemberInfo {
                    running: runstate::liveness(&home.vm(&m.vm)).is_running(),
                    name: m.vm.to_string(),
                    address: m.address,
                    mac: m.mac.to_string(),
                })
                .collect(),
            name: net.name.to_string(),
            subnet: net.subnet.to_string(),
            stack: net.stack,
        })
        .collect()
}

/// Remove network `name`, refused (exit 7) while a VM's definition joins it.
pub fn remove(home: &Home, name: &NetName) -> Result<()> {
    let _lock = fsutil::lock_exclusive(&home.networks_lock())?;
    network::load(home, name)?;
    let vms_dir = home.vms_dir();
    std::fs::create_dir_all(&vms_dir).path_ctx("create", &vms_dir)?;
    let _vms = fsutil::lock_exclusive(&home.vms_lock())?;
    let users: Vec<String> = network::members(home, name)
        .into_iter()
        .map(|m| m.vm.to_string())
        .collect();
    if !users.is_empty() {
        return Err(Error::State(format!(
            "Network {name} is used by VM{} {}: remove {} from their networks (or `vmctl rm` them) first",
            if users.len() == 1 { "" } else { "s" },
            users.join(", "),
            name
        )));
    }
    let paths = home.network(name);
    if crate::net::switch::is_running(&paths) {
        return Err(Error::State(format!(
            "The switch of network {name} still runs; wait for it to end (it ends with its last VM)"
        )));
    }
    fsutil::remove_tree(&paths.dir);
    Ok(())
}
