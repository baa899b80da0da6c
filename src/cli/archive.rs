//! `vmctl export` and `vmctl import`: the archive written or read, said in words (or `--json`).

use crate::cli::args_state::{ExportArgs, ImportArgs};
use crate::cli::output::{Show, show};
use crate::error::Result;
use crate::paths::Home;
use crate::types::human_bytes;
use crate::vm::export::{self, Exported};
use crate::vm::import::{self, Imported};

pub fn export(home: &Home, a: ExportArgs) -> Result<u8> {
    show(
        &export::export(home, &a.name, a.output.as_deref(), a.force)?,
        a.json,
    );
    Ok(0)
}

pub fn import(home: &Home, a: ImportArgs) -> Result<u8> {
    show(&import::import(home, &a.file, a.name.as_ref())?, a.json);
    Ok(0)
}

impl Show for Exported {
    fn text(&self) -> String {
        format!(
            "Exported VM {} to {} in {:.1} s ({} of VM and image in {})\n",
            self.name,
            self.file.display(),
            self.seconds,
            human_bytes(self.content_bytes),
            human_bytes(self.bytes)
        )
    }
}

impl Show for Imported {
    fn text(&self) -> String {
        format!(
            "Imported VM {} as {} in {:.1} s: image {} ({}), {} snapshot(s)\n",
            self.from,
            self.name,
            self.seconds,
            self.image,
            if self.image_installed {
                "installed from the archive"
            } else {
                "this home's, the same build"
            },
            self.snapshots
        )
    }
}
