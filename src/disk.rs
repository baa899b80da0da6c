//! qcow2 disks through `qemu-img`: thin overlays on a base image (O(1) in the virtual size: only
//! metadata is written), blank base disks, and `qemu-img info` (size, internal snapshots).

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::units::ByteSize;

pub(crate) fn qemu_img(args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
    tracing::debug!(?args, "qemu-img");
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".to_string())?;
    if !out.status.success() {
        return Err(Error::Qemu(format!(
            "{what}: qemu-img failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `qemu-img create -f qcow2 [-F qcow2 -b BASE] PATH SIZE`: a thin overlay on `base`, or a blank
/// disk. Only metadata is written, whatever the size.
pub fn create(path: &Path, size: ByteSize, base: Option<&Path>) -> Result<()> {
    let size = size.bytes().to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
    ];
    if let Some(b) = base {
        args.extend([
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            b.as_os_str(),
        ]);
    }
    args.extend([path.as_os_str(), size.as_ref()]);
    qemu_img(&args, &format!("Cannot create disk {}", path.display()))
}

/// `qemu-img info --output=json` of one image (not its backing chain). `share` (`-U`) reads an
/// image a running QEMU holds open; without it qemu-img refuses such an image.
pub fn info(path: &Path, share: bool) -> Result<serde_json::Value> {
    let mut cmd = Command::new("qemu-img");
    cmd.arg("info");
    if share {
        cmd.arg("-U");
    }
    let out = cmd
        .arg("--output=json")
        .arg(path)
        .output()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".to_string())?;
    if !out.status.success() {
        return Err(Error::Qemu(format!(
            "Cannot read {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Qemu(format!("qemu-img info {}: {e}", path.display())))
}

/// Virtual size of a disk image, from `qemu-img info --output=json`.
pub fn virtual_size(path: &Path) -> Result<u64> {
    info(path, true)?["virtual-size"]
        .as_u64()
        .ok_or_else(|| Error::Qemu(format!("qemu-img info {}: no virtual-size", path.display())))
}
