//! vmctl: a QEMU/KVM virtual-machine lifecycle manager.
//!
//! The modules follow the data path of `vmctl start`: `cli` parses the command line; `config`
//! reads the TOML wire format and `spec` validates it into a `VmSpec`; `image` and `disk` provide
//! the base image and the qcow2 overlay; `host` and `accel` decide KVM or TCG; `qemu` renders the
//! argv; `supervisor` spawns and watches QEMU; `qmp` talks to it; `shutdown` stops it; `runtime`
//! and `paths` keep the on-disk state. `vm` holds the lifecycle commands that tie these together.

pub mod accel;
pub mod cli;
pub mod cloudinit;
pub mod config;
pub mod disk;
pub mod doctor;
pub mod error;
pub mod fsutil;
pub mod host;
pub mod image;
pub mod paths;
pub mod process;
pub mod provision;
pub mod qemu;
pub mod qmp;
pub mod runtime;
pub mod shutdown;
pub mod spec;
pub mod ssh;
pub mod supervisor;
pub mod units;
pub mod vm;

use std::process::ExitCode;

use clap::Parser;

/// Parse the command line, set up logging, run, and turn the result into an exit code. Errors
/// are printed here, once, with their cause chain.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let result = cli::dispatch(cli);
    if std::env::var_os("VMCTL_REPORT_RSS").is_some() {
        report_peak_rss();
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut msg = format!("vmctl: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
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

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vmctl={default},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
