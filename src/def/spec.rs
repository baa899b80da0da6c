//! Validation: turns a wire-format [`VmConfig`] into a [`VmSpec`], the only type the QEMU argv
//! builder and the lifecycle code accept. Every invalid field is reported at once, by name and
//! value; host limits (RAM) come in as plain numbers so this stays a pure function.

use std::time::Duration;

use crate::def::config::{self, HealthConfig, VmConfig};
use crate::error::{Error, FieldError, Result};
use crate::types::{
    AccelChoice, App, Arch, ByteSize, LoginName, PortForward, Protocol, Span, VmName, human_bytes,
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
    /// Enable the VM's systemd unit at install (start at boot).
    pub autostart: bool,
    /// VMs whose units this VM's unit is ordered after and requires.
    pub after: Vec<VmName>,
    pub health: Option<HealthSpec>,
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

pub const MAX_HEALTH_RETRIES: u64 = 100;
/// Bounds of `health.interval` and `health.start_period`.
const HEALTH_INTERVAL_MIN: Duration = Duration::from_secs(1);
const HEALTH_TIME_MAX: Duration = Duration::from_secs(3600);

/// Facts about the host that validation checks against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub host_memory: u64,
}

pub const MAX_CPUS: u64 = 255;
/// QEMU's user-mode network and firmware need some RAM; smaller guests cannot boot.
pub const MIN_MEMORY: u64 = 16 * ByteSize::MIB;

pub fn validate(
    name: &VmName,
    cfg: &VmConfig,
    limits: Limits,
    source_name: &str,
) -> Result<VmSpec> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: String| {
        problems.push(FieldError {
            field: field.to_string(),
            message,
        })
    };

    let cpus = cfg.cpus.unwrap_or(config::DEFAULT_CPUS);
    if cpus == 0 || cpus > MAX_CPUS {
        bad("cpus", format!("must be 1-{MAX_CPUS}; got {cpus}"));
    }

    let memory = match cfg
        .memory
        .as_deref()
        .unwrap_or(config::DEFAULT_MEMORY)
        .parse::<ByteSize>()
    {
        Ok(m) if m.0 < MIN_MEMORY => {
            bad(
                "memory",
                format!("must be at least {}; got {m}", ByteSize(MIN_MEMORY)),
            );
            m
        }
        Ok(m) if m.0 > limits.host_memory => {
            bad(
                "memory",
                format!(
                    "{m} is more than this host has ({} of RAM)",
                    human_bytes(limits.host_memory)
                ),
            );
            m
        }
        Ok(m) if m.0 % ByteSize::MIB != 0 => {
            bad("memory", format!("must be a whole number of MiB; got {m}"));
            m
        }
        Ok(m) => m,
        Err(e) => {
            bad("memory", e);
            ByteSize(0)
        }
    };

    let disk = match cfg
        .disk
        .as_deref()
        .unwrap_or(config::DEFAULT_DISK)
        .parse::<ByteSize>()
    {
        Ok(d) if d.0 == 0 => {
            bad("disk", "must be larger than 0".into());
            d
        }
        Ok(d) => d,
        Err(e) => {
            bad("disk", e);
            ByteSize(0)
        }
    };

    let image = cfg
        .image
        .clone()
        .unwrap_or_else(|| config::DEFAULT_IMAGE.to_string());
    if image.is_empty() || image.contains('/') || image.contains("..") || image.starts_with('.') {
        bad("image", format!("{image:?} is not an image name"));
    }

    let arch = match cfg.arch.as_deref() {
        None => Arch::host().unwrap_or(Arch::X86_64),
        Some(a) => a.parse().unwrap_or_else(|e| {
            bad("arch", e);
            Arch::X86_64
        }),
    };

    let accel = match cfg.accel.as_deref() {
        None => AccelChoice::Auto,
        Some(a) => a.parse().unwrap_or_else(|e| {
            bad("accel", e);
            AccelChoice::Auto
        }),
    };

    let mut ports: Vec<PortForward> = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        match p.parse::<PortForward>() {
            Ok(pf) => {
                if let Some(prev) = ports.iter().find(|q| ports_overlap(q, &pf)) {
                    bad(
                        &format!("ports[{i}]"),
                        format!("host port {} is already forwarded by {prev}", pf.host),
                    );
                }
                ports.push(pf);
            }
            Err(e) => bad(&format!("ports[{i}]"), e),
        }
    }

    let stop_timeout = cfg
        .stop_timeout
        .unwrap_or(config::DEFAULT_STOP_TIMEOUT_SECS);
    if stop_timeout == 0 || stop_timeout > 3600 {
        bad(
            "stop_timeout",
            format!("must be 1-3600 seconds; got {stop_timeout}"),
        );
    }

    let user = match cfg.user.as_deref() {
        None => None,
        Some(u) => match u.parse::<LoginName>() {
            Ok(u) => Some(u),
            Err(e) => {
                bad("user", e);
                None
            }
        },
    };
    let ssh_key = match cfg.ssh_key.as_deref() {
        Some("") => {
            bad("ssh_key", "must be a path to a public key file".into());
            None
        }
        other => other.map(std::path::PathBuf::from),
    };
    let app = match cfg.app.as_deref() {
        None => None,
        Some(a) => match a.parse::<App>() {
            Ok(a) => Some(a),
            Err(e) => {
                bad("app", e);
                None
            }
        },
    };

    let mut after: Vec<VmName> = Vec::new();
    for (i, a) in cfg.after.iter().enumerate() {
        match a.parse::<VmName>() {
            Ok(n) if &n == name => bad(
                &format!("after[{i}]"),
                format!("{a:?} is this VM; a VM cannot start after itself"),
            ),
            Ok(n) if after.contains(&n) => {
                bad(&format!("after[{i}]"), format!("{a:?} is listed twice"))
            }
            Ok(n) => after.push(n),
            Err(e) => bad(&format!("after[{i}]"), e),
        }
    }

    let health = cfg
        .health
        .as_ref()
        .and_then(|h| validate_health(h, &ports, &mut bad));

    if !problems.is_empty() {
        return Err(Error::Invalid {
            source_name: source_name.to_string(),
            problems,
        });
    }
    Ok(VmSpec {
        name: name.clone(),
        cpus: cpus as u32,
        memory,
        disk,
        image,
        arch,
        accel,
        ports,
        stop_timeout: Duration::from_secs(stop_timeout),
        user,
        ssh_key,
        app,
        autostart: cfg.autostart.unwrap_or(false),
        after,
        health,
    })
}

/// `[health]`: exactly one target on a forwarded TCP guest port, and sane timing.
fn validate_health(
    h: &HealthConfig,
    ports: &[PortForward],
    bad: &mut impl FnMut(&str, String),
) -> Option<HealthSpec> {
    let check = match (&h.http, h.tcp) {
        (Some(_), Some(_)) | (None, None) => {
            bad(
                "health",
                "set exactly one of http = \"PORT/PATH\" or tcp = PORT".into(),
            );
            None
        }
        (Some(url), None) => match parse_http_target(url) {
            Ok((port, path)) => Some(("health.http", HealthCheck::Http { port, path })),
            Err(e) => {
                bad("health.http", e);
                None
            }
        },
        (None, Some(port)) => match u16::try_from(port) {
            Ok(p) if p > 0 => Some(("health.tcp", HealthCheck::Tcp { port: p })),
            _ => {
                bad("health.tcp", format!("must be a port 1-65535; got {port}"));
                None
            }
        },
    };
    let check = check.and_then(|(field, c)| {
        let forwarded: Vec<u16> = ports
            .iter()
            .filter(|p| p.proto == Protocol::Tcp)
            .map(|p| p.guest)
            .collect();
        if forwarded.contains(&c.guest_port()) {
            return Some(c);
        }
        let have = if forwarded.is_empty() {
            "this VM forwards no TCP ports".to_string()
        } else {
            let list: Vec<String> = forwarded.iter().map(|p| p.to_string()).collect();
            format!("forwarded TCP guest ports: {}", list.join(", "))
        };
        bad(
            field,
            format!(
                "guest port {} is not forwarded ({have}); add it to ports",
                c.guest_port()
            ),
        );
        None
    });
    let mut span = |field: &str, value: Option<&str>, default: &str, min: Duration| {
        let text = value.unwrap_or(default);
        match text.parse::<Span>() {
            Ok(Span(d)) if d < min || d > HEALTH_TIME_MAX => {
                bad(
                    field,
                    format!(
                        "must be {}-{}; got {text:?}",
                        Span(min),
                        Span(HEALTH_TIME_MAX)
                    ),
                );
                None
            }
            Ok(Span(d)) => Some(d),
            Err(e) => {
                bad(field, e);
                None
            }
        }
    };
    let interval = span(
        "health.interval",
        h.interval.as_deref(),
        config::DEFAULT_HEALTH_INTERVAL,
        HEALTH_INTERVAL_MIN,
    );
    let start_period = span(
        "health.start_period",
        h.start_period.as_deref(),
        config::DEFAULT_HEALTH_START_PERIOD,
        Duration::ZERO,
    );
    let retries = h.retries.unwrap_or(config::DEFAULT_HEALTH_RETRIES);
    if retries == 0 || retries > MAX_HEALTH_RETRIES {
        bad(
            "health.retries",
            format!("must be 1-{MAX_HEALTH_RETRIES}; got {retries}"),
        );
    }
    Some(HealthSpec {
        check: check?,
        interval: interval?,
        retries: u32::try_from(retries).ok().filter(|r| *r > 0)?,
        start_period: start_period?,
    })
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
            app: self.app.map(|a| a.to_string()),
            autostart: Some(self.autostart),
            after: self.after.iter().map(|n| n.to_string()).collect(),
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
            app: Some("wordpress".into()),
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
        let ok = VmConfig {
            user: Some("alice".into()),
            app: Some("gunicorn-hello".into()),
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
            app: Some("nginx-gunicorn".into()),
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
}
