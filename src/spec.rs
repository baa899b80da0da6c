//! Validation: turns a wire-format [`VmConfig`] into a [`VmSpec`], the only type the QEMU argv
//! builder and the lifecycle code accept. Every invalid field is reported at once, by name and
//! value; host limits (RAM) come in as plain numbers so this stays a pure function.

use std::time::Duration;

use crate::config::{self, VmConfig};
use crate::error::{Error, FieldError, Result};
use crate::units::{AccelChoice, App, Arch, ByteSize, LoginName, PortForward, VmName, human_bytes};

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
}

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
    })
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
        }
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
    fn spec_round_trips_through_its_stored_form() {
        let cfg = VmConfig {
            cpus: Some(2),
            memory: Some("1G".into()),
            ports: vec!["0.0.0.0:5022:22".into()],
            user: Some("alice".into()),
            ssh_key: Some("/k.pub".into()),
            app: Some("nginx-gunicorn".into()),
            ..Default::default()
        };
        let s = validate(&name(), &cfg, LIMITS, "t").unwrap();
        let again = validate(&name(), &s.to_config(), LIMITS, "t").unwrap();
        assert_eq!(s, again);
    }
}
