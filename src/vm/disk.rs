//! `vmctl disk info|resize|compact`: a VM's disk, the qcow2 overlay on its image — what it holds
//! and takes; grown (never shrunk) for the guest to take at its next boot (debian-12's
//! vmctl-growroot, cloud-init's growpart); rewritten without the clusters the guest freed
//! (`fstrim`; the disk has `discard=unmap`). Resize and compact need the VM stopped and without a
//! saved state (which fits only the disk it was saved with); compact refuses a disk with
//! snapshots, which a rewrite would drop.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::paths::{Home, VmPaths};
use crate::runstate;
use crate::sys::fsutil;
use crate::types::{ByteSize, VmName};

/// One layer of the disk's chain, the VM's own first.
#[derive(Debug, Serialize)]
pub struct Layer {
    pub path: String,
    pub format: String,
    pub virtual_size: u64,
    /// Bytes the file takes on the host.
    pub allocated: u64,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub tag: String,
    /// Bytes of saved RAM (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// Unix seconds.
    pub date: u64,
}

#[derive(Debug, Serialize)]
pub struct DiskInfo {
    pub name: String,
    pub virtual_size: u64,
    /// Bytes the VM's own overlay takes on the host (its image's are shared).
    pub allocated: u64,
    pub chain: Vec<Layer>,
    pub snapshots: Vec<Snapshot>,
}

/// What `qemu-img info --backing-chain` says of the VM's disk (also while it runs).
pub fn info(home: &Home, name: &VmName) -> Result<DiskInfo> {
    let paths = home.defined(name)?;
    let chain = crate::qemu::img::info_chain(&paths.disk())?;
    let top = chain.first().cloned().unwrap_or(Value::Null);
    let snapshots = top["snapshots"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| Snapshot {
                    tag: s["name"].as_str().unwrap_or("").to_string(),
                    vm_state_size: s["vm-state-size"].as_u64().unwrap_or(0),
                    date: s["date-sec"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let chain: Vec<Layer> = chain.iter().map(layer).collect();
    Ok(DiskInfo {
        name: name.to_string(),
        virtual_size: chain.first().map_or(0, |l| l.virtual_size),
        allocated: chain.first().map_or(0, |l| l.allocated),
        chain,
        snapshots,
    })
}

fn layer(v: &Value) -> Layer {
    Layer {
        path: v["filename"].as_str().unwrap_or("").to_string(),
        format: v["format"].as_str().unwrap_or("").to_string(),
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        allocated: v["actual-size"].as_u64().unwrap_or(0),
    }
}

#[derive(Debug, Serialize)]
pub struct Resized {
    pub name: String,
    pub from: u64,
    pub to: u64,
}

/// Grow the stopped VM's disk to `size`; its definition says the new size.
pub fn resize(home: &Home, name: &VmName, size: ByteSize) -> Result<Resized> {
    let paths = home.defined(name)?;
    let grows = || -> Result<u64> {
        let from = crate::qemu::img::virtual_size(&paths.disk())?;
        if size.bytes() <= from {
            return Err(Error::Usage(format!(
                "size: VM {name}'s disk is {} already; it can only grow (got {size})",
                ByteSize(from)
            )));
        }
        Ok(from)
    };
    // A refusal writes nothing (not even the lock file); checked again under the lock.
    grows()?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    still(&paths, name, "resizing its disk")?;
    let from = grows()?;
    let disk = paths.disk();
    let bytes = size.bytes().to_string();
    crate::qemu::img::qemu_img(
        &[
            "resize".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            disk.as_os_str(),
            bytes.as_ref(),
        ],
        &format!("Cannot resize {}", disk.display()),
    )?;
    set_disk_size(&paths.definition(), size)?;
    Ok(Resized {
        name: name.to_string(),
        from,
        to: size.bytes(),
    })
}

#[derive(Debug, Serialize)]
pub struct Compacted {
    pub name: String,
    /// Bytes the overlay took on the host before and after.
    pub before: u64,
    pub after: u64,
    pub seconds: f64,
}

/// Rewrite the stopped VM's overlay with only what differs from its image, into a new file
/// that replaces it once complete. `progress`: qemu-img draws its progress (a terminal).
pub fn compact(home: &Home, name: &VmName, progress: bool) -> Result<Compacted> {
    let paths = home.defined(name)?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    still(&paths, name, "compacting its disk")?;
    let disk = paths.disk();
    let t0 = std::time::Instant::now();
    let layers = crate::qemu::img::info_chain(&disk)?;
    let top = layers.first().cloned().unwrap_or(Value::Null);
    if let Some(n) = top["snapshots"].as_array().map(Vec::len).filter(|n| *n > 0) {
        return Err(Error::State(format!(
            "VM {name}'s disk holds {n} snapshot(s), which a rewrite would drop: `vmctl snapshot delete` them first (`vmctl snapshot list {name}`)"
        )));
    }
    let before = allocated(&disk)?;
    let tmp = disk.with_extension("qcow2.compact");
    let _ = std::fs::remove_file(&tmp);
    let base = top["full-backing-filename"].as_str().map(PathBuf::from);
    // Only what differs from the image is written; the new file backs onto it too.
    crate::qemu::img::convert(&disk, &tmp, base.as_deref(), progress)?;
    std::fs::rename(&tmp, &disk).path_ctx("replace", &disk)?;
    Ok(Compacted {
        name: name.to_string(),
        before,
        after: allocated(&disk)?,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The definition at `def` with `disk = SIZE`, its header comment kept.
fn set_disk_size(def: &Path, size: ByteSize) -> Result<()> {
    let text = std::fs::read_to_string(def).path_ctx("read", def)?;
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut cfg = crate::def::config::VmConfig::load(def)?;
    cfg.disk = Some(size.to_string());
    fsutil::write_atomic(def, format!("{header}{}", cfg.to_toml()).as_bytes())
}

/// Bytes a file takes on the host (its allocated blocks).
fn allocated(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path).path_ctx("read", path)?.blocks() * 512)
}

/// Refuse a VM whose disk does not hold still: one that runs, or has a saved state (its disk
/// is that of a guest still running in it, and the state fits only the disk as it is).
/// `doing` completes "stop it before ...": "resizing its disk", "cloning it", ...
pub(crate) fn still(paths: &VmPaths, name: &VmName, doing: &str) -> Result<()> {
    if runstate::liveness(paths).is_running() {
        return Err(Error::State(format!(
            "VM {name} is running; stop it before {doing} (its disk must hold still)"
        )));
    }
    if crate::saved::read(paths).is_some() {
        return Err(Error::State(format!(
            "VM {name} has a saved state, which fits only its disk as it is: `vmctl start {name}` resumes it (or `vmctl start {name} --fresh` discards it) before {doing}"
        )));
    }
    Ok(())
}
