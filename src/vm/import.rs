//! `vmctl import FILE [--name NEW]`: a VM from a `vmctl export` archive (`vm::archive`). Every
//! member is unpacked into a temporary folder and hashed on the way; the manifest, last, must
//! list exactly what came, byte for byte. Only then is anything installed: the base image
//! (reused when this home has the same build, else installed, under another name if this home
//! has a different image by that name), checked as an untrusted self-contained qcow2; the VM's
//! disk rebased onto it; the definition checked like `create`'s (name and forwards free, its
//! networks here); the folder renamed into place. A truncated or altered archive, or one that
//! would collide, leaves the home as it was.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::def::config::VmConfig;
use crate::def::spec::{self, VmSpec};
use crate::def::store::limits;
use crate::error::{Error, IoContext, Problems, Result};
use crate::image::store::{self, Image, Manifest as ImageManifest};
use crate::paths::{Home, VmPaths};
use crate::sys::fsutil;
use crate::types::VmName;
use crate::vm::archive::{self, Hashing, Manifest, Member};

#[derive(Debug, Serialize)]
pub struct Imported {
    pub name: String,
    pub from: String,
    pub image: String,
    /// Whether the image came from the archive (else this home had it).
    pub image_installed: bool,
    pub snapshots: u32,
    pub seconds: f64,
}

/// Import the VM archived in `file`, as `name` (default: its name in the archive).
pub fn import(home: &Home, file: &Path, name: Option<&VmName>) -> Result<Imported> {
    let t0 = std::time::Instant::now();
    // Unpacked beside the VMs' folder (the same file system), which is made only once the
    // archive is whole: a refused import leaves the home as it was.
    std::fs::create_dir_all(&home.root).path_ctx("create", &home.root)?;
    let tmp = fsutil::TempDir::new(&home.root, ".import-")?;
    let manifest = unpack(file, tmp.path())?;
    let refuse = |why: String| Error::Usage(format!("FILE: {} {why}", file.display()));
    let name: VmName = match name {
        Some(n) => n.clone(),
        None => manifest
            .vm
            .parse()
            .map_err(|e| refuse(format!("names its VM {:?}: {e}", manifest.vm)))?,
    };
    let staged = VmPaths {
        dir: tmp.path().join("vm"),
    };
    if home.vm(&name).dir.exists() {
        return Err(Error::Usage(format!(
            "--name: VM {name} exists already; import it under another name with --name"
        )));
    }
    check_overlay(&staged.disk()).map_err(|w| refuse(format!("holds a VM disk that {w}")))?;
    let cfg = VmConfig::load(&staged.definition())?;
    // Checked before anything is installed; the image's name may change below.
    let source = format!("{} (VM {})", file.display(), manifest.vm);
    // What this home says of it (forwards, networks) before anything is installed; again
    // under the lock below.
    check_here(
        home,
        &spec::validate(&name, &cfg, limits(), &source)?,
        &source,
    )?;
    let (image, installed) = image(home, tmp.path(), &manifest, file)?;
    let mut cfg = cfg;
    cfg.image = Some(image.manifest.name.clone());
    cfg.stack = None;
    let spec = spec::validate(&name, &cfg, limits(), &source)?;
    rebase(&staged.disk(), &image.disk())?;
    let vms = home.vms_dir();
    std::fs::create_dir_all(&vms).path_ctx("create", &vms)?;
    let _lock = fsutil::lock_exclusive(&home.vms_lock())?;
    let spec = check_here(home, &spec, &source)?;
    fix_ssh(&staged, &home.vm(&name), &spec)?;
    let text = format!(
        "# VM {name} — imported by vmctl from {} (VM {} there); edit while the VM is stopped.\n{}",
        file.display().to_string().replace(['\n', '\r'], "?"),
        manifest.vm,
        spec.to_config().to_toml()
    );
    fsutil::write_atomic(&staged.definition(), text.as_bytes())?;
    let target = home.vm(&name);
    if target.dir.exists() {
        return Err(Error::Usage(format!("--name: VM {name} exists already")));
    }
    std::fs::rename(&staged.dir, &target.dir).path_ctx("create", &target.dir)?;
    Ok(Imported {
        name: name.to_string(),
        from: manifest.vm,
        image: image.manifest.name,
        image_installed: installed,
        snapshots: crate::qemu::img::snapshot_count(&target.disk()).unwrap_or(0),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Unpack the archive into `dir` (`vm/`, `vm/ssh/`, `image/`), each member hashed; its
/// manifest, which must be last and match every member.
fn unpack(file: &Path, dir: &Path) -> Result<Manifest> {
    let refuse = |why: String| Error::Usage(format!("FILE: {} {why}", file.display()));
    let f = std::fs::File::open(file).map_err(|e| refuse(format!("cannot be read: {e}")))?;
    let size = f.metadata().map_or(0, |m| m.len());
    let progress =
        crate::term::progress::Progress::bytes(&format!("importing {}", file.display()), size);
    let zstd = zstd::Decoder::new(progress.reading(f))
        .map_err(|e| refuse(format!("cannot be read: {e}")))?;
    let mut tar = tar::Archive::new(zstd);
    let damaged = |e: std::io::Error| {
        refuse(format!(
            "is not a whole vmctl archive (truncated or damaged?): {e}"
        ))
    };
    let mut read: Vec<Member> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let path = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        if manifest.is_some() {
            return Err(refuse(format!("holds {path} after its manifest")));
        }
        if path == archive::MANIFEST {
            let mut text = Vec::new();
            (&mut entry)
                .take(archive::MAX_MANIFEST)
                .read_to_end(&mut text)
                .map_err(damaged)?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| refuse(format!("has a manifest that cannot be read: {e}")))?,
            );
            continue;
        }
        if !archive::allowed(&path) || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(format!(
                "holds {path:?}, which is not a file a vmctl archive has"
            )));
        }
        if read.iter().any(|m| m.path == path) {
            return Err(refuse(format!("holds {path} twice")));
        }
        let dest = dir.join(&path);
        let parent = dest.parent().expect("members are in folders");
        std::fs::create_dir_all(parent).path_ctx("create", parent)?;
        let mut out = Hashing::new(fsutil::create_new_file(&dest)?);
        std::io::copy(&mut entry, &mut out).map_err(damaged)?;
        let (sha256, size) = out.finish();
        read.push(Member { path, size, sha256 });
    }
    let manifest = manifest.ok_or_else(|| {
        refuse("has no manifest (vmctl-export.json): truncated, or not a vmctl archive".into())
    })?;
    if let Some(why) = archive::mismatch(&manifest, &read) {
        return Err(refuse(why));
    }
    progress.finish();
    Ok(manifest)
}

/// A VM disk from an archive: a qcow2 whose backing file vmctl replaces, and nothing else
/// outside itself (no data file, no encryption, no feature vmctl does not know).
fn check_overlay(disk: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(disk).map_err(|e| format!("cannot be read: {e}"))?;
    let mut head = vec![0u8; 64 << 10];
    let n = f.read_at(&mut head, 0).map_err(|e| e.to_string())?;
    head.truncate(n);
    crate::image::probe::check_overlay(&head)
}

/// The archive's base image: this home's when it is the same build, else installed from the
/// archive (as `NAME-SHA8` when this home has another image called NAME). Checked first as an
/// untrusted image: a self-contained qcow2.
fn image(home: &Home, dir: &Path, m: &Manifest, file: &Path) -> Result<(Image, bool)> {
    let staged = dir.join("image");
    let refuse = |why: String| Error::Usage(format!("FILE: {} {why}", file.display()));
    let text = std::fs::read_to_string(staged.join("image.toml"))
        .map_err(|e| refuse(format!("has no readable image.toml: {e}")))?;
    let mut im: ImageManifest = toml::from_str(&text).map_err(|e| {
        refuse(format!(
            "has an image.toml that cannot be read: {}",
            e.message()
        ))
    })?;
    for f in [Some(&im.disk), im.kernel.as_ref(), im.initrd.as_ref()]
        .into_iter()
        .flatten()
    {
        if !archive::allowed(&format!("image/{f}")) || !staged.join(f).is_file() {
            return Err(refuse(format!(
                "has an image.toml naming {f:?}, which it lacks"
            )));
        }
    }
    let disk = staged.join(&im.disk);
    let df = std::fs::File::open(&disk).path_ctx("read", &disk)?;
    let len = df.metadata().path_ctx("read", &disk)?.len();
    crate::image::probe::probe(&disk, &df, len, Some(crate::image::probe::Format::Qcow2))?;
    let sha = |p: &str| {
        m.files
            .iter()
            .find(|f| f.path == p)
            .map(|f| f.sha256.clone())
    };
    let disk_sha = sha(&format!("image/{}", im.disk)).unwrap_or_default();
    let same = |i: &Image| i.manifest.sha256.get(&i.manifest.disk) == Some(&disk_sha);
    let images = home.images_dir();
    std::fs::create_dir_all(&images).path_ctx("create", &images)?;
    let _lock = fsutil::lock_exclusive(&home.images_lock())?;
    let mut name = m.image.name.clone();
    if let Ok(here) = store::find(home, &name, m.image.arch) {
        if same(&here) {
            return Ok((here, false));
        }
        name = format!("{name}-{}", &disk_sha[..8.min(disk_sha.len())]);
        if let Ok(here) = store::find(home, &name, m.image.arch) {
            if same(&here) {
                return Ok((here, false));
            }
        }
    }
    im.name = name.clone();
    im.sha256 = store::sha256_files(&staged)?;
    im.sha256.remove("image.toml");
    let target = home.image_dir(&name, m.image.arch);
    Ok((store::install(&staged, &target, &im, dir)?, true))
}

/// `qemu-img rebase -u`: the disk backs onto `base` (the same bytes it was made on).
fn rebase(disk: &Path, base: &Path) -> Result<()> {
    crate::qemu::img::qemu_img(
        &[
            "rebase".as_ref(),
            "-u".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            disk.as_os_str(),
        ],
        &format!("Cannot point {} at its image", disk.display()),
    )
}

/// What only this home can say of the definition: its forwards free here, its networks here
/// (addresses given anew where the archive's are taken). Under the VMs' lock.
fn check_here(home: &Home, spec: &VmSpec, source: &str) -> Result<VmSpec> {
    let mut p = Problems::default();
    crate::vm::create::foreign_ports(home, spec, &mut p);
    p.into_result(source)?;
    Ok(VmSpec {
        networks: crate::def::network::assign(home, spec, source)?,
        ..spec.clone()
    })
}

/// The SSH files under the VM's new name: `known_hosts` pins the host key under this name's
/// alias, and a key pair vmctl made for the VM is found in its new folder.
fn fix_ssh(staged: &VmPaths, target: &VmPaths, spec: &VmSpec) -> Result<()> {
    let (files, final_files) = (staged.ssh(), target.ssh());
    if let Ok(host_pub) = std::fs::read_to_string(files.host_key_pub()) {
        let mut f = host_pub.split_whitespace();
        let line = format!(
            "{} {} {}\n",
            crate::guest::provision::host_alias(spec),
            f.next().unwrap_or(""),
            f.next().unwrap_or("")
        );
        fsutil::write_atomic(&files.known_hosts(), line.as_bytes())?;
    }
    let generated: PathBuf = files.generated_identity();
    if generated.is_file() {
        let id = final_files.generated_identity().display().to_string();
        fsutil::write_atomic(&files.identity_record(), id.as_bytes())?;
    }
    Ok(())
}
