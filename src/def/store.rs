//! The store of VM definitions in the home: which VMs exist, loading one (validated against
//! this host), and which definition forwards a host port. Lower layers ask here, not the
//! commands.

use crate::def::config::VmConfig;
use crate::def::spec::{self, Limits, VmSpec};
use crate::error::Result;
use crate::paths::Home;
use crate::types::{Arch, PortForward, VmName};

pub fn limits() -> Limits {
    Limits {
        host_memory: match crate::host::facts::memory().0 {
            0 => u64::MAX, // unknown: let QEMU be the judge
            n => n,
        },
    }
}

/// Load and validate a stored definition.
pub fn load(home: &Home, name: &VmName) -> Result<VmSpec> {
    let def = home.defined(name)?.definition();
    let cfg = VmConfig::load(&def)?;
    spec::validate(name, &cfg, limits(), &def.display().to_string())
}

/// Every stored VM name, sorted.
pub fn names(home: &Home) -> Vec<VmName> {
    let mut out: Vec<VmName> = std::fs::read_dir(home.vms_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|n| home.vm(n).definition().exists())
        .collect();
    out.sort();
    out
}

/// Which other VM's definition forwards this host port, if any.
pub fn port_owner(home: &Home, me: &VmName, f: &PortForward) -> Option<(VmName, PortForward)> {
    for n in names(home) {
        if &n == me {
            continue;
        }
        let Ok(cfg) = VmConfig::load(&home.vm(&n).definition()) else {
            continue;
        };
        for p in cfg
            .ports
            .iter()
            .filter_map(|p| p.parse::<PortForward>().ok())
        {
            if spec::ports_overlap(&p, f) {
                return Some((n, p));
            }
        }
    }
    None
}

/// Names of the VMs in this home whose disks are overlays on image `name` for `arch`.
pub fn vms_using(home: &Home, name: &str, arch: Arch) -> Vec<String> {
    names(home)
        .into_iter()
        .filter(|n| {
            load(home, n)
                .map(|s| s.image == name && s.arch == arch)
                .unwrap_or(false)
        })
        .map(|n| n.to_string())
        .collect()
}
