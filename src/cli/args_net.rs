//! The command line of private networks and stacks: `vmctl network ...`, `vmctl up`, `down`
//! and `ps`, each subcommand's arguments one struct (see `cli::args` for the rest).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::addr::{NetName, Subnet};

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a private network: an Ethernet segment that only its VMs share (no root, no
    /// bridge or tap on the host); VMs get stable addresses in its subnet.
    Create(NetworkCreateArgs),
    /// List networks: subnet, VMs and their addresses, whether its switch runs.
    #[command(alias = "list")]
    Ls(NetLsArgs),
    /// Remove a network no VM joins.
    #[command(alias = "remove")]
    Rm(NetNameArg),
    /// Run a network's switch in the foreground (what VMs start on their own, and what its
    /// systemd unit runs).
    #[command(hide = true)]
    Switch(SwitchArgs),
}

#[derive(Debug, Args)]
pub struct StackFileArg {
    /// The stack file (default: vmctl-stack.toml in the current directory).
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = crate::def::stack::DEFAULT_FILE)]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackFileArg,
    /// Only these VMs (their names in the file), with those they start after.
    pub vms: Vec<String>,
    /// Seconds each VM may take to be ready.
    #[arg(long, default_value_t = 600, value_parser = parse_timeout, value_name = "SECS")]
    pub timeout: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub stack: StackFileArg,
    /// Also remove the stack's VMs (their disks too) and the networks it made.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StackJsonArgs {
    #[command(flatten)]
    pub stack: StackFileArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NetLsArgs {
    #[arg(long)]
    pub json: bool,
}

/// `--timeout SECS`: 1-3600, as a VM's stop_timeout.
fn parse_timeout(s: &str) -> std::result::Result<u64, String> {
    let n: i64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    let n = u64::try_from(n).map_err(|_| format!("must be 1-3600 seconds; got {n}"))?;
    crate::def::bounds::stop_timeout(n).map(|_| n)
}

#[derive(Debug, Args)]
pub struct NetNameArg {
    pub name: NetName,
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    pub name: NetName,
    /// The network's IPv4 subnet, e.g. 10.89.5.0/24 (default: a free /24 of 10.89.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<Subnet>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    pub name: NetName,
    /// Keep running when the last VM leaves (a systemd unit, which systemd stops).
    #[arg(long)]
    pub persist: bool,
}
