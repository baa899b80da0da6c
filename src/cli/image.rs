//! `vmctl image build|import|list`'s handlers.

use crate::cli::args::{BuildArgs, ImportArgs, JsonArg};
use crate::cli::output::{Show, done, show};
use crate::error::Result;
use crate::image::store::Image;
use crate::paths::Home;
use crate::types::{Arch, ByteSize};
use serde_json::json;

/// The architecture asked for, else the host's (x86_64 where it has none vmctl knows).
fn arch_or_host(arch: Option<Arch>) -> Arch {
    arch.or_else(Arch::host).unwrap_or(Arch::X86_64)
}

pub fn build(home: &Home, a: BuildArgs) -> Result<u8> {
    let arch = arch_or_host(a.arch);
    let (img, built) = crate::image::build::build(home, &a.name, arch, a.force)?;
    let line = if built {
        format!(
            "Built image {} for {} in {}",
            img.manifest.name,
            arch,
            img.dir.display()
        )
    } else {
        format!(
            "Image {} for {} is already built ({}); --force rebuilds it",
            img.manifest.name,
            arch,
            img.dir.display()
        )
    };
    let subject = json!({"image": img.manifest.name, "arch": arch.to_string(), "dir": img.dir});
    done(if built { "built" } else { "unchanged" }, subject, &[line]);
    Ok(0)
}

pub fn import(home: &Home, a: ImportArgs) -> Result<u8> {
    let arch = arch_or_host(a.arch);
    let img = crate::image::import::import(home, &a.file, &a.name, a.format, arch)?;
    let line = format!(
        "Imported {} as image {} for {} ({}, provisioned by cloud-init)",
        a.file.display(),
        img.manifest.name,
        arch,
        ByteSize(img.manifest.virtual_size)
    );
    let subject = json!({"image": img.manifest.name, "arch": arch.to_string(), "dir": img.dir});
    done("imported", subject, &[line]);
    Ok(0)
}

pub fn list(home: &Home, a: JsonArg) -> Result<u8> {
    show(&crate::image::store::list(home), a.json);
    Ok(0)
}

impl Show for Vec<Image> {
    fn text(&self) -> String {
        let mut out = format!("{:<16} {:<8} {:>9}  DESCRIPTION\n", "NAME", "ARCH", "SIZE");
        for i in self {
            out.push_str(&format!(
                "{:<16} {:<8} {:>9}  {}\n",
                i.manifest.name,
                i.manifest.arch,
                ByteSize(i.manifest.virtual_size).to_string(),
                i.manifest.description
            ));
        }
        out
    }
}
