//! VMs as systemd services: the text of their units. [`render`] is a pure function from a VM's
//! spec and a few paths to the text of its unit, `vmctl-NAME.service`, filled in from the
//! templates in `systemd/` (embedded in the binary; `@VAR@` placeholders, documented in
//! systemd/README.md): system scope (`/etc/systemd/system`, `WantedBy=multi-user.target`) or
//! user scope (`~/.config/systemd/user`, `WantedBy=default.target`). The unit runs
//! `vmctl run NAME`, which tells systemd when the guest is up and stops it gracefully on
//! SIGTERM. [`unit_home`] and [`unit_source`] read back what a unit's text says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::def::spec::VmSpec;
use crate::error::{Error, Result};
use crate::types::{Scope, VmName};

const SYSTEM_TEMPLATE: &str = include_str!("../../systemd/vmctl-system.service.in");
const USER_TEMPLATE: &str = include_str!("../../systemd/vmctl-user.service.in");

/// The unit that runs a VM.
pub fn unit_name(vm: &VmName) -> String {
    format!("vmctl-{vm}.service")
}

/// The unit that runs a network's switch.
pub fn network_unit_name(net: &crate::addr::NetName) -> String {
    format!("vmctl-net-{net}.service")
}

/// The target of a stack.
pub fn stack_target_name(stack: &crate::addr::NetName) -> String {
    format!("vmctl-stack-{stack}.target")
}

/// What made a unit, which its header comment and a few lines say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// `vmctl systemd generate|install`: written once, from the definition in the home.
    Installed,
    /// vmctl-generator, from the home's `vms/NAME/vm.toml` (`SourcePath=`).
    Generated(&'a Path),
    /// vmctl-generator, from a drop-in definition (`/etc/vmctl/vms/NAME.toml`): the unit's
    /// `ExecStartPre=` creates the VM from it, or brings the VM's definition up to date.
    DropIn(&'a Path),
}

/// Everything a unit is rendered from.
#[derive(Debug, Clone)]
pub struct UnitContext<'a> {
    pub spec: &'a VmSpec,
    pub origin: Origin<'a>,
    pub scope: Scope,
    /// Absolute path of the vmctl binary the unit runs.
    pub vmctl: &'a Path,
    /// The vmctl home holding the VM.
    pub home: &'a Path,
    /// The cache directory `vmctl run` uses (the KVM verdict).
    pub cache: &'a Path,
}

/// Base for `TimeoutStartSec=`: a Debian guest's boot under TCG plus readiness, with room.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Time after the graceful stop's own bound before systemd kills what is left.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// `TimeoutStartSec=`: [`START_TIMEOUT`], or longer when the health check's own limit for a
/// guest that never passes is longer (so vmctl, which says why, gives up first).
pub fn start_timeout(spec: &VmSpec) -> Duration {
    let health = spec.health.as_ref().map(|h| {
        crate::guest::health::give_up_after(h)
            + crate::guest::health::probe_timeout(h)
            + Duration::from_secs(60)
    });
    health.map_or(START_TIMEOUT, |h| h.max(START_TIMEOUT))
}

/// `TimeoutStopSec=`: the whole graceful stop (ACPI within stop_timeout, then quit, then kill)
/// plus a margin, so systemd's SIGKILL never cuts it short.
pub fn stop_timeout(spec: &VmSpec) -> Duration {
    crate::qemu::shutdown::bound(spec.stop_timeout) + STOP_MARGIN
}

/// The unit's text. Fails only for paths a unit file cannot carry verbatim.
pub fn render(cx: &UnitContext) -> Result<String> {
    let vmctl = unit_path(cx.vmctl, "The vmctl binary")?;
    let home = unit_path(cx.home, "The vmctl home")?;
    let cache = unit_path(cx.cache, "The vmctl cache directory")?;
    let unit = unit_name(&cx.spec.name);
    let name = cx.spec.name.as_str();
    let (origin, source_path, exec_start_pre) = origin_lines(cx, &vmctl)?;
    let dependencies = dependencies(cx);
    let (protect_home, private_tmp) = hardening(cx);
    let template = match cx.scope {
        Scope::System => SYSTEM_TEMPLATE,
        Scope::User => USER_TEMPLATE,
    };
    Ok(substitute(
        template,
        &[
            ("UNIT", &unit),
            ("NAME", name),
            ("ORIGIN", &origin),
            ("SOURCE_PATH", &source_path),
            ("EXEC_START_PRE", &exec_start_pre),
            ("VMCTL", &vmctl),
            ("HOME", &home),
            ("CACHE", &cache),
            ("DEPENDENCIES", &dependencies),
            ("START_TIMEOUT", &seconds(start_timeout(cx.spec))),
            ("STOP_TIMEOUT", &seconds(stop_timeout(cx.spec))),
            ("PROTECT_HOME", protect_home),
            ("PRIVATE_TMP", private_tmp),
            ("SHARES", &shares(cx)?),
        ],
    ))
}

/// `After=` and `Requires=` the units of the VMs it starts after and, for an installed unit,
/// of its networks' switches; `PartOf=` its stack's target.
fn dependencies(cx: &UnitContext) -> String {
    let mut deps: Vec<String> = cx.spec.after.iter().map(unit_name).collect();
    if cx.origin == Origin::Installed {
        deps.extend(
            cx.spec
                .networks
                .iter()
                .map(|a| network_unit_name(&a.network)),
        );
    }
    let mut lines = Vec::new();
    if !deps.is_empty() {
        let list = deps.join(" ");
        lines.push(format!("After={list}\nRequires={list}"));
    }
    if let (Origin::Installed, Some(stack)) = (cx.origin, &cx.spec.stack) {
        lines.push(format!("PartOf={}", stack_target_name(stack)));
    }
    lines.join("\n")
}

/// What says where the unit came from: its header comment, its `SourcePath=` and its
/// `ExecStartPre=` (each empty when the unit has none).
fn origin_lines(cx: &UnitContext, vmctl: &str) -> Result<(String, String, String)> {
    let name = cx.spec.name.as_str();
    Ok(match cx.origin {
        Origin::Installed => (
            format!(
                "# `vmctl systemd generate{} {name}` prints it again; change the VM's definition and\n# reinstall rather than editing this file.",
                if cx.scope == Scope::User {
                    " --user"
                } else {
                    ""
                }
            ),
            String::new(),
            String::new(),
        ),
        Origin::Generated(def) | Origin::DropIn(def) => {
            let def = unit_path(def, "The VM definition")?;
            let drop_in = matches!(cx.origin, Origin::DropIn(_));
            (
                if drop_in {
                    format!(
                        "# Made by vmctl-generator at boot and daemon-reload from {def}, which defines\n# the VM: each start creates it from that file, or updates its definition; edit that file."
                    )
                } else {
                    format!(
                        "# Made by vmctl-generator at boot and daemon-reload from {def}\n# (autostart = true); edit that file, not this one."
                    )
                },
                format!("SourcePath={def}"),
                if drop_in {
                    format!("ExecStartPre={vmctl} create {name} --from {def} --update")
                } else {
                    String::new()
                },
            )
        }
    })
}

/// `ProtectHome=` and `PrivateTmp=`: as strict as the paths the unit's processes use allow.
fn hardening(cx: &UnitContext) -> (&'static str, &'static str) {
    // What the unit's processes read or write: a drop-in's `create` also reads the drop-in
    // and the public key it names.
    let mut used = vec![cx.home, cx.cache];
    if let Origin::DropIn(def) = cx.origin {
        used.push(def);
        used.extend(cx.spec.ssh_key.as_deref());
    }
    used.extend(cx.spec.mounts.iter().map(|m| m.host.as_path()));
    hardening_for(&used)
}

/// For a VM with shared folders: the writable ones are writable to the unit (their daemons
/// write there), and the daemons may make the namespaces they sandbox themselves in.
fn shares(cx: &UnitContext) -> Result<String> {
    if cx.spec.mounts.is_empty() {
        return Ok(String::new());
    }
    let mut rw = Vec::new();
    for m in cx.spec.mounts.iter().filter(|m| !m.ro) {
        rw.push(unit_path(&m.host, "A shared folder")?);
    }
    let mut lines = vec![
        "# Shared folders: their daemons (virtiofsd, as each folder's owner) write the writable\n# ones and sandbox themselves in user, mount, PID and network namespaces.".to_string(),
    ];
    if !rw.is_empty() {
        lines.push(format!("ReadWritePaths={}", rw.join(" ")));
    }
    lines.push("RestrictNamespaces=user mnt pid net".into());
    Ok(lines.join("\n"))
}

/// `ProtectHome=` and `PrivateTmp=` for a unit whose processes use the paths `used`.
pub(crate) fn hardening_for(used: &[&Path]) -> (&'static str, &'static str) {
    let under = |dirs: &[&str]| used.iter().any(|p| dirs.iter().any(|d| p.starts_with(d)));
    // A home below /home, /root or /run/user must stay visible (read-only, with the home itself
    // writable); one below /tmp would vanish behind a private /tmp.
    let protect_home = if under(&["/home", "/root", "/run/user"]) {
        "read-only"
    } else {
        "yes"
    };
    let private_tmp = if under(&["/tmp", "/var/tmp"]) {
        "no"
    } else {
        "yes"
    };
    (protect_home, private_tmp)
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Replace each `@KEY@` in one pass over the template: a value is copied as it is and never
/// scanned again, so a value holding `@KEY@` (a home path may) stays that text. A line that held
/// only placeholders and became empty is dropped.
pub(crate) fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        let mut l = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(at) = rest.find('@') {
            l.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let value = after.find('@').and_then(|end| {
                let key = &after[..end];
                vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v, end))
            });
            match value {
                Some((v, end)) => {
                    l.push_str(v);
                    rest = &after[end + 1..];
                }
                None => {
                    // Not a placeholder: keep the `@`, and let the next one start another.
                    l.push('@');
                    rest = after;
                }
            }
        }
        l.push_str(rest);
        if l.is_empty() && !line.is_empty() {
            continue;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// A path as a unit file carries it: absolute, and free of what systemd would interpret
/// (whitespace and quotes split or quote words, `\` escapes, `%` specifiers, `$` variables).
/// `@` is allowed: systemd reads it only as the first character of a command (never a path's),
/// [`substitute`] never reads a value as a placeholder, and real homes have it
/// (`/home/alice@example.com` under SSSD).
pub(crate) fn unit_path(p: &Path, what: &str) -> Result<String> {
    let s = p.to_str().ok_or_else(|| {
        Error::Usage(format!(
            "{what} {} is not UTF-8; a systemd unit cannot name it",
            p.display()
        ))
    })?;
    if !p.is_absolute() {
        return Err(Error::Usage(format!(
            "{what} {s:?} is not an absolute path; a systemd unit needs one"
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'\\%$".contains(*c))
    {
        return Err(Error::Usage(format!(
            "{what} {s:?} contains {c:?}, which a systemd unit would interpret; use a path without whitespace, quotes, '\\', '%' or '$'"
        )));
    }
    Ok(s.to_string())
}

/// The vmctl home a unit file runs its VM from (its `Environment=VMCTL_HOME=` line).
pub fn unit_home(unit_text: &str) -> Option<PathBuf> {
    unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Environment=VMCTL_HOME="))
        .map(PathBuf::from)
}

/// The definition a generated unit was made from (its `SourcePath=` line).
pub fn unit_source(unit_text: &str) -> Option<PathBuf> {
    unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("SourcePath="))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, toml: &str) -> VmSpec {
        let cfg = crate::def::config::VmConfig::parse(toml, "t").unwrap();
        let limits = crate::def::spec::Limits {
            host_memory: u64::MAX,
        };
        crate::def::spec::validate(&name.parse().unwrap(), &cfg, limits, "t").unwrap()
    }

    fn render_for(spec: &VmSpec, scope: Scope, home: &str) -> String {
        render(&UnitContext {
            spec,
            origin: Origin::Installed,
            scope,
            vmctl: Path::new("/usr/local/bin/vmctl"),
            home: Path::new(home),
            cache: Path::new("/var/cache/vmctl"),
        })
        .unwrap()
    }

    use crate::golden::check as golden;

    const WEB: &str = "ports = [\"5022:22\", \"5080:8080\"]\nstop_timeout = 60\n";

    #[test]
    fn system_unit() {
        let s = spec("web", WEB);
        golden(
            "vmctl-web-system.service",
            &render_for(&s, Scope::System, "/var/lib/vmctl"),
        );
    }

    #[test]
    fn user_unit() {
        let s = spec("web", WEB);
        golden(
            "vmctl-web-user.service",
            &render_for(&s, Scope::User, "/home/alice/.local/share/vmctl"),
        );
    }

    #[test]
    fn unit_with_dependencies_and_a_health_check() {
        let s = spec(
            "api",
            "ports = [\"5080:8080\"]\nstop_timeout = 120\nafter = [\"db\", \"cache\"]\n[health]\nhttp = \"8080/healthz\"\ninterval = \"30s\"\nretries = 5\nstart_period = \"10m\"\n",
        );
        golden(
            "vmctl-api-after.service",
            &render_for(&s, Scope::System, "/var/lib/vmctl"),
        );
    }

    #[test]
    fn every_placeholder_is_filled_and_empty_lines_are_dropped() {
        let s = spec("web", WEB);
        for scope in [Scope::System, Scope::User] {
            let u = render_for(&s, scope, "/var/lib/vmctl");
            // (`@` is left only in system-call group names such as @system-service.)
            let placeholder = u
                .lines()
                .filter(|l| !l.starts_with("SystemCallFilter="))
                .find(|l| l.contains('@'));
            assert_eq!(placeholder, None, "{u}");
            assert!(!u.contains("Requires="), "{u}");
            assert!(u.contains("\nDescription=vmctl VM web\n"), "{u}");
        }
    }

    #[test]
    fn timeouts_follow_the_definition() {
        let s = spec("web", "stop_timeout = 60\n");
        assert_eq!(stop_timeout(&s), Duration::from_secs(60 + 10 + 5));
        assert_eq!(start_timeout(&s), START_TIMEOUT);
        let s = spec(
            "web",
            "ports = [\"80:80\"]\n[health]\ntcp = 80\ninterval = \"1m\"\nretries = 3\nstart_period = \"10m\"\n",
        );
        // 10 min + 3 × 1 min + the 5 s probe timeout + 60 s.
        assert_eq!(start_timeout(&s), Duration::from_secs(600 + 180 + 5 + 60));
    }

    #[test]
    fn homes_under_home_or_tmp_stay_reachable() {
        let s = spec("web", WEB);
        let u = render_for(&s, Scope::System, "/root/vmctl");
        assert!(u.contains("\nProtectHome=read-only\n"), "{u}");
        assert!(u.contains("\nPrivateTmp=yes\n"), "{u}");
        let u = render_for(&s, Scope::System, "/tmp/vmctl-t123");
        assert!(u.contains("\nProtectHome=yes\n"), "{u}");
        assert!(u.contains("\nPrivateTmp=no\n"), "{u}");
        assert!(
            u.contains("\nReadWritePaths=/tmp/vmctl-t123 -/var/cache/vmctl\n"),
            "{u}"
        );
    }

    #[test]
    fn paths_a_unit_cannot_carry_are_refused() {
        let s = spec("web", WEB);
        for (home, needle) in [
            ("/srv/my vms", "contains ' '"),
            ("/srv/100%", "contains '%'"),
            ("/srv/$HOME", "contains '$'"),
            ("relative", "not an absolute path"),
        ] {
            let e = render(&UnitContext {
                spec: &s,
                origin: Origin::Installed,
                scope: Scope::System,
                vmctl: Path::new("/usr/bin/vmctl"),
                home: Path::new(home),
                cache: Path::new("/var/cache/vmctl"),
            })
            .unwrap_err();
            assert_eq!(e.code(), crate::error::exit::USAGE);
            let msg = e.to_string();
            assert!(
                msg.contains("The vmctl home") && msg.contains(needle),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_unit_names_its_home() {
        let s = spec("web", WEB);
        let u = render_for(&s, Scope::User, "/srv/vmctl");
        assert_eq!(unit_home(&u), Some(PathBuf::from("/srv/vmctl")));
        assert_eq!(unit_home("[Service]\nExecStart=/bin/true\n"), None);
    }

    #[test]
    fn placeholders_in_a_value_stay_text() {
        let s = spec("api", "ports = [\"5080:8080\"]\nafter = [\"db\"]\n");
        let home = "/srv/@DEPENDENCIES@/@EXEC_START_PRE@/alice@example.com@HOME@";
        let u = render(&UnitContext {
            spec: &s,
            origin: Origin::Generated(Path::new(
                "/srv/@DEPENDENCIES@/@EXEC_START_PRE@/alice@example.com@HOME@/vms/api/vm.toml",
            )),
            scope: Scope::System,
            vmctl: Path::new("/usr/local/bin/vmctl"),
            home: Path::new(home),
            cache: Path::new("/var/cache/vmctl"),
        })
        .unwrap();
        assert_eq!(
            u.lines().filter(|l| l.starts_with("Requires=")).count(),
            1,
            "{u}"
        );
        assert!(
            u.contains(&format!("\nEnvironment=VMCTL_HOME={home}\n")),
            "{u}"
        );
        assert!(
            u.contains(&format!("\nReadWritePaths={home} -/var/cache/vmctl\n")),
            "{u}"
        );
        assert!(
            u.contains(&format!("\nSourcePath={home}/vms/api/vm.toml\n")),
            "{u}"
        );
        assert!(!u.contains("ExecStartPre="), "{u}");
        assert_eq!(unit_home(&u), Some(PathBuf::from(home)));
        assert_eq!(
            substitute("a@X@b@@c@Y@ @X\n@Y@\n", &[("X", "@Y@"), ("Y", "")]),
            "a@Y@b@@c @X\n"
        );
    }
}
