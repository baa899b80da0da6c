//! The VM definition's wire format: what a user writes in TOML (`vm-configs/*.toml`, `create
//! --from`) and what vmctl stores as `vms/NAME/vm.toml`.
//!
//! Fields are kept as the user wrote them (strings for sizes and ports) so that `spec::validate`
//! can report every bad field at once, by name. Defaults live here and only here.
//!
//! Reading a file checks it before serde sees it: that it is a file of at most 1 MiB of UTF-8
//! text, then the TOML's syntax, its keys and the type of each value, every problem named by key
//! and line. No message quotes a line of the file, and only the values of the definition's own
//! keys are shown: a file that is no definition (a secret that a symlink points to) stays
//! unread in the error.

use std::collections::BTreeMap;
use std::path::Path;

use crate::def::shape::{self, line_of};
use crate::error::{Error, FieldError, Result};
use serde::{Deserialize, Serialize};

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
    /// The guest's web app: a built-in one by name ("gunicorn-hello", "nginx-gunicorn"; see
    /// `vmctl image list`), or your own WSGI app as an `[app]` table (`def::app`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::def::app::AppValue>,
    /// Environment variables of the app's service in the guest (`UPSTREAM`: a URL whose answer
    /// the demo app shows under its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_env: BTreeMap<String, String>,
    /// Start at boot: `vmctl systemd install` enables the VM's unit (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// Let the guest reach the host's own services (127.0.0.1 as 10.0.2.2) through QEMU's user
    /// networking; by default (false) passt networks the guest and the host's loopback is closed
    /// to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_access: Option<bool>,
    /// What a host shutdown (or `systemctl stop` of its unit) does to the guest: "poweroff"
    /// (the ACPI power button; the default) or "save" (its state saved, resumed at next start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_host_shutdown: Option<String>,
    /// VMs whose units this one's unit starts after and requires (`vmctl systemd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Private networks the VM joins (`vmctl network create`): a name, or a table with the
    /// name and the VM's address on it; vmctl gives one where none is set and keeps it here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRef>,
    /// Your provisioning, run once at first boot, in order, after vmctl's and before the apps:
    /// `{ mode = "system" | "user", script = "..." }` (or `file = "setup.sh"`, read at create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provision: Vec<crate::def::scripts::ProvisionStep>,
    /// Your cloud-config (YAML), merged into vmctl's user-data on imported cloud images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<String>,
    /// Host directories shared into the guest: "HOST[:GUEST][:ro]" (GUEST defaults to HOST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// The stack whose file defines this VM (written by `vmctl up`; `down --rm` removes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// A check of a guest service, for readiness and for restarting an unhealthy guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
}

/// One entry of `networks`: `"backend"` or `{ name = "backend", address = "10.89.0.10" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetworkRef {
    Name(String),
    Entry(NetworkEntry),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl NetworkRef {
    pub fn name(&self) -> &str {
        match self {
            NetworkRef::Name(n) => n,
            NetworkRef::Entry(e) => &e.name,
        }
    }
    pub fn address(&self) -> Option<&str> {
        match self {
            NetworkRef::Name(_) => None,
            NetworkRef::Entry(e) => e.address.as_deref(),
        }
    }
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
    /// The definition in `text`: its syntax, keys and value types checked first (every problem
    /// at once, by key and line), then read by serde.
    pub fn parse(text: &str, source_name: &str) -> Result<VmConfig> {
        shape::document(text, "a VM definition", |doc, found| {
            shape::table(text, doc, "", shape::VM, found)
        })
        .into_result(source_name)?;
        toml::from_str(text).map_err(|e| Error::Invalid {
            source_name: source_name.to_string(),
            problems: vec![FieldError {
                field: e
                    .span()
                    .map(|s| format!("line {}", line_of(text, s.start)))
                    .unwrap_or_else(|| "file".into()),
                message: e.message().trim().to_string(),
            }],
        })
    }

    /// A stored definition: a file that cannot be read is an I/O error, one that cannot be a
    /// definition (a directory, too large, not UTF-8) a usage error naming it.
    pub fn load(path: &Path) -> Result<VmConfig> {
        let text = read_text(path).map_err(|e| match e {
            FileProblem::Io(source) => Error::Io {
                context: format!("Cannot read {}", path.display()),
                source,
            },
            FileProblem::Content(why) => Error::Usage(format!("{} {why}", path.display())),
        })?;
        VmConfig::parse(&text, &path.display().to_string())
    }

    /// What the definition names beside its file, taken from `base` (the file's folder): each
    /// provisioning script's `file` read into its `script`, your app's folders made absolute.
    /// What cannot be read is a problem of its field.
    pub fn resolve_files(&mut self, base: &Path, p: &mut crate::error::Problems) {
        crate::def::scripts::embed(&mut self.provision, base, p);
        if let Some(crate::def::app::AppValue::Wsgi(t)) = &mut self.app {
            crate::def::app::resolve(t, base);
        }
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
            host_access,
            on_host_shutdown,
            health,
            stack
        );
        if !over.ports.is_empty() {
            self.ports = over.ports;
        }
        if !over.after.is_empty() {
            self.after = over.after;
        }
        if !over.networks.is_empty() {
            self.networks = over.networks;
        }
        if !over.app_env.is_empty() {
            self.app_env = over.app_env;
        }
        if !over.mounts.is_empty() {
            self.mounts = over.mounts;
        }
        if !over.provision.is_empty() {
            self.provision = over.provision;
        }
        if over.cloud_init.is_some() {
            self.cloud_init = over.cloud_init;
        }
        self
    }
}

/// The largest definition file read (a definition is a few lines).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

pub use crate::sys::fsutil::FileProblem;

/// The text of a definition file (symlinks followed): a regular file or a pipe, at most
/// [`MAX_FILE_BYTES`], UTF-8.
pub fn read_text(path: &Path) -> std::result::Result<String, FileProblem> {
    crate::sys::fsutil::read_text(
        path,
        MAX_FILE_BYTES,
        "a VM definition is a few lines of TOML",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::shape::{HEALTH_KEYS, Kind, NETWORK_KEYS, VM_KEYS as KEYS};

    fn shape(text: &str) -> crate::error::Problems {
        shape::document(text, "a VM definition", |doc, found| {
            shape::table(text, doc, "", shape::VM, found)
        })
    }

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

    /// The keys the shape check knows are the fields serde reads, in [health] too.
    #[test]
    fn the_shape_check_knows_every_field() {
        let full = VmConfig {
            cpus: Some(1),
            memory: Some("1G".into()),
            disk: Some("1G".into()),
            image: Some("tiny".into()),
            arch: Some("x86_64".into()),
            accel: Some("auto".into()),
            ports: vec!["1:1".into()],
            stop_timeout: Some(1),
            user: Some("a".into()),
            ssh_key: Some("/k".into()),
            app: Some(crate::def::app::AppValue::Builtin("x".into())),
            app_env: [("UPSTREAM".to_string(), "http://db/".to_string())].into(),
            autostart: Some(true),
            host_access: Some(true),
            on_host_shutdown: Some("save".into()),
            after: vec!["db".into()],
            networks: vec![
                NetworkRef::Name("a".into()),
                NetworkRef::Entry(NetworkEntry {
                    name: "b".into(),
                    address: Some("10.89.0.2".into()),
                }),
            ],
            mounts: vec!["/srv/app:/app:ro".into()],
            provision: vec![crate::def::scripts::ProvisionStep {
                mode: "user".into(),
                script: Some("echo hi".into()),
                file: None,
            }],
            cloud_init: Some("packages: [jq]\n".into()),
            stack: Some("demo".into()),
            health: Some(HealthConfig {
                http: Some("1/".into()),
                tcp: Some(1),
                interval: Some("1s".into()),
                retries: Some(1),
                start_period: Some("1s".into()),
            }),
        };
        let t: toml::Table = toml::from_str(&full.to_toml()).unwrap();
        let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            t.keys().map(String::as_str).collect::<Vec<_>>().len(),
            keys.len()
        );
        assert!(t.keys().all(|k| keys.contains(&k.as_str())), "{keys:?}");
        let h = t["health"].as_table().unwrap();
        let hkeys: Vec<&str> = HEALTH_KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(h.len(), hkeys.len());
        assert!(h.keys().all(|k| hkeys.contains(&k.as_str())), "{hkeys:?}");
        let n = t["networks"].as_array().unwrap()[1].as_table().unwrap();
        let nkeys: Vec<&str> = NETWORK_KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(n.len(), nkeys.len());
        assert!(n.keys().all(|k| nkeys.contains(&k.as_str())), "{nkeys:?}");
        assert!(shape(&full.to_toml()).is_empty());
        assert_eq!(VmConfig::parse(&full.to_toml(), "x").unwrap(), full);
        // The ranges shown for integers of the wrong type are those of the bounds.
        for (key, range, bound) in [
            ("cpus", KEYS[0].1, crate::def::bounds::cpus(0).unwrap_err()),
            (
                "stop_timeout",
                KEYS[7].1,
                crate::def::bounds::stop_timeout(0).unwrap_err(),
            ),
            (
                "retries",
                HEALTH_KEYS[3].1,
                crate::def::bounds::health_retries(0).unwrap_err(),
            ),
        ] {
            let Kind::Int(range) = range else {
                panic!("{key}")
            };
            assert_eq!(bound, format!("must be {range}; got 0"), "{key}");
        }
    }

    /// Wrong types and unknown keys are named with the line, all at once, in the file's order;
    /// the values of unknown keys are never shown.
    #[test]
    fn wrong_types_and_unknown_keys_are_named_by_key_and_line() {
        let text = "cpus = \"two\"\ntoken = \"hunter2\"\nports = [8080, \"1:2\"]\n[health]\ntcp = 1.5\nretry = 3\n";
        let e = VmConfig::parse(text, "web.toml").unwrap_err().to_string();
        assert_eq!(
            e,
            "web.toml: invalid VM definition:\n  \
             cpus: must be 1-255; got the string \"two\" (line 1)\n  \
             token: unknown key (line 2); a definition's keys are cpus, memory, disk, image, arch, accel, ports, stop_timeout, user, ssh_key, app, app_env, autostart, host_access, on_host_shutdown, after, networks, provision, cloud_init, mounts, stack, health\n  \
             ports[0]: must be a string such as \"8080:80\"; got the integer 8080 (line 3)\n  \
             health.tcp: must be a port 1-65535; got the float 1.5 (line 5)\n  \
             health.retry: unknown key (line 6); [health]'s keys are http, tcp, interval, retries, start_period"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    /// Syntax errors say what and where, in toml's words, without the line itself.
    #[test]
    fn syntax_errors_do_not_quote_the_file() {
        for text in [
            "root:$y$j9T$secret:19000:0:99999:7:::\n",
            "password = secret\n",
            "[client]\npassword=secret\n",
            "x = \"secret\n",
        ] {
            let e = VmConfig::parse(text, "f").unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
        let e = VmConfig::parse("cpus = 1\u{0}\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: has the control character U+0000"),
            "{e}"
        );
        let deep = format!("ports = {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(VmConfig::parse(&deep, "f").is_err());
        let long = format!("memory = {}\n", "9".repeat(1000));
        let e = VmConfig::parse(&long, "f").unwrap_err().to_string();
        assert!(e.contains("got the integer 9999") && e.len() < 300, "{e}");
        assert_eq!(VmConfig::parse("", "f").unwrap(), VmConfig::default());
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

/// The definition as vmctl reads it: generated TOML documents (fields near their syntax, wrong
/// types, unknown keys, broken lines) and arbitrary text, through `VmConfig::parse` and
/// `spec::validate`. A document is a definition or problems by field, never a panic; a valid one
/// is stored (`to_config`, `to_toml`) as text that reads back to the same spec.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::def::spec::{Limits, validate};
    use crate::types::tests::proptests::{any_text, config, number, one_of, or_any, text};
    use proptest::prelude::*;

    /// `s` as a TOML basic string.
    fn toml_str(s: &str) -> String {
        toml::Value::String(s.to_string()).to_string()
    }

    /// `key = value` two times in five, the value valid nine times in ten, else a bad one: near
    /// the syntax, of another TOML type, or broken.
    fn field(
        key: &'static str,
        good: BoxedStrategy<String>,
        bad: BoxedStrategy<String>,
    ) -> BoxedStrategy<String> {
        field_p(0.4, key, good, bad)
    }

    /// `field`, present with probability `p`.
    fn field_p(
        p: f64,
        key: &'static str,
        good: BoxedStrategy<String>,
        bad: BoxedStrategy<String>,
    ) -> BoxedStrategy<String> {
        let noise = prop_oneof![
            2 => bad,
            1 => any_text(12).prop_map(|s| toml_str(&s)),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => one_of(&["true", "1.5", "[]", "{}", "[\"a\", 1]", "\"open", "'lit'", "0x10", "nan"]),
        ];
        let v = prop_oneof![9 => good, 1 => noise];
        prop::option::weighted(p, v.prop_map(move |v| format!("{key} = {v}\n")))
            .prop_map(Option::unwrap_or_default)
            .boxed()
    }

    /// TOML strings from `s`.
    fn strs(s: BoxedStrategy<String>) -> BoxedStrategy<String> {
        s.prop_map(|s| toml_str(&s)).boxed()
    }

    fn int(r: std::ops::RangeInclusive<i64>) -> BoxedStrategy<String> {
        r.prop_map(|n| n.to_string()).boxed()
    }

    fn list(items: BoxedStrategy<Vec<String>>) -> BoxedStrategy<String> {
        items
            .prop_map(|v| {
                let v: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
                format!("[{}]", v.join(", "))
            })
            .boxed()
    }

    fn num_unit(n: std::ops::Range<u32>, units: &[&'static str]) -> BoxedStrategy<String> {
        (n, one_of(units))
            .prop_map(|(n, u)| format!("{n}{u}"))
            .boxed()
    }

    fn noisy(units: &[&'static str]) -> BoxedStrategy<String> {
        strs(
            (number(), one_of(units))
                .prop_map(|(n, u)| format!("{n}{u}"))
                .boxed(),
        )
    }

    fn forward() -> BoxedStrategy<String> {
        (
            one_of(&["", "", "", "0.0.0.0:", "127.0.0.2:"]),
            1u32..65536,
            prop_oneof![4 => one_of(&["22", "22", "8080"]), 1 => (1u32..65536).prop_map(|n| n.to_string())],
            one_of(&["", "", "", "/udp", "/tcp"]),
        )
            .prop_map(|(a, h, g, p)| format!("{a}{h}:{g}{p}"))
            .boxed()
    }

    fn bad_forward() -> BoxedStrategy<String> {
        (
            one_of(&["", "x:", "1.2.3:"]),
            0u32..70000,
            0u32..70000,
            one_of(&["", "/sctp"]),
        )
            .prop_map(|(a, h, g, p)| format!("{a}{h}:{g}{p}"))
            .boxed()
    }

    fn http_target(ports: &[&'static str]) -> BoxedStrategy<String> {
        (one_of(ports), one_of(&["", "/", "/healthz", "/a?b=1"]))
            .prop_map(|(p, path)| format!("{p}{path}"))
            .boxed()
    }

    /// `[health]`: one target nearly always, mostly on guest port `port`.
    fn health(port: &'static str) -> BoxedStrategy<String> {
        let target = prop_oneof![
            4 => field_p(0.95, "http", strs(http_target(&[port, port, "80"])), strs(or_any(
                (prop_oneof![number(), (0u32..70000).prop_map(|n| n.to_string())], text("/az?= %é", 8))
                    .prop_map(|(p, path)| format!("{p}{path}"))
                    .boxed(),
            ))),
            4 => field_p(0.95, "tcp", one_of(&[port, port, "80"]), int(-1..=70000)),
            1 => Just(String::new()),
        ];
        (
            target,
            prop::option::weighted(
                0.1,
                one_of(&["tcp = 22\n", "http = \"80\"\n", "retry = 3\n"]),
            ),
            field(
                "interval",
                strs(num_unit(1..3600, &["s"])),
                noisy(&["", "ms", "m", "h", "d"]),
            ),
            field("retries", int(1..=100), int(-1..=200)),
            field(
                "start_period",
                strs(num_unit(0..60, &["s", "m"])),
                noisy(&["", "h", "min"]),
            ),
        )
            .prop_map(|(t, extra, i, r, sp)| {
                format!("[health]\n{t}{}{i}{r}{sp}", extra.unwrap_or_default())
            })
            .boxed()
    }

    /// Each field at most once, valid or not; now and then a line that is not one (an unknown
    /// key, a repeated one, any text); a `[health]` table one time in three.
    fn document() -> BoxedStrategy<String> {
        prop::sample::select(vec!["22", "8080"])
            .prop_flat_map(document_on)
            .boxed()
    }

    /// A document whose ports and health check mostly name guest port `port`.
    fn document_on(port: &'static str) -> BoxedStrategy<String> {
        let shape = (
            field("cpus", int(1..=255), int(-1..=300)),
            field(
                "memory",
                strs(num_unit(16..4096, &["M", "m", "MiB"])),
                noisy(&["", "K", "G", "X"]),
            ),
            field(
                "disk",
                strs(num_unit(1..200, &["G", "g", "T"])),
                noisy(&["", "M", "B"]),
            ),
            field(
                "image",
                strs(one_of(&["tiny", "debian-12"])),
                strs(one_of(&["", "a/b", "..", ".x"])),
            ),
            field(
                "arch",
                strs(one_of(&["x86_64", "aarch64", "amd64", "arm64"])),
                strs(one_of(&["sparc", "X86_64"])),
            ),
            field(
                "accel",
                strs(one_of(&["auto", "kvm", "tcg"])),
                strs(one_of(&["KVM", "hvf"])),
            ),
        );
        let rest = (
            field_p(
                0.85,
                "ports",
                list(
                    (
                        prop::collection::vec(forward(), 0..3),
                        prop::option::weighted(0.8, 1u32..65536),
                    )
                        .prop_map(move |(mut v, h)| {
                            v.extend(h.map(|h| format!("{h}:{port}")));
                            v
                        })
                        .boxed(),
                ),
                list(prop::collection::vec(bad_forward(), 1..3).boxed()),
            ),
            field("stop_timeout", int(1..=3600), int(-1..=4000)),
            field(
                "user",
                strs(one_of(&["alice", "_x", "a-1"])),
                strs(one_of(&["root", "Bob", ""])),
            ),
            field(
                "ssh_key",
                strs(one_of(&["/k.pub", "keys/web.pub"])),
                strs(one_of(&[""])),
            ),
            field(
                "app",
                strs(one_of(&["gunicorn-hello", "nginx-gunicorn"])),
                strs(one_of(&["wordpress"])),
            ),
            field(
                "autostart",
                one_of(&["true", "false"]),
                one_of(&["1", "\"yes\""]),
            ),
            field(
                "host_access",
                one_of(&["true", "false"]),
                one_of(&["0", "\"no\""]),
            ),
            field(
                "after",
                list(
                    prop::sample::subsequence(
                        vec!["db".to_string(), "cache".into(), "api".into()],
                        0..3,
                    )
                    .boxed(),
                ),
                list(prop::collection::vec(or_any(one_of(&["web", "db", "a/b"])), 1..3).boxed()),
            ),
        );
        let extra = prop::option::weighted(
            0.1,
            prop_oneof![
                one_of(&["memroy = \"1G\"\n", "cpus = 2\n", "[x]\n"]),
                any_text(30)
            ],
        );
        (
            shape,
            rest,
            extra,
            prop::option::weighted(0.35, health(port)),
        )
            .prop_map(
                |((a, b, c, d, e, f), (g, h, i, j, k, l, m, n), extra, health)| {
                    let mut doc = [a, b, c, d, e, f, g, h, i, j, k, l, m, n].concat();
                    doc.push_str(&extra.unwrap_or_default());
                    doc.push_str(&health.unwrap_or_default());
                    doc
                },
            )
            .boxed()
    }

    const KNOWN: [&str; 13] = [
        "cpus",
        "memory",
        "disk",
        "image",
        "arch",
        "accel",
        "ports[",
        "stop_timeout",
        "user",
        "ssh_key",
        "app",
        "after[",
        "health",
    ];

    /// Read `text` as vmctl does; on success, check the stored forms read back the same.
    fn check(text: &str, vm: &str, host_memory: u64) -> std::result::Result<(), TestCaseError> {
        let cfg = match VmConfig::parse(text, "t.toml") {
            Ok(cfg) => cfg,
            Err(Error::Invalid { problems, .. }) => {
                // Every problem at once: each names the file, a line, or the key it is about.
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    let f = &p.field;
                    let known = KNOWN
                        .iter()
                        .chain(&["autostart", "host_access"])
                        .any(|k| f.starts_with(k) || f == k.trim_end_matches('['));
                    let unknown = p.message.starts_with("unknown key");
                    prop_assert!(
                        f == "file" || f.starts_with("line ") || known || unknown,
                        "{}",
                        p
                    );
                    if let Some(n) = f.strip_prefix("line ") {
                        let n: usize = n.parse().unwrap();
                        prop_assert!(
                            n >= 1 && n <= text.lines().count() + 1,
                            "{} of {:?}",
                            f,
                            text
                        );
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("not Invalid: {e}"))),
        };
        prop_assert_eq!(
            VmConfig::parse(&cfg.to_toml(), "again").unwrap(),
            cfg.clone()
        );
        let name = vm.parse().unwrap();
        let limits = Limits { host_memory };
        match validate(&name, &cfg, limits, "t.toml") {
            Ok(spec) => {
                let stored = VmConfig::parse(&spec.to_config().to_toml(), "vm.toml").unwrap();
                prop_assert_eq!(validate(&name, &stored, limits, "vm.toml").unwrap(), spec);
            }
            Err(Error::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    prop_assert!(KNOWN.iter().any(|k| p.field.starts_with(k)), "{}", p);
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("not Invalid: {e}"))),
        }
        Ok(())
    }

    fn limits() -> BoxedStrategy<u64> {
        prop_oneof![Just(u64::MAX), Just(8 << 30), 0u64..(1 << 34)].boxed()
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn generated_definitions(doc in document(), vm in one_of(&["web", "db"]), mem in limits()) {
            check(&doc, &vm, mem)?;
        }

        #[test]
        fn arbitrary_text(text in prop_oneof![any_text(80), text("a=\"'[]{}.\n#\\ 1", 60)]) {
            check(&text, "web", u64::MAX)?;
        }

        #[test]
        fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            check(&String::from_utf8_lossy(&bytes), "web", u64::MAX)?;
        }
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    /// Every documented example in vm-configs/ parses and validates: stack files
    /// (`stack-*.toml`) as stacks, the others as VM definitions.
    #[test]
    fn every_vm_config_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-configs");
        let (mut n, mut stacks) = (0, 0);
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let is_stack = p
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("stack-"));
            if p.extension().is_some_and(|x| x == "toml") && is_stack {
                let limits = crate::def::spec::Limits {
                    host_memory: u64::MAX,
                };
                crate::def::stack::load(&p, limits).unwrap_or_else(|e| panic!("{e}"));
                stacks += 1;
            } else if p.extension().is_some_and(|x| x == "toml") {
                let mut cfg = VmConfig::load(&p).unwrap();
                let mut problems = crate::error::Problems::default();
                cfg.resolve_files(&crate::sys::fsutil::folder_of(&p), &mut problems);
                problems.into_result("example").unwrap();
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
        assert!(stacks >= 2, "{stacks} stack examples in {}", dir.display());
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
