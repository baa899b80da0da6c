//! Importing a disk image the user downloaded (a distribution's cloud image): checked to be a
//! self-contained qcow2 or raw disk (`image::probe`) before qemu-img reads it, converted to a
//! qcow2 in the store, booted by its own bootloader, its VMs provisioned by cloud-init.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::image::probe::{self, Format};
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

impl ImportFormat {
    fn format(self) -> Format {
        match self {
            ImportFormat::Qcow2 => Format::Qcow2,
            ImportFormat::Raw => Format::Raw,
        }
    }
}

/// Import a disk image as `images/NAME/ARCH/disk.qcow2` (converted to qcow2), booted by its own
/// bootloader and provisioned by cloud-init. The file is checked before the home is touched,
/// and read through one open descriptor, so what qemu-img converts is the file that was
/// checked; if it changes meanwhile, the import is refused.
pub fn import(
    home: &Home,
    file: &Path,
    name: &str,
    format: Option<ImportFormat>,
    arch: Arch,
) -> Result<Image> {
    check_name(name)?;
    let source = open(file)?;
    let before = Stamp::of(&source)?;
    let probed = probe::probe(file, &source, before.len, format.map(ImportFormat::format))?;
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
    crate::qemu::img::convert_untrusted(&source, file, probed.format.as_str(), &out.disk())?;
    if Stamp::of(&source)? != before {
        return Err(Error::Usage(format!(
            "FILE: {} changed while it was imported; import it again when nothing writes to it",
            file.display()
        )));
    }
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

/// Open the file to import, refusing what is not a regular file (without blocking on a FIFO).
fn open(file: &Path) -> Result<File> {
    let not_a_file = || {
        Error::Usage(format!(
            "FILE: {} does not exist or is not a file",
            file.display()
        ))
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_a_file(),
            _ => Error::Usage(format!("FILE: {} cannot be read: {e}", file.display())),
        })?;
    if !f.metadata().path_ctx("stat", file)?.is_file() {
        return Err(not_a_file());
    }
    Ok(f)
}

/// What changes when a file is written, renamed or linked (`ctime` cannot be set back by its
/// owner): the same stamp before the checks and after the conversion means qemu-img converted
/// the file that was checked.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(f: &File) -> Result<Stamp> {
        let m = f.metadata().ctx(|| "Cannot stat the image".into())?;
        Ok(Stamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_stamp_changes_with_a_write_or_a_rename_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        std::fs::write(&p, [0u8; 512]).unwrap();
        let f = open(&p).unwrap();
        let before = Stamp::of(&f).unwrap();
        assert_eq!(Stamp::of(&f).unwrap(), before);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::rename(&p, dir.path().join("elsewhere")).unwrap();
        std::fs::rename(dir.path().join("elsewhere"), &p).unwrap();
        let renamed = Stamp::of(&f).unwrap();
        assert_ne!(renamed, before);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"x", 0)
            .unwrap();
        assert_ne!(Stamp::of(&f).unwrap(), renamed);
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for p in [fifo, dir.path().to_path_buf(), dir.path().join("missing")] {
            let e = open(&p).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("FILE: {} does not exist or is not a file", p.display())
            );
        }
    }
}
