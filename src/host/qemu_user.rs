//! Who QEMU runs as, and under what filter. Every QEMU vmctl starts runs under QEMU's seccomp
//! sandbox with every optional restriction on ([`SANDBOX`]). Run by root, vmctl never lets QEMU run as root: QEMU becomes the system
//! user `vmctl-qemu` between fork and exec (created on first use, like libvirt's
//! `libvirt-qemu`), with the `kvm` group where the host has one, so that /dev/kvm opens where
//! KVM works. Run by anyone else, QEMU runs as that user. QEMU gets its VM's own files as open
//! descriptors; by path it reaches only the base image, kernel and initrd, which this module
//! checks it can.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::sys::child::Identity;

/// QEMU's seccomp filter with every optional restriction: no obsolete system calls, no
/// change of identity (it runs as its user from exec on), no new processes, no scheduler or
/// resource changes. Nothing vmctl does needs one of them (SECURITY.md).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The system user QEMU runs as when vmctl is root.
pub const USER: &str = "vmctl-qemu";

/// The identity QEMU runs as, with its name for messages; `None` to keep ours (not root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuUser {
    pub name: String,
    pub identity: Identity,
}

/// Who QEMU runs as for this process: `vmctl-qemu` (made if missing) when we are root, else
/// nobody else (`None`: as ourselves).
pub fn for_this_process() -> Result<Option<QemuUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    system_user().map(Some)
}

/// `vmctl-qemu`, created if it does not exist yet: a system user with no home and no shell.
fn system_user() -> Result<QemuUser> {
    let kvm = nix::unistd::Group::from_name("kvm").ok().flatten();
    let user = match lookup()? {
        Some(u) => u,
        None => {
            let mut cmd = std::process::Command::new("useradd");
            cmd.args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
                .args(["--shell", "/usr/sbin/nologin", "--comment", "vmctl QEMU"]);
            if kvm.is_some() {
                cmd.args(["--groups", "kvm"]);
            }
            let out = cmd
                .arg(USER)
                .output()
                .ctx(|| format!("Cannot run useradd to create the user {USER} QEMU runs as"))?;
            // Another vmctl may have made it meanwhile.
            match lookup()? {
                Some(u) => u,
                None => {
                    return Err(Error::Host(format!(
                        "Cannot create the system user {USER}, which QEMU runs as: useradd says {} (inside a VM's systemd unit /etc is read-only: `vmctl systemd install` or `install-generator` makes the user first)",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        }
    };
    let mut groups = vec![user.gid.as_raw()];
    groups.extend(kvm.map(|g| g.gid.as_raw()));
    groups.dedup();
    Ok(QemuUser {
        name: USER.to_string(),
        identity: Identity {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        },
    })
}

fn lookup() -> Result<Option<nix::unistd::User>> {
    nix::unistd::User::from_name(USER)
        .map_err(|e| Error::Host(format!("Cannot look up the user {USER}: {e}")))
}

/// Let the user's group pass through `dir` (group set to it, mode 0710), if `dir` is ours; a
/// directory of someone else's is left as it is.
pub fn let_pass(dir: &Path, user: &QemuUser) -> Result<()> {
    share(dir, user, 0o710)
}

/// Let the user's group read the tree at `root` (directories 0750, files 0640): a base image.
pub fn let_read(root: &Path, user: &QemuUser) -> Result<()> {
    let m = std::fs::symlink_metadata(root).path_ctx("read", root)?;
    if m.is_dir() {
        share(root, user, 0o750)?;
        for e in std::fs::read_dir(root).path_ctx("read", root)? {
            let e = e.path_ctx("read", root)?;
            let_read(&e.path(), user)?;
        }
        Ok(())
    } else if m.is_file() {
        share(root, user, 0o640)
    } else {
        Ok(())
    }
}

fn share(path: &Path, user: &QemuUser, mode: u32) -> Result<()> {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if m.file_type().is_symlink() || m.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    if m.gid() != user.identity.gid {
        join_group(user.identity.gid)?;
        nix::unistd::chown(
            path,
            None,
            Some(nix::unistd::Gid::from_raw(user.identity.gid)),
        )
        .map_err(std::io::Error::from)
        .path_ctx("give group access to", path)?;
    }
    if m.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .path_ctx("set the mode of", path)?;
    }
    Ok(())
}

/// Put this process in group `gid` (beside its own groups), if it is not yet: the owner of a
/// file may give it to any group it is in, so sharing needs CAP_SETGID, which the privilege drop
/// needs anyway, and not CAP_CHOWN, which the system unit's bounding set leaves out.
fn join_group(gid: u32) -> Result<()> {
    let gid = nix::unistd::Gid::from_raw(gid);
    let mut groups = nix::unistd::getgroups()
        .map_err(|e| Error::Host(format!("Cannot read this process's groups: {e}")))?;
    if groups.contains(&gid) || nix::unistd::getegid() == gid {
        return Ok(());
    }
    groups.push(gid);
    nix::unistd::setgroups(&groups).map_err(|e| {
        Error::Host(format!(
            "Cannot join group {gid} to share files with {USER}: {e}"
        ))
    })
}

/// Why `who` cannot read `file` by its path (a directory on the way it may not pass, or the
/// file itself), or `None` when it can. From the mode bits and owners (ACLs are not read).
pub fn blocked(file: &Path, who: &Identity) -> Option<String> {
    let may = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.permissions().mode();
        if m.uid() == who.uid {
            mode & (bits << 6) == bits << 6
        } else if who.groups.contains(&m.gid()) || m.gid() == who.gid {
            mode & (bits << 3) == bits << 3
        } else {
            mode & bits == bits
        }
    };
    let show = |p: &Path, m: &std::fs::Metadata| {
        format!(
            "{} ({:o}, owner {}, group {})",
            p.display(),
            m.permissions().mode() & 0o7777,
            m.uid(),
            m.gid()
        )
    };
    let mut dir = std::path::PathBuf::from("/");
    for part in file.parent().unwrap_or(Path::new("/")).components().skip(1) {
        dir.push(part);
        // A link on the way is followed: what counts is where it leads.
        let m = std::fs::metadata(&dir).ok()?;
        if !may(&m, 0o1) {
            return Some(format!("it cannot pass {}", show(&dir, &m)));
        }
    }
    let m = std::fs::metadata(file).ok()?;
    if !may(&m, 0o4) {
        return Some(format!("it cannot read {}", show(file, &m)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_path_is_blocked_by_a_directory_or_the_file_it_may_not_use() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("home");
        let file = top.join("images/disk.qcow2");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "x").unwrap();
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let m = std::fs::metadata(&file).unwrap();
        let stranger = Identity {
            uid: m.uid() + 1000,
            gid: m.gid() + 1000,
            groups: vec![m.gid() + 1000],
        };
        let in_group = Identity {
            groups: vec![m.gid()],
            ..stranger.clone()
        };
        set(d.path(), 0o755);
        set(&top, 0o710);
        set(file.parent().unwrap(), 0o750);
        set(&file, 0o640);
        let why = blocked(&file, &stranger).expect("blocked");
        assert!(
            why.contains("cannot pass") && why.contains("home (710"),
            "{why}"
        );
        assert_eq!(blocked(&file, &in_group), None);
        set(&file, 0o600);
        let why = blocked(&file, &in_group).expect("blocked");
        assert!(
            why.contains("cannot read") && why.contains("disk.qcow2 (600"),
            "{why}"
        );
    }
}
