//! Port forwards changed while a VM runs: `vmctl port add|rm|list`.
//!
//! A forward is checked like `create` checks it (its address is one of this host's, no other
//! definition forwards the host port, and on a running VM nothing holds it now). A running VM
//! networked by passt (the default) gets it from its saved definition: the supervisor, sent
//! SIGHUP, replaces passt with one that has the new forwards (`net::link`; connections through
//! the old one are cut) and `net.json` says whether it took, else the old definition is put
//! back. A running VM with `host_access` (QEMU's user networking) gets it with HMP
//! `hostfwd_add`/`hostfwd_remove` (through `human-monitor-command` on the control socket; their
//! plain-text replies become errors), and then it is saved to the VM's definition atomically so
//! the next start has it. On a
//! stopped VM only the definition changes. A VM that a drop-in file defines (its unit applies the
//! file before each start) gets the change while it runs, with a note that it lasts until it
//! stops; stopped, it is refused with where to make the change instead. The home's lock and the
//! VM's lock are held throughout, as `create` and `start` take them; what can be refused is
//! checked before they are taken too, so a refused change leaves no lock file behind.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use crate::def::config::VmConfig;
use crate::def::spec;
use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::qemu::argv::NETDEV;
use crate::qemu::control::ctl_connect;
use crate::qemu::qmp::Qmp;
use crate::runstate;
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::{PortForward, Protocol, VmName};

/// One forward of `port list`.
#[derive(Debug, Serialize)]
pub struct PortState {
    pub spec: PortForward,
    pub addr: Ipv4Addr,
    pub host: u16,
    pub guest: u16,
    pub proto: String,
    /// Whether the running QEMU forwards it (None while the VM is stopped).
    pub active: Option<bool>,
}

/// The VM's forwards from its definition, with whether QEMU has each (running VM).
pub fn list(home: &Home, name: &VmName) -> Result<Vec<PortState>> {
    let spec = crate::def::store::load(home, name)?;
    let paths = home.vm(name);
    let passt = crate::net::state::read(&paths).filter(|_| runstate::liveness(&paths).is_running());
    let active = if let Some(net) = passt {
        Some(
            net.forwards()
                .into_iter()
                .map(|f| (f.proto, f.addr, f.host))
                .collect(),
        )
    } else if runstate::liveness(&paths).is_running() {
        Some(block_on(async {
            let (mut q, _ctl) = ctl_connect(&paths).await?;
            Ok(parse_usernet(&q.hmp("info usernet").await?))
        })?)
    } else {
        None
    };
    Ok(spec
        .ports
        .iter()
        .map(|f| PortState {
            spec: *f,
            addr: f.addr,
            host: f.host,
            guest: f.guest,
            proto: f.proto.to_string(),
            active: active.as_ref().map(|a| {
                a.iter()
                    .any(|(p, addr, port)| *p == f.proto && *port == f.host && *addr == f.addr)
            }),
        })
        .collect())
}

/// The host side of every `HOST_FORWARD` line of HMP `info usernet`:
/// `  TCP[HOST_FORWARD]  13       127.0.0.1 28411       10.0.2.15  8080     0     0`.
fn parse_usernet(text: &str) -> Vec<(Protocol, Ipv4Addr, u16)> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let proto = match cols.first()?.strip_suffix("[HOST_FORWARD]")? {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            let addr = match *cols.get(2)? {
                "*" => Ipv4Addr::UNSPECIFIED,
                a => a.parse().ok()?,
            };
            Some((proto, addr, cols.get(3)?.parse().ok()?))
        })
        .collect()
}

/// What `port add`/`port rm` did.
#[derive(Debug, Serialize)]
pub struct Changed {
    pub name: String,
    pub spec: PortForward,
    /// Whether the running QEMU was changed too (else only the definition).
    pub live: bool,
    /// The drop-in file that defines the VM: its unit applies it before each start, so a change
    /// made here lasts only until the VM stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<PathBuf>,
}

/// The drop-in that defines the VM, if one does (`create --from FILE --update` recorded it and
/// the file is still there). A stopped VM's is refused, since changing its definition here would
/// be undone at the next start: say where to `edit` instead.
fn drop_in_owner(
    paths: &VmPaths,
    name: &VmName,
    live: bool,
    edit: &str,
) -> Result<Option<PathBuf>> {
    let owner = std::fs::read_to_string(paths.drop_in_record())
        .map(PathBuf::from)
        .ok()
        .filter(|f| f.exists());
    match owner {
        Some(file) if !live => Err(Error::Usage(format!(
            "VM {name} is defined by {}, which its unit applies before each start; {edit} `ports` in that file",
            file.display()
        ))),
        owner => Ok(owner),
    }
}

/// Why `f` cannot be forwarded here, if it cannot: its address is none of this host's (QEMU
/// would fail to bind it at start, as if another process held the port).
pub fn foreign_address(f: &PortForward) -> Option<String> {
    (!crate::host::facts::has_address(f.addr)).then(|| {
        format!(
            "{} is not an address of this host; forward from 127.0.0.1 (the default), 0.0.0.0 or one of its addresses",
            f.addr
        )
    })
}

/// What a port change would make of the VM's definition, checked before the locks are taken (a
/// refused request then leaves no lock file behind) and again under them.
struct Plan {
    cfg: VmConfig,
    live: bool,
    owner: Option<PathBuf>,
}

/// Forward `f` from now on (running VM) and at every start.
pub fn add(home: &Home, name: &VmName, f: PortForward) -> Result<Changed> {
    let changed = add_now(home, name, f);
    crate::events::after(home, name.as_str(), "port-added", port_of, changed)
}

fn port_of(c: &Changed) -> serde_json::Value {
    serde_json::json!({ "port": c.spec.to_string() })
}

fn add_now(home: &Home, name: &VmName, f: PortForward) -> Result<Changed> {
    let paths = home.defined(name)?;
    if let Some(why) = foreign_address(&f) {
        return Err(Error::Usage(format!("{f}: {why}")));
    }
    plan_add(home, name, &paths, f)?;
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let Plan { cfg, live, owner } = plan_add(home, name, &paths, f)?;
    if live {
        crate::supervisor::plan::check_port_free(home, name, &f, &f.to_string())?;
        if by_passt(&paths) {
            through_passt(&paths, name, &cfg)?;
            return Ok(Changed {
                name: name.to_string(),
                spec: f,
                live,
                defined_by: owner,
            });
        }
        hmp(
            &paths,
            &format!("hostfwd_add {NETDEV} {}", rule(&f, true)),
            |out| out.is_empty(),
        )?;
    }
    if let Err(e) = save(&paths, name, &cfg) {
        if live {
            // Keep QEMU in line with the definition that stays.
            let _ = hmp(&paths, &remove_line(&f), |_| true);
        }
        return Err(e);
    }
    Ok(Changed {
        name: name.to_string(),
        spec: f,
        live,
        defined_by: owner,
    })
}

/// The definition with `f` added, unless the VM or another definition forwards its host port
/// or a drop-in file has the last word on the stopped VM's forwards.
fn plan_add(home: &Home, name: &VmName, paths: &VmPaths, f: PortForward) -> Result<Plan> {
    let mut cfg = load_config(paths)?;
    let stored = forwards(&cfg);
    if let Some(p) = stored.iter().find(|p| spec::ports_overlap(p, &f)) {
        return Err(Error::Usage(format!(
            "VM {name} already forwards host port {} ({p})",
            f.host
        )));
    }
    if let Some((vm, p)) = crate::def::store::port_owner(home, name, &f) {
        return Err(Error::Usage(format!(
            "host port {} is already forwarded by VM {vm} ({p})",
            f.host
        )));
    }
    cfg.ports.push(f.to_string());
    let live = runstate::liveness(paths).is_running();
    let owner = drop_in_owner(paths, name, live, &format!("add \"{f}\" to"))?;
    Ok(Plan { cfg, live, owner })
}

/// Stop forwarding `f` (running VM) and drop it from the definition.
pub fn rm(home: &Home, name: &VmName, f: PortForward) -> Result<Changed> {
    let changed = rm_now(home, name, f);
    crate::events::after(home, name.as_str(), "port-removed", port_of, changed)
}

fn rm_now(home: &Home, name: &VmName, f: PortForward) -> Result<Changed> {
    let paths = home.defined(name)?;
    plan_rm(name, &paths, f)?;
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let Plan { cfg, live, owner } = plan_rm(name, &paths, f)?;
    if live && by_passt(&paths) {
        through_passt(&paths, name, &cfg)?;
    } else {
        if live {
            // "host forwarding rule for tcp:127.0.0.1:8081 removed" on success.
            hmp(&paths, &remove_line(&f), |out| out.ends_with("removed"))?;
        }
        save(&paths, name, &cfg)?;
    }
    Ok(Changed {
        name: name.to_string(),
        spec: f,
        live,
        defined_by: owner,
    })
}

/// The definition without `f`, unless the VM does not forward it (not found, with the forwards
/// it has) or a drop-in file has the last word on the stopped VM's forwards.
fn plan_rm(name: &VmName, paths: &VmPaths, f: PortForward) -> Result<Plan> {
    let mut cfg = load_config(paths)?;
    let stored = forwards(&cfg);
    let Some(i) = stored.iter().position(|p| *p == f) else {
        return Err(Error::NotFound {
            what: "port forward",
            name: f.to_string(),
            hint: if stored.is_empty() {
                format!(" on VM {name}: it forwards no ports")
            } else {
                format!(
                    " on VM {name}; it forwards {}",
                    stored
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            },
        });
    };
    cfg.ports.remove(i);
    let live = runstate::liveness(paths).is_running();
    let owner = drop_in_owner(paths, name, live, &format!("remove \"{f}\" from"))?;
    Ok(Plan { cfg, live, owner })
}

/// Whether the running VM is networked by passt (its supervisor recorded one).
fn by_passt(paths: &VmPaths) -> bool {
    crate::net::state::read(paths).is_some()
}

/// Save `cfg` and have the supervisor give passt its forwards; if it cannot, the definition that
/// was there is put back.
fn through_passt(paths: &VmPaths, name: &VmName, cfg: &VmConfig) -> Result<()> {
    let before = load_config(paths)?;
    save(paths, name, cfg)?;
    let supervisor = runstate::read_state(paths).map_or(0, |s| s.supervisor_pid);
    if let Err(e) = crate::net::state::reload(paths, &name.to_string(), supervisor) {
        save(paths, name, &before)?;
        return Err(e);
    }
    Ok(())
}

fn load_config(paths: &VmPaths) -> Result<VmConfig> {
    VmConfig::load(&paths.definition())
}

fn forwards(cfg: &VmConfig) -> Vec<PortForward> {
    cfg.ports.iter().filter_map(|p| p.parse().ok()).collect()
}

/// Validate the changed definition and write it atomically, keeping the file's header comment.
fn save(paths: &VmPaths, name: &VmName, cfg: &VmConfig) -> Result<()> {
    let def = paths.definition();
    let spec = spec::validate(
        name,
        cfg,
        crate::def::store::limits(),
        &def.display().to_string(),
    )?;
    let old = std::fs::read_to_string(&def).unwrap_or_default();
    let header: String = old
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    fsutil::write_atomic(
        &def,
        format!("{header}{}", spec.to_config().to_toml()).as_bytes(),
    )
}

/// `tcp:127.0.0.1:8081-:8080` (with the guest side) or `tcp:127.0.0.1:8081`.
fn rule(f: &PortForward, with_guest: bool) -> String {
    let host = format!("{}:{}:{}", f.proto, f.addr, f.host);
    if with_guest {
        format!("{host}-:{}", f.guest)
    } else {
        host
    }
}

fn remove_line(f: &PortForward) -> String {
    format!("hostfwd_remove {NETDEV} {}", rule(f, false))
}

/// Run an HMP line on the control socket; `ok` judges its (trimmed) reply, which is the error
/// message when it says no.
fn hmp(paths: &VmPaths, line: &str, ok: impl FnOnce(&str) -> bool) -> Result<()> {
    block_on(async {
        let (mut q, _ctl): (Qmp, _) = ctl_connect(paths).await?;
        let out = q.hmp(line).await?;
        let out = out.trim();
        if ok(out) {
            return Ok(());
        }
        Err(Error::Qemu(format!(
            "{line}: {}",
            if out.is_empty() { "no reply" } else { out }
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernet_forwards_parse() {
        let text = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]  13       127.0.0.1 28411       10.0.2.15  8080     0     0\r\n  UDP[HOST_FORWARD]  14               * 5353       10.0.2.15    53     0     0\r\n  TCP[ESTABLISHED]   20       10.0.2.15 40000      10.0.2.2    80     0     0\r\n";
        assert_eq!(
            parse_usernet(text),
            vec![
                (Protocol::Tcp, Ipv4Addr::LOCALHOST, 28411),
                (Protocol::Udp, Ipv4Addr::UNSPECIFIED, 5353)
            ]
        );
    }

    #[test]
    fn hostfwd_rules_render() {
        let f: PortForward = "0.0.0.0:8081:80/udp".parse().unwrap();
        assert_eq!(rule(&f, true), "udp:0.0.0.0:8081-:80");
        let f: PortForward = "8081:80".parse().unwrap();
        assert_eq!(rule(&f, false), "tcp:127.0.0.1:8081");
        assert_eq!(remove_line(&f), "hostfwd_remove net0 tcp:127.0.0.1:8081");
    }
}
