//! Reading the generator's definitions from disk: the drop-ins (`/etc/vmctl/vms/NAME.toml`) and
//! the home's VMs, with what the plan needs to know of each (its disk, whether it runs in its
//! own unit, whether a drop-in made it).

use std::path::{Path, PathBuf};

use crate::paths::Home;
use crate::runstate::{self, Liveness};
use crate::systemd::generator::plan::{Found, Message, Source};
use crate::systemd::unit::unit_name;
use crate::types::{Scope, ServiceUnit, VmName};

/// Read the definitions: every `NAME.toml` in `drop_ins` (hidden files and other names are
/// ignored, as editors leave them), then every VM of `home`. A missing directory holds none.
pub fn find(home: &Home, drop_ins: &Path, scope: Scope) -> (Vec<Found>, Vec<Message>) {
    let mut found = Vec::new();
    let mut messages = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(drop_ins) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            messages.push(Message::error(drop_ins, format_args!("cannot read: {e}")));
            Vec::new()
        }
    };
    files.sort();
    for path in files {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".toml") else {
            continue;
        };
        if file.starts_with('.') {
            continue;
        }
        let name = match stem.parse::<VmName>() {
            Ok(n) => n,
            Err(e) => {
                messages.push(Message::error(
                    &path,
                    format_args!("the file name must be NAME.toml for a VM name: {e}"),
                ));
                continue;
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => found.push(Found {
                name,
                source: Source::DropIn(path),
                text,
            }),
            Err(e) => messages.push(Message::error(&path, format_args!("cannot read: {e}"))),
        }
    }
    for name in crate::def::store::names(home) {
        let vm = home.vm(&name);
        let path = vm.definition();
        let own_unit = ServiceUnit {
            name: unit_name(&name),
            scope,
        };
        let runs_in_its_unit = match runstate::liveness(&vm) {
            Liveness::Running { state: Some(s), .. } => s.unit.as_ref() == Some(&own_unit),
            _ => false,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => found.push(Found {
                name,
                source: Source::Home {
                    path,
                    has_disk: vm.disk().exists(),
                    runs_in_its_unit,
                    made_from_drop_in: vm.drop_in_record().exists(),
                },
                text,
            }),
            Err(e) => messages.push(Message::error(&path, format_args!("cannot read: {e}"))),
        }
    }
    (found, messages)
}

/// The drop-in directory: `/etc/vmctl/vms`, or `$XDG_CONFIG_HOME/vmctl/vms`
/// (`~/.config/vmctl/vms`) for a user manager.
pub fn drop_in_dir(scope: Scope, config_dir: &Path) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/etc/vmctl/vms"),
        Scope::User => config_dir.join("vmctl/vms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::dirs::config_dir;

    #[test]
    fn drop_in_directories() {
        let config = config_dir(None, Path::new("/home/alice"));
        assert_eq!(
            drop_in_dir(Scope::System, &config),
            Path::new("/etc/vmctl/vms")
        );
        assert_eq!(
            drop_in_dir(Scope::User, &config),
            Path::new("/home/alice/.config/vmctl/vms")
        );
        let config = config_dir(Some(Path::new("/cfg")), Path::new("/home/alice"));
        assert_eq!(
            drop_in_dir(Scope::User, &config),
            Path::new("/cfg/vmctl/vms")
        );
    }
}
