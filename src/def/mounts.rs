//! Shared folders: `mounts = ["/srv/app", "/srv/data:/data:ro"]` in a definition, `--mount` on the
//! command line. Each is `HOST[:GUEST][:ro|:rw]`: a host directory shared into the guest at
//! GUEST (default: the same path), writable unless `ro`. The text is checked here (absolute
//! paths, no system directory of the guest, each guest path once); what only the host can
//! tell (the directory exists, is one, is not vmctl's home, and whose it is) is checked by
//! [`check_host`] at create and at each start.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::error::Problems;

/// One shared folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub host: PathBuf,
    pub guest: PathBuf,
    pub ro: bool,
}

/// Guest directories a share may not cover: the guest's own system.
pub const SYSTEM_DIRS: [&str; 17] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/usr", "/var", "/tmp",
];

fn plain_absolute(p: &str) -> bool {
    let path = Path::new(p);
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl FromStr for MountSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(c) = s.chars().find(|c| c.is_control() || *c == ',') {
            return Err(format!(
                "{s:?} contains {c:?}; a shared folder's paths cannot (QEMU's and the guest's mount options split on ',')"
            ));
        }
        let mut parts: Vec<&str> = s.split(':').collect();
        let ro = match parts.last() {
            Some(&"ro") if parts.len() > 1 => {
                parts.pop();
                true
            }
            Some(&"rw") if parts.len() > 1 => {
                parts.pop();
                false
            }
            _ => false,
        };
        let (host, guest) = match parts.as_slice() {
            [h] => (*h, *h),
            [h, g] => (*h, *g),
            _ => {
                return Err(format!(
                    "{s:?} is not HOST[:GUEST][:ro]; paths with ':' cannot be shared"
                ));
            }
        };
        if !plain_absolute(host) {
            return Err(format!(
                "host path {host:?} must be absolute, without '.' or '..'"
            ));
        }
        if !plain_absolute(guest) {
            return Err(format!(
                "guest path {guest:?} must be absolute, without '.' or '..'"
            ));
        }
        let guest_path = PathBuf::from(guest.trim_end_matches('/'));
        let guest_path = if guest_path.as_os_str().is_empty() {
            PathBuf::from("/")
        } else {
            guest_path
        };
        if SYSTEM_DIRS.iter().any(|d| Path::new(d) == guest_path) {
            return Err(format!(
                "guest path {} is a system directory of the guest; share into another one (/srv/..., /mnt/..., /home/...)",
                guest_path.display()
            ));
        }
        Ok(MountSpec {
            host: PathBuf::from(host.trim_end_matches('/')),
            guest: guest_path,
            ro,
        })
    }
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host.display())?;
        if self.guest != self.host {
            write!(f, ":{}", self.guest.display())?;
        }
        if self.ro {
            write!(f, ":ro")?;
        }
        Ok(())
    }
}

/// Who owns a shared directory: the identity its share is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// `mounts`: each `HOST[:GUEST][:ro]`, no two into one guest path or one inside another.
pub fn validate(texts: &[String], p: &mut Problems) -> Vec<MountSpec> {
    let mut out: Vec<MountSpec> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let Some(m) = p.check(&field, t.parse::<MountSpec>()) else {
            continue;
        };
        if let Some(o) = out
            .iter()
            .find(|o| o.guest.starts_with(&m.guest) || m.guest.starts_with(&o.guest))
        {
            p.add(
                field,
                format!(
                    "guest path {} overlaps {}'s ({}); one share per guest directory",
                    m.guest.display(),
                    o,
                    o.guest.display()
                ),
            );
            continue;
        }
        out.push(m);
    }
    out
}

/// What the host says of `m`'s directory: it exists, is a directory (not a symbolic link to
/// one), is neither vmctl's home nor in it nor holds it, and belongs to someone its share can be
/// served as: not root (no helper of vmctl's runs as root), and, when vmctl is not root, the
/// user running it. Its owner, or why not.
pub fn check_host(m: &MountSpec, home: &Path) -> Result<Owner, String> {
    use std::os::unix::fs::MetadataExt;
    let h = &m.host;
    let meta =
        std::fs::symlink_metadata(h).map_err(|e| format!("host path {}: {e}", h.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "host path {} is a symbolic link; name the directory itself",
            h.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("host path {} is not a directory", h.display()));
    }
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let host = std::fs::canonicalize(h).unwrap_or_else(|_| h.clone());
    if host.starts_with(&home) || home.starts_with(&host) {
        return Err(format!(
            "host path {} is vmctl's home {}, or in it, or holds it: the guest would reach other VMs' disks and keys",
            h.display(),
            home.display()
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    if owner.uid == 0 {
        return Err(format!(
            "host path {} belongs to root: its share would be served as root, and vmctl runs no helper as root; give it to a user (chown), or share a directory a user owns",
            h.display()
        ));
    }
    if me != 0 && owner.uid != me {
        return Err(format!(
            "host path {} belongs to uid {}, not to you (uid {me}): only root's vmctl shares other users' directories",
            h.display(),
            owner.uid
        ));
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_and_print_back() {
        for (text, host, guest, ro) in [
            ("/srv/app", "/srv/app", "/srv/app", false),
            ("/srv/app/", "/srv/app", "/srv/app", false),
            ("/srv/app:/app", "/srv/app", "/app", false),
            ("/srv/data:/data:ro", "/srv/data", "/data", true),
            ("/srv/data:ro", "/srv/data", "/srv/data", true),
            ("/srv/data:/data:rw", "/srv/data", "/data", false),
            ("/home/a/my code:/code", "/home/a/my code", "/code", false),
        ] {
            let m: MountSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (m.host.to_str().unwrap(), m.guest.to_str().unwrap(), m.ro),
                (host, guest, ro)
            );
            assert_eq!(m.to_string().parse::<MountSpec>().unwrap(), m, "{text}");
        }
    }

    #[test]
    fn bad_mounts_say_why() {
        for (text, why) in [
            ("srv/app", "must be absolute"),
            ("/srv/../etc", "without '.' or '..'"),
            ("/srv/app:app", "guest path \"app\" must be absolute"),
            ("/srv/app:/etc", "system directory"),
            ("/srv/app:/", "system directory"),
            ("/srv/app:/usr/", "system directory"),
            ("/a:/b:/c", "is not HOST[:GUEST][:ro]"),
            ("/a,b", "contains ','"),
            ("/a\nb", "contains '\\n'"),
        ] {
            let e = text.parse::<MountSpec>().unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn host_directories_are_checked() {
        let home = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let m = |p: &Path| MountSpec {
            host: p.to_path_buf(),
            guest: "/srv/x".into(),
            ro: false,
        };
        let e = check_host(&m(&home.path().join("vms")), home.path()).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        std::fs::create_dir(home.path().join("vms")).unwrap();
        let e = check_host(&m(&home.path().join("vms")), home.path()).unwrap_err();
        assert!(e.contains("is vmctl's home"), "{e}");
        let file = other.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_host(&m(&file), home.path()).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        let link = other.path().join("l");
        std::os::unix::fs::symlink(other.path(), &link).unwrap();
        let e = check_host(&m(&link), home.path()).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let dir = other.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        if nix::unistd::geteuid().is_root() {
            // Root's own directory: no helper runs as root.
            let e = check_host(&m(&dir), home.path()).unwrap_err();
            assert!(e.contains("belongs to root"), "{e}");
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            assert_eq!(check_host(&m(&dir), home.path()).unwrap().uid, 65534);
        } else {
            assert!(check_host(&m(&dir), home.path()).is_ok());
        }
    }
}
