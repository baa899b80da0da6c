//! qcow2 disks through `qemu-img`: thin overlays on a base image (O(1) in the virtual size: only
//! metadata is written), blank base disks, `qemu-img info` (size, internal snapshots) and the
//! snapshot count from the qcow2 header.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::types::ByteSize;

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

/// How many internal snapshots a qcow2 image holds, from its header (`nb_snapshots`, a
/// big-endian u32 at byte 60 in qcow2 versions 2 and 3): no process, cheap enough for `list`.
/// None if the file is not a qcow2 image.
pub fn snapshot_count(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut header = [0u8; 64];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if header[..4] != *b"QFI\xfb" {
        return None;
    }
    Some(u32::from_be_bytes(header[60..64].try_into().ok()?))
}

/// Virtual size of a disk image, from `qemu-img info --output=json`.
pub fn virtual_size(path: &Path) -> Result<u64> {
    info(path, true)?["virtual-size"]
        .as_u64()
        .ok_or_else(|| Error::Qemu(format!("qemu-img info {}: no virtual-size", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_count_reads_the_qcow2_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.qcow2");
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[60..64].copy_from_slice(&3u32.to_be_bytes());
        std::fs::write(&p, &h).unwrap();
        assert_eq!(snapshot_count(&p), Some(3));
        std::fs::write(
            &p,
            b"not a qcow2 image, but long enough for a header of 64 bytes....",
        )
        .unwrap();
        assert_eq!(snapshot_count(&p), None);
        assert_eq!(snapshot_count(&dir.path().join("missing")), None);
    }
}
