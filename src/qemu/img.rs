//! qcow2 disks through `qemu-img`: thin overlays on a base image (O(1) in the virtual size: only
//! metadata is written), blank base disks, `qemu-img info` (size, internal snapshots), the
//! snapshot count from the qcow2 header, and `info`/`convert` of a file vmctl did not make
//! (an import), read through its open descriptor with an explicit format, `info` under limits.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// `qemu-img convert` of the qcow2 `src` into a new qcow2 `dst`: with `base`, only what differs
/// from it is written and `dst` backs onto it; without, one standalone file. Internal
/// snapshots are not carried. `progress`: qemu-img draws its progress on stderr.
pub fn convert(src: &Path, dst: &Path, base: Option<&Path>, progress: bool) -> Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "qcow2", "-O", "qcow2"]);
    if progress {
        cmd.arg("-p");
    }
    if let Some(b) = base {
        cmd.arg("-B").arg(b).args(["-F", "qcow2"]);
    }
    let out = cmd
        .arg(src)
        .arg(dst)
        // The progress goes where vmctl's own messages go (stdout may be `--json`).
        .stdout(match progress {
            true => std::os::fd::AsFd::as_fd(&std::io::stderr())
                .try_clone_to_owned()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            false => Stdio::null(),
        })
        .stderr(Stdio::piped())
        .output()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".to_string())?;
    if !out.status.success() {
        let _ = std::fs::remove_file(dst);
        return Err(Error::Qemu(format!(
            "Cannot copy {} to {}: qemu-img failed: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    File::open(dst)
        .and_then(|f| f.sync_all())
        .path_ctx("sync", dst)
}

/// `qemu-img info --output=json` of one image (not its backing chain). `share` (`-U`) reads an
/// image a running QEMU holds open; without it qemu-img refuses such an image.
pub fn info(path: &Path, share: bool) -> Result<serde_json::Value> {
    info_of(path, share, false)
}

/// `qemu-img info -U --backing-chain --output=json`: each layer, the image's own first.
pub fn info_chain(path: &Path) -> Result<Vec<serde_json::Value>> {
    match info_of(path, true, true)? {
        serde_json::Value::Array(layers) => Ok(layers),
        one => Ok(vec![one]),
    }
}

fn info_of(path: &Path, share: bool, chain: bool) -> Result<serde_json::Value> {
    let mut cmd = Command::new("qemu-img");
    cmd.arg("info");
    if share {
        cmd.arg("-U");
    }
    if chain {
        cmd.arg("--backing-chain");
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

/// The CPU time `qemu-img info` may use on a file vmctl did not make: a crafted image can make
/// it spin (OpenStack's limit since CVE-2015-5162).
pub const UNTRUSTED_CPU_SECS: u64 = 30;
/// The address space `qemu-img info` may use on a file vmctl did not make: a crafted image can
/// make it allocate without bound (OpenStack's limit).
pub const UNTRUSTED_MEMORY: u64 = ByteSize::GIB;

/// The name qemu-img gets for a file handed to it as its standard input: the open file itself,
/// so it reads the file vmctl checked even if the path is pointed elsewhere meanwhile.
const STDIN_FILE: &str = "/proc/self/fd/0";

/// `qemu-img info -f FORMAT --output=json` of the open `file`, under [`UNTRUSTED_CPU_SECS`]
/// and [`UNTRUSTED_MEMORY`]. The outer error is qemu-img not running; the inner one is what it
/// said of the file (its stderr, or the limit that stopped it).
pub fn info_untrusted(
    file: &File,
    format: &str,
) -> Result<std::result::Result<serde_json::Value, String>> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "-f", format, "--output=json", STDIN_FILE])
        .stdin(Stdio::from(
            file.try_clone()
                .ctx(|| "Cannot hand the image to qemu-img".into())?,
        ));
    limit_resources(&mut cmd);
    tracing::debug!(?cmd, "qemu-img, limited");
    let out = cmd
        .output()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".to_string())?;
    let limits = format!(
        "{UNTRUSTED_CPU_SECS} s of CPU, {} of memory",
        ByteSize(UNTRUSTED_MEMORY)
    );
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&out.status) {
        return Ok(Err(format!(
            "made qemu-img info -f {format} exceed its limits ({limits}): killed by signal {sig}"
        )));
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let prefix = format!("qemu-img: Could not open '{STDIN_FILE}': ");
        let said = stderr.trim();
        return Ok(Err(format!(
            "is refused by qemu-img info -f {format}: {}",
            said.strip_prefix(&prefix).unwrap_or(said)
        )));
    }
    Ok(serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("made qemu-img info -f {format} print no JSON: {e}")))
}

/// `qemu-img convert -p -f FORMAT -O qcow2` of the open `file` (named `name` in messages) into
/// `disk`, progress on the terminal. The file must have been checked first: qemu-img follows
/// what it points to.
pub fn convert_untrusted(file: &File, name: &Path, format: &str, disk: &Path) -> Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-p", "-f", format, "-O", "qcow2", STDIN_FILE])
        .arg(disk)
        .stdin(Stdio::from(
            file.try_clone()
                .ctx(|| "Cannot hand the image to qemu-img".into())?,
        ));
    tracing::debug!(?cmd, "qemu-img");
    let status = cmd
        .status()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".into())?;
    if !status.success() {
        return Err(Error::Qemu(format!(
            "qemu-img could not convert {} from {format} ({status})",
            name.display()
        )));
    }
    Ok(())
}

/// The child runs under [`UNTRUSTED_CPU_SECS`] and [`UNTRUSTED_MEMORY`] (soft and hard limits:
/// it cannot raise them).
fn limit_resources(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let cpu = libc::rlimit {
        rlim_cur: UNTRUSTED_CPU_SECS,
        rlim_max: UNTRUSTED_CPU_SECS,
    };
    let memory = libc::rlimit {
        rlim_cur: UNTRUSTED_MEMORY,
        rlim_max: UNTRUSTED_MEMORY,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2), a
    // plain system call on two values the closure owns: it allocates nothing, takes no lock and
    // touches no memory shared with the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for (resource, limit) in [(libc::RLIMIT_CPU, &cpu), (libc::RLIMIT_AS, &memory)] {
                if libc::setrlimit(resource, limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_children_run_under_cpu_and_memory_limits() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -St; ulimit -Ht; ulimit -Sv; ulimit -Hv"]);
        limit_resources(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("30\n30\n{0}\n{0}\n", UNTRUSTED_MEMORY / 1024)
        );
    }

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
