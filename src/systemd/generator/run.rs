//! The generator process, `vmctl-generator`: which manager runs it, where its messages go
//! (`/dev/kmsg` or stderr), the plan for this environment, and the units written into systemd's
//! output directory (or printed, `--dryrun`).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::{IoContext, Result};
use crate::paths::Home;
use crate::systemd::dirs::{cache_for, config_dir_here, unit_dir_here};
use crate::systemd::generator::find::{drop_in_dir, find};
use crate::systemd::generator::plan::{Context, Level, Message, UnitPlan, one_line, plan};
use crate::systemd::install::link_wanted;
use crate::systemd::unit::unit_name;
use crate::types::{Scope, VmName};

/// The file name (argv[0]) under which `vmctl` runs as the generator.
pub const PROGRAM: &str = "vmctl-generator";

/// Write the plan's units into the generator's normal directory, with a `.wants` link for each
/// autostart unit. What cannot be written is reported and skipped.
pub fn write(plan: &UnitPlan, scope: Scope, dir: &Path) -> Vec<Message> {
    let mut problems = Vec::new();
    for u in &plan.units {
        let path = dir.join(u.file_name());
        let written = std::fs::write(&path, &u.text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)))
            .path_ctx("write", &path);
        let linked = written.and_then(|()| {
            if u.autostart {
                link_wanted(scope, &path)
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
pub fn plan_here(scope: Scope) -> Result<Option<UnitPlan>> {
    if scope == Scope::User && nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let home = Home::resolve(std::env::var_os("VMCTL_HOME").map(PathBuf::from))?;
    let drop_ins = drop_in_dir(scope, &config_dir_here());
    let vmctl = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let cache = cache_for(scope);
    let (found, mut messages) = find(&home, &drop_ins, scope);
    let unit_dir = unit_dir_here(scope);
    let installed = |n: &VmName| unit_dir.join(unit_name(n)).exists();
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
pub fn dry_run_text(p: &UnitPlan, scope: Scope) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::generator::plan::tests::{cx, nothing_installed};

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
            texts[1].starts_with("TMP/drop-ins/broken.toml: invalid VM definition: cpus: must be 1-255; got the string \"two\" (line 1)"),
            "{}",
            texts[1]
        );
    }
}
