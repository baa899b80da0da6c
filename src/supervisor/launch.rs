//! What QEMU is handed at exec, prepared by the supervisor so that QEMU opens none of its VM's
//! files itself: the three QMP sockets, the guest network's, the serial console's and its NICs'
//! on private networks, bound here and passed listening; connections to its shared folders'
//! daemons (started here first); the console log, the
//! disk (read-write and read-only) and the cloud-init seed, opened here (never through a
//! symbolic link); the provisioning credential in a pipe; and the user it runs as, who may read
//! the image it boots from, and nothing else of the home.

use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::host::qemu_user::{self, QemuUser};
use crate::paths::{Home, VmPaths};
use crate::qemu::argv::{BootFiles, fd};
use crate::supervisor::plan::LaunchPlan;
use crate::sys::child::{Child, PIPE_MAX};
use crate::sys::fsutil;

/// The descriptors and identity QEMU gets, for the files of this boot.
pub fn child(
    paths: &VmPaths,
    plan: &LaunchPlan,
    boot: &BootFiles,
    shares: Vec<std::os::unix::net::UnixStream>,
) -> Result<Child> {
    let mut child = Child::new(plan.user.as_ref().map(|u| u.identity.clone()));
    for (sock, n) in [
        (paths.qmp_socket(), fd::QMP),
        (paths.qmp_ctl_socket(), fd::QMP_CTL),
        (paths.qmp_shell_socket(), fd::QMP_SHELL),
    ] {
        child.pass(listen(&sock)?, n)?;
    }
    if plan.net.is_some() {
        child.pass(listen(&paths.net_socket())?, fd::NET)?;
    }
    for (i, nic) in plan.nics.iter().enumerate() {
        child.pass(listen(&nic.socket)?, fd::lan(i + 1))?;
    }
    for (i, end) in shares.into_iter().enumerate() {
        child.pass(end, fd::share(i))?;
    }
    child.pass(fsutil::create_new_file(&paths.serial_log())?, fd::SERIAL)?;
    child.pass(listen(&paths.console_socket())?, fd::CONSOLE)?;
    if plan.agent {
        child.pass(listen(&paths.agent_socket())?, fd::AGENT)?;
    }
    let disk = paths.disk();
    child.pass(open(&disk, true)?, fd::DISK)?;
    child.pass(open(&disk, false)?, fd::DISK_RO)?;
    if let Some(seed) = &boot.seed {
        child.pass(open(seed, false)?, fd::SEED)?;
    }
    if let Some(app) = &boot.app {
        child.pass(open(app, false)?, fd::APP)?;
    }
    if matches!(plan.saved, crate::saved::Fit::Loads(_)) {
        child.pass(open(&paths.saved_state(), false)?, fd::INCOMING)?;
    }
    if let Some(cred) = &boot.credential {
        let data = std::fs::read(cred).path_ctx("read", cred)?;
        if data.len() > PIPE_MAX {
            return Err(Error::Other(format!(
                "The credential {} is {} bytes, more than the {PIPE_MAX} QEMU can be given",
                cred.display(),
                data.len()
            )));
        }
        child.pipe(data, fd::CREDENTIAL);
    }
    Ok(child)
}

/// Start the shared folders' daemons (virtiofsd, as each directory's owner); the connected
/// sockets QEMU gets, in order.
pub fn start_shares(
    paths: &VmPaths,
    plan: &LaunchPlan,
) -> Result<Vec<std::os::unix::net::UnixStream>> {
    let mut ends = Vec::new();
    for (i, sh) in plan.shares.iter().enumerate() {
        let (daemon, end) = crate::share::virtiofsd::start(
            &sh.binary,
            &sh.mount,
            sh.owner,
            &sh.socket,
            &paths.qemu_log(),
        )
        .map_err(|e| {
            Error::Host(format!(
                "The daemon of shared folder mounts[{i}] ({}) did not start: {e}",
                sh.mount
            ))
        })?;
        tracing::info!(pid = daemon.pid, share = %sh.mount, uid = sh.owner.uid, "virtiofsd started");
        ends.push(end);
    }
    Ok(ends)
}

/// A listening socket at `sock` (a stale one removed first), for QEMU.
fn listen(sock: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(sock);
    UnixListener::bind(sock).path_ctx("create the socket", sock)
}

fn open(path: &Path, write: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .path_ctx("open", path)
}

/// Make the way to the VM's image open to the QEMU user's group (the home and the image
/// folders it passes: 0710, as vmctl's own) and the image readable to it (0750/0640, where it
/// is ours), then check it can read every file of the image it opens by path (the base disk,
/// the kernel, the initrd). `Error::Host` naming what blocks it.
pub fn open_image_to(home: &Home, plan: &LaunchPlan, user: &QemuUser) -> Result<()> {
    let image_parent = home.images_dir().join(&plan.image.manifest.name);
    for dir in [&home.root, &home.images_dir(), &image_parent] {
        qemu_user::let_pass(dir, user)?;
    }
    let img = &plan.image;
    // An image that came in some other way than `vmctl image build|import` (copied in, restored
    // from a backup) is shared as they share it, where it is ours.
    qemu_user::let_read(&img.dir, user)?;
    let files = [Some(img.disk()), img.kernel(), img.initrd()];
    for file in files.into_iter().flatten() {
        if let Some(why) = qemu_user::blocked(&file, &user.identity) {
            return Err(Error::Host(format!(
                "QEMU runs as {} and must read {}, but {why}; let group {} pass and read there, or keep vmctl's home where it can",
                user.name,
                file.display(),
                user.name
            )));
        }
    }
    Ok(())
}
