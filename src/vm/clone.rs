//! `vmctl clone SRC NEW`: a new VM from a stopped one — its definition (with the clone's own
//! forwards, addresses on private networks and no stack), a copy of its disk (what differs from
//! the image, on the same image; or `--full`, one standalone file), its app's last release —
//! and an identity of its own: its name as hostname, a new machine-id, SSH host key and login
//! key (when vmctl made the source's), and MACs on private networks (they derive from the
//! name). Snapshots stay with the source: a copy of the disk does not carry them.

use serde::Serialize;

use crate::def::config::NetworkRef;
use crate::def::store::load;
use crate::error::{Error, Result};
use crate::paths::Home;
use crate::types::{PortForward, VmName};
use crate::vm::create::{DefinedBy, DiskFrom, create_as};

#[derive(Debug, Serialize)]
pub struct Cloned {
    pub name: String,
    pub from: String,
    /// Linked (on the image, only what differs copied) or full (standalone).
    pub full: bool,
    pub ports: Vec<PortForward>,
    /// Bytes the clone's disk takes on the host.
    pub disk_bytes: u64,
    pub seconds: f64,
}

/// Clone the stopped VM `src` as `new`; `ports` replace the source's forwards (which another
/// VM cannot have: without them a source with forwards is refused, by field).
pub fn clone(
    home: &Home,
    src: &VmName,
    new: &VmName,
    ports: Option<&[PortForward]>,
    full: bool,
) -> Result<Cloned> {
    let t0 = std::time::Instant::now();
    let spec = load(home, src)?;
    let from = home.vm(src);
    crate::vm::disk::still(&from, src, "cloning it")?;
    let mut cfg = spec.to_config();
    if let Some(p) = ports {
        cfg.ports = p.iter().map(|f| f.to_string()).collect();
    }
    // The clone gets addresses of its own on the source's networks, and is in no stack.
    cfg.networks = cfg
        .networks
        .iter()
        .map(|n| NetworkRef::Name(n.name().to_string()))
        .collect();
    cfg.stack = None;
    let source_name = format!("clone of VM {src}");
    let made = create_as(
        home,
        new,
        &cfg,
        &source_name,
        DefinedBy::Command,
        DiskFrom::Vm { from: &from, full },
    )
    .map_err(|e| match e {
        Error::Invalid {
            source_name,
            mut problems,
        } => {
            for p in problems.iter_mut().filter(|p| p.field.starts_with("ports")) {
                p.message.push_str("; give the clone its own with --port");
            }
            Error::Invalid {
                source_name,
                problems,
            }
        }
        e => e,
    })?;
    let disk = home.vm(new).disk();
    Ok(Cloned {
        name: new.to_string(),
        from: src.to_string(),
        full,
        ports: made.ports,
        disk_bytes: std::fs::metadata(&disk)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
