//! The command line of watching VMs: `vmctl stats`, `vmctl events` and `vmctl metrics` (see
//! `cli::args` for the rest).

use clap::Args;

use crate::types::VmName;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The VMs to show (default: every VM of the home).
    pub names: Vec<VmName>,
    /// Sample again every interval and redraw, like `top` (one line per VM and sample when
    /// stdout is not a terminal; one JSON document per sample with --json).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between samples; CPU % is measured over it.
    #[arg(long, default_value = "1", value_name = "SECS", value_parser = interval)]
    pub interval: f64,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only these VMs' events (default: every VM of the home).
    pub names: Vec<VmName>,
    /// Print the events recorded so far first (the log keeps the last 4-8 MiB).
    #[arg(long)]
    pub all: bool,
    /// Stop once the recorded events are printed instead of waiting for more (with --all; with
    /// --json they are one array, where a stream is one JSON object per line).
    #[arg(long, requires = "all")]
    pub no_follow: bool,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address to serve on, as IP:PORT. Loopback unless you name another address here.
    #[arg(long, value_name = "IP:PORT", default_value = crate::metrics::serve::DEFAULT_LISTEN)]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct InstallMetricsArgs {
    /// Install for your user's service manager (systemctl --user).
    #[arg(long)]
    pub user: bool,
    /// Address to serve on, as IP:PORT. Loopback unless you name another address here.
    #[arg(long, value_name = "IP:PORT", default_value = crate::metrics::serve::DEFAULT_LISTEN)]
    pub listen: String,
    /// Start it at boot (or login): `systemctl enable`.
    #[arg(long)]
    pub enable: bool,
    /// Start (or restart) it now.
    #[arg(long)]
    pub now: bool,
}

fn interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0.1 to 3600")),
    }
}
