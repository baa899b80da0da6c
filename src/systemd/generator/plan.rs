//! The generator's pure part: which definitions become which units. [`plan`] takes the
//! definitions as read from disk and whether a VM's unit is installed, and gives the units'
//! texts and the problems met, each naming its file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::def::config::VmConfig;
use crate::def::spec::{self, Limits, VmSpec};
use crate::systemd::dirs::unit_dir_here;
use crate::systemd::unit::{Origin, UnitContext, render, unit_name};
use crate::types::{Scope, VmName};

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
    pub fn error(path: &Path, what: impl std::fmt::Display) -> Message {
        Message {
            level: Level::Error,
            text: one_line(&format!("{}: {what}", path.display())),
        }
    }
    pub fn warning(path: &Path, what: impl std::fmt::Display) -> Message {
        Message {
            level: Level::Warning,
            text: one_line(&format!("{}: {what}", path.display())),
        }
    }
}

/// kmsg takes one record per line: a list under a heading ("...:\n  a\n  b") becomes "...: a; b".
pub fn one_line(s: &str) -> String {
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
        unit_name(&self.name)
    }
}

#[derive(Debug, Default)]
pub struct UnitPlan {
    /// Sorted by VM name.
    pub units: Vec<Unit>,
    pub messages: Vec<Message>,
}

/// The valid definitions by VM name, with where each was found.
type Valid = BTreeMap<VmName, (VmSpec, Source)>;

/// Which definitions become which units. `installed` says whether a VM's unit is installed in
/// the scope's unit directory (`/etc/systemd/system`), which takes precedence.
pub fn plan(found: Vec<Found>, installed: &dyn Fn(&VmName) -> bool, cx: &Context) -> UnitPlan {
    let mut p = UnitPlan::default();
    let (valid, drop_in_names) = validate(found, &mut p.messages);

    // The units to make: every drop-in, and the home's VMs with autostart = true.
    let mut chosen: BTreeMap<VmName, bool> = BTreeMap::new();
    for (name, (spec, source)) in &valid {
        let has_drop_in = drop_in_names.contains(name);
        match choose(name, spec, source, installed(name), has_drop_in, cx) {
            Choice::Unit { autostart } => {
                chosen.insert(name.clone(), autostart);
            }
            Choice::NoUnit => {}
            Choice::Problem(m) => p.messages.push(m),
        }
    }

    // What they start after must have a unit too: a home VM gets one (without autostart).
    close_over_after(&mut chosen, &valid, installed, cx, &mut p.messages);
    render_units(chosen, &valid, cx, &mut p);
    p
}

/// Parse and validate every definition, drop-ins first: the first of a name wins, and a broken
/// one is reported. Also the names of every drop-in, valid or not.
fn validate(found: Vec<Found>, messages: &mut Vec<Message>) -> (Valid, BTreeSet<VmName>) {
    // Drop-ins first: they own their names (the home VM of the same name is the one they made).
    let (drop_ins, homes): (Vec<Found>, Vec<Found>) = found
        .into_iter()
        .partition(|f| matches!(f.source, Source::DropIn(_)));
    let drop_in_names: BTreeSet<VmName> = drop_ins.iter().map(|f| f.name.clone()).collect();
    let mut valid = Valid::new();
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
            Err(e) => messages.push(Message {
                level: Level::Error,
                text: one_line(&format!("{e}; no unit for VM {}", f.name)),
            }),
            Ok(spec) => {
                valid.insert(f.name, (spec, f.source));
            }
        }
    }
    (valid, drop_in_names)
}

/// What one valid definition gets.
enum Choice {
    /// A unit; with `autostart`, linked into the target's `.wants`.
    Unit { autostart: bool },
    /// No unit, and nothing to say.
    NoUnit,
    /// No unit, for the reason given.
    Problem(Message),
}

/// Whether VM `name` gets a unit: a drop-in does unless an installed unit takes precedence; a
/// home VM with `autostart = true`, or that its unit runs. `installed_unit`: the VM's unit is
/// installed; `has_drop_in`: a drop-in of its name was found (valid or not).
fn choose(
    name: &VmName,
    spec: &VmSpec,
    source: &Source,
    installed_unit: bool,
    has_drop_in: bool,
    cx: &Context,
) -> Choice {
    // A drop-in decides for its VM; one whose drop-in was deleted no longer autostarts.
    let left_to_drop_in = has_drop_in
        || matches!(
            source,
            Source::Home {
                made_from_drop_in: true,
                ..
            }
        );
    match source {
        Source::DropIn(path) if installed_unit => Choice::Problem(Message::warning(
            path,
            format_args!(
                "not used: {} is installed and takes precedence; `vmctl systemd uninstall {name}{}` to run VM {name} from this file",
                unit_dir_file(cx.scope, name),
                user_flag(cx.scope)
            ),
        )),
        Source::DropIn(_) => Choice::Unit {
            autostart: spec.autostart,
        },
        Source::Home { .. } if installed_unit => Choice::NoUnit,
        // A VM that its generated unit runs keeps the unit until it stops, whatever became
        // of its drop-in or autostart: a unit that lost its file cannot stop the guest
        // gracefully (systemd would SIGTERM QEMU at once).
        Source::Home {
            runs_in_its_unit: true,
            ..
        } if left_to_drop_in || !spec.autostart => Choice::Unit { autostart: false },
        Source::Home { .. } if left_to_drop_in || !spec.autostart => Choice::NoUnit,
        Source::Home {
            path,
            has_disk: false,
            ..
        } => Choice::Problem(Message::error(
            path,
            format_args!(
                "autostart = true, but VM {name} has no disk; make VMs with `vmctl create`, or drop the definition in {}",
                cx.drop_ins.join(format!("{name}.toml")).display()
            ),
        )),
        Source::Home { .. } => Choice::Unit { autostart: true },
    }
}

/// What the chosen units start after must have a unit too: a home VM gets one (without
/// autostart); for any other, a warning.
fn close_over_after(
    chosen: &mut BTreeMap<VmName, bool>,
    valid: &Valid,
    installed: &dyn Fn(&VmName) -> bool,
    cx: &Context,
    messages: &mut Vec<Message>,
) {
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
                _ => messages.push(Message::warning(
                    source.path(),
                    format_args!(
                        "after = [\"{dep}\"], but VM {dep} has no unit (no valid {}, no VM {dep} in {}, no installed {}); {} fails to start until it has one",
                        cx.drop_ins.join(format!("{dep}.toml")).display(),
                        cx.home.display(),
                        unit_name(dep),
                        unit_name(&name)
                    ),
                )),
            }
        }
    }
}

/// Render the chosen units into the plan; one that cannot be rendered is reported instead.
fn render_units(chosen: BTreeMap<VmName, bool>, valid: &Valid, cx: &Context, p: &mut UnitPlan) {
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
        match render(&UnitContext {
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
}

fn unit_dir_file(scope: Scope, name: &VmName) -> String {
    unit_dir_here(scope)
        .join(unit_name(name))
        .display()
        .to_string()
}

fn user_flag(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "",
        Scope::User => " --user",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HOME: &str = "/var/lib/vmctl";
    const DROP_INS: &str = "/etc/vmctl/vms";

    pub(crate) fn cx() -> Context<'static> {
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

    pub(crate) fn nothing_installed(_: &VmName) -> bool {
        false
    }

    /// `NAME (autostart)` for each unit.
    fn summary(p: &UnitPlan) -> Vec<String> {
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

    /// Each case of `choose`, one row each: the source of a valid definition, whether its
    /// unit is installed and a drop-in of its name exists, and what it gets.
    #[test]
    fn the_choice_for_each_kind_of_definition() {
        let spec = |autostart: bool| {
            let cfg = VmConfig::parse(&format!("autostart = {autostart}\n"), "t").unwrap();
            let limits = Limits {
                host_memory: u64::MAX,
            };
            spec::validate(&"web".parse().unwrap(), &cfg, limits, "t").unwrap()
        };
        let home = |has_disk, runs_in_its_unit, made_from_drop_in| Source::Home {
            path: PathBuf::from(format!("{HOME}/vms/web/vm.toml")),
            has_disk,
            runs_in_its_unit,
            made_from_drop_in,
        };
        let drop_in = Source::DropIn(PathBuf::from(format!("{DROP_INS}/web.toml")));
        let unit = |autostart| Some(Some(autostart));
        // (source, autostart, installed, has_drop_in) -> Some(Some(autostart)): a unit;
        // Some(None): nothing; None: a problem.
        type Row = (Source, bool, bool, bool, Option<Option<bool>>);
        let rows: Vec<Row> = vec![
            (drop_in.clone(), true, false, true, unit(true)),
            (drop_in.clone(), false, false, true, unit(false)),
            (drop_in.clone(), true, true, true, None),
            (home(true, false, false), true, false, false, unit(true)),
            (home(true, false, false), false, false, false, Some(None)),
            (home(true, false, false), true, true, false, Some(None)),
            (home(true, false, false), true, false, true, Some(None)),
            (home(true, false, true), true, false, false, Some(None)),
            (home(true, true, false), false, false, false, unit(false)),
            (home(true, true, true), true, false, false, unit(false)),
            (home(false, false, false), true, false, false, None),
        ];
        for (source, autostart, installed, has_drop_in, want) in rows {
            let name: VmName = "web".parse().unwrap();
            let got = match choose(
                &name,
                &spec(autostart),
                &source,
                installed,
                has_drop_in,
                &cx(),
            ) {
                Choice::Unit { autostart } => Some(Some(autostart)),
                Choice::NoUnit => Some(None),
                Choice::Problem(_) => None,
            };
            assert_eq!(
                got, want,
                "{source:?} autostart={autostart} installed={installed} drop-in={has_drop_in}"
            );
        }
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
            m.text.starts_with(
                "/etc/vmctl/vms/web.toml: invalid VM definition: memroy: unknown key (line 2);"
            ) && m.text.contains("memroy")
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
