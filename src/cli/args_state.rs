//! The command line of a VM's disk and state beyond start and stop: `vmctl disk info|resize|
//! compact`, each subcommand's arguments one struct (see `cli::args` for the rest).

use clap::{Args, Subcommand};

use crate::types::{ByteSize, VmName};

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
