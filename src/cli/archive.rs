//! `vmctl export` and `vmctl import`: the archive written or read, said in words (or `--json`);
//! another engine's document (`--format libvirt`) on stdout, what it does not carry on stderr.

use crate::cli::args_state::{ExportArgs, ExportFormat, ImportArgs};
use crate::cli::output::{Show, print_json, show};
use crate::error::{Error, Result};
use crate::paths::Home;
use crate::sys::fsutil;
use crate::types::human_bytes;
use crate::vm::export::{self, Exported};
use crate::vm::import::{self, Imported};
use crate::vm::translate::{self, Translated};

pub fn export(home: &Home, a: ExportArgs) -> Result<u8> {
    match a.format {
        ExportFormat::Archive => show(
            &export::export(home, &a.name, a.output.as_deref(), a.force)?,
            a.json,
        ),
        ExportFormat::Libvirt => document(translate::libvirt(home, &a.name, a.strict)?, &a)?,
        ExportFormat::Kubevirt => document(translate::kubevirt(home, &a.name, a.strict)?, &a)?,
        ExportFormat::Nomad => document(translate::nomad(home, &a.name, a.strict)?, &a)?,
    }
    Ok(0)
}

/// Another engine's document: its gaps on stderr, the document on stdout or in `-o FILE`
/// (written whole, then renamed), or all of it as JSON.
fn document(t: Translated, a: &ExportArgs) -> Result<()> {
    if a.json {
        print_json(&t);
        return Ok(());
    }
    for gap in &t.gaps {
        eprintln!("vmctl: export --format {}: not carried: {gap}", t.format);
    }
    match &a.output {
        None => print!("{}", t.document),
        Some(f) if f.exists() && !a.force => {
            return Err(Error::Usage(format!(
                "-o: {} exists; pick another file or add --force to replace it",
                f.display()
            )));
        }
        Some(f) => fsutil::write_atomic(f, t.document.as_bytes())?,
    }
    Ok(())
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
