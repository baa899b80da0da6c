//! `vmctl create`: a VM's definition and its disk, a thin qcow2 overlay on the image, made in a
//! temporary directory and renamed into place (all or nothing), after every check that bad
//! input can fail; and `create --from FILE --update`, which brings a stopped VM's definition in
//! line with the drop-in file that defines it.

use std::path::Path;

use crate::def::config::VmConfig;
use crate::def::spec::{self, VmSpec};
use crate::def::store::{limits, load, port_owner};
use crate::error::{Error, IoContext, Problems, Result};
use crate::image;
use crate::paths::{Home, VmPaths};
use crate::runstate::{self, Liveness};
use crate::sys::fsutil;
use crate::types::VmName;
use crate::vm::ports::foreign_address;

pub fn create(home: &Home, name: &VmName, cfg: &VmConfig, source_name: &str) -> Result<VmSpec> {
    create_as(
        home,
        name,
        cfg,
        source_name,
        DefinedBy::Command,
        DiskFrom::Image,
    )
}

/// Where a new VM's disk comes from.
#[derive(Debug, Clone, Copy)]
pub enum DiskFrom<'a> {
    /// A thin overlay on its image (`vmctl create`).
    Image,
    /// A copy of another (stopped) VM's disk (`vmctl clone`): what differs from the image,
    /// on the same image, or with `full` the whole chain in one standalone file. Its app's
    /// last release comes along.
    Vm { from: &'a VmPaths, full: bool },
}

/// Where a VM's definition comes from, and so who may change it.
#[derive(Debug, Clone, Copy)]
pub enum DefinedBy<'a> {
    /// `vmctl create`: the definition is the VM's own.
    Command,
    /// A drop-in file (`create --from FILE --update`, which each start of its unit runs).
    DropIn(&'a Path),
    /// A stack file (`vmctl up`).
    Stack(&'a Path),
}

/// `create`, of a VM defined by `by`.
pub(crate) fn create_as(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    source_name: &str,
    by: DefinedBy,
    disk: DiskFrom,
) -> Result<VmSpec> {
    let made = make(home, name, cfg, source_name, by, disk);
    crate::events::after(
        home,
        name.as_str(),
        "created",
        |s: &VmSpec| serde_json::json!({"image": s.image}),
        made,
    )
}

fn make(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    source_name: &str,
    by: DefinedBy,
    disk: DiskFrom,
) -> Result<VmSpec> {
    let spec = spec::validate(name, cfg, limits(), source_name)?;
    let paths = home.vm(name);
    // Check everything before touching the home, so bad input leaves nothing behind; the checks
    // that race with other vmctl processes are repeated under the lock.
    let img = precheck(home, &spec, source_name)?;
    let vms = home.vms_dir();
    std::fs::create_dir_all(&vms).path_ctx("create", &vms)?;
    let _lock = fsutil::lock_exclusive(&home.vms_lock())?;
    precheck(home, &spec, source_name)?;
    // Addresses on private networks are given here, under the lock that every definition is
    // written under, so no two VMs get one.
    let spec = VmSpec {
        networks: crate::def::network::assign(home, &spec, source_name)?,
        ..spec
    };
    // Build the VM in a temporary directory and rename it into place: all or nothing.
    let tmp = fsutil::TempDir::new(&vms, &format!(".create-{name}-"))?;
    let staging = VmPaths {
        dir: tmp.path().to_path_buf(),
    };
    make_disk(&staging, &spec, &img, disk)?;
    crate::guest::provision::new_machine_id(&staging)?;
    let spec = crate::guest::provision::setup(&spec, &img, &staging, &paths)?;
    match (&spec.wsgi_app, disk) {
        (Some(_), DiskFrom::Vm { from, .. }) if from.app_bundle().exists() => {
            let (src, dst) = (from.app_bundle(), staging.app_bundle());
            std::fs::copy(&src, &dst).path_ctx("copy", &src)?;
        }
        // Your app's first release, which the guest installs at its first boot.
        (Some(app), _) => fsutil::write_atomic(
            &staging.app_bundle(),
            &crate::app::bundle::build(app, &app.dir)?,
        )?,
        (None, _) => {}
    }
    fsutil::write_atomic(&staging.definition(), definition_text(&spec, by).as_bytes())?;
    if let DefinedBy::DropIn(f) = by {
        write_drop_in_record(&staging.drop_in_record(), f)?;
    }
    std::fs::rename(tmp.path(), &paths.dir).path_ctx("create", &paths.dir)?;
    Ok(spec)
}

/// The new VM's disk in `staging`, as `from` says.
fn make_disk(
    staging: &VmPaths,
    spec: &VmSpec,
    img: &image::store::Image,
    from: DiskFrom,
) -> Result<()> {
    match from {
        DiskFrom::Image => crate::qemu::img::create(&staging.disk(), spec.disk, Some(&img.disk())),
        DiskFrom::Vm { from, full } => {
            let base = (!full).then(|| img.disk());
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr()) && full;
            crate::qemu::img::convert(&from.disk(), &staging.disk(), base.as_deref(), progress)
        }
    }
}

/// Name free, sockets fit, image built, disk large enough, forwards from this host's addresses and
/// host ports not in another definition.
fn precheck(home: &Home, spec: &VmSpec, source_name: &str) -> Result<image::store::Image> {
    let name = &spec.name;
    let paths = home.vm(name);
    if paths.dir.exists() {
        return Err(Error::Usage(format!(
            "VM {name} already exists ({}); pick another name or `vmctl rm {name}` first",
            paths.dir.display()
        )));
    }
    paths.check_socket_paths()?;
    let mut problems = Problems::default();
    let img = problems.check(
        "image",
        image::store::find(home, &spec.image, spec.arch).map_err(|e| e.to_string()),
    );
    if let Some(img) = &img {
        crate::guest::provision::precheck(spec, img, &mut problems);
        if spec.disk.bytes() < img.manifest.virtual_size {
            problems.add(
                "disk",
                format!(
                    "{} is smaller than image {} ({})",
                    spec.disk,
                    spec.image,
                    crate::types::ByteSize(img.manifest.virtual_size)
                ),
            );
        }
    }
    foreign_ports(home, spec, &mut problems);
    shared_dirs(home, spec, &mut problems);
    problems.into_result(source_name)?;
    crate::def::network::assign(home, spec, source_name)?;
    Ok(img.expect("no problem, so the image was found"))
}

/// Shared folders whose host directory cannot be shared (see `def::mounts::check_host`).
fn shared_dirs(home: &Home, spec: &VmSpec, problems: &mut Problems) {
    for (i, m) in spec.mounts.iter().enumerate() {
        if let Err(why) = crate::def::mounts::check_host(m, &home.root) {
            problems.add(format!("mounts[{i}]"), why);
        }
    }
}

/// Forwards of `spec` from an address this host lacks, or from a host port that another VM's
/// definition forwards.
pub(crate) fn foreign_ports(home: &Home, spec: &VmSpec, problems: &mut Problems) {
    for (i, f) in spec.ports.iter().enumerate() {
        if let Some(why) = foreign_address(f) {
            problems.add(format!("ports[{i}]"), why);
        } else if let Some((vm, p)) = port_owner(home, &spec.name, f) {
            problems.add(
                format!("ports[{i}]"),
                format!("host port {} is already forwarded by VM {vm} ({p})", f.host),
            );
        }
    }
}

/// `vm.toml`: a header comment saying who writes it, then the definition.
fn definition_text(spec: &VmSpec, by: DefinedBy) -> String {
    let header = match by {
        DefinedBy::Command => format!(
            "# VM {} — written by vmctl; edit while the VM is stopped.",
            spec.name
        ),
        DefinedBy::DropIn(f) => format!(
            "# VM {} — written by vmctl from {} (`vmctl create --update`, which each start of its\n# unit runs): edit that file, not this one.",
            spec.name,
            in_comment(&f.display().to_string())
        ),
        DefinedBy::Stack(f) => format!(
            "# VM {} — written by `vmctl up` from the stack file {}: edit that file, then run\n# `vmctl up` again.",
            spec.name,
            in_comment(&f.display().to_string())
        ),
    };
    format!("{header}\n{}", spec.to_config().to_toml())
}

/// A value as it may stand in a comment line: control characters (a newline would end the
/// comment and start TOML) written as escapes.
fn in_comment(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What `create --update` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created,
    /// The stored definition already says what the file says.
    Unchanged,
    /// The fields that changed, `field: old → new`.
    Updated(Vec<String>),
    /// The VM runs and its definition differs from the file in these fields; left as it is.
    Differs(Vec<String>),
}

/// Fields that the VM's disk or its provisioning at create depend on: changing them takes a
/// new VM.
const FIXED_AT_CREATE: [&str; 5] = ["image", "arch", "disk", "user", "ssh_key"];

/// `create --from FILE --update`: create the VM from `file` if it does not exist; else bring
/// its stored definition in line with the file, which must then be stopped. Fields fixed at
/// create (image, arch, disk, user, ssh_key) cannot change this way; `user` and `ssh_key` left
/// out of the file keep what create resolved for them.
pub fn create_or_update(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    file: &Path,
) -> Result<(VmSpec, Applied)> {
    let file = &std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let (spec, applied) = define(home, name, cfg, DefinedBy::DropIn(file))?;
    if let Applied::Differs(changed) = &applied {
        let pid = match runstate::liveness(&home.vm(name)) {
            Liveness::Running { pid, .. } => pid.to_string(),
            _ => "?".into(),
        };
        return Err(Error::State(format!(
            "VM {name} is running (QEMU pid {pid}); stop it to apply {} ({})",
            file.display(),
            changed.join(", ")
        )));
    }
    Ok((spec, applied))
}

/// A VM of a stack file (`vmctl up`): created, or its definition brought in line with the file
/// while it is stopped; a running VM that differs is left as it is (`Applied::Differs`).
pub fn define_from_stack(
    home: &Home,
    name: &VmName,
    cfg: &VmConfig,
    file: &Path,
) -> Result<(VmSpec, Applied)> {
    define(home, name, cfg, DefinedBy::Stack(file))
}

/// Create the VM from `cfg` if it does not exist; else bring its stored definition in line
/// with `cfg` while it is stopped (a running one that differs: `Applied::Differs`). Fields fixed
/// at create (image, arch, disk, user, ssh_key) cannot change this way; `user` and `ssh_key`
/// left out keep what create resolved for them, and so do addresses on networks.
fn define(home: &Home, name: &VmName, cfg: &VmConfig, by: DefinedBy) -> Result<(VmSpec, Applied)> {
    let source_name = match by {
        DefinedBy::DropIn(f) | DefinedBy::Stack(f) => f.display().to_string(),
        DefinedBy::Command => "command line".into(),
    };
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return create_as(home, name, cfg, &source_name, by, DiskFrom::Image)
            .map(|s| (s, Applied::Created));
    }
    let mut wanted = spec::validate(name, cfg, limits(), &source_name)?;
    let _home_lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let stored = load(home, name)?;
    if wanted.user.is_none() {
        wanted.user = stored.user.clone();
    }
    wanted.ssh_key = match wanted.ssh_key.take() {
        Some(k) => Some(std::path::absolute(&k).unwrap_or(k)),
        None => stored.ssh_key.clone(),
    };
    // A network the file names without an address keeps the address the VM has there.
    for a in wanted.networks.iter_mut().filter(|a| a.address.is_none()) {
        a.address = stored
            .networks
            .iter()
            .find(|s| s.network == a.network)
            .and_then(|s| s.address);
    }
    wanted.networks = crate::def::network::assign(home, &wanted, &source_name)?;
    if let DefinedBy::DropIn(file) = by {
        // The file defines the VM from now on (also one made by `vmctl create` before).
        let record = paths.drop_in_record();
        if std::fs::read_to_string(&record).ok().as_deref() != file.to_str() {
            write_drop_in_record(&record, file)?;
        }
    }
    let changes = config_changes(&stored.to_config(), &wanted.to_config());
    if changes.is_empty() {
        return Ok((stored, Applied::Unchanged));
    }
    let def = paths.definition();
    update_problems(home, &wanted, &changes, &def).into_result(&source_name)?;
    let changed: Vec<String> = changes
        .iter()
        .map(|(field, old, new)| format!("{field}: {old} → {new}"))
        .collect();
    if runstate::liveness(&paths).is_running() {
        return Ok((stored, Applied::Differs(changed)));
    }
    fsutil::write_atomic(&def, definition_text(&wanted, by).as_bytes())?;
    Ok((wanted, Applied::Updated(changed)))
}

/// What keeps `wanted` from replacing the stored definition `def`: changes to fields fixed at
/// create, forwards from addresses this host lacks or of host ports another VM forwards, and (if
/// those are fine) what provisioning needs.
fn update_problems(
    home: &Home,
    wanted: &VmSpec,
    changes: &[(String, String, String)],
    def: &Path,
) -> Problems {
    let name = &wanted.name;
    let mut problems = Problems::default();
    for (field, old, new) in changes {
        if FIXED_AT_CREATE.contains(&field.as_str()) {
            problems.add(
                field.clone(),
                format!(
                    "VM {name} has {old} ({}); {new} takes a new VM: `vmctl rm {name}` (its disk is lost), then create it again",
                    def.display()
                ),
            );
        }
    }
    foreign_ports(home, wanted, &mut problems);
    shared_dirs(home, wanted, &mut problems);
    if problems.is_empty() {
        if let Ok(img) = image::store::find(home, &wanted.image, wanted.arch) {
            crate::guest::provision::precheck(wanted, &img, &mut problems);
        }
    }
    problems
}

fn write_drop_in_record(record: &Path, file: &Path) -> Result<()> {
    fsutil::write_atomic(record, file.as_os_str().as_encoded_bytes())
}

/// Top-level fields whose values differ, as (field, old, new) in TOML notation ("-" for unset).
fn config_changes(old: &VmConfig, new: &VmConfig) -> Vec<(String, String, String)> {
    let table = |c: &VmConfig| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (old, new) = (table(old), table(new));
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let show = |v: Option<&toml::Value>| match v {
        None => "-".to_string(),
        Some(toml::Value::Table(t)) => {
            format!("{{ {} }}", t.to_string().trim().replace('\n', ", "))
        }
        Some(v) => v.to_string(),
    };
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| (k.clone(), show(old.get(k)), show(new.get(k))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_top_level_field_with_old_and_new_values() {
        let old = VmConfig {
            cpus: Some(1),
            memory: Some("512M".into()),
            ports: vec!["8080:80".into()],
            ..Default::default()
        };
        let new = VmConfig {
            cpus: Some(2),
            memory: Some("512M".into()),
            health: Some(crate::def::config::HealthConfig {
                tcp: Some(80),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            config_changes(&old, &new),
            vec![
                ("cpus".to_string(), "1".to_string(), "2".to_string()),
                ("health".into(), "-".into(), "{ tcp = 80 }".into()),
                ("ports".into(), "[\"8080:80\"]".into(), "-".into()),
            ]
        );
        assert!(config_changes(&old, &old).is_empty());
    }

    #[test]
    fn a_stored_definition_says_who_writes_it() {
        let cfg = VmConfig::parse("memory = \"256M\"\n", "t").unwrap();
        let spec = spec::validate(
            &"web".parse().unwrap(),
            &cfg,
            spec::Limits {
                host_memory: u64::MAX,
            },
            "t",
        )
        .unwrap();
        let own = definition_text(&spec, DefinedBy::Command);
        assert!(own.starts_with("# VM web — written by vmctl; edit while the VM is stopped.\n"));
        let dropped = definition_text(
            &spec,
            DefinedBy::DropIn(Path::new("/etc/vmctl/vms/web.toml")),
        );
        assert!(
            dropped.contains("from /etc/vmctl/vms/web.toml"),
            "{dropped}"
        );
        // What is written reads back to the same VM.
        let again = VmConfig::parse(&own, "t").unwrap();
        assert_eq!(again, spec.to_config());
        // A value cannot end the header comment and add keys.
        let forged = definition_text(
            &spec,
            DefinedBy::DropIn(Path::new("/x\nafter = [\"web\"]\r\n.toml")),
        );
        assert!(forged.contains("from /x\\nafter"), "{forged}");
        assert_eq!(VmConfig::parse(&forged, "t").unwrap(), spec.to_config());
    }
}
