//! The VM definition's wire format: what a user writes in TOML (`vm-configs/*.toml`, `create
//! --from`) and what vmctl stores as `vms/NAME/vm.toml`.
//!
//! Fields are kept as the user wrote them (strings for sizes and ports) so that `spec::validate`
//! can report every bad field at once, by name; unknown keys are refused by serde. Defaults live
//! here and only here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub const DEFAULT_CPUS: u64 = 1;
pub const DEFAULT_MEMORY: &str = "512M";
pub const DEFAULT_DISK: &str = "10G";
pub const DEFAULT_IMAGE: &str = "tiny";
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_HEALTH_INTERVAL: &str = "10s";
pub const DEFAULT_HEALTH_RETRIES: u64 = 3;
/// Long enough for a Debian guest to boot under TCG: failures before it do not count.
pub const DEFAULT_HEALTH_START_PERIOD: &str = "5m";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Virtual CPUs (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    /// Guest RAM, e.g. "2G" (default 512M).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Virtual disk size, e.g. "10G"; at least the image's size (default 10G).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Base image name, see `vmctl image list` (default "tiny").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Guest architecture: x86_64 or aarch64 (default: the host's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// auto, kvm or tcg (default auto).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// Port forwards "[ADDR:]HOST:GUEST[/tcp|/udp]"; ADDR defaults to 127.0.0.1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Seconds `stop` waits for the guest to power off before `quit` (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// Login user created in the guest (images that vmctl provisions; default: your user name,
    /// or "debian" when you are root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Public key file authorized for the login user (default ~/.ssh/id_ed25519.pub or
    /// id_rsa.pub; without one vmctl makes a key pair for the VM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// The guest's web app: "gunicorn-hello" or "nginx-gunicorn" (see `vmctl image list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Start at boot: `vmctl systemd install` enables the VM's unit (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// VMs whose units this one's unit starts after and requires (`vmctl systemd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// A check of a guest service, for readiness and for restarting an unhealthy guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
}

/// `[health]`: one target (`http` or `tcp`, a forwarded guest port) and its timing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// "PORT/PATH": an HTTP GET to that guest port must answer with a status below 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A guest TCP port whose service must accept a connection and keep it open (or speak).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u64>,
    /// Time between checks once the guest is up, e.g. "10s" (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Consecutive failures that make the guest unhealthy (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Time after start during which failures do not count, until the first pass (default 5m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

impl VmConfig {
    pub fn parse(text: &str, source_name: &str) -> Result<VmConfig> {
        toml::from_str(text).map_err(|e| Error::Invalid {
            source_name: source_name.to_string(),
            problems: vec![crate::error::FieldError {
                field: e
                    .span()
                    .map(|s| format!("line {}", line_of(text, s.start)))
                    .unwrap_or_else(|| "file".into()),
                message: e.message().trim().to_string(),
            }],
        })
    }

    pub fn load(path: &Path) -> Result<VmConfig> {
        let text = std::fs::read_to_string(path).path_ctx("read", path)?;
        VmConfig::parse(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a VmConfig always serializes")
    }

    /// Fields set in `over` replace those of `self` (command-line flags over `--from FILE`).
    pub fn overlay(mut self, over: VmConfig) -> VmConfig {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            cpus,
            memory,
            disk,
            image,
            arch,
            accel,
            stop_timeout,
            user,
            ssh_key,
            app,
            autostart,
            health
        );
        if !over.ports.is_empty() {
            self.ports = over.ports;
        }
        if !over.after.is_empty() {
            self.after = over.after;
        }
        self
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = VmConfig::parse("cpus = 1\nmemroy = \"2G\"\n", "web.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("web.toml") && msg.contains("memroy") && msg.contains("line 2"),
            "{msg}"
        );
        assert_eq!(e.code(), crate::error::exit::USAGE);
    }

    #[test]
    fn malformed_toml_is_refused() {
        let e = VmConfig::parse("cpus = = 1", "x.toml").unwrap_err();
        assert!(e.to_string().contains("x.toml"), "{e}");
    }

    #[test]
    fn flags_override_file_values() {
        let file = VmConfig {
            cpus: Some(2),
            memory: Some("1G".into()),
            ports: vec!["80:80".into()],
            ..Default::default()
        };
        let flags = VmConfig {
            memory: Some("2G".into()),
            ..Default::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.cpus, Some(2));
        assert_eq!(merged.memory.as_deref(), Some("2G"));
        assert_eq!(merged.ports, vec!["80:80".to_string()]);
    }

    #[test]
    fn unknown_health_keys_are_refused_by_name() {
        let e = VmConfig::parse("[health]\nhttp = \"80/\"\nretry = 3\n", "web.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("retry") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = VmConfig {
            cpus: Some(1),
            memory: Some("2G".into()),
            ports: vec!["5080:8080".into()],
            autostart: Some(true),
            after: vec!["db".into()],
            health: Some(HealthConfig {
                http: Some("8080/healthz".into()),
                interval: Some("5s".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(VmConfig::parse(&c.to_toml(), "t").unwrap(), c);
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    /// Every documented example in vm-configs/ parses and validates.
    #[test]
    fn every_vm_config_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let cfg = VmConfig::load(&p).unwrap();
                let limits = crate::def::spec::Limits {
                    host_memory: u64::MAX,
                };
                crate::def::spec::validate(
                    &"example".parse().unwrap(),
                    &cfg,
                    limits,
                    &p.display().to_string(),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0, "no examples in {}", dir.display());
    }

    /// Every image recipe in images/ parses (built-in or not).
    #[test]
    fn every_image_recipe_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path().join("image.toml");
            if p.exists() {
                let text = std::fs::read_to_string(&p).unwrap();
                let r: crate::image::recipe::Recipe =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(
                    Some(r.name.as_str()),
                    p.parent().unwrap().file_name().and_then(|f| f.to_str())
                );
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
