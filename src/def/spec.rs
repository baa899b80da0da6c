//! Validation: turns a wire-format [`VmConfig`] into a [`VmSpec`], the only type the QEMU argv
//! builder and the lifecycle code accept. Every invalid field is reported at once, by name and
//! value; host limits (RAM) come in as plain numbers so this stays a pure function.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::addr::{MacAddr, NetName};
use crate::def::app::AppValue;
use crate::def::bounds;
use crate::def::config::{self, HealthConfig, NetworkEntry, NetworkRef, VmConfig};
use crate::def::mounts::MountSpec;
use crate::error::{Problems, Result};
use crate::types::{
    AccelChoice, App, Arch, ByteSize, LoginName, PortForward, Protocol, Span, VmName,
};

/// A validated VM definition.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    pub name: VmName,
    pub cpus: u32,
    pub memory: ByteSize,
    pub disk: ByteSize,
    pub image: String,
    pub arch: Arch,
    pub accel: AccelChoice,
    pub ports: Vec<PortForward>,
    pub stop_timeout: Duration,
    /// Guest login user, when set explicitly (defaults are resolved at create).
    pub user: Option<LoginName>,
    /// Public key file given by the user.
    pub ssh_key: Option<std::path::PathBuf>,
    pub app: Option<App>,
    /// The app's environment in the guest.
    pub app_env: BTreeMap<String, String>,
    /// Enable the VM's systemd unit at install (start at boot).
    pub autostart: bool,
    /// The guest may reach the host's loopback (QEMU's user networking instead of passt).
    pub host_access: bool,
    /// What a host shutdown or its unit's stop does to the guest.
    pub on_host_shutdown: OnHostShutdown,
    /// VMs whose units this VM's unit is ordered after and requires.
    pub after: Vec<VmName>,
    pub health: Option<HealthSpec>,
    /// The private networks it joins, in order (its second NIC is on the first).
    pub networks: Vec<NetAttach>,
    /// Host directories shared into the guest.
    pub mounts: Vec<MountSpec>,
    /// Your own WSGI app (`[app]`), when `app` is not a built-in one.
    pub wsgi_app: Option<crate::def::app::WsgiApp>,
    /// Your provisioning scripts, in order.
    pub scripts: Vec<crate::def::scripts::Script>,
    /// Your cloud-config, as given (checked against the image at create: `guest::cloudmerge`).
    pub cloud_init: Option<String>,
    /// The stack that defines it (`vmctl up`).
    pub stack: Option<NetName>,
}

/// A VM's NIC on a private network: the network, the VM's address there (vmctl gives one at
/// create when the definition has none) and the NIC's MAC (derived from both names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttach {
    pub network: NetName,
    pub address: Option<Ipv4Addr>,
    pub mac: MacAddr,
}

/// `on_host_shutdown`: what stopping the VM's unit (a host shutdown) does to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnHostShutdown {
    /// The ACPI power button (then quit, then kill), as `vmctl stop`.
    #[default]
    Poweroff,
    /// Its state saved (`vmctl suspend`), the power button should that fail; the next start
    /// resumes it.
    Save,
}

impl OnHostShutdown {
    pub fn as_str(self) -> &'static str {
        match self {
            OnHostShutdown::Poweroff => "poweroff",
            OnHostShutdown::Save => "save",
        }
    }
}

/// `on_host_shutdown`, checked: "save" needs a guest QEMU can save (no shared folders).
fn on_host_shutdown(cfg: &VmConfig, mounts: &[MountSpec], p: &mut Problems) -> OnHostShutdown {
    let v = match cfg.on_host_shutdown.as_deref() {
        None | Some("poweroff") => return OnHostShutdown::Poweroff,
        Some("save") => OnHostShutdown::Save,
        Some(other) => {
            p.add(
                "on_host_shutdown",
                format!("must be \"poweroff\" or \"save\"; got {other:?}"),
            );
            return OnHostShutdown::Poweroff;
        }
    };
    if !mounts.is_empty() {
        p.add(
            "on_host_shutdown",
            "\"save\" cannot be: the VM has shared folders, and QEMU cannot save a guest with virtio-fs devices",
        );
    }
    v
}

/// A validated `[health]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub check: HealthCheck,
    pub interval: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// What a health check asks of the guest, on a forwarded guest TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET path` must answer with a status below 400.
    Http { port: u16, path: String },
    /// The service must accept a connection and keep it open or speak first.
    Tcp { port: u16 },
}

impl HealthCheck {
    pub fn guest_port(&self) -> u16 {
        match self {
            HealthCheck::Http { port, .. } | HealthCheck::Tcp { port } => *port,
        }
    }
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthCheck::Http { port, path } => write!(f, "http {port}{path}"),
            HealthCheck::Tcp { port } => write!(f, "tcp {port}"),
        }
    }
}

/// Facts about the host that validation checks against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub host_memory: u64,
}

/// Validate a definition into a spec, with every bad field reported at once (in the order of
/// the fields), each by name and value.
pub fn validate(
    name: &VmName,
    cfg: &VmConfig,
    limits: Limits,
    source_name: &str,
) -> Result<VmSpec> {
    let mut p = Problems::default();
    let (cpus, memory, disk) = shape(cfg, limits, &mut p);
    let (image, arch, accel) = base(cfg, &mut p);
    let ports = forwards(&cfg.ports, &mut p);
    let stop_timeout = p
        .check(
            "stop_timeout",
            bounds::stop_timeout(
                cfg.stop_timeout
                    .unwrap_or(config::DEFAULT_STOP_TIMEOUT_SECS),
            ),
        )
        .unwrap_or_default();
    let (user, ssh_key, app) = login(cfg, &mut p);
    let after = after(name, &cfg.after, &mut p);
    let health = cfg.health.as_ref().and_then(|h| health(h, &ports, &mut p));
    let networks = networks(name, &cfg.networks, &mut p);
    let app_env = app_env(&cfg.app_env, &mut p);
    let mounts = crate::def::mounts::validate(&cfg.mounts, &mut p);
    let on_host_shutdown = on_host_shutdown(cfg, &mounts, &mut p);
    let scripts = crate::def::scripts::validate(&cfg.provision, &mut p);
    let wsgi_app = match &cfg.app {
        Some(AppValue::Wsgi(t)) => crate::def::app::validate(t, &mut p),
        _ => None,
    };
    let stack = cfg.stack.as_deref().and_then(|s| {
        p.check(
            "stack",
            s.parse::<NetName>()
                .map_err(|e| e.replace("network name", "stack name")),
        )
    });
    p.into_result(source_name)?;
    Ok(VmSpec {
        name: name.clone(),
        cpus,
        memory,
        disk,
        image,
        arch,
        accel,
        ports,
        stop_timeout,
        user,
        ssh_key,
        app,
        app_env,
        autostart: cfg.autostart.unwrap_or(false),
        host_access: cfg.host_access.unwrap_or(false),
        on_host_shutdown,
        after,
        health,
        networks,
        mounts,
        scripts,
        wsgi_app,
        cloud_init: cfg.cloud_init.clone(),
        stack,
    })
}

/// `cpus`, `memory` (within the host's RAM, whole MiB) and `disk`.
fn shape(cfg: &VmConfig, limits: Limits, p: &mut Problems) -> (u32, ByteSize, ByteSize) {
    let cpus = p
        .check(
            "cpus",
            bounds::cpus(cfg.cpus.unwrap_or(config::DEFAULT_CPUS)),
        )
        .unwrap_or(1);
    let memory = cfg
        .memory
        .as_deref()
        .unwrap_or(config::DEFAULT_MEMORY)
        .parse::<ByteSize>()
        .and_then(bounds::min_memory)
        .and_then(|m| bounds::host_memory(m, limits.host_memory))
        .and_then(bounds::whole_mib);
    let memory = p.check("memory", memory).unwrap_or(ByteSize(0));
    let disk = cfg
        .disk
        .as_deref()
        .unwrap_or(config::DEFAULT_DISK)
        .parse::<ByteSize>()
        .and_then(bounds::disk);
    let disk = p.check("disk", disk).unwrap_or(ByteSize(0));
    (cpus, memory, disk)
}

/// `image` (a plain name), `arch` (default: the host's) and `accel`.
fn base(cfg: &VmConfig, p: &mut Problems) -> (String, Arch, AccelChoice) {
    let image = cfg
        .image
        .clone()
        .unwrap_or_else(|| config::DEFAULT_IMAGE.to_string());
    if image.is_empty() || image.contains('/') || image.contains("..") || image.starts_with('.') {
        p.add("image", format!("{image:?} is not an image name"));
    }
    let arch = match cfg.arch.as_deref() {
        None => Arch::host().unwrap_or(Arch::X86_64),
        Some(a) => p.check("arch", a.parse()).unwrap_or(Arch::X86_64),
    };
    let accel = match cfg.accel.as_deref() {
        None => AccelChoice::Auto,
        Some(a) => p.check("accel", a.parse()).unwrap_or(AccelChoice::Auto),
    };
    (image, arch, accel)
}

/// `ports`: each a forward, no two on one host port.
fn forwards(ports: &[String], p: &mut Problems) -> Vec<PortForward> {
    let mut out: Vec<PortForward> = Vec::new();
    for (i, text) in ports.iter().enumerate() {
        let field = format!("ports[{i}]");
        let Some(pf) = p.check(&field, text.parse::<PortForward>()) else {
            continue;
        };
        if let Some(prev) = out.iter().find(|q| ports_overlap(q, &pf)) {
            p.add(
                field,
                format!("host port {} is already forwarded by {prev}", pf.host),
            );
        }
        out.push(pf);
    }
    out
}

/// `user`, `ssh_key` and `app`.
fn login(
    cfg: &VmConfig,
    p: &mut Problems,
) -> (Option<LoginName>, Option<std::path::PathBuf>, Option<App>) {
    let user = cfg
        .user
        .as_deref()
        .and_then(|u| p.check("user", u.parse::<LoginName>()));
    let ssh_key = match cfg.ssh_key.as_deref() {
        Some("") => {
            p.add("ssh_key", "must be a path to a public key file");
            None
        }
        Some(k) if k.chars().any(char::is_control) => {
            p.add(
                "ssh_key",
                format!("the path has a control character; got {k:?}"),
            );
            None
        }
        other => other.map(std::path::PathBuf::from),
    };
    let app = match &cfg.app {
        Some(AppValue::Builtin(a)) => p.check("app", a.parse::<App>()),
        _ => None,
    };
    (user, ssh_key, app)
}

/// `after`: other VMs, each once.
fn after(name: &VmName, after: &[String], p: &mut Problems) -> Vec<VmName> {
    let mut out: Vec<VmName> = Vec::new();
    for (i, a) in after.iter().enumerate() {
        let field = format!("after[{i}]");
        match p.check(&field, a.parse::<VmName>()) {
            Some(n) if &n == name => p.add(
                field,
                format!("{a:?} is this VM; a VM cannot start after itself"),
            ),
            Some(n) if out.contains(&n) => p.add(field, format!("{a:?} is listed twice")),
            Some(n) => out.push(n),
            None => {}
        }
    }
    out
}

/// `app_env`: names of shell variables (`UPSTREAM`, `DB_URL`) that are not the service
/// manager's own, values of one line of visible text.
fn app_env(env: &BTreeMap<String, String>, p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in env {
        let field = format!("app_env.{k}");
        let name_ok = k.len() <= 64
            && k.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            p.add(
                &field,
                format!("{k:?} is not a variable name; use capitals, digits and '_' (UPSTREAM)"),
            );
        } else if ["PATH", "HOME", "USER", "LANG"].contains(&k.as_str())
            || k.starts_with("LD_")
            || k.starts_with("SYSTEMD_")
        {
            p.add(&field, format!("{k} is the system's to set, not the app's"));
        } else if let Some(c) = v.chars().find(|c| c.is_control()) {
            p.add(
                &field,
                format!("the value has the control character {c:?}; one line of text only"),
            );
        } else if v.len() > 4096 {
            p.add(
                &field,
                format!("the value is {} bytes; at most 4096", v.len()),
            );
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `networks`: each a network name, at most once, with an IPv4 address if one is given.
fn networks(vm: &VmName, refs: &[NetworkRef], p: &mut Problems) -> Vec<NetAttach> {
    let mut out: Vec<NetAttach> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let Some(network) = p.check(&format!("networks[{i}]"), r.name().parse::<NetName>()) else {
            continue;
        };
        if out.iter().any(|a| a.network == network) {
            p.add(
                format!("networks[{i}]"),
                format!("network {network} is listed twice"),
            );
            continue;
        }
        let address = r.address().and_then(|a| {
            p.check(
                &format!("networks[{i}].address"),
                a.parse::<Ipv4Addr>()
                    .map_err(|_| format!("{a:?} is not an IPv4 address such as \"10.89.0.10\"")),
            )
        });
        out.push(NetAttach {
            mac: MacAddr::derive(vm.as_str(), network.as_str()),
            network,
            address,
        });
    }
    out
}

/// `[health]`: exactly one target on a forwarded TCP guest port, and sane timing.
fn health(h: &HealthConfig, ports: &[PortForward], p: &mut Problems) -> Option<HealthSpec> {
    let check = health_check(h, ports, p);
    let interval = p.check(
        "health.interval",
        bounds::health_time(
            h.interval
                .as_deref()
                .unwrap_or(config::DEFAULT_HEALTH_INTERVAL),
            bounds::HEALTH_INTERVAL_MIN,
        ),
    );
    let start_period = p.check(
        "health.start_period",
        bounds::health_time(
            h.start_period
                .as_deref()
                .unwrap_or(config::DEFAULT_HEALTH_START_PERIOD),
            Duration::ZERO,
        ),
    );
    let retries = p.check(
        "health.retries",
        bounds::health_retries(h.retries.unwrap_or(config::DEFAULT_HEALTH_RETRIES)),
    );
    Some(HealthSpec {
        check: check?,
        interval: interval?,
        retries: retries?,
        start_period: start_period?,
    })
}

/// `health.http` or `health.tcp`, whose guest port must be forwarded.
fn health_check(h: &HealthConfig, ports: &[PortForward], p: &mut Problems) -> Option<HealthCheck> {
    let (field, check) = match (&h.http, h.tcp) {
        (Some(_), Some(_)) | (None, None) => {
            p.add(
                "health",
                "set exactly one of http = \"PORT/PATH\" or tcp = PORT",
            );
            return None;
        }
        (Some(url), None) => {
            let (port, path) = p.check("health.http", parse_http_target(url))?;
            ("health.http", HealthCheck::Http { port, path })
        }
        (None, Some(port)) => match u16::try_from(port) {
            Ok(port) if port > 0 => ("health.tcp", HealthCheck::Tcp { port }),
            _ => {
                p.add("health.tcp", format!("must be a port 1-65535; got {port}"));
                return None;
            }
        },
    };
    let forwarded: Vec<u16> = ports
        .iter()
        .filter(|p| p.proto == Protocol::Tcp)
        .map(|p| p.guest)
        .collect();
    if forwarded.contains(&check.guest_port()) {
        return Some(check);
    }
    let have = if forwarded.is_empty() {
        "this VM forwards no TCP ports".to_string()
    } else {
        let list: Vec<String> = forwarded.iter().map(|p| p.to_string()).collect();
        format!("forwarded TCP guest ports: {}", list.join(", "))
    };
    p.add(
        field,
        format!(
            "guest port {} is not forwarded ({have}); add it to ports",
            check.guest_port()
        ),
    );
    None
}

/// `"8080/healthz"` → (8080, "/healthz"); `"8080"` → (8080, "/"). The path goes into a request
/// line, so it must be visible ASCII without spaces.
fn parse_http_target(s: &str) -> std::result::Result<(u16, String), String> {
    let (port, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "/"),
    };
    let usage = format!("{s:?} is not PORT/PATH (e.g. \"8080/healthz\")");
    let port = match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        Ok(p) => return Err(format!("{usage}: port must be 1-65535; got {p}")),
        Err(_) => return Err(usage),
    };
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{usage}: the path contains {c:?}; use visible ASCII without spaces"
        ));
    }
    Ok((port, path.to_string()))
}

/// Two forwards collide when they use the same host port and protocol on overlapping addresses
/// (0.0.0.0 overlaps everything).
pub fn ports_overlap(a: &PortForward, b: &PortForward) -> bool {
    a.host == b.host
        && a.proto == b.proto
        && (a.addr == b.addr || a.addr.is_unspecified() || b.addr.is_unspecified())
}

impl VmSpec {
    /// The definition as stored in `vm.toml`: every field explicit, so later default changes do
    /// not change existing VMs.
    pub fn to_config(&self) -> VmConfig {
        VmConfig {
            cpus: Some(self.cpus as u64),
            memory: Some(self.memory.to_string()),
            disk: Some(self.disk.to_string()),
            image: Some(self.image.clone()),
            arch: Some(self.arch.to_string()),
            accel: Some(self.accel.to_string()),
            ports: self.ports.iter().map(|p| p.to_string()).collect(),
            stop_timeout: Some(self.stop_timeout.as_secs()),
            user: self.user.as_ref().map(|u| u.to_string()),
            ssh_key: self.ssh_key.as_ref().map(|p| p.display().to_string()),
            app: match (&self.app, &self.wsgi_app) {
                (_, Some(w)) => Some(AppValue::Wsgi(w.to_table())),
                (Some(a), None) => Some(AppValue::Builtin(a.to_string())),
                (None, None) => None,
            },
            app_env: self.app_env.clone(),
            autostart: Some(self.autostart),
            host_access: Some(self.host_access),
            on_host_shutdown: (self.on_host_shutdown != OnHostShutdown::Poweroff)
                .then(|| self.on_host_shutdown.as_str().to_string()),
            after: self.after.iter().map(|n| n.to_string()).collect(),
            networks: self
                .networks
                .iter()
                .map(|a| {
                    NetworkRef::Entry(NetworkEntry {
                        name: a.network.to_string(),
                        address: a.address.map(|ip| ip.to_string()),
                    })
                })
                .collect(),
            mounts: self.mounts.iter().map(|m| m.to_string()).collect(),
            provision: self
                .scripts
                .iter()
                .map(|s| crate::def::scripts::ProvisionStep {
                    mode: s.mode.as_str().into(),
                    script: Some(s.script.clone()),
                    file: None,
                })
                .collect(),
            cloud_init: self.cloud_init.clone(),
            stack: self.stack.as_ref().map(|s| s.to_string()),
            health: self.health.as_ref().map(|h| HealthConfig {
                http: match &h.check {
                    HealthCheck::Http { port, path } => Some(format!("{port}{path}")),
                    HealthCheck::Tcp { .. } => None,
                },
                tcp: match h.check {
                    HealthCheck::Tcp { port } => Some(port as u64),
                    HealthCheck::Http { .. } => None,
                },
                interval: Some(Span(h.interval).to_string()),
                retries: Some(h.retries as u64),
                start_period: Some(Span(h.start_period).to_string()),
            }),
        }
    }

    /// The forward that reaches a guest TCP port (the first, if several do).
    pub fn forward_to(&self, guest_port: u16) -> Option<&PortForward> {
        self.ports
            .iter()
            .find(|p| p.proto == Protocol::Tcp && p.guest == guest_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        host_memory: 8 * ByteSize::GIB,
    };

    fn name() -> VmName {
        "web".parse().unwrap()
    }

    #[test]
    fn defaults_fill_an_empty_definition() {
        let s = validate(&name(), &VmConfig::default(), LIMITS, "t").unwrap();
        assert_eq!(s.cpus, 1);
        assert_eq!(s.memory.to_string(), "512M");
        assert_eq!(s.disk.to_string(), "10G");
        assert_eq!(s.image, "tiny");
        assert_eq!(s.accel, AccelChoice::Auto);
        assert_eq!(s.stop_timeout, Duration::from_secs(60));
    }

    #[test]
    fn on_host_shutdown_is_poweroff_or_a_save_qemu_can_make() {
        let with = |v: &str, mounts: Vec<String>| VmConfig {
            on_host_shutdown: Some(v.into()),
            mounts,
            ..Default::default()
        };
        let s = validate(&name(), &with("save", vec![]), LIMITS, "t").unwrap();
        assert_eq!(s.on_host_shutdown, OnHostShutdown::Save);
        assert_eq!(s.to_config().on_host_shutdown.as_deref(), Some("save"));
        let s = validate(&name(), &VmConfig::default(), LIMITS, "t").unwrap();
        assert_eq!(s.on_host_shutdown, OnHostShutdown::Poweroff);
        assert_eq!(s.to_config().on_host_shutdown, None);
        let e = validate(&name(), &with("hibernate", vec![]), LIMITS, "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("on_host_shutdown: must be \"poweroff\" or \"save\"; got \"hibernate\"")
        );
        let e = validate(&name(), &with("save", vec!["/srv".into()]), LIMITS, "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("on_host_shutdown: \"save\" cannot be: the VM has shared folders")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = VmConfig {
            cpus: Some(0),
            memory: Some("2X".into()),
            disk: Some("0".into()),
            arch: Some("sparc".into()),
            ports: vec!["8080:80".into(), "70000:22".into(), "8080:81".into()],
            ..Default::default()
        };
        let e = validate(&name(), &cfg, LIMITS, "vms/web.toml").unwrap_err();
        let msg = e.to_string();
        for needle in [
            "vms/web.toml",
            "cpus: must be 1-255; got 0",
            "memory: \"2X\" has an unknown unit",
            "disk: must be larger than 0",
            "arch: unknown architecture \"sparc\"",
            "ports[1]: host port must be 1-65535; got 70000",
            "ports[2]: host port 8080 is already forwarded by 8080:80",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        assert_eq!(e.code(), crate::error::exit::USAGE);
    }

    #[test]
    fn memory_is_bounded_by_the_host() {
        let cfg = VmConfig {
            memory: Some("16G".into()),
            ..Default::default()
        };
        let msg = validate(&name(), &cfg, LIMITS, "t")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("memory: 16G is more than this host has (8.0 GiB"),
            "{msg}"
        );
        let cfg = VmConfig {
            memory: Some("0".into()),
            ..Default::default()
        };
        let msg = validate(&name(), &cfg, LIMITS, "t")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("memory: must be at least 16M; got 0"), "{msg}");
    }

    #[test]
    fn udp_and_tcp_on_one_port_do_not_collide_but_wildcards_do() {
        let ok = VmConfig {
            ports: vec!["5353:53".into(), "5353:53/udp".into()],
            ..Default::default()
        };
        assert!(validate(&name(), &ok, LIMITS, "t").is_ok());
        let clash = VmConfig {
            ports: vec!["0.0.0.0:80:80".into(), "127.0.0.1:80:81".into()],
            ..Default::default()
        };
        assert!(validate(&name(), &clash, LIMITS, "t").is_err());
    }

    #[test]
    fn users_and_apps_are_checked() {
        let cfg = VmConfig {
            user: Some("root".into()),
            app: Some(AppValue::Builtin("wordpress".into())),
            ssh_key: Some("".into()),
            ..Default::default()
        };
        let msg = validate(&name(), &cfg, LIMITS, "t")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("user: \"root\""), "{msg}");
        assert!(
            msg.contains(
                "app: unknown app \"wordpress\"; known apps: gunicorn-hello, nginx-gunicorn"
            ),
            "{msg}"
        );
        assert!(msg.contains("ssh_key: must be a path"), "{msg}");
        let cfg = VmConfig {
            ssh_key: Some("/k\n.pub".into()),
            ..Default::default()
        };
        let msg = validate(&name(), &cfg, LIMITS, "t")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ssh_key: the path has a control character; got \"/k\\n.pub\""),
            "{msg}"
        );
        let ok = VmConfig {
            user: Some("alice".into()),
            app: Some(AppValue::Builtin("gunicorn-hello".into())),
            ..Default::default()
        };
        let s = validate(&name(), &ok, LIMITS, "t").unwrap();
        assert_eq!(s.app, Some(App::GunicornHello));
    }

    #[test]
    fn after_names_are_checked() {
        let cfg = VmConfig {
            after: vec!["db".into(), "web".into(), "a/b".into(), "db".into()],
            ..Default::default()
        };
        let msg = validate(&name(), &cfg, LIMITS, "t")
            .unwrap_err()
            .to_string();
        for needle in [
            "after[1]: \"web\" is this VM; a VM cannot start after itself",
            "after[2]: VM name \"a/b\" must not contain '/'",
            "after[3]: \"db\" is listed twice",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        assert!(!msg.contains("after[0]"), "{msg}");
    }

    fn health(h: HealthConfig) -> std::result::Result<VmSpec, String> {
        let cfg = VmConfig {
            ports: vec!["5080:8080".into(), "5022:22".into(), "5353:53/udp".into()],
            health: Some(h),
            ..Default::default()
        };
        validate(&name(), &cfg, LIMITS, "web.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn health_defaults_and_targets() {
        let s = health(HealthConfig {
            http: Some("8080/healthz?x=1".into()),
            ..Default::default()
        })
        .unwrap();
        let h = s.health.unwrap();
        assert_eq!(
            h.check,
            HealthCheck::Http {
                port: 8080,
                path: "/healthz?x=1".into()
            }
        );
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.retries, 3);
        assert_eq!(h.start_period, Duration::from_secs(300));
        let s = health(HealthConfig {
            http: Some("8080".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.health.unwrap().check.to_string(), "http 8080/");
        let s = health(HealthConfig {
            tcp: Some(22),
            interval: Some("2s".into()),
            retries: Some(5),
            start_period: Some("0".into()),
            ..Default::default()
        })
        .unwrap();
        let h = s.health.unwrap();
        assert_eq!(h.check, HealthCheck::Tcp { port: 22 });
        assert_eq!(
            (h.interval, h.retries, h.start_period),
            (Duration::from_secs(2), 5, Duration::ZERO)
        );
    }

    #[test]
    fn every_bad_health_field_is_named_with_its_value() {
        let msg = health(HealthConfig {
            http: Some("9090/x".into()),
            interval: Some("500ms".into()),
            retries: Some(0),
            start_period: Some("soon".into()),
            ..Default::default()
        })
        .unwrap_err();
        for needle in [
            "web.toml",
            "health.http: guest port 9090 is not forwarded (forwarded TCP guest ports: 8080, 22); add it to ports",
            "health.interval: must be 1s-1h; got \"500ms\"",
            "health.retries: must be 1-100; got 0",
            "health.start_period: \"soon\" is not a duration",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        for (h, needle) in [
            (
                HealthConfig::default(),
                "health: set exactly one of http = \"PORT/PATH\" or tcp = PORT",
            ),
            (
                HealthConfig {
                    http: Some("8080/".into()),
                    tcp: Some(22),
                    ..Default::default()
                },
                "health: set exactly one",
            ),
            (
                HealthConfig {
                    http: Some("/healthz".into()),
                    ..Default::default()
                },
                "health.http: \"/healthz\" is not PORT/PATH (e.g. \"8080/healthz\")",
            ),
            (
                HealthConfig {
                    http: Some("70000/".into()),
                    ..Default::default()
                },
                "health.http: \"70000/\" is not PORT/PATH (e.g. \"8080/healthz\"): port must be 1-65535; got 70000",
            ),
            (
                HealthConfig {
                    http: Some("8080/a b".into()),
                    ..Default::default()
                },
                "the path contains ' '",
            ),
            (
                HealthConfig {
                    tcp: Some(70000),
                    ..Default::default()
                },
                "health.tcp: must be a port 1-65535; got 70000",
            ),
            (
                HealthConfig {
                    tcp: Some(53),
                    ..Default::default()
                },
                "health.tcp: guest port 53 is not forwarded",
            ),
            (
                HealthConfig {
                    tcp: Some(22),
                    start_period: Some("2h".into()),
                    ..Default::default()
                },
                "health.start_period: must be 0s-1h; got \"2h\"",
            ),
        ] {
            let msg = health(h).unwrap_err();
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn spec_round_trips_through_its_stored_form() {
        let cfg = VmConfig {
            cpus: Some(2),
            memory: Some("1G".into()),
            ports: vec!["0.0.0.0:5022:22".into()],
            user: Some("alice".into()),
            ssh_key: Some("/k.pub".into()),
            app: Some(AppValue::Builtin("nginx-gunicorn".into())),
            autostart: Some(true),
            after: vec!["db".into()],
            health: Some(HealthConfig {
                http: Some("22/".into()),
                interval: Some("90s".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = validate(&name(), &cfg, LIMITS, "t").unwrap();
        let again = validate(&name(), &s.to_config(), LIMITS, "t").unwrap();
        assert_eq!(s, again);
    }

    mod proptests {
        use super::*;
        use crate::types::tests::proptests::{config, number, one_of, or_any, text};
        use proptest::prelude::*;

        fn target() -> BoxedStrategy<String> {
            let port = prop_oneof![
                3 => (0u32..70000).prop_map(|n| n.to_string()),
                1 => number(),
            ];
            let path = prop_oneof![
                3 => one_of(&["", "/", "/healthz", "/a?b=1&c=%20", "//x"]),
                2 => text("/az09?=&%#~. \t\u{7f}é", 12),
            ];
            or_any(
                (port, path)
                    .prop_map(|(p, path)| format!("{p}{path}"))
                    .boxed(),
            )
        }

        proptest! {
            #![proptest_config(config(5000))]

            /// `health.http`: a port and a request path that fits a request line, or an error
            /// naming the value; what parses prints (as `to_config` stores it) back to itself.
            #[test]
            fn http_targets(s in target()) {
                match parse_http_target(&s) {
                    Ok((port, path)) => {
                        prop_assert!(port > 0);
                        prop_assert!(path.starts_with('/'), "{:?}", path);
                        prop_assert!(path.chars().all(|c| c.is_ascii_graphic()), "{:?}", path);
                        let stored = format!("{port}{path}");
                        prop_assert_eq!(parse_http_target(&stored), Ok((port, path)));
                    }
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
            }
        }
    }
}
