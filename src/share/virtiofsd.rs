//! The daemon behind one shared folder: virtiofsd (the Rust one, 1.11 or later, for its UID/GID
//! translation), started by the supervisor before QEMU and ending with it. It runs as the
//! directory's owner — never as root, and never as QEMU's user — in a user and mount namespace
//! of its own whose root is the shared directory (`--sandbox=namespace`), so the guest reaches
//! nothing above it. Every guest UID and GID is taken as the owner's (`squash-guest`), so what
//! the guest's login user or root creates belongs to the directory's owner; the owner's files
//! show in the guest as the login user's (UID/GID 1000). A read-only share is enforced by
//! virtiofsd (`--readonly`), whatever the guest mounts it as.
//!
//! QEMU's `vhost-user-fs-pci` device talks to it over a unix socket: the supervisor binds it
//! (`run/fsN.sock`), hands the listening end to virtiofsd and a connected one to QEMU, so QEMU
//! opens no path for it; QEMU's memory is a shared memfd (`memory-backend-memfd,share=on`),
//! which vhost-user needs.

use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::def::mounts::{MountSpec, Owner};
use crate::error::{Error, IoContext, Result};
use crate::sys::child::{Child, Identity};
use crate::sys::{fsutil, process};

/// The descriptor virtiofsd gets its listening socket at (`--fd`).
pub const SOCKET_FD: i32 = 3;

/// The UID and GID the guest's login user has on vmctl's images (the first user made).
pub const GUEST_ID: u32 = 1000;

/// The smallest virtiofsd release with `--translate-uid`/`--translate-gid`.
const MIN_VERSION: (u32, u32) = (1, 11);

/// The virtio-fs tag of the `index`-th share (0-based): what the guest mounts.
pub fn tag(index: usize) -> String {
    format!("vmctl{index}")
}

/// The virtiofsd argv (binary first) serving `m`, owned by `owner`.
pub fn argv(binary: &Path, m: &MountSpec, owner: Owner) -> Vec<String> {
    let mut a = vec![
        binary.display().to_string(),
        format!("--fd={SOCKET_FD}"),
        format!("--shared-dir={}", m.host.display()),
        "--sandbox=namespace".into(),
        "--cache=auto".into(),
        // Inside its own user namespace it cannot open file handles (CAP_DAC_READ_SEARCH).
        "--inode-file-handles=never".into(),
        "--log-level=warn".into(),
        format!("--translate-uid=squash-guest:0:{}:4294967295", owner.uid),
        format!("--translate-uid=host:{}:{GUEST_ID}:1", owner.uid),
        format!("--translate-gid=squash-guest:0:{}:4294967295", owner.gid),
        format!("--translate-gid=host:{}:{GUEST_ID}:1", owner.gid),
    ];
    if m.ro {
        a.push("--readonly".into());
    }
    a
}

/// The virtiofsd to run: `$VMCTL_VIRTIOFSD`, else `virtiofsd` in PATH, /usr/libexec or
/// /usr/local/libexec, if it is the Rust one, 1.11 or later. `Error::Host` saying how to get it.
pub fn binary() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("VMCTL_VIRTIOFSD")
        .map(PathBuf::from)
        .into_iter()
        .chain(crate::host::facts::find_in_path("virtiofsd"))
        .chain(["/usr/libexec/virtiofsd", "/usr/local/libexec/virtiofsd"].map(PathBuf::from))
        .collect();
    let mut seen = Vec::new();
    for c in candidates.iter().filter(|c| c.is_file()) {
        match version(c) {
            Some(v) if v >= MIN_VERSION => return Ok(c.clone()),
            v => seen.push(format!(
                "{} ({})",
                c.display(),
                v.map(|(a, b)| format!("{a}.{b}"))
                    .unwrap_or_else(|| "not the Rust virtiofsd".into())
            )),
        }
    }
    Err(Error::Host(format!(
        "Shared folders need virtiofsd {}.{} or later (the Rust one{}); install it with `cargo install virtiofsd --locked --root /usr/local` (it needs libseccomp-dev and libcap-ng-dev) or scripts/install-deps.sh, or set VMCTL_VIRTIOFSD. (QEMU 7.2's /usr/lib/qemu/virtiofsd cannot give what the guest writes to the folder's owner.)",
        MIN_VERSION.0,
        MIN_VERSION.1,
        if seen.is_empty() {
            String::new()
        } else {
            format!("; found {}", seen.join(", "))
        }
    )))
}

/// "virtiofsd 1.14.0" → (1, 14); the C virtiofsd says "virtiofsd version 7.2.22".
fn version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.lines().next()?.strip_prefix("virtiofsd ")?;
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A running virtiofsd: its pid, reaped by a thread of the supervisor's.
pub struct Daemon {
    pub pid: i32,
}

/// Start the daemon for share `m` (socket `sock`, log `log`), as `identity` when vmctl is
/// root; the connected socket QEMU gets.
pub fn start(
    binary: &Path,
    m: &MountSpec,
    owner: Owner,
    sock: &Path,
    log: &Path,
) -> Result<(Daemon, UnixStream)> {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).path_ctx("create the socket", sock)?;
    // Connected before the daemon runs: the kernel queues it until virtiofsd accepts.
    let qemu_end = UnixStream::connect(sock).path_ctx("connect to", sock)?;
    let identity = nix::unistd::geteuid().is_root().then(|| Identity {
        uid: owner.uid,
        gid: owner.gid,
        groups: vec![owner.gid],
    });
    let argv = argv(binary, m, owner);
    let out = fsutil::open_append(log)?;
    let mut cmd = Command::new(&argv[0]);
    process::not_a_service(cmd.args(&argv[1..]))
        .stdin(Stdio::null())
        .stdout(out.try_clone().path_ctx("open", log)?)
        .stderr(out)
        .process_group(0);
    let mut child = Child::new(identity);
    child.pass(listener, SOCKET_FD)?;
    child.apply(&mut cmd);
    tracing::debug!(argv = %crate::sys::quote::argv(&argv), "spawning virtiofsd");
    let mut proc = cmd.spawn().ctx(|| format!("Cannot run {}", argv[0]))?;
    drop(cmd);
    let pid = proc.id() as i32;
    std::thread::spawn(move || {
        let status = proc.wait();
        tracing::debug!(pid, ?status, "virtiofsd exited");
    });
    Ok((Daemon { pid }, qemu_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_gets_what_the_guest_writes_and_ro_is_the_daemons() {
        let m: MountSpec = "/home/alice/code:/code:ro".parse().unwrap();
        let a = argv(
            Path::new("/usr/local/bin/virtiofsd"),
            &m,
            Owner {
                uid: 1001,
                gid: 1002,
            },
        );
        assert_eq!(
            a.join(" "),
            "/usr/local/bin/virtiofsd --fd=3 --shared-dir=/home/alice/code --sandbox=namespace \
             --cache=auto --inode-file-handles=never --log-level=warn \
             --translate-uid=squash-guest:0:1001:4294967295 --translate-uid=host:1001:1000:1 \
             --translate-gid=squash-guest:0:1002:4294967295 --translate-gid=host:1002:1000:1 \
             --readonly"
        );
        let rw: MountSpec = "/srv/x".parse().unwrap();
        assert!(
            !argv(Path::new("v"), &rw, Owner { uid: 5, gid: 5 })
                .contains(&"--readonly".to_string())
        );
    }

    #[test]
    fn only_the_rust_virtiofsd_with_id_translation_will_do() {
        assert_eq!(parse_version("virtiofsd 1.14.0\n"), Some((1, 14)));
        assert_eq!(parse_version("virtiofsd 1.10.1"), Some((1, 10)));
        assert_eq!(
            parse_version("virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7)"),
            None
        );
        assert!(parse_version("virtiofsd 1.10.1").unwrap() < MIN_VERSION);
    }
}
