//! The command line of a VM's disk and state beyond start and stop: `vmctl clone`, `export`,
//! `import` and `disk info|resize|compact`, each subcommand's arguments one struct (see
//! `cli::args` for the rest).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::types::{ByteSize, PortForward, VmName};

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The VM to clone (stopped).
    pub source: VmName,
    /// The new VM's name.
    pub name: VmName,
    /// The clone's forwards, instead of the source's (which it cannot share); repeatable.
    #[arg(short, long = "port", value_name = "[ADDR:]HOST:GUEST[/PROTO]")]
    pub ports: Vec<PortForward>,
    /// Copy the whole disk into one standalone file instead of what differs from the image.
    #[arg(long)]
    pub full: bool,
    #[arg(long)]
    pub json: bool,
}

/// What `vmctl export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// vmctl's archive (tar + zstd): the VM, its disk with its snapshots, its image.
    Archive,
    /// A libvirt domain (XML) that `virsh define` takes, naming the VM's files here.
    Libvirt,
    /// KubeVirt objects (YAML): a VirtualMachine and a Service for its forwards.
    Kubevirt,
    /// A Nomad job on the qemu driver (HCL).
    Nomad,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub name: VmName,
    /// Where to write it (default: NAME.vmctl.tar.zst here for an archive, stdout otherwise).
    #[arg(short, long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "archive")]
    pub format: ExportFormat,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Refuse, instead of listing on stderr, what the format cannot carry.
    #[arg(long)]
    pub strict: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An archive `vmctl export` wrote.
    pub file: PathBuf,
    /// The VM's name here (default: its name in the archive).
    #[arg(long)]
    pub name: Option<VmName>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// The disk's virtual size, what it takes on the host, its backing chain and snapshots.
    Info(DiskNameArgs),
    /// Grow a stopped VM's disk; the guest's root file system grows at its next boot.
    Resize(DiskResizeArgs),
    /// Rewrite a stopped VM's disk without the space the guest freed (`fstrim` in the guest
    /// first); refused while it holds snapshots.
    Compact(DiskNameArgs),
}

#[derive(Debug, Args)]
pub struct DiskNameArgs {
    pub name: VmName,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiskResizeArgs {
    pub name: VmName,
    /// The new size (10G, 20480M, ...): larger than the disk is now.
    pub size: ByteSize,
    #[arg(long)]
    pub json: bool,
}
