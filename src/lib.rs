//! vmctl: a QEMU/KVM virtual-machine lifecycle manager.
//!
//! The modules follow the data path of `vmctl start`: `cli` parses the command line; `config`
//! reads the TOML wire format and `spec` validates it into a `VmSpec`; `image` and `disk` provide
//! the base image and the qcow2 overlay; `host` and `accel` decide KVM or TCG; `qemu` renders the
//! argv; `supervisor` spawns and watches QEMU; `qmp` talks to it; `shutdown` stops it; `runtime`
//! and `paths` keep the on-disk state. `vm` holds the lifecycle commands that tie these together;
//! `snapshot` takes, lists, reverts and deletes the disk's internal snapshots; `ports` adds and
//! removes port forwards of a running VM; `shell` is the QMP shell (`vmctl qmp`).
//! `systemd` renders and installs units that run VMs as services; `generator` makes them at boot
//! from dropped definitions (the binary run as `vmctl-generator`); `sdnotify` and `health` are
//! the service side: readiness, notifications and health checks.

pub mod cli;
pub mod def;
pub mod error;
#[cfg(test)]
mod golden;
pub mod guest;
pub mod host;
pub mod image;
pub mod paths;
pub mod qemu;
pub mod qmp_shell;
pub mod runstate;
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
    // Linked as vmctl-generator into systemd's generator directories.
    if systemd::generator::run::invoked_as_generator() {
        return systemd::generator::run::main();
    }
    let cli = cli::args::Cli::parse();
    let journal = systemd::notify::stderr_is_journal();
    init_logging(cli.verbose, journal);
    let result = cli::dispatch::run(cli);
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
            // In the journal, `<3>` makes the line an error (priority 3).
            eprintln!("{}{msg}", if journal { "<3>" } else { "" });
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

/// Logs go to stderr. When stderr is the journal (a systemd service), lines carry a syslog
/// priority prefix instead of a timestamp and level, and lifecycle steps (info) are logged by
/// default: a service's log is where people look for them.
fn init_logging(verbose: u8, journal: bool) {
    let default = match (verbose, journal) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vmctl={default},warn")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journal {
        fmt.with_ansi(false).event_format(JournalFormat).init();
    } else {
        fmt.with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// `<PRIORITY>message key=value...`: what journald reads from a service's stderr.
struct JournalFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
