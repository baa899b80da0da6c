//! The dispatch table: each subcommand to its handler, one line each. [`route`] pairs the
//! parsed command with its handler and the handler's name, so a test can hold the table
//! against clap's own list of subcommands.

use crate::cli::args::{Cli, Cmd, ImageCmd, PortCmd, SnapshotCmd, SystemdCmd};
use crate::cli::args_guest::AppCmd;
use crate::cli::args_net::NetworkCmd;
use crate::cli::args_state::DiskCmd;
use crate::cli::{
    app, archive, complete, connect, disk, doctor, image, inspect, lifecycle, network, observe,
    port, snapshot, stack, systemd,
};
use crate::error::Result;
use crate::paths::Home;

/// Run the command; its exit status.
pub fn run(cli: Cli) -> Result<u8> {
    let home = Home::resolve(cli.home)?;
    (route(cli.command).run)(&home)
}

/// A handler called with its arguments: what remains is the home to run in.
pub type Call = Box<dyn FnOnce(&Home) -> Result<u8>>;

/// A subcommand's handler with its arguments, and the handler's path (for the table's test).
pub struct Handler {
    pub name: &'static str,
    pub run: Call,
}

/// `to!(module::handler, args)`: call `handler(home, args)`, known by its path.
macro_rules! to {
    ($handler:path, $args:expr) => {{
        let args = $args;
        Handler {
            name: stringify!($handler),
            run: Box::new(move |home: &Home| $handler(home, args)),
        }
    }};
}

pub fn route(cmd: Cmd) -> Handler {
    match cmd {
        Cmd::Create(a) => to!(lifecycle::create, *a),
        Cmd::Start(a) => to!(lifecycle::start, a),
        Cmd::Stop(a) => to!(lifecycle::stop, a),
        Cmd::Suspend(a) => to!(lifecycle::suspend, a),
        Cmd::Restart(a) => to!(lifecycle::restart, a),
        Cmd::Kill(a) => to!(lifecycle::kill, a),
        Cmd::Pause(a) => to!(lifecycle::pause, a),
        Cmd::Resume(a) => to!(lifecycle::resume, a),
        Cmd::Reset(a) => to!(lifecycle::reset, a),
        Cmd::Rm(a) => to!(lifecycle::rm, a),
        Cmd::Run(a) => to!(lifecycle::run, a),
        Cmd::List(a) => to!(inspect::list, a),
        Cmd::Status(a) => to!(inspect::status, a),
        Cmd::Logs(a) => to!(inspect::logs, a),
        Cmd::Console(a) => to!(connect::console, a),
        Cmd::ShowCmd(a) => to!(inspect::show_cmd, a),
        Cmd::Doctor(a) => to!(doctor::doctor, a),
        Cmd::Stats(a) => to!(observe::stats, a),
        Cmd::Metrics(a) => to!(observe::metrics, a),
        Cmd::Events(a) => to!(observe::events, a),
        Cmd::Completions(a) => to!(complete::completions, a),
        Cmd::Man(a) => to!(complete::man, a),
        Cmd::Ssh(a) => to!(connect::ssh, a),
        Cmd::Cp(a) => to!(connect::cp, a),
        Cmd::SshConfig(a) => to!(connect::ssh_config, a),
        Cmd::Inventory(a) => to!(connect::inventory, a),
        Cmd::Qmp(a) => to!(connect::qmp, a),
        Cmd::Snapshot(SnapshotCmd::Create(a)) => to!(snapshot::create, a),
        Cmd::Snapshot(SnapshotCmd::List(a)) => to!(snapshot::list, a),
        Cmd::Snapshot(SnapshotCmd::Revert(a)) => to!(snapshot::revert, a),
        Cmd::Snapshot(SnapshotCmd::Delete(a)) => to!(snapshot::delete, a),
        Cmd::Port(PortCmd::Add(a)) => to!(port::add, a),
        Cmd::Port(PortCmd::Rm(a)) => to!(port::rm, a),
        Cmd::Port(PortCmd::List(a)) => to!(port::list, a),
        Cmd::Image(ImageCmd::Build(a)) => to!(image::build, a),
        Cmd::Image(ImageCmd::Import(a)) => to!(image::import, a),
        Cmd::Image(ImageCmd::List(a)) => to!(image::list, a),
        Cmd::Up(a) => to!(stack::up, a),
        Cmd::Down(a) => to!(stack::down, a),
        Cmd::Ps(a) => to!(stack::ps, a),
        Cmd::App(AppCmd::Deploy(a)) => to!(app::deploy, a),
        Cmd::Clone(a) => to!(lifecycle::clone, a),
        Cmd::Export(a) => to!(archive::export, a),
        Cmd::Import(a) => to!(archive::import, a),
        Cmd::Disk(DiskCmd::Info(a)) => to!(disk::info, a),
        Cmd::Disk(DiskCmd::Resize(a)) => to!(disk::resize, a),
        Cmd::Disk(DiskCmd::Compact(a)) => to!(disk::compact, a),
        Cmd::Network(NetworkCmd::Create(a)) => to!(network::create, a),
        Cmd::Network(NetworkCmd::Ls(a)) => to!(network::ls, a),
        Cmd::Network(NetworkCmd::Rm(a)) => to!(network::rm, a),
        Cmd::Network(NetworkCmd::Switch(a)) => to!(network::switch, a),
        Cmd::Systemd(SystemdCmd::Generate(a)) => to!(systemd::generate, a),
        Cmd::Systemd(SystemdCmd::Install(a)) => to!(systemd::install, a),
        Cmd::Systemd(SystemdCmd::Uninstall(a)) => to!(systemd::uninstall, a),
        Cmd::Systemd(SystemdCmd::InstallGenerator(a)) => to!(systemd::install_generator, a),
        Cmd::Systemd(SystemdCmd::UninstallGenerator(a)) => to!(systemd::uninstall_generator, a),
        Cmd::Systemd(SystemdCmd::InstallMetrics(a)) => to!(systemd::install_metrics, a),
        Cmd::Systemd(SystemdCmd::UninstallMetrics(a)) => to!(systemd::uninstall_metrics, a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// A value clap accepts for each required argument, by its id.
    fn sample(arg: &clap::Arg) -> &'static str {
        match arg.get_id().as_str() {
            "spec" => "8080:80",
            "file" => "/tmp/disk.img",
            "tag" => "before",
            "size" => "20G",
            "shell" => "bash",
            "dir" => "/tmp/man",
            _ => "web",
        }
    }

    /// Every leaf subcommand clap knows, as the words that name it (each alias too), with the
    /// command for its required arguments.
    fn leaves(
        cmd: &clap::Command,
        words: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        let subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
        if subs.is_empty() {
            out.push((words, cmd.clone()));
            return;
        }
        for sub in subs {
            let names = std::iter::once(sub.get_name()).chain(sub.get_visible_aliases());
            let names: Vec<String> = names
                .chain(sub.get_all_aliases())
                .map(str::to_string)
                .collect();
            for name in names.into_iter().collect::<std::collections::BTreeSet<_>>() {
                let mut w = words.clone();
                w.push(name);
                leaves(sub, w, out);
            }
        }
    }

    /// The handler of `vmctl port add` is `port::add`, of `vmctl show-cmd` `inspect::show_cmd`,
    /// of `vmctl ls` `inspect::list`: every subcommand and alias clap parses reaches the handler
    /// named for it (a top-level command's handler may live in any module).
    #[test]
    fn every_subcommand_reaches_its_handler() {
        let mut all = Vec::new();
        leaves(&Cli::command(), vec![], &mut all);
        assert!(all.len() >= 34, "{} subcommands", all.len());
        for (words, cmd) in all {
            let mut argv = vec!["vmctl".to_string()];
            argv.extend(words.iter().cloned());
            for arg in cmd.get_arguments().filter(|a| a.is_required_set()) {
                if !arg.is_positional() {
                    argv.push(format!("--{}", arg.get_long().expect("a long flag")));
                }
                // As many values as the argument needs at least (`cp` takes two paths).
                let least = arg.get_num_args().map_or(1, |n| n.min_values().max(1));
                for _ in 0..least {
                    argv.push(sample(arg).into());
                }
            }
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let handler = route(cli.command).name;
            let canonical = |w: &str| {
                let c = Cli::command();
                let top = c.find_subcommand(&words[0]).expect("top-level").clone();
                let name = if words.len() == 1 {
                    top.get_name().to_string()
                } else {
                    let sub = top.find_subcommand(w).expect("sub");
                    format!("{}::{}", top.get_name(), sub.get_name())
                };
                name.replace('-', "_")
            };
            let want = canonical(words.last().unwrap());
            // A top-level command's handler is not in a group's module (`port::list` is not
            // `vmctl list`'s).
            let groups: Vec<String> = Cli::command()
                .get_subcommands()
                .filter(|c| c.has_subcommands())
                .map(|c| c.get_name().replace('-', "_"))
                .collect();
            let module = handler.split("::").next().unwrap_or_default();
            assert!(
                words.len() > 1 || !groups.iter().any(|g| g == module),
                "{argv:?} reaches {handler}, a handler of a command group"
            );
            assert!(
                handler == want || handler.ends_with(&format!("::{want}")),
                "{argv:?} reaches {handler}, not a handler named {want}"
            );
        }
    }
}
