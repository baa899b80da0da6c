//! `vmctl cp [-r] SRC... DST`: files between the host and a VM, over the VM's SSH (its user,
//! forwarded port, key and pinned host key) with OpenSSH's scp, like `limactl copy` and
//! `multipass transfer`. `VM:PATH` names a path in VM `VM` (a VM of this home); anything else
//! is a path here. One side is the VM, the other this host; every source is on the same side.

use crate::error::{Error, Result};
use crate::guest::ssh::{self, ScpPath};
use crate::paths::Home;
use crate::types::VmName;

/// One side of a copy, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Local(String),
    Vm(VmName, String),
}

/// `VM:PATH` when VM is a VM of the home; else a local path.
pub fn place(home: &Home, text: &str) -> Place {
    if let Some((vm, path)) = text.split_once(':') {
        if let Ok(name) = vm.parse::<VmName>() {
            if home.vm(&name).definition().exists() {
                return Place::Vm(name, path.to_string());
            }
        }
    }
    Place::Local(text.to_string())
}

/// The scp command line for copying `sources` to `dest`.
pub fn plan(home: &Home, recursive: bool, sources: &[String], dest: &str) -> Result<Vec<String>> {
    let srcs: Vec<Place> = sources.iter().map(|s| place(home, s)).collect();
    let dst = place(home, dest);
    let vm = match (&dst, srcs.iter().find_map(vm_of)) {
        (Place::Vm(..), Some(_)) => {
            return Err(Error::Usage(
                "vmctl cp copies between this host and one VM; copy from one VM to another through the host".into(),
            ));
        }
        (Place::Vm(name, _), None) => name.clone(),
        (Place::Local(_), Some(name)) => {
            if let Some(other) = srcs.iter().find_map(|p| match p {
                Place::Local(l) => Some(l.clone()),
                Place::Vm(n, _) if *n != name => Some(format!("{n}:…")),
                Place::Vm(..) => None,
            }) {
                return Err(Error::Usage(format!(
                    "every source of one copy is in the same VM; {other} is not in VM {name}"
                )));
            }
            name.clone()
        }
        (Place::Local(_), None) => {
            return Err(Error::Usage(format!(
                "neither side is in a VM: write the VM's side as VM:PATH (a VM of this home; see `vmctl list`), e.g. `vmctl cp file web:/tmp/`; got {}",
                sources
                    .iter()
                    .chain([&dest.to_string()])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
    };
    let target = ssh::target(home, &vm)?;
    let side = |p: &Place| match p {
        Place::Vm(_, path) => ScpPath::Remote(path.clone()),
        Place::Local(l) => ScpPath::Local(l.clone()),
    };
    let sources: Vec<ScpPath> = srcs.iter().map(side).collect();
    Ok(ssh::scp_argv(&target, recursive, &sources, &side(&dst)))
}

fn vm_of(p: &Place) -> Option<VmName> {
    match p {
        Place::Vm(n, _) => Some(n.clone()),
        Place::Local(_) => None,
    }
}
