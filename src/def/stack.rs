//! Stack files (`vmctl up`): a stack's name, its private networks and its VMs, each VM with the
//! keys of a VM definition; read, shape-checked and validated into a [`Stack`] whose VMs and
//! networks carry their names on the host (`STACK-VM`, `STACK-NET`, so two stacks never
//! collide) and whose `networks` and `after` name them so. Every problem at once, by field
//! (`vms.app.after[0]`), exit 2.
//!
//! ```toml
//! name = "shop"
//! [networks.backend]            # subnet = "10.89.7.0/24" to choose one
//! [vms.db]
//! networks = ["backend"]
//! [vms.app]
//! ports = ["5080:8080"]
//! networks = ["backend"]
//! after = ["db"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::addr::{NetName, Subnet};
use crate::def::config::{self, NetworkEntry, NetworkRef, VmConfig};
use crate::def::shape::{self, Found, Kind};
use crate::def::spec::{self, Limits};
use crate::error::{Error, Problems, Result};
use crate::types::VmName;

/// The stack file `up`, `down` and `ps` read when none is given.
pub const DEFAULT_FILE: &str = "vmctl-stack.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackFile {
    name: String,
    #[serde(default)]
    networks: BTreeMap<String, NetworkTable>,
    #[serde(default)]
    vms: BTreeMap<String, VmConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkTable {
    subnet: Option<String>,
}

/// A validated stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: NetName,
    pub file: PathBuf,
    pub networks: Vec<StackNetwork>,
    /// Sorted by their names in the file.
    pub vms: Vec<StackVm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    /// Its name in the file.
    pub short: String,
    pub name: NetName,
    pub subnet: Option<Subnet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StackVm {
    /// Its name in the file.
    pub short: String,
    pub name: VmName,
    /// Its definition as the home keeps it: networks and `after` by their names on the host,
    /// `stack` set.
    pub config: VmConfig,
}

impl StackVm {
    /// The stack's VMs this one starts after.
    pub fn after(&self) -> Vec<VmName> {
        self.config
            .after
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }
}

/// The tables of a stack file and their keys.
const TOP_KEYS: [(&str, Kind); 3] = [
    ("name", Kind::Str("\"shop\"")),
    ("networks", Kind::Table),
    ("vms", Kind::Table),
];
const NETWORK_KEYS: [(&str, Kind); 1] = [("subnet", Kind::Str("\"10.89.7.0/24\""))];

/// Read and validate the stack file at `path`.
pub fn load(path: &Path, limits: Limits) -> Result<Stack> {
    let source = path.display().to_string();
    let text = config::read_text(path).map_err(|e| match e {
        config::FileProblem::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Error::Usage(format!(
                "No stack file {source}; give one with -f FILE (a stack file names a stack, its networks and its VMs)"
            ))
        }
        config::FileProblem::Io(source_err) => Error::Io {
            context: format!("Cannot read {source}"),
            source: source_err,
        },
        config::FileProblem::Content(why) => Error::Usage(format!("{source} {why}")),
    })?;
    parse(&text, path, limits)
}

/// Validate the text of a stack file (`path` names it).
pub fn parse(text: &str, path: &Path, limits: Limits) -> Result<Stack> {
    let source = path.display().to_string();
    shape::document(text, "a stack file", |doc, found| top(text, doc, found))
        .into_result(&source)
        .map_err(stack_error)?;
    let file: StackFile = toml::from_str(text).map_err(|e| {
        Error::Usage(format!(
            "{source}: invalid stack file: {}",
            e.message().trim()
        ))
    })?;
    validate(file, path, limits)
}

/// "invalid VM definition" says "invalid stack file" for a stack file.
fn stack_error(e: Error) -> Error {
    match e {
        Error::Invalid {
            source_name,
            problems,
        } => Error::Usage(format!(
            "{source_name}: invalid stack file:\n  {}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        )),
        e => e,
    }
}

/// The top-level keys, each network's and each VM's.
fn top(text: &str, doc: &DeTable<'_>, found: &mut Found) {
    shape::table(text, doc, "", ("a stack file's", &TOP_KEYS), found);
    if !doc.iter().any(|(k, _)| k.get_ref().as_ref() == "name") {
        found.push((
            1,
            "name".into(),
            "a stack file needs a name (name = \"shop\")".into(),
        ));
    }
    for (key, keys) in [
        ("networks", ("a stack network's", &NETWORK_KEYS[..])),
        ("vms", shape::VM),
    ] {
        let Some((_, v)) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            continue;
        };
        let DeValue::Table(t) = v.get_ref() else {
            continue;
        };
        for (name, entry) in t.iter() {
            let line = shape::line_of(text, name.span().start);
            let field = format!("{key}.{}", name.get_ref());
            match entry.get_ref() {
                DeValue::Table(e) => shape::table(text, e, &format!("{field}."), keys, found),
                _ => found.push((line, field, shape::wrong("must be a table", entry, line))),
            }
        }
    }
}

fn validate(mut file: StackFile, path: &Path, limits: Limits) -> Result<Stack> {
    let source = path.display().to_string();
    let mut p = Problems::default();
    // Provisioning scripts named by file are read beside the stack file.
    let base = crate::sys::fsutil::folder_of(path);
    for (short, cfg) in file.vms.iter_mut() {
        let mut q = Problems::default();
        cfg.resolve_files(&base, &mut q);
        if let Err(Error::Invalid { problems, .. }) = q.into_result("") {
            for pr in problems {
                p.add(format!("vms.{short}.{}", pr.field), pr.message);
            }
        }
    }
    let name = p.check(
        "name",
        file.name
            .parse::<NetName>()
            .map_err(|e| e.replace("network name", "stack name")),
    );
    // With a bad name, the rest is still checked, as if the stack were called "stack".
    let prefix = name
        .as_ref()
        .map_or_else(|| "stack".to_string(), |n| n.to_string());
    let networks = networks(&prefix, &file.networks, &mut p);
    let mut vms = Vec::new();
    for (short, cfg) in &file.vms {
        if let Some(vm) = stack_vm(&prefix, short, cfg, &file, &networks, limits, &mut p) {
            vms.push(vm);
        }
    }
    if file.vms.is_empty() {
        p.add("vms", "a stack needs at least one VM ([vms.NAME])");
    }
    shared_ports(&vms, limits, &mut p);
    after_cycles(&vms, &mut p);
    p.into_result(&source).map_err(stack_error)?;
    Ok(Stack {
        name: name.expect("no problem, so the name parsed"),
        file: path.to_path_buf(),
        networks,
        vms,
    })
}

/// The stack's networks, named `STACK-NET`, with subnets that do not overlap.
fn networks(
    prefix: &str,
    tables: &BTreeMap<String, NetworkTable>,
    p: &mut Problems,
) -> Vec<StackNetwork> {
    let mut out: Vec<StackNetwork> = Vec::new();
    for (short, t) in tables {
        let field = format!("networks.{short}");
        if let Err(e) = short.parse::<NetName>() {
            p.add(&field, e);
            continue;
        }
        let Some(name) = p.check(&field, format!("{prefix}-{short}").parse::<NetName>()) else {
            continue;
        };
        let subnet = t
            .subnet
            .as_deref()
            .and_then(|s| p.check(&format!("{field}.subnet"), s.parse::<Subnet>()));
        if let Some(s) = subnet {
            if let Some(other) = out
                .iter()
                .find(|o| o.subnet.is_some_and(|os| os.overlaps(&s)))
            {
                p.add(
                    format!("{field}.subnet"),
                    format!("{s} overlaps networks.{}'s subnet", other.short),
                );
            }
        }
        out.push(StackNetwork {
            short: short.clone(),
            name,
            subnet,
        });
    }
    out
}

/// One VM: its name on the host, its networks and `after` by their names there, and its
/// definition validated as a VM's (problems prefixed `vms.SHORT.`).
fn stack_vm(
    prefix: &str,
    short: &str,
    cfg: &VmConfig,
    file: &StackFile,
    networks: &[StackNetwork],
    limits: Limits,
    p: &mut Problems,
) -> Option<StackVm> {
    let field = format!("vms.{short}");
    if let Err(e) = short.parse::<VmName>() {
        p.add(&field, e);
        return None;
    }
    let name = p.check(&field, format!("{prefix}-{short}").parse::<VmName>())?;
    let mut config = cfg.clone();
    if cfg.stack.is_some() {
        p.add(format!("{field}.stack"), "is set by vmctl up; leave it out");
    }
    config.stack = Some(prefix.to_string());
    config.networks = Vec::new();
    for (i, r) in cfg.networks.iter().enumerate() {
        match networks.iter().find(|n| n.short == r.name()) {
            Some(n) => config.networks.push(NetworkRef::Entry(NetworkEntry {
                name: n.name.to_string(),
                address: r.address().map(str::to_string),
            })),
            None => p.add(
                format!("{field}.networks[{i}]"),
                format!(
                    "unknown network {:?}; this stack's networks are {}",
                    r.name(),
                    known(file.networks.keys())
                ),
            ),
        }
    }
    config.after = Vec::new();
    for (i, a) in cfg.after.iter().enumerate() {
        if file.vms.contains_key(a) && a != short {
            config.after.push(format!("{prefix}-{a}"));
        } else {
            p.add(
                format!("{field}.after[{i}]"),
                format!(
                    "{a:?} is not another VM of this stack; its VMs are {}",
                    known(file.vms.keys())
                ),
            );
        }
    }
    if let Err(Error::Invalid { problems, .. }) = spec::validate(&name, &config, limits, "") {
        for pr in problems {
            p.add(format!("{field}.{}", pr.field), pr.message);
        }
    }
    Some(StackVm {
        short: short.to_string(),
        name,
        config,
    })
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// No two VMs of the stack forward one host port.
fn shared_ports(vms: &[StackVm], limits: Limits, p: &mut Problems) {
    let specs: Vec<_> = vms
        .iter()
        .filter_map(|v| Some((v, spec::validate(&v.name, &v.config, limits, "").ok()?)))
        .collect();
    for (i, (vm, s)) in specs.iter().enumerate() {
        for (j, f) in s.ports.iter().enumerate() {
            let earlier = specs[..i]
                .iter()
                .find(|(_, o)| o.ports.iter().any(|g| spec::ports_overlap(f, g)));
            if let Some((other, _)) = earlier {
                p.add(
                    format!("vms.{}.ports[{j}]", vm.short),
                    format!(
                        "host port {} is also forwarded by vms.{}",
                        f.host, other.short
                    ),
                );
            }
        }
    }
}

/// `after` must not go round: name each cycle once, as `a → b → a`.
fn after_cycles(vms: &[StackVm], p: &mut Problems) {
    let short = |n: &VmName| {
        vms.iter()
            .find(|v| &v.name == n)
            .map(|v| v.short.clone())
            .unwrap_or_else(|| n.to_string())
    };
    let mut reported: Vec<Vec<String>> = Vec::new();
    for start in vms {
        // Depth-first from `start` along `after`, keeping the path.
        let mut stack: Vec<(VmName, Vec<VmName>)> = vec![(start.name.clone(), vec![])];
        while let Some((n, path)) = stack.pop() {
            if path.contains(&n) {
                if n == start.name {
                    let mut cycle: Vec<String> = path.iter().map(&short).collect();
                    let mut key = cycle.clone();
                    key.sort();
                    if !reported.contains(&key) {
                        reported.push(key);
                        cycle.push(short(&n));
                        p.add(
                            format!("vms.{}.after", start.short),
                            format!("a cycle: {}", cycle.join(" → ")),
                        );
                    }
                }
                continue;
            }
            let Some(vm) = vms.iter().find(|v| v.name == n) else {
                continue;
            };
            let mut next = path.clone();
            next.push(n.clone());
            for a in vm.after() {
                stack.push((a, next.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        host_memory: 64 << 30,
    };

    fn parse_str(text: &str) -> Result<Stack> {
        parse(text, Path::new("stack.toml"), LIMITS)
    }

    #[test]
    fn names_are_prefixed_and_references_follow() {
        let s = parse_str(
            "name = \"shop\"\n[networks.backend]\nsubnet = \"10.89.7.0/24\"\n[vms.db]\nnetworks = [\"backend\"]\n[vms.app]\nports = [\"5080:8080\"]\nnetworks = [{ name = \"backend\", address = \"10.89.7.10\" }]\nafter = [\"db\"]\n",
        )
        .unwrap();
        assert_eq!(s.name.as_str(), "shop");
        assert_eq!(s.networks[0].name.as_str(), "shop-backend");
        let app = s.vms.iter().find(|v| v.short == "app").unwrap();
        assert_eq!(app.name.as_str(), "shop-app");
        assert_eq!(app.config.after, ["shop-db"]);
        assert_eq!(app.config.networks[0].name(), "shop-backend");
        assert_eq!(app.config.networks[0].address(), Some("10.89.7.10"));
        assert_eq!(app.config.stack.as_deref(), Some("shop"));
    }

    #[test]
    fn every_problem_is_named_by_field() {
        let e = parse_str(
            "name = \"a/b\"\nvolumes = 1\n[networks.n1]\nsubnet = \"10.89.0.0/16\"\n[networks.n2]\nsubnet = \"10.89.3.0/24\"\n[networks.n3]\nsubnet = \"nope\"\n[vms.x]\nnetworks = [\"nowhere\"]\nafter = [\"ghost\"]\nmemroy = \"1G\"\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "volumes: unknown key (line 2); a stack file's keys are name, networks, vms",
            "vms.x.memroy: unknown key",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = parse_str(
            "name = \"a/b\"\n[networks.n1]\nsubnet = \"10.89.0.0/16\"\n[networks.n2]\nsubnet = \"10.89.3.0/24\"\n[networks.n3]\nsubnet = \"nope\"\n[vms.x]\nnetworks = [\"nowhere\"]\nafter = [\"ghost\"]\nmemory = \"0\"\n",
        )
        .unwrap_err();
        assert_eq!(e.code(), crate::error::exit::USAGE);
        let e = e.to_string();
        for needle in [
            "name: stack name \"a/b\" contains '/'",
            "networks.n2.subnet: 10.89.3.0/24 overlaps networks.n1's subnet",
            "networks.n3.subnet: \"nope\" is not a subnet",
            "vms.x.networks[0]: unknown network \"nowhere\"; this stack's networks are n1, n2, n3",
            "vms.x.after[0]: \"ghost\" is not another VM of this stack; its VMs are x",
            "vms.x.memory:",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn after_cycles_and_shared_ports_are_refused() {
        let e = parse_str(
            "name = \"s\"\n[vms.a]\nafter = [\"c\"]\nports = [\"8080:80\"]\n[vms.b]\nafter = [\"a\"]\nports = [\"8080:80\"]\n[vms.c]\nafter = [\"b\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a cycle: a → c → b → a"), "{e}");
        assert_eq!(e.matches("a cycle").count(), 1, "{e}");
        assert!(
            e.contains("vms.b.ports[0]: host port 8080 is also forwarded by vms.a"),
            "{e}"
        );
    }

    #[test]
    fn a_stack_has_a_name_and_vms() {
        let e = parse_str("[vms.a]\n").unwrap_err().to_string();
        assert!(e.contains("name: a stack file needs a name"), "{e}");
        let e = parse_str("name = \"s\"\n").unwrap_err().to_string();
        assert!(e.contains("vms: a stack needs at least one VM"), "{e}");
        let e = parse_str("name = \"s\"\n[vms.a]\nstack = \"t\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vms.a.stack: is set by vmctl up"), "{e}");
    }
}
