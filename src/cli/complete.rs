//! Shell completion and manual pages, both from clap's own definition of the command line.
//! Completion is clap's dynamic engine: the shell's script (`vmctl completions SHELL`) runs
//! vmctl with `COMPLETE=SHELL` for each completion, and the arguments that name something of
//! the home — a VM, a network, an image, a snapshot tag — offer what the home has (the home
//! from `VMCTL_HOME`, else the default).

use clap::CommandFactory;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

use crate::cli::args::Cli;
use crate::cli::args_shell::{CompletionsArgs, ManArgs, ShellName};
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;

/// What an argument names, for completion.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Names {
    Vms,
    Networks,
    Images,
    Tags,
}

/// What the argument `id` of the subcommand at `path` names, if something of the home. New
/// names (`create NAME`, `clone SRC NEW`, `network create NAME`) complete to nothing.
fn names_for(path: &[String], id: &str) -> Option<Names> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (p.as_slice(), id) {
        (["create"] | ["import"] | ["network", "create"] | ["clone"], "name") => None,
        (["image", "build"], "name") | (_, "image") => Some(Names::Images),
        (["network", ..], "name") | (_, "network") => Some(Names::Networks),
        (["snapshot", ..], "tag") => Some(Names::Tags),
        (["image", ..], _) => None,
        (_, "name" | "names" | "source") => Some(Names::Vms),
        _ => None,
    }
}

fn candidates(what: Names) -> Vec<CompletionCandidate> {
    let Ok(home) = Home::resolve(std::env::var_os("VMCTL_HOME").map(std::path::PathBuf::from))
    else {
        return vec![];
    };
    let mut words: Vec<String> = match what {
        Names::Vms => crate::def::store::names(&home)
            .iter()
            .map(|n| n.to_string())
            .collect(),
        Names::Networks => crate::def::network::names(&home)
            .iter()
            .map(|n| n.to_string())
            .collect(),
        Names::Images => {
            let mut n = crate::image::recipe::names();
            n.extend(
                crate::image::store::list(&home)
                    .into_iter()
                    .map(|i| i.manifest.name),
            );
            n
        }
        Names::Tags => crate::def::store::names(&home)
            .iter()
            .filter_map(|vm| crate::vm::snapshot::list(&home, vm).ok())
            .flatten()
            .map(|s| s.tag.to_string())
            .collect(),
    };
    words.sort();
    words.dedup();
    words.into_iter().map(CompletionCandidate::new).collect()
}

/// The command line with the home's names attached to the arguments that take them.
pub fn command() -> clap::Command {
    attach(Cli::command(), &[])
}

fn attach(mut cmd: clap::Command, path: &[String]) -> clap::Command {
    cmd = cmd.mut_args(|a| match names_for(path, a.get_id().as_str()) {
        Some(what) => a.add(ArgValueCandidates::new(move || candidates(what))),
        None => a,
    });
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for s in subs {
        let mut p = path.to_vec();
        p.push(s.clone());
        cmd = cmd.mut_subcommand(s, |sc| attach(sc, &p));
    }
    cmd
}

/// Complete, when the shell asked (`COMPLETE` is set), and exit; otherwise return.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(command).complete();
}

pub fn completions(_home: &Home, a: CompletionsArgs) -> Result<u8> {
    let completer = match a.completer {
        Some(c) => c,
        None => std::env::current_exe()
            .ctx(|| "Cannot find the vmctl binary".into())?
            .display()
            .to_string(),
    };
    let shell: &dyn EnvCompleter = match a.shell {
        ShellName::Bash => &Bash,
        ShellName::Zsh => &Zsh,
        ShellName::Fish => &Fish,
    };
    let mut out = std::io::stdout().lock();
    shell
        .write_registration("COMPLETE", "vmctl", "vmctl", &completer, &mut out)
        .map_err(|e| Error::Other(format!("Cannot write the completion script: {e}")))?;
    Ok(0)
}

pub fn man(_home: &Home, a: ManArgs) -> Result<u8> {
    std::fs::create_dir_all(&a.dir).ctx(|| format!("Cannot create {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .ctx(|| format!("Cannot write the manual pages into {}", a.dir.display()))?;
    let n = std::fs::read_dir(&a.dir).map_or(0, |d| d.count());
    crate::cli::output::done(
        "written",
        serde_json::json!({ "dir": a.dir }),
        &[format!("Wrote {n} manual pages into {}", a.dir.display())],
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &[&str]) -> Vec<String> {
        path.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_argument_completes_what_it_names() {
        assert_eq!(names_for(&p(&["start"]), "name"), Some(Names::Vms));
        assert_eq!(names_for(&p(&["stats"]), "names"), Some(Names::Vms));
        assert_eq!(names_for(&p(&["clone"]), "source"), Some(Names::Vms));
        assert_eq!(names_for(&p(&["clone"]), "name"), None, "a new name");
        assert_eq!(names_for(&p(&["create"]), "name"), None);
        assert_eq!(names_for(&p(&["create"]), "image"), Some(Names::Images));
        assert_eq!(
            names_for(&p(&["network", "rm"]), "name"),
            Some(Names::Networks)
        );
        assert_eq!(names_for(&p(&["network", "create"]), "name"), None);
        assert_eq!(
            names_for(&p(&["snapshot", "revert"]), "tag"),
            Some(Names::Tags)
        );
        assert_eq!(
            names_for(&p(&["snapshot", "revert"]), "name"),
            Some(Names::Vms)
        );
        assert_eq!(
            names_for(&p(&["image", "build"]), "name"),
            Some(Names::Images)
        );
    }

    #[test]
    fn the_completing_command_is_the_command_line_itself() {
        command().debug_assert();
    }
}
