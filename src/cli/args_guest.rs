//! The command line of what goes into and out of a guest: `vmctl ssh`, `cp`, `logs` and
//! `app deploy`, each subcommand's arguments one struct (see `cli::args` for the rest).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::types::VmName;

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Ship a new release of the VM's app: to a running VM over SSH, reloading gunicorn
    /// gracefully (no request fails); a stopped VM installs it at its next start.
    Deploy(AppDeployArgs),
}

#[derive(Debug, Args)]
pub struct AppDeployArgs {
    pub name: VmName,
    /// The app's directory to ship (default: the definition's app.dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: VmName,
    /// Keep printing as the guest writes.
    #[arg(short, long)]
    pub follow: bool,
    /// Your provisioning scripts' output instead (kept across starts), each line with the
    /// Unix time it was read.
    #[arg(long)]
    pub provision: bool,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    pub name: VmName,
    /// Print the ssh command instead of running it.
    #[arg(long)]
    pub print: bool,
    /// Extra OpenSSH option (e.g. -o BatchMode=yes); repeatable.
    #[arg(short = 'o', value_name = "OPTION")]
    pub option: Vec<String>,
    /// Command to run in the guest.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Copy directories and what they hold.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Sources, then the destination; the VM's side as VM:PATH.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print the scp command instead of running it.
    #[arg(long)]
    pub print: bool,
}
