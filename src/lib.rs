//! vmctl: a QEMU/KVM virtual-machine lifecycle manager.
//!
//! The folders are the domains, in the order of the data path (ARCHITECTURE.md draws it and
//! states the rule: imports go down this list only): `cli` parses the command line and shows
//! results; `qmp_shell` is `vmctl qmp`; `vm` holds the commands; `supervisor` is `vmctl run`,
//! which owns a running QEMU; `systemd` runs VMs as services; `runstate` is a VM's run state on
//! disk; `guest` provisions and probes the guest; `image` holds base images; `qemu` talks to
//! QEMU (argv, qemu-img, QMP, the polite stop); `def` is the definitions (wire format, validated
//! spec, their store); `host` is this machine's facts and the accelerator; `paths`, `sys` and
//! `term` are file names, OS primitives and the line editor; `types` and `error` are the value
//! types and the errors with their exit codes.

pub mod addr;
pub mod app;
pub mod cli;
pub mod def;
pub mod engines;
pub mod error;
pub mod events;
#[cfg(test)]
mod golden;
pub mod guest;
pub mod host;
pub mod image;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod qemu;
pub mod qmp_shell;
pub mod runstate;
pub mod saved;
pub mod share;
pub mod supervisor;
pub mod sys;
pub mod systemd;
pub mod term;
pub mod types;
pub mod vm;

use std::process::ExitCode;

use clap::Parser;

/// Parse the command line, set up logging, run, and turn the result into an exit code. Errors
/// are printed here, once, with their cause chain.
pub fn main() -> ExitCode {
    // What vmctl makes is its user's alone (disks, logs, definitions, keys, sockets); the few
    // files others must read get their modes explicitly (units, base images for QEMU's user).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Linked as vmctl-generator into systemd's generator directories.
    if systemd::generator::run::invoked_as_generator() {
        return systemd::generator::run::main();
    }
    // The shell asking for completions (`COMPLETE=bash vmctl ...`): answered, and exit.
    cli::complete::complete_if_asked();
    let json = cli::output::wants_json(std::env::args_os());
    let cli = match cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors; with --json a usage error is one JSON object.
        Err(e) if json && e.use_stderr() => {
            let text = e.render().to_string();
            // The error and its tip, without the usage lines that follow.
            let message = text.split("\n\nUsage:").next().unwrap_or(&text);
            let message = message
                .split("\n\nFor more information")
                .next()
                .unwrap_or(message);
            let message = message.trim().trim_start_matches("error: ");
            println!(
                "{}",
                cli::output::error_json(error::exit::USAGE, message, &[])
            );
            return ExitCode::from(error::exit::USAGE);
        }
        Err(e) => e.exit(),
    };
    cli::output::set_json(json);
    let journal = systemd::notify::stderr_is_journal();
    logging::init(cli.verbose, journal);
    let result = cli::dispatch::run(cli);
    if std::env::var_os("VMCTL_REPORT_RSS").is_some() {
        report_peak_rss();
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            if json {
                let problems = match &e {
                    error::Error::Invalid { problems, .. } => problems.as_slice(),
                    _ => &[],
                };
                println!("{}", cli::output::error_json(e.code(), &msg, problems));
            } else {
                // In the journal, `<3>` makes the line an error (priority 3).
                eprintln!("{}vmctl: {msg}", if journal { "<3>" } else { "" });
            }
            ExitCode::from(e.code())
        }
    }
}

/// For benchmarks: this process's own peak RSS (children such as qemu-img are not counted).
fn report_peak_rss() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(l) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            eprintln!("vmctl-peak-rss: {}", l.trim_start_matches("VmHWM:").trim());
        }
    }
}
