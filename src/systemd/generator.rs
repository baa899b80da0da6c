//! `vmctl-generator`: VMs that start at boot because a definition was dropped in place, in the
//! manner of Podman's Quadlet. The vmctl binary runs as a systemd generator
//! (systemd.generator(7)) when it is invoked as `vmctl-generator`: `vmctl systemd
//! install-generator` links `/etc/systemd/system-generators/vmctl-generator` (or
//! `user-generators/`) to it, and systemd runs it at boot and at every `daemon-reload` with its
//! output directories as arguments.
//!
//! It reads two kinds of definitions ([`find`]):
//! - drop-ins, `/etc/vmctl/vms/NAME.toml` (`~/.config/vmctl/vms/NAME.toml` for a user manager):
//!   each gets a unit whose `ExecStartPre=vmctl create NAME --from FILE --update` creates the VM
//!   in the home from the file, or brings its definition up to date, before `vmctl run`;
//! - VMs of the home (`/var/lib/vmctl`, or the user's home) whose `vm.toml` says
//!   `autostart = true`, and the home VMs those are ordered after (`after = [...]`).
//!
//! [`plan`] is pure: definitions in, unit texts (rendered by [`systemd::render`], the templates of
//! `vmctl systemd generate`) and problems out. Units go to the normal directory
//! (`/run/systemd/generator`), below `/etc/systemd/system` in systemd's search order; a VM with a
//! unit installed there is left to that unit. `autostart = true` adds the `.wants` link of
//! `multi-user.target` (`default.target`). A generator must be quick, talk to no other process
//! and never fail the boot: a bad definition is logged (to `/dev/kmsg` when systemd runs it, else
//! stderr) with its file and problem, and skipped; the exit status is always 0.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::def::config::VmConfig;
use crate::def::spec::{self, Limits, VmSpec};
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::runstate::{self, Liveness};
use crate::systemd::unit::{self as systemd, Origin, UnitContext};
use crate::types::VmName;
use crate::types::{Scope, ServiceUnit};

/// The file name (argv[0]) under which `vmctl` runs as the generator.
pub const PROGRAM: &str = "vmctl-generator";

/// Where a definition was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A drop-in, `DIR/NAME.toml`: the VM is created from it.
    DropIn(PathBuf),
    /// `HOME/vms/NAME/vm.toml` of a VM made by `vmctl create`.
    Home {
        path: PathBuf,
        has_disk: bool,
        /// It runs, under its own unit of this scope (`vmctl-NAME.service`).
        runs_in_its_unit: bool,
        /// A drop-in made it (`vms/NAME/drop-in`): that file, not `autostart`, decides.
        made_from_drop_in: bool,
    },
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::DropIn(p) | Source::Home { path: p, .. } => p,
        }
    }
}

/// A definition as read from disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: VmName,
    pub source: Source,
    pub text: String,
}

/// Everything else a plan depends on.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub scope: Scope,
    pub home: &'a Path,
    /// The drop-in directory (for messages).
    pub drop_ins: &'a Path,
    /// The vmctl binary units run (the generator's own binary).
    pub vmctl: &'a Path,
    pub cache: &'a Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// A problem with one definition, naming its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub level: Level,
    pub text: String,
}

impl Message {
    fn error(path: &Path, what: impl std::fmt::Display) -> Message {
        Message {
            level: Level::Error,
            text: one_line(&format!("{}: {what}", path.display())),
        }
    }
    fn warning(path: &Path, what: impl std::fmt::Display) -> Message {
        Message {
            level: Level::Warning,
            text: one_line(&format!("{}: {what}", path.display())),
        }
    }
}

/// kmsg takes one record per line: a list under a heading ("...:\n  a\n  b") becomes "...: a; b".
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for l in s.trim_end().lines().map(str::trim) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

/// A unit to write.
#[derive(Debug, Clone)]
pub struct Unit {
    pub name: VmName,
    pub text: String,
    /// `autostart = true`: linked into `multi-user.target.wants` (`default.target.wants`).
    pub autostart: bool,
    pub source: Source,
}

impl Unit {
    pub fn file_name(&self) -> String {
        systemd::unit_name(&self.name)
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Sorted by VM name.
    pub units: Vec<Unit>,
    pub messages: Vec<Message>,
}

/// Which definitions become which units. `installed` says whether a VM's unit is installed in
/// the scope's unit directory (`/etc/systemd/system`), which takes precedence.
pub fn plan(found: Vec<Found>, installed: &dyn Fn(&VmName) -> bool, cx: &Context) -> Plan {
    let mut p = Plan::default();
    // Drop-ins first: they own their names (the home VM of the same name is the one they made).
    let (drop_ins, homes): (Vec<Found>, Vec<Found>) = found
        .into_iter()
        .partition(|f| matches!(f.source, Source::DropIn(_)));
    let drop_in_names: BTreeSet<VmName> = drop_ins.iter().map(|f| f.name.clone()).collect();
    let mut valid: BTreeMap<VmName, (VmSpec, Source)> = BTreeMap::new();
    for f in drop_ins.into_iter().chain(homes) {
        if valid.contains_key(&f.name) {
            continue;
        }
        let shown = f.source.path().display().to_string();
        let parsed = VmConfig::parse(&f.text, &shown).and_then(|cfg| {
            spec::validate(
                &f.name,
                &cfg,
                Limits {
                    host_memory: u64::MAX,
                },
                &shown,
            )
        });
        match parsed {
            // The error names the file already.
            Err(e) => p.messages.push(Message {
                level: Level::Error,
                text: one_line(&format!("{e}; no unit for VM {}", f.name)),
            }),
            Ok(spec) => {
                valid.insert(f.name, (spec, f.source));
            }
        }
    }

    // The units to make: every drop-in, and the home's VMs with autostart = true.
    let mut chosen: BTreeMap<VmName, bool> = BTreeMap::new();
    for (name, (spec, source)) in &valid {
        let installed_unit = installed(name);
        // A drop-in decides for its VM; one whose drop-in was deleted no longer autostarts.
        let left_to_drop_in = drop_in_names.contains(name)
            || matches!(
                source,
                Source::Home {
                    made_from_drop_in: true,
                    ..
                }
            );
        match source {
            Source::DropIn(path) if installed_unit => p.messages.push(Message::warning(
                path,
                format_args!(
                    "not used: {} is installed and takes precedence; `vmctl systemd uninstall {name}{}` to run VM {name} from this file",
                    unit_dir_file(cx.scope, name),
                    user_flag(cx.scope)
                ),
            )),
            Source::DropIn(_) => {
                chosen.insert(name.clone(), spec.autostart);
            }
            Source::Home { .. } if installed_unit => {}
            // A VM that its generated unit runs keeps the unit until it stops, whatever became
            // of its drop-in or autostart: a unit that lost its file cannot stop the guest
            // gracefully (systemd would SIGTERM QEMU at once).
            Source::Home {
                runs_in_its_unit: true,
                ..
            } if left_to_drop_in || !spec.autostart => {
                chosen.insert(name.clone(), false);
            }
            Source::Home { .. } if left_to_drop_in || !spec.autostart => {}
            Source::Home {
                path,
                has_disk: false,
                ..
            } => p.messages.push(Message::error(
                path,
                format_args!(
                    "autostart = true, but VM {name} has no disk; make VMs with `vmctl create`, or drop the definition in {}",
                    cx.drop_ins.join(format!("{name}.toml")).display()
                ),
            )),
            Source::Home { .. } => {
                chosen.insert(name.clone(), true);
            }
        }
    }

    // What they start after must have a unit too: a home VM gets one (without autostart).
    let mut queue: Vec<VmName> = chosen.keys().cloned().collect();
    while let Some(name) = queue.pop() {
        let (spec, source) = &valid[&name];
        for dep in &spec.after {
            if chosen.contains_key(dep) || installed(dep) {
                continue;
            }
            match valid.get(dep) {
                Some((_, Source::Home { has_disk: true, .. })) => {
                    chosen.insert(dep.clone(), false);
                    queue.push(dep.clone());
                }
                _ => p.messages.push(Message::warning(
                    source.path(),
                    format_args!(
                        "after = [\"{dep}\"], but VM {dep} has no unit (no valid {}, no VM {dep} in {}, no installed {}); {} fails to start until it has one",
                        cx.drop_ins.join(format!("{dep}.toml")).display(),
                        cx.home.display(),
                        systemd::unit_name(dep),
                        systemd::unit_name(&name)
                    ),
                )),
            }
        }
    }

    for (name, autostart) in chosen {
        let (spec, source) = &valid[&name];
        let origin = match source {
            Source::DropIn(path) => {
                if spec.ssh_key.as_ref().is_some_and(|k| k.is_relative()) {
                    p.messages.push(Message::warning(
                        path,
                        "ssh_key is a relative path, which `vmctl create` resolves from /; use an absolute path",
                    ));
                }
                Origin::DropIn(path)
            }
            Source::Home { path, .. } => Origin::Generated(path),
        };
        match systemd::render(&UnitContext {
            spec,
            origin,
            scope: cx.scope,
            vmctl: cx.vmctl,
            home: cx.home,
            cache: cx.cache,
        }) {
            Ok(text) => p.units.push(Unit {
                name,
                text,
                autostart,
                source: source.clone(),
            }),
            Err(e) => p.messages.push(Message::error(
                source.path(),
                format_args!("{e}; no unit for VM {name}"),
            )),
        }
    }
    p
}

fn unit_dir_file(scope: Scope, name: &VmName) -> String {
    systemd::unit_dir_here(scope)
        .join(systemd::unit_name(name))
        .display()
        .to_string()
}

fn user_flag(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "",
        Scope::User => " --user",
    }
}

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
            name: systemd::unit_name(&name),
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

/// Write the plan's units into the generator's normal directory, with a `.wants` link for each
/// autostart unit. What cannot be written is reported and skipped.
pub fn write(plan: &Plan, scope: Scope, dir: &Path) -> Vec<Message> {
    let mut problems = Vec::new();
    for u in &plan.units {
        let path = dir.join(u.file_name());
        let written = std::fs::write(&path, &u.text).path_ctx("write", &path);
        let linked = written.and_then(|()| {
            if u.autostart {
                systemd::link_wanted(scope, &path)
            } else {
                Ok(())
            }
        });
        if let Err(e) = linked {
            problems.push(Message::error(u.source.path(), format_args!("{e}")));
        }
    }
    problems
}

/// The drop-in directory: `/etc/vmctl/vms`, or `$XDG_CONFIG_HOME/vmctl/vms`
/// (`~/.config/vmctl/vms`) for a user manager.
pub fn drop_in_dir(scope: Scope, config_dir: &Path) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/etc/vmctl/vms"),
        Scope::User => config_dir.join("vmctl/vms"),
    }
}

/// Which manager runs the generator: `$SYSTEMD_SCOPE` (systemd 251 and later), else the
/// directory it was run from, else the user it runs as.
pub fn scope_of(systemd_scope: Option<&str>, argv0: &Path, root: bool) -> Scope {
    match systemd_scope {
        Some("system") => return Scope::System,
        Some("user") => return Scope::User,
        _ => {}
    }
    let dir = argv0
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str());
    match dir {
        Some("system-generators") => Scope::System,
        Some("user-generators") => Scope::User,
        _ => Scope::user(!root),
    }
}

/// Was this process started as `vmctl-generator`?
pub fn invoked_as_generator() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|a| Path::new(&a).file_name() == Some(PROGRAM.as_ref()))
}

/// Where messages go: `/dev/kmsg` when systemd runs the generator (its stdout and stderr are
/// /dev/null then), else stderr; `SYSTEMD_LOG_TARGET=console|kmsg` chooses.
struct Log {
    kmsg: Option<std::fs::File>,
}

impl Log {
    fn new(dry_run: bool) -> Log {
        let target = std::env::var("SYSTEMD_LOG_TARGET").unwrap_or_default();
        let by_systemd = std::env::var_os("SYSTEMD_SCOPE").is_some();
        let want_kmsg = match target.as_str() {
            "console" => false,
            "kmsg" => true,
            _ => by_systemd && !dry_run,
        };
        let kmsg = want_kmsg
            .then(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .ok()
            })
            .flatten();
        Log { kmsg }
    }

    fn log(&mut self, m: &Message) {
        let (priority, word) = match m.level {
            Level::Error => (3, "error"),
            Level::Warning => (4, "warning"),
        };
        if let Some(k) = &mut self.kmsg {
            // A kmsg record is at most ~1 KiB.
            let mut text = m.text.clone();
            if text.len() > 900 {
                let mut end = 900;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            let line = format!("<{priority}>{PROGRAM}[{}]: {text}\n", std::process::id());
            if k.write_all(line.as_bytes()).is_ok() {
                return;
            }
        }
        eprintln!("{PROGRAM}: {word}: {}", m.text);
    }
}

/// The plan for this process's scope and environment, with the problems met while reading.
/// `None` for a user manager of root, whose VMs are the system manager's.
pub fn plan_here(scope: Scope) -> Result<Option<Plan>> {
    if scope == Scope::User && nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let home = Home::resolve(std::env::var_os("VMCTL_HOME").map(PathBuf::from))?;
    let drop_ins = drop_in_dir(scope, &systemd::config_dir_here());
    let vmctl = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let cache = systemd::cache_for(scope);
    let (found, mut messages) = find(&home, &drop_ins, scope);
    let unit_dir = systemd::unit_dir_here(scope);
    let installed = |n: &VmName| unit_dir.join(systemd::unit_name(n)).exists();
    let mut p = plan(
        found,
        &installed,
        &Context {
            scope,
            home: &home.root,
            drop_ins: &drop_ins,
            vmctl: &vmctl,
            cache: &cache,
        },
    );
    messages.append(&mut p.messages);
    p.messages = messages;
    Ok(Some(p))
}

/// `vmctl-generator NORMAL-DIR [EARLY-DIR] [LATE-DIR]`, as systemd runs it; or
/// `vmctl-generator --dryrun`, which prints the units instead of writing them and exits 1 when
/// a definition is bad. Never fails otherwise: problems are logged and skipped.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = PathBuf::from(args.first().cloned().unwrap_or_default());
    let dry_run = args.get(1).is_some_and(|a| a == "--dryrun");
    let out_dir = args.get(1).filter(|_| !dry_run).map(PathBuf::from);
    if !dry_run && out_dir.is_none() {
        eprintln!(
            "usage: {PROGRAM} NORMAL-DIR [EARLY-DIR] [LATE-DIR]  (as systemd runs it)\n       {PROGRAM} --dryrun  (print the units it would make)"
        );
        return ExitCode::from(crate::error::exit::USAGE);
    }
    let mut log = Log::new(dry_run);
    let scope = scope_of(
        std::env::var("SYSTEMD_SCOPE").ok().as_deref(),
        &argv0,
        nix::unistd::geteuid().is_root(),
    );
    let p = match plan_here(scope) {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            log.log(&Message {
                level: Level::Error,
                text: one_line(&format!("{e}; no units made")),
            });
            return ExitCode::SUCCESS;
        }
    };
    let mut messages = p.messages.clone();
    match &out_dir {
        Some(dir) => messages.extend(write(&p, scope, dir)),
        None => print!("{}", dry_run_text(&p, scope)),
    }
    for m in &messages {
        log.log(m);
    }
    let failed = messages.iter().any(|m| m.level == Level::Error);
    if dry_run && failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `---vmctl-web.service---` and its text, for each unit (as Quadlet's `-dryrun` prints them).
pub fn dry_run_text(p: &Plan, scope: Scope) -> String {
    let target = match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    };
    let mut out = String::new();
    for u in &p.units {
        out.push_str(&format!(
            "---{}---{}\n{}\n",
            u.file_name(),
            if u.autostart {
                format!(" (wanted by {target})")
            } else {
                String::new()
            },
            u.text
        ));
    }
    out
}

/// Where the generator's link goes: `/etc/systemd/system-generators/vmctl-generator`, or
/// `/etc/systemd/user-generators/vmctl-generator` (every user's manager runs it).
pub fn link_path(scope: Scope) -> PathBuf {
    let dir = match scope {
        Scope::System => "/etc/systemd/system-generators",
        Scope::User => "/etc/systemd/user-generators",
    };
    Path::new(dir).join(PROGRAM)
}

/// `vmctl systemd install-generator [--user]`: link the generator to this binary, make the
/// system drop-in directory, and reload the system manager so the generator runs now. Returns
/// what was done, one line each; problems found in the definitions are logged as warnings.
pub fn install(scope: Scope) -> Result<Vec<String>> {
    let exe = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let link = link_path(scope);
    let mut done = Vec::new();
    // Generators run before /home, /var and other late file systems are mounted.
    if !["/usr", "/bin", "/sbin", "/opt", "/etc"]
        .iter()
        .any(|d| exe.starts_with(d))
    {
        tracing::warn!(
            "{} may not be mounted yet when systemd runs generators at boot; install vmctl below /usr (e.g. /usr/local/bin) and run this again from there",
            exe.display()
        );
    }
    match std::fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(Error::State(format!(
                "{} exists and is not a link to vmctl; remove it first",
                link.display()
            )));
        }
        Ok(_) if std::fs::read_link(&link).is_ok_and(|t| t == exe) => {
            done.push(format!(
                "{} already links to {}",
                link.display(),
                exe.display()
            ));
        }
        Ok(_) => {
            std::fs::remove_file(&link).path_ctx("remove", &link)?;
            std::os::unix::fs::symlink(&exe, &link).path_ctx("create", &link)?;
            done.push(format!("Linked {} to {}", link.display(), exe.display()));
        }
        Err(_) => {
            let dir = link.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).path_ctx("create", dir)?;
            std::os::unix::fs::symlink(&exe, &link).path_ctx("create", &link)?;
            done.push(format!("Linked {} to {}", link.display(), exe.display()));
        }
    }
    if scope == Scope::User {
        done.push(format!(
            "Users' managers run it when they start (at login, or at boot with linger) and at `systemctl --user daemon-reload`; each user drops definitions in {}",
            drop_in_dir(scope, Path::new("~/.config")).display()
        ));
        return Ok(done);
    }
    let drop_ins = drop_in_dir(scope, Path::new("/"));
    if !drop_ins.is_dir() {
        std::fs::create_dir_all(&drop_ins).path_ctx("create", &drop_ins)?;
        done.push(format!("Created {}", drop_ins.display()));
    }
    if let Some(p) = plan_here(scope)? {
        for m in &p.messages {
            tracing::warn!("{}", m.text);
        }
        let units: Vec<String> = p
            .units
            .iter()
            .map(|u| {
                format!(
                    "{}{}",
                    u.file_name(),
                    if u.autostart { " (autostart)" } else { "" }
                )
            })
            .collect();
        done.push(if units.is_empty() {
            format!(
                "No VM to generate a unit for yet: drop NAME.toml in {}, or set autostart = true in a VM's vm.toml",
                drop_ins.display()
            )
        } else {
            format!("It makes: {}", units.join(", "))
        });
    }
    done.extend(reload(scope)?);
    Ok(done)
}

/// `vmctl systemd uninstall-generator [--user]`: stop the VMs that generated units run (a unit
/// that loses its file at the reload could no longer stop its guest gracefully), remove the link
/// and reload, which drops the generated units.
pub fn uninstall(scope: Scope) -> Result<Vec<String>> {
    let link = link_path(scope);
    match std::fs::symlink_metadata(&link) {
        Err(_) => {
            return Err(Error::NotFound {
                what: "generator",
                name: PROGRAM.into(),
                hint: format!(" ({} does not exist)", link.display()),
            });
        }
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(Error::State(format!(
                "{} is not a link to vmctl; not removing it",
                link.display()
            )));
        }
        Ok(_) => {}
    }
    let mut done = Vec::new();
    if scope == Scope::System && systemd::manager_running(scope) {
        let mut generated: Vec<String> = std::fs::read_dir(systemd::generator_dir(scope))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|f| f.starts_with("vmctl-") && f.ends_with(".service"))
            .collect();
        generated.sort();
        let active = systemd::active_units(scope, &generated);
        if !active.is_empty() {
            systemd::stop_units(scope, &active)?;
            done.push(format!("Stopped {}", active.join(", ")));
        }
    }
    std::fs::remove_file(&link).path_ctx("remove", &link)?;
    done.push(format!("Removed {}", link.display()));
    match scope {
        Scope::System => done.extend(reload(scope)?),
        Scope::User => done.push(
            "Users' managers drop its units at their next daemon-reload or start; stop VMs that run under them first (systemctl --user stop vmctl-NAME), since a unit that lost its file cannot stop its guest gracefully".into(),
        ),
    }
    Ok(done)
}

/// `systemctl daemon-reload` when the system manager runs, which runs the generators.
fn reload(scope: Scope) -> Result<Vec<String>> {
    if systemd::manager_running(scope) {
        systemd::daemon_reload(scope)?;
        Ok(vec![format!(
            "Reloaded the system manager: generated units are in {}",
            systemd::generator_dir(scope).display()
        )])
    } else {
        tracing::warn!("systemd is not running here: the generator runs when it starts");
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/var/lib/vmctl";
    const DROP_INS: &str = "/etc/vmctl/vms";

    fn cx() -> Context<'static> {
        Context {
            scope: Scope::System,
            home: Path::new(HOME),
            drop_ins: Path::new(DROP_INS),
            vmctl: Path::new("/usr/local/bin/vmctl"),
            cache: Path::new("/var/cache/vmctl"),
        }
    }

    fn drop_in(name: &str, text: &str) -> Found {
        Found {
            name: name.parse().unwrap(),
            source: Source::DropIn(PathBuf::from(format!("{DROP_INS}/{name}.toml"))),
            text: text.into(),
        }
    }

    fn home_vm(name: &str, text: &str) -> Found {
        Found {
            name: name.parse().unwrap(),
            source: Source::Home {
                path: PathBuf::from(format!("{HOME}/vms/{name}/vm.toml")),
                has_disk: true,
                runs_in_its_unit: false,
                made_from_drop_in: false,
            },
            text: text.into(),
        }
    }

    fn nothing_installed(_: &VmName) -> bool {
        false
    }

    /// `NAME (autostart)` for each unit.
    fn summary(p: &Plan) -> Vec<String> {
        p.units
            .iter()
            .map(|u| {
                format!(
                    "{}{}",
                    u.name,
                    if u.autostart { " (autostart)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn drop_ins_and_autostart_home_vms_become_units() {
        let p = plan(
            vec![
                drop_in("web", "ports = [\"5080:8080\"]\nautostart = true\n"),
                drop_in("manual", "ports = [\"5081:8080\"]\n"),
                home_vm("db", "ports = [\"5432:5432\"]\nautostart = true\n"),
                home_vm("scratch", "ports = [\"5022:22\"]\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(p.messages, []);
        assert_eq!(summary(&p), ["db (autostart)", "manual", "web (autostart)"]);
        let web = &p.units[2].text;
        assert!(
            web.contains(
                "\nExecStartPre=/usr/local/bin/vmctl create web --from /etc/vmctl/vms/web.toml --update\nExecStart=/usr/local/bin/vmctl run web\n"
            ),
            "{web}"
        );
        assert!(
            web.contains("\nSourcePath=/etc/vmctl/vms/web.toml\n"),
            "{web}"
        );
        let db = &p.units[0].text;
        assert!(!db.contains("ExecStartPre="), "{db}");
        assert!(
            db.contains("\nSourcePath=/var/lib/vmctl/vms/db/vm.toml\n"),
            "{db}"
        );
    }

    #[test]
    fn a_drop_in_owns_its_name_even_when_broken() {
        let p = plan(
            vec![
                drop_in("web", "autostart = true\nmemroy = \"1G\"\n"),
                home_vm("web", "autostart = true\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(summary(&p), Vec::<String>::new());
        assert_eq!(p.messages.len(), 1, "{:?}", p.messages);
        let m = &p.messages[0];
        assert_eq!(m.level, Level::Error);
        assert!(
            m.text
                .starts_with("/etc/vmctl/vms/web.toml: invalid VM definition: line 2:")
                && m.text.contains("memroy")
                && m.text.ends_with("; no unit for VM web")
                && !m.text.contains('\n'),
            "{}",
            m.text
        );
        // Once created, the drop-in's VM is also in the home: one unit, from the drop-in.
        let p = plan(
            vec![
                drop_in("web", "autostart = true\n"),
                home_vm("web", "autostart = true\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(summary(&p), ["web (autostart)"]);
        assert!(matches!(p.units[0].source, Source::DropIn(_)));
    }

    #[test]
    fn bad_definitions_are_skipped_with_every_problem_named() {
        let p = plan(
            vec![
                drop_in(
                    "bad",
                    "ports = [\"70000:22\"]\ncpus = 0\nautostart = true\n",
                ),
                home_vm("worse", "this is not toml"),
                drop_in("good", "autostart = true\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(summary(&p), ["good (autostart)"]);
        let texts: Vec<&str> = p.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with("/etc/vmctl/vms/bad.toml: invalid VM definition: ")
                && texts[0].contains("cpus: must be 1-255; got 0")
                && texts[0].contains("ports[0]: host port must be 1-65535; got 70000"),
            "{}",
            texts[0]
        );
        assert!(
            texts[1].starts_with("/var/lib/vmctl/vms/worse/vm.toml: "),
            "{}",
            texts[1]
        );
    }

    #[test]
    fn installed_units_take_precedence() {
        let installed = |n: &VmName| n.as_str() == "web" || n.as_str() == "db";
        let p = plan(
            vec![
                drop_in("web", "autostart = true\n"),
                home_vm("db", "autostart = true\n"),
                home_vm("api", "autostart = true\nafter = [\"db\"]\n"),
            ],
            &installed,
            &cx(),
        );
        // api's dependency is the installed vmctl-db.service: no warning.
        assert_eq!(summary(&p), ["api (autostart)"]);
        assert_eq!(p.messages.len(), 1, "{:?}", p.messages);
        assert_eq!(p.messages[0].level, Level::Warning);
        assert!(
            p.messages[0].text.starts_with(
                "/etc/vmctl/vms/web.toml: not used: /etc/systemd/system/vmctl-web.service is installed and takes precedence"
            ),
            "{}",
            p.messages[0].text
        );
    }

    #[test]
    fn dependencies_get_units_or_a_warning() {
        let p = plan(
            vec![
                drop_in("api", "autostart = true\nafter = [\"db\", \"cache\"]\n"),
                home_vm("db", "after = [\"disk\"]\n"),
                home_vm("disk", "\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        // db and, through it, disk get units without autostart; cache has none anywhere.
        assert_eq!(summary(&p), ["api (autostart)", "db", "disk"]);
        assert!(
            p.units[0]
                .text
                .contains("\nAfter=vmctl-db.service vmctl-cache.service\nRequires=vmctl-db.service vmctl-cache.service\n")
        );
        assert_eq!(p.messages.len(), 1, "{:?}", p.messages);
        assert_eq!(
            p.messages[0].text,
            "/etc/vmctl/vms/api.toml: after = [\"cache\"], but VM cache has no unit (no valid /etc/vmctl/vms/cache.toml, no VM cache in /var/lib/vmctl, no installed vmctl-cache.service); vmctl-api.service fails to start until it has one"
        );
    }

    #[test]
    fn a_vm_its_unit_runs_keeps_the_unit_until_it_stops_and_a_drop_in_decides() {
        let running = |f: Found| Found {
            source: Source::Home {
                path: f.source.path().to_path_buf(),
                has_disk: true,
                runs_in_its_unit: true,
                made_from_drop_in: false,
            },
            ..f
        };
        let p = plan(
            vec![
                // Its drop-in was deleted, or its autostart turned off.
                running(home_vm("dropped", "autostart = false\n")),
                // Its drop-in broke.
                drop_in("broken", "cpus = 0\n"),
                running(home_vm("broken", "autostart = true\n")),
                home_vm("idle", "autostart = false\n"),
                // Made from a drop-in that is gone: the drop-in, not autostart, decided.
                Found {
                    source: Source::Home {
                        path: PathBuf::from("/var/lib/vmctl/vms/orphan/vm.toml"),
                        has_disk: true,
                        runs_in_its_unit: false,
                        made_from_drop_in: true,
                    },
                    ..home_vm("orphan", "autostart = true\n")
                },
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(summary(&p), ["broken", "dropped"]);
        assert!(
            p.units[0]
                .text
                .contains("\nSourcePath=/var/lib/vmctl/vms/broken/vm.toml\n")
        );
        assert!(!p.units[0].text.contains("ExecStartPre="));
        assert_eq!(p.messages.len(), 1, "{:?}", p.messages);
        assert!(
            p.messages[0]
                .text
                .starts_with("/etc/vmctl/vms/broken.toml: ")
        );
    }

    #[test]
    fn a_home_vm_without_a_disk_is_reported() {
        let mut f = home_vm("web", "autostart = true\n");
        f.source = Source::Home {
            path: PathBuf::from("/var/lib/vmctl/vms/web/vm.toml"),
            has_disk: false,
            runs_in_its_unit: false,
            made_from_drop_in: false,
        };
        let p = plan(vec![f], &nothing_installed, &cx());
        assert!(p.units.is_empty());
        assert!(
            p.messages[0].text.contains("has no disk")
                && p.messages[0].text.contains("/etc/vmctl/vms/web.toml"),
            "{:?}",
            p.messages
        );
    }

    #[test]
    fn drop_ins_that_read_below_home_keep_it_readable() {
        let p = plan(
            vec![drop_in(
                "web",
                "ssh_key = \"/root/.ssh/id_ed25519.pub\"\nimage = \"debian-12\"\n",
            )],
            &nothing_installed,
            &cx(),
        );
        assert!(p.units[0].text.contains("\nProtectHome=read-only\n"));
        let p = plan(
            vec![drop_in("web", "ssh_key = \"keys/web.pub\"\n")],
            &nothing_installed,
            &cx(),
        );
        assert!(p.messages[0].text.contains("ssh_key is a relative path"));
    }

    #[test]
    fn scope_from_environment_directory_or_user() {
        let p = Path::new;
        assert_eq!(
            scope_of(Some("user"), p("/x/vmctl-generator"), true),
            Scope::User
        );
        assert_eq!(
            scope_of(Some("system"), p("vmctl-generator"), false),
            Scope::System
        );
        assert_eq!(
            scope_of(
                None,
                p("/etc/systemd/user-generators/vmctl-generator"),
                true
            ),
            Scope::User
        );
        assert_eq!(
            scope_of(
                None,
                p("/etc/systemd/system-generators/vmctl-generator"),
                false
            ),
            Scope::System
        );
        assert_eq!(scope_of(None, p("./vmctl-generator"), true), Scope::System);
        assert_eq!(scope_of(None, p("./vmctl-generator"), false), Scope::User);
    }

    #[test]
    fn drop_in_directories() {
        let config = systemd::config_dir(None, Path::new("/home/alice"));
        assert_eq!(
            drop_in_dir(Scope::System, &config),
            Path::new("/etc/vmctl/vms")
        );
        assert_eq!(
            drop_in_dir(Scope::User, &config),
            Path::new("/home/alice/.config/vmctl/vms")
        );
        let config = systemd::config_dir(Some(Path::new("/cfg")), Path::new("/home/alice"));
        assert_eq!(
            drop_in_dir(Scope::User, &config),
            Path::new("/cfg/vmctl/vms")
        );
    }

    /// Every entry below `dir`, with link targets, one line each, sorted.
    fn listing(dir: &Path) -> String {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let meta = p.symlink_metadata().unwrap();
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&p).unwrap();
                    let target = target.strip_prefix(root).unwrap_or(&target);
                    out.push(format!("{rel} -> {}", target.display()));
                } else if meta.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(root, &p, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out.join("\n") + "\n"
    }

    /// The whole path from files on disk to the output directory, and the drop-in unit, against
    /// golden files.
    #[test]
    fn generator_output_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home {
            root: tmp.path().join("home"),
        };
        let drop_ins = tmp.path().join("drop-ins");
        std::fs::create_dir_all(&drop_ins).unwrap();
        let put = |p: PathBuf, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            drop_ins.join("api.toml"),
            "ports = [\"5080:8080\"]\nautostart = true\nafter = [\"db\"]\n[health]\nhttp = \"8080/healthz\"\n",
        );
        put(
            drop_ins.join("db.toml"),
            "ports = [\"5432:5432\"]\nautostart = true\n",
        );
        put(drop_ins.join("manual.toml"), "ports = [\"5081:8080\"]\n");
        put(drop_ins.join("bad name.toml"), "\n");
        put(drop_ins.join("broken.toml"), "cpus = \"two\"\n");
        put(drop_ins.join(".api.toml.swp"), "junk");
        put(drop_ins.join("README"), "junk");
        put(
            home.vm(&"old".parse().unwrap()).definition(),
            "autostart = true\n",
        );
        put(home.vm(&"old".parse().unwrap()).disk(), "");
        put(home.vm(&"idle".parse().unwrap()).definition(), "\n");
        put(home.vm(&"idle".parse().unwrap()).disk(), "");

        let (found, mut messages) = find(&home, &drop_ins, Scope::System);
        let out = tmp.path().join("generator");
        std::fs::create_dir(&out).unwrap();
        let p = plan(found, &nothing_installed, &cx());
        messages.extend(p.messages.iter().cloned());
        messages.extend(write(&p, Scope::System, &out));
        crate::golden::check("generator-system.list", &listing(&out));
        let texts: Vec<String> = messages
            .iter()
            .map(|m| m.text.replace(&tmp.path().display().to_string(), "TMP"))
            .collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with("TMP/drop-ins/bad name.toml: the file name must be NAME.toml for a VM name: VM name \"bad name\" contains ' '"),
            "{}",
            texts[0]
        );
        assert!(
            texts[1].starts_with("TMP/drop-ins/broken.toml: invalid VM definition: line 1: "),
            "{}",
            texts[1]
        );
    }

    #[test]
    fn drop_in_unit() {
        let p = plan(
            vec![
                drop_in(
                    "api",
                    "ports = [\"5080:8080\"]\nautostart = true\nafter = [\"db\"]\n[health]\nhttp = \"8080/healthz\"\n",
                ),
                drop_in("db", "ports = [\"5432:5432\"]\n"),
            ],
            &nothing_installed,
            &cx(),
        );
        assert_eq!(p.messages, []);
        crate::golden::check("vmctl-api-drop-in.service", &p.units[0].text);
        let mut web = home_vm("web", "ports = [\"5080:8080\"]\nautostart = true\n");
        web.source = Source::Home {
            path: PathBuf::from("/home/alice/.local/share/vmctl/vms/web/vm.toml"),
            has_disk: true,
            runs_in_its_unit: false,
            made_from_drop_in: false,
        };
        let p = plan(
            vec![web],
            &nothing_installed,
            &Context {
                scope: Scope::User,
                home: Path::new("/home/alice/.local/share/vmctl"),
                ..cx()
            },
        );
        crate::golden::check("vmctl-web-generated-user.service", &p.units[0].text);
    }
}
