//! The command line of what installs vmctl into a shell and a manual: `vmctl completions` and
//! `vmctl man` (see `cli::args` for the rest).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: ShellName,
    /// The program the shell runs to complete (default: this vmctl, by its path).
    #[arg(long, value_name = "PROGRAM")]
    pub completer: Option<String>,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder to write the pages into (vmctl.1, vmctl-start.1, ...).
    pub dir: PathBuf,
}
