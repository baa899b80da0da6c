//! Networks in the home: how one is kept (`networks/NAME/network.toml`: its subnet and, when a
//! stack made it, the stack's name), which exist, a free subnet for a new one, which VMs join
//! one and at what address, and the check of a VM's attachments against them (the network
//! exists, the address is in its subnet and no other VM has it), giving each attachment without
//! an address the lowest free one. Lower layers and the commands ask here.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::addr::{MacAddr, NetName, Subnet};
use crate::def::config::{self, VmConfig};
use crate::def::spec::{NetAttach, VmSpec};
use crate::error::{Error, Problems, Result};
use crate::paths::Home;
use crate::types::VmName;

/// A network's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub subnet: String,
    /// The stack that made this network (`vmctl down --rm` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// A network, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: NetName,
    pub subnet: Subnet,
    pub stack: Option<String>,
}

impl Network {
    pub fn to_config(&self) -> NetworkConfig {
        NetworkConfig {
            subnet: self.subnet.to_string(),
            stack: self.stack.clone(),
        }
    }
}

/// The first private /24 handed out, and how many are tried (10.89.0.0/24 ... 10.89.255.0/24,
/// as Podman's networks do).
const DEFAULT_BASE: [u8; 2] = [10, 89];

pub fn not_found(name: &str) -> Error {
    Error::NotFound {
        what: "network",
        name: name.to_string(),
        hint: format!(" (create it with `vmctl network create {name}`, see `vmctl network ls`)"),
    }
}

/// Every network's name, sorted.
pub fn names(home: &Home) -> Vec<NetName> {
    let mut out: Vec<NetName> = std::fs::read_dir(home.networks_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|n| home.network(n).definition().exists())
        .collect();
    out.sort();
    out
}

/// Read network `name`; "not found" (exit 3) when the home has none of that name.
pub fn load(home: &Home, name: &NetName) -> Result<Network> {
    let path = home.network(name).definition();
    if !path.exists() {
        return Err(not_found(name.as_str()));
    }
    let text = config::read_text(&path).map_err(|e| match e {
        config::FileProblem::Io(source) => Error::Io {
            context: format!("Cannot read {}", path.display()),
            source,
        },
        config::FileProblem::Content(why) => Error::Usage(format!("{} {why}", path.display())),
    })?;
    let cfg: NetworkConfig = toml::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not a network definition: {}",
            path.display(),
            e.message().trim()
        ))
    })?;
    let subnet = cfg
        .subnet
        .parse()
        .map_err(|e| Error::Usage(format!("{}: subnet: {e}", path.display())))?;
    Ok(Network {
        name: name.clone(),
        subnet,
        stack: cfg.stack,
    })
}

/// Every network that reads back; one that does not is skipped with a warning.
pub fn all(home: &Home) -> Vec<Network> {
    names(home)
        .iter()
        .filter_map(|n| match load(home, n) {
            Ok(net) => Some(net),
            Err(e) => {
                tracing::warn!("network {n} is skipped: {e}");
                None
            }
        })
        .collect()
}

/// The network of `all` that `subnet` overlaps, if any.
pub fn overlapping<'a>(all: &'a [Network], subnet: &Subnet) -> Option<&'a Network> {
    all.iter().find(|n| n.subnet.overlaps(subnet))
}

/// The first /24 of 10.89.0.0/16 that no network of the home overlaps.
pub fn free_subnet(all: &[Network]) -> Result<Subnet> {
    (0..=255u8)
        .map(|third| {
            Subnet::new(
                Ipv4Addr::new(DEFAULT_BASE[0], DEFAULT_BASE[1], third, 0),
                24,
            )
            .expect("10.89.N.0/24 is a valid subnet")
        })
        .find(|s| overlapping(all, s).is_none())
        .ok_or_else(|| {
            Error::Usage(
                "Every /24 of 10.89.0.0/16 is taken by a network; give one with --subnet".into(),
            )
        })
}

/// A VM's place on a network, as its definition has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub vm: VmName,
    pub address: Option<Ipv4Addr>,
    pub mac: MacAddr,
    /// The stack that defines the VM, if one does.
    pub stack: Option<String>,
}

/// The VMs whose definitions join `net`, with their addresses, sorted by name.
pub fn members(home: &Home, net: &NetName) -> Vec<Member> {
    let mut out = Vec::new();
    for vm in crate::def::store::names(home) {
        let Ok(cfg) = VmConfig::load(&home.vm(&vm).definition()) else {
            continue;
        };
        for r in &cfg.networks {
            if r.name() == net.as_str() {
                out.push(Member {
                    vm: vm.clone(),
                    address: r.address().and_then(|a| a.parse().ok()),
                    mac: MacAddr::derive(vm.as_str(), net.as_str()),
                    stack: cfg.stack.clone(),
                });
            }
        }
    }
    out
}

/// Check `spec`'s attachments against the home's networks and their other members, and give
/// each attachment without an address the lowest free one: every problem at once, by field
/// (`networks[1].address`), exit 2; an unknown network is "not found" (exit 3). The caller holds
/// the networks lock while it also writes the definition, so two VMs never get one address.
pub fn assign(home: &Home, spec: &VmSpec, source_name: &str) -> Result<Vec<NetAttach>> {
    let mut p = Problems::default();
    let mut out = Vec::new();
    for (i, a) in spec.networks.iter().enumerate() {
        let net = load(home, &a.network)?;
        let others: Vec<Member> = members(home, &a.network)
            .into_iter()
            .filter(|m| m.vm != spec.name)
            .collect();
        let field = format!("networks[{i}].address");
        let address = match a.address {
            Some(ip) => {
                if let Err(why) = net.subnet.check_host(ip) {
                    p.add(&field, format!("network {}: {why}", net.name));
                } else if let Some(m) = others.iter().find(|m| m.address == Some(ip)) {
                    p.add(
                        &field,
                        format!("{ip} is VM {}'s address on network {}", m.vm, net.name),
                    );
                }
                ip
            }
            None => match net
                .subnet
                .hosts()
                .find(|ip| !others.iter().any(|m| m.address == Some(*ip)))
            {
                Some(ip) => ip,
                None => {
                    p.add(
                        &field,
                        format!(
                            "network {} ({}) has no free address left",
                            net.name, net.subnet
                        ),
                    );
                    continue;
                }
            },
        };
        if let Some(m) = others.iter().find(|m| m.mac == a.mac) {
            p.add(
                format!("networks[{i}]"),
                format!(
                    "this VM's NIC on {} would have the MAC {} of VM {}'s; rename one of them",
                    net.name, a.mac, m.vm
                ),
            );
        }
        out.push(NetAttach {
            address: Some(address),
            ..a.clone()
        });
    }
    p.into_result(source_name)?;
    Ok(out)
}

/// Another VM as a guest knows it: its address and the names it answers to there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub address: Ipv4Addr,
    pub names: Vec<String>,
}

/// The other VMs on `spec`'s networks, for the guest's host table: each by its name and
/// `NAME.NETWORK`, on every network they share (the first network's address comes first, so a
/// bare name resolves there); a VM of the same stack also by its short name in the stack (`db`,
/// `db.backend`), as compose services are.
pub fn peers(home: &Home, spec: &VmSpec) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    let stack = spec.stack.as_ref().map(|s| format!("{s}-"));
    for a in &spec.networks {
        for m in members(home, &a.network) {
            let Some(address) = m.address else { continue };
            if m.vm == spec.name {
                continue;
            }
            let mut candidates = vec![m.vm.to_string(), format!("{}.{}", m.vm, a.network)];
            let same_stack = stack.is_some() && m.stack.as_ref().map(|s| format!("{s}-")) == stack;
            if let (true, Some(prefix)) = (same_stack, &stack) {
                if let Some(short) = m.vm.as_str().strip_prefix(prefix.as_str()) {
                    let net = a.network.as_str();
                    candidates.push(short.to_string());
                    candidates.push(format!(
                        "{short}.{}",
                        net.strip_prefix(prefix.as_str()).unwrap_or(net)
                    ));
                }
            }
            let names: Vec<String> = candidates
                .into_iter()
                .filter(|n| !out.iter().any(|p| p.names.contains(n)))
                .collect();
            if !names.is_empty() {
                out.push(Peer { address, names });
            }
        }
    }
    out
}
