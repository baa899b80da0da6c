//! Where systemd's files live, for each scope: the directory units are installed in, the one
//! generators write to, the user's configuration and runtime directories, and the cache a
//! unit's `vmctl run` uses.

use std::path::{Path, PathBuf};

use crate::types::Scope;

/// The user's configuration directory: `$XDG_CONFIG_HOME` (the XDG spec ignores a relative
/// value), else `~/.config`.
pub fn config_dir(xdg_config_home: Option<&Path>, user_home: &Path) -> PathBuf {
    match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(c) => c.to_path_buf(),
        None => user_home.join(".config"),
    }
}

/// [`config_dir`] for this process's environment.
pub fn config_dir_here() -> PathBuf {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    config_dir(xdg.as_deref(), &home)
}

/// Where units of a scope are installed: `/etc/systemd/system`, or `$XDG_CONFIG_HOME/systemd/user`
/// (`~/.config/systemd/user`).
pub fn unit_dir(scope: Scope, xdg_config_home: Option<&Path>, user_home: &Path) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => config_dir(xdg_config_home, user_home).join("systemd/user"),
    }
}

/// [`unit_dir`] for this process's environment.
pub fn unit_dir_here(scope: Scope) -> PathBuf {
    match scope {
        Scope::System => unit_dir(scope, None, Path::new("/")),
        Scope::User => config_dir_here().join("systemd/user"),
    }
}

/// Where a scope's generators write units (their "normal" directory): `/run/systemd/generator`,
/// or `$XDG_RUNTIME_DIR/systemd/generator`.
pub fn generator_dir(scope: Scope) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/run/systemd/generator"),
        Scope::User => runtime_dir().join("systemd/generator"),
    }
}

/// The user's runtime directory (`$XDG_RUNTIME_DIR`, else `/run/user/UID`).
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid())))
}

/// The cache directory `vmctl run` will use under this scope's manager.
pub fn cache_for(scope: Scope) -> PathBuf {
    match (std::env::var_os("VMCTL_CACHE_DIR"), scope) {
        (Some(c), _) => PathBuf::from(c),
        // A system unit runs as root, whoever renders it.
        (None, Scope::System) => PathBuf::from("/var/cache/vmctl"),
        (None, Scope::User) => crate::paths::cache_dir(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_directories() {
        let home = Path::new("/home/alice");
        assert_eq!(
            unit_dir(Scope::System, None, home),
            Path::new("/etc/systemd/system")
        );
        assert_eq!(
            unit_dir(Scope::User, None, home),
            Path::new("/home/alice/.config/systemd/user")
        );
        assert_eq!(
            unit_dir(Scope::User, Some(Path::new("/cfg")), home),
            Path::new("/cfg/systemd/user")
        );
        // The XDG spec says to ignore relative values.
        assert_eq!(
            unit_dir(Scope::User, Some(Path::new("cfg")), home),
            Path::new("/home/alice/.config/systemd/user")
        );
    }
}
