//! `vmctl disk info|resize|compact`: sizes in words (or `--json`), a progress bar from qemu-img
//! while a compaction runs on a terminal.

use std::fmt::Write;
use std::io::IsTerminal;

use crate::cli::args_state::{DiskNameArgs, DiskResizeArgs};
use crate::cli::output::{Show, show};
use crate::error::Result;
use crate::paths::Home;
use crate::types::human_bytes;
use crate::vm::disk::{self as vm_disk, Compacted, DiskInfo, Resized};

pub fn info(home: &Home, a: DiskNameArgs) -> Result<u8> {
    show(&vm_disk::info(home, &a.name)?, a.json);
    Ok(0)
}

pub fn resize(home: &Home, a: DiskResizeArgs) -> Result<u8> {
    show(&vm_disk::resize(home, &a.name, a.size)?, a.json);
    Ok(0)
}

pub fn compact(home: &Home, a: DiskNameArgs) -> Result<u8> {
    let progress = std::io::stderr().is_terminal();
    show(&vm_disk::compact(home, &a.name, progress)?, a.json);
    Ok(0)
}

impl Show for DiskInfo {
    fn text(&self) -> String {
        let mut s = format!(
            "VM {}: {} disk, {} of it on the host in its own layer\n",
            self.name,
            human_bytes(self.virtual_size),
            human_bytes(self.allocated)
        );
        for (i, l) in self.chain.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {} {} ({}, {} on the host)",
                if i == 0 { "disk " } else { "image" },
                l.path,
                l.format,
                human_bytes(l.allocated)
            );
        }
        for snap in &self.snapshots {
            let _ = writeln!(
                s,
                "  snapshot {}{}",
                snap.tag,
                if snap.vm_state_size > 0 {
                    format!(" (with {} of RAM)", human_bytes(snap.vm_state_size))
                } else {
                    String::new()
                }
            );
        }
        s
    }
}

impl Show for Resized {
    fn text(&self) -> String {
        format!(
            "Grew VM {}'s disk from {} to {}; the guest's root file system takes it at its next boot\n",
            self.name,
            human_bytes(self.from),
            human_bytes(self.to)
        )
    }
}

impl Show for Compacted {
    fn text(&self) -> String {
        format!(
            "Compacted VM {}'s disk from {} to {} on the host in {:.1} s\n",
            self.name,
            human_bytes(self.before),
            human_bytes(self.after),
            self.seconds
        )
    }
}
