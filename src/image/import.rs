//! Importing a disk image the user downloaded (a distribution's cloud image): converted to a
//! qcow2 in the store, booted by its own bootloader, its VMs provisioned by cloud-init.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::image::recipe::{self, Provision};
use crate::image::store::{self, Image, Manifest};
use crate::paths::{Home, ImagePaths};
use crate::sys::fsutil;
use crate::types::{App, Arch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Qcow2,
    Raw,
}

/// Import a disk image as `images/NAME/ARCH/disk.qcow2` (converted to qcow2), booted by its own
/// bootloader and provisioned by cloud-init.
pub fn import(
    home: &Home,
    file: &Path,
    name: &str,
    format: Option<ImportFormat>,
    arch: Arch,
) -> Result<Image> {
    check_name(name)?;
    if !file.is_file() {
        return Err(Error::Usage(format!(
            "FILE: {} does not exist or is not a file",
            file.display()
        )));
    }
    let images = home.images_dir();
    std::fs::create_dir_all(&images).path_ctx("create", &images)?;
    let _lock = fsutil::lock_exclusive(&home.images_lock())?;
    let target = home.image_dir(name, arch);
    if target.exists() {
        return Err(Error::Usage(format!(
            "--name: image {name} for {arch} already exists ({}); pick another name",
            target.display()
        )));
    }
    let tmp = fsutil::TempDir::new(&images, &format!(".import-{name}-{arch}-"))?;
    let out = ImagePaths {
        dir: tmp.path().join("out"),
    };
    std::fs::create_dir_all(&out.dir).path_ctx("create", &out.dir)?;
    convert(file, &out.disk(), format)?;
    let manifest = Manifest {
        name: name.to_string(),
        arch,
        description: format!("imported from {}", file.display()),
        disk: ImagePaths::DISK.into(),
        virtual_size: crate::qemu::img::virtual_size(&out.disk())?,
        kernel: None,
        initrd: None,
        cmdline: None,
        built_at: fsutil::unix_now(),
        recipe_sha256: String::new(),
        provision: Provision::CloudInit,
        apps: App::ALL.to_vec(),
        sha256: store::sha256_files(&out.dir)?,
        packages: vec![],
    };
    store::install(&out.dir, &target, &manifest, tmp.path())
}

/// An image name is safe as a directory name and not a built-in's.
fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..");
    if !valid {
        return Err(Error::Usage(format!(
            "--name: {name:?} is not an image name; use letters, digits, '-', '_' and '.'"
        )));
    }
    if recipe::builtin(name).is_some() {
        return Err(Error::Usage(format!(
            "--name: {name:?} is a built-in image; pick another name"
        )));
    }
    Ok(())
}

/// `qemu-img convert -p -O qcow2 [-f FORMAT] FILE DISK`, progress on the terminal.
fn convert(file: &Path, disk: &Path, format: Option<ImportFormat>) -> Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-p", "-O", "qcow2"]);
    if let Some(f) = format {
        cmd.args([
            "-f",
            if f == ImportFormat::Raw {
                "raw"
            } else {
                "qcow2"
            },
        ]);
    }
    let status = cmd
        .arg(file)
        .arg(disk)
        .status()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".into())?;
    if !status.success() {
        return Err(Error::Qemu(format!(
            "qemu-img could not convert {} ({status}); is --format right?",
            file.display()
        )));
    }
    Ok(())
}
