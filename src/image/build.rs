//! Building a built-in image from its recipe: skipped while the image was built from the same
//! recipe files (a digest in its manifest); refused while VMs are overlaid on it; the recipe's
//! `build.sh` runs in a temporary directory beside the store and its output is installed whole.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::image::recipe::{self, Builtin, Recipe};
use crate::image::store::{self, Image, Manifest};
use crate::paths::{Home, ImagePaths};
use crate::sys::fsutil;
use crate::types::{Arch, ByteSize};

/// Files a build script may write into its output directory besides the disk: the kernel and
/// initrd for direct boot, the kernel command line, and the list of installed packages.
const KERNEL: &str = "kernel";
const INITRD: &str = "initrd";
const CMDLINE: &str = "cmdline";
const PACKAGES: &str = "packages.txt";

/// Build a built-in image. Returns the image and whether anything was built.
pub fn build(home: &Home, name: &str, arch: Arch, force: bool) -> Result<(Image, bool)> {
    let b = recipe::builtin(name).ok_or_else(|| Error::NotFound {
        what: "image recipe",
        name: name.to_string(),
        hint: format!("; built-in recipes: {}", recipe::names().join(", ")),
    })?;
    let r = recipe::recipe(b);
    check_buildable(&r, name, arch)?;
    let images = home.images_dir();
    std::fs::create_dir_all(&images).path_ctx("create", &images)?;
    let _lock = fsutil::lock_exclusive(&home.images_lock())?;
    let target = home.image(name, arch);
    let digest = recipe_digest(b, arch);
    if let Some(current) = keep_current(home, &target, name, arch, &digest, force)? {
        return Ok((current, false));
    }
    remove_leftovers(&images);
    let tmp = fsutil::TempDir::new(&images, &format!(".build-{name}-{arch}-"))?;
    let out = run_recipe(b, &r, name, arch, tmp.path())?;
    let manifest = manifest_of(&out, &r, name, arch, digest)?;
    let img = store::install(&out.dir, &target.dir, &manifest, tmp.path())?;
    drop(tmp);
    Ok((img, true))
}

/// Root for recipes that need it; an architecture the recipe supports.
fn check_buildable(r: &Recipe, name: &str, arch: Arch) -> Result<()> {
    if r.requires_root && !nix::unistd::geteuid().is_root() {
        return Err(Error::Host(format!(
            "Building image {name} needs root (it bootstraps Debian into a chroot and loop-mounts the disk); run `sudo vmctl image build {name}`"
        )));
    }
    if !r.arches.contains(&arch) {
        return Err(Error::Usage(format!(
            "image {name:?} cannot be built for {arch}; it supports {}",
            r.arches
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// The image as it is, when it stays: built from this recipe (and not `force`d), or built from
/// an older one but the base of VMs (rebuilding would corrupt their disks; refused if forced).
/// `None` when it is to be (re)built.
fn keep_current(
    home: &Home,
    target: &ImagePaths,
    name: &str,
    arch: Arch,
    digest: &str,
    force: bool,
) -> Result<Option<Image>> {
    if !target.manifest().exists() {
        return Ok(None);
    }
    let current = Image::load(&target.dir)?;
    let users = crate::def::store::vms_using(home, name, arch);
    if current.manifest.recipe_sha256 == digest && !force {
        return Ok(Some(current));
    }
    if !users.is_empty() {
        let msg = format!(
            "image {name} ({arch}) is the base of VM{} {}; rebuilding it would corrupt their disks. Remove them first",
            if users.len() == 1 { "" } else { "s" },
            users.join(", ")
        );
        if force {
            return Err(Error::State(msg));
        }
        eprintln!("vmctl: the recipe of image {name} changed, but {msg}. Keeping the old build.");
        return Ok(Some(current));
    }
    eprintln!("vmctl: rebuilding image {name} for {arch}");
    Ok(None)
}

/// Leftovers of interrupted builds (the caller holds the lock, so none is running).
fn remove_leftovers(images: &Path) {
    if let Ok(entries) = std::fs::read_dir(images) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".build-") {
                fsutil::remove_tree(&e.path());
            }
        }
    }
}

/// Write the recipe's files into `tmp/src` and run its `build.sh ARCH tmp/out`; the output
/// directory, with a disk in it.
fn run_recipe(b: &Builtin, r: &Recipe, name: &str, arch: Arch, tmp: &Path) -> Result<ImagePaths> {
    let src = tmp.join("src");
    let out = ImagePaths {
        dir: tmp.join("out"),
    };
    std::fs::create_dir_all(&out.dir).path_ctx("create", &out.dir)?;
    for (file, text) in b.sources() {
        let p = src.join(file);
        let dir = p.parent().unwrap_or(&src);
        std::fs::create_dir_all(dir).path_ctx("create", dir)?;
        std::fs::write(&p, text).path_ctx("write", &p)?;
    }
    let cache = crate::paths::cache_dir();
    std::fs::create_dir_all(&cache).path_ctx("create", &cache)?;
    eprintln!(
        "vmctl: building image {name} for {arch} (package cache {})",
        cache.display()
    );
    let mut child = Command::new("bash")
        .arg(src.join("build.sh"))
        .arg(arch.as_str())
        .arg(&out.dir)
        .env("VMCTL_CACHE_DIR", &cache)
        .envs(r.env.get(&arch).into_iter().flatten())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ctx(|| "Cannot run bash for the image build".to_string())?;
    // Ctrl-C reaches the build script too (same process group); it cleans up its mounts and
    // exits, and we outlive it to remove the temporary directory.
    let status = {
        let _guard = crate::sys::process::IgnoreInterrupts::new();
        // The script's own log lines (`NAME: ...`) are its steps.
        let mut steps = crate::term::progress::Steps::new(&format!("building image {name}"));
        let step_prefix = format!("{name}: ");
        if let Some(err) = child.stderr.take() {
            for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(|l| l.ok())
            {
                steps.line(&line, line.strip_prefix(&step_prefix));
            }
        }
        let status = child
            .wait()
            .ctx(|| "Cannot wait for the image build".to_string())?;
        steps.finish(status.success());
        status
    };
    if !status.success() {
        return Err(Error::Other(format!(
            "Building image {name} for {arch} failed ({status}); nothing was installed"
        )));
    }
    if !out.disk().exists() {
        let size: ByteSize = r
            .disk_size
            .as_deref()
            .unwrap_or("1G")
            .parse()
            .map_err(|e| Error::Other(format!("recipe {name}: disk_size: {e}")))?;
        crate::qemu::img::create(&out.disk(), size, None)?;
    }
    Ok(out)
}

/// The manifest of a finished build; the command line and package list move from their files
/// into it.
fn manifest_of(
    out: &ImagePaths,
    r: &Recipe,
    name: &str,
    arch: Arch,
    recipe_sha256: String,
) -> Result<Manifest> {
    let file = |f: &str| out.dir.join(f);
    let virtual_size = crate::qemu::img::virtual_size(&out.disk())?;
    let cmdline = std::fs::read_to_string(file(CMDLINE))
        .ok()
        .map(|c| c.trim().to_string())
        .or_else(|| r.cmdline.clone());
    let _ = std::fs::remove_file(file(CMDLINE));
    let has = |f: &str| file(f).exists().then(|| f.to_string());
    let packages = std::fs::read_to_string(file(PACKAGES))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let _ = std::fs::remove_file(file(PACKAGES));
    Ok(Manifest {
        name: name.to_string(),
        arch,
        description: r.description.clone(),
        disk: ImagePaths::DISK.into(),
        virtual_size,
        kernel: has(KERNEL),
        initrd: has(INITRD),
        cmdline,
        built_at: fsutil::unix_now(),
        recipe_sha256,
        provision: r.provision,
        apps: r.apps.clone(),
        sha256: store::sha256_files(&out.dir)?,
        packages,
    })
}

/// sha256 of the architecture, the recipe and every file the build gets.
fn recipe_digest(b: &Builtin, arch: Arch) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(arch.as_str());
    h.update(b.recipe_toml);
    for (name, text) in b.sources() {
        h.update(name);
        h.update(text);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
