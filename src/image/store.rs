//! The image store: base images VMs are overlaid on, their manifests, and building the built-in
//! ones from the recipes in `images/` (embedded in the binary, so vmctl needs no checkout).
//!
//! An image lives in `images/NAME/ARCH/` with an `image.toml` manifest, a qcow2 `disk.qcow2`, and
//! optionally a `kernel` + `initrd` + command line for direct boot. Builds happen in a temporary
//! directory beside the target and are renamed into place at the end, under a lock, so an
//! interrupted or failed build leaves no half image.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::sys::fsutil;
use crate::types::{App, Arch, ByteSize};

/// A recipe in `images/NAME/image.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub arches: Vec<Arch>,
    /// Size of a blank disk vmctl creates when the build script makes none.
    #[serde(default)]
    pub disk_size: Option<String>,
    /// Kernel command line for direct boot; a build script may write `cmdline` instead.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// The build needs root (loop mounts, chroots).
    #[serde(default)]
    pub requires_root: bool,
    /// How VMs on this image get their user, keys and app.
    #[serde(default)]
    pub provision: Provision,
    /// Apps the image can run.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Environment for the build script, per architecture (`[env.x86_64]`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<Arch, std::collections::BTreeMap<String, String>>,
}

/// A built-in image: its recipe and the files its build runs (all embedded).
pub struct Builtin {
    pub recipe_toml: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        recipe_toml: include_str!("../../images/tiny/image.toml"),
        files: &[
            ("build.sh", include_str!("../../images/tiny/build.sh")),
            ("init", include_str!("../../images/tiny/init")),
        ],
    },
    Builtin {
        recipe_toml: include_str!("../../images/debian-12/image.toml"),
        files: &[
            ("build.sh", include_str!("../../images/debian-12/build.sh")),
            (
                "provision.py",
                include_str!("../../images/debian-12/provision.py"),
            ),
        ],
    },
];

pub fn recipe(b: &Builtin) -> Recipe {
    toml::from_str(b.recipe_toml).expect("built-in recipes are tested to parse")
}

fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| recipe(b).name == name)
}

/// `images/NAME/ARCH/image.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub arch: Arch,
    pub description: String,
    pub disk: String,
    pub virtual_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Unix seconds.
    pub built_at: u64,
    /// sha256 of the recipe and build files this image was built from; a rebuild is skipped
    /// while it matches.
    #[serde(default)]
    pub recipe_sha256: String,
    #[serde(default)]
    pub provision: Provision,
    #[serde(default)]
    pub apps: Vec<App>,
    /// sha256 of each file of the image.
    #[serde(default)]
    pub sha256: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub packages: Vec<String>,
}

/// How a VM on an image gets its login user, SSH keys and app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provision {
    /// Nothing: the image has no users to set up (tiny).
    #[default]
    None,
    /// vmctl's own first-boot unit reads a JSON credential passed through fw_cfg.
    Vmctl,
    /// cloud-init reads a NoCloud seed disk vmctl generates (imported cloud images).
    CloudInit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub dir: PathBuf,
    #[serde(flatten)]
    pub manifest: Manifest,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
    pub fn kernel(&self) -> Option<PathBuf> {
        self.manifest.kernel.as_ref().map(|k| self.dir.join(k))
    }
    pub fn initrd(&self) -> Option<PathBuf> {
        self.manifest.initrd.as_ref().map(|k| self.dir.join(k))
    }

    pub fn load(dir: &Path) -> Result<Image> {
        let path = dir.join("image.toml");
        let text = std::fs::read_to_string(&path).path_ctx("read", &path)?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| Error::Other(format!("{}: {}", path.display(), e.message())))?;
        Ok(Image {
            dir: dir.to_path_buf(),
            manifest,
        })
    }
}

/// Find a built image, or say what exists and how to build the one asked for.
pub fn find(home: &Home, name: &str, arch: Arch) -> Result<Image> {
    let dir = home.image_dir(name, arch);
    if dir.join("image.toml").exists() {
        return Image::load(&dir);
    }
    let hint = if builtin(name).is_some() {
        let flag = if Some(arch) == Arch::host() {
            String::new()
        } else {
            format!(" --arch {arch}")
        };
        format!(" for {arch}; build it with `vmctl image build {name}{flag}`")
    } else {
        let have: Vec<String> = list(home)
            .iter()
            .map(|i| format!("{}/{}", i.manifest.name, i.manifest.arch))
            .collect();
        format!(
            " for {arch}; built images: {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    };
    Err(Error::NotFound {
        what: "image",
        name: name.to_string(),
        hint,
    })
}

pub fn list(home: &Home) -> Vec<Image> {
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(home.images_dir()) else {
        return out;
    };
    for n in names.flatten() {
        if n.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(arches) = std::fs::read_dir(n.path()) else {
            continue;
        };
        for a in arches.flatten() {
            if let Ok(img) = Image::load(&a.path()) {
                out.push(img);
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.manifest.name, a.manifest.arch.as_str())
            .cmp(&(&b.manifest.name, b.manifest.arch.as_str()))
    });
    out
}

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
    if builtin(name).is_some() {
        return Err(Error::Usage(format!(
            "--name: {name:?} is a built-in image; pick another name"
        )));
    }
    if !file.is_file() {
        return Err(Error::Usage(format!(
            "FILE: {} does not exist or is not a file",
            file.display()
        )));
    }
    let images = home.images_dir();
    std::fs::create_dir_all(&images).path_ctx("create", &images)?;
    let _lock = fsutil::lock_exclusive(&images.join(".lock"))?;
    let target = home.image_dir(name, arch);
    if target.exists() {
        return Err(Error::Usage(format!(
            "--name: image {name} for {arch} already exists ({}); pick another name",
            target.display()
        )));
    }
    let tmp = fsutil::TempDir::new(&images, &format!(".import-{name}-{arch}-"))?;
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).path_ctx("create", &out)?;
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
        .arg(out.join("disk.qcow2"))
        .status()
        .ctx(|| "Cannot run qemu-img (install qemu-utils)".into())?;
    if !status.success() {
        return Err(Error::Qemu(format!(
            "qemu-img could not convert {} ({status}); is --format right?",
            file.display()
        )));
    }
    let manifest = Manifest {
        name: name.to_string(),
        arch,
        description: format!("imported from {}", file.display()),
        disk: "disk.qcow2".into(),
        virtual_size: crate::qemu::img::virtual_size(&out.join("disk.qcow2"))?,
        kernel: None,
        initrd: None,
        cmdline: None,
        built_at: fsutil::unix_now(),
        recipe_sha256: String::new(),
        provision: Provision::CloudInit,
        apps: App::ALL.to_vec(),
        sha256: sha256_files(&out)?,
        packages: vec![],
    };
    install(&out, &target, &manifest, tmp.path())
}

/// Write the manifest into the finished directory `out` and rename it to `target`; a previous
/// build at `target` is moved into `trash` (removed with the temporary directory).
fn install(out: &Path, target: &Path, manifest: &Manifest, trash: &Path) -> Result<Image> {
    fsutil::write_atomic(
        &out.join("image.toml"),
        toml::to_string(manifest)
            .expect("manifests serialize")
            .as_bytes(),
    )?;
    let parent = target.parent().expect("image dirs have a parent");
    std::fs::create_dir_all(parent).path_ctx("create", parent)?;
    if target.exists() {
        let old = trash.join("old");
        std::fs::rename(target, &old).path_ctx("move aside", target)?;
    }
    std::fs::rename(out, target).path_ctx("install", target)?;
    Image::load(target)
}

/// sha256 of every file in `dir` (through `sha256sum`, which is much faster than hashing a
/// large disk in a debug build of vmctl).
fn sha256_files(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .path_ctx("read", dir)?
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(Default::default());
    }
    let out = Command::new("sha256sum")
        .args(&files)
        .current_dir(dir)
        .output()
        .ctx(|| "Cannot run sha256sum".into())?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (sum, file) = l.split_once("  ")?;
            Some((file.to_string(), sum.to_string()))
        })
        .collect())
}

fn recipe_digest(b: &Builtin, arch: Arch) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(arch.as_str());
    h.update(b.recipe_toml);
    for (name, text) in b.files {
        h.update(name);
        h.update(text);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Build a built-in image. Returns the image and whether anything was built.
pub fn build(home: &Home, name: &str, arch: Arch, force: bool) -> Result<(Image, bool)> {
    let b = builtin(name).ok_or_else(|| Error::NotFound {
        what: "image recipe",
        name: name.to_string(),
        hint: format!(
            "; built-in recipes: {}",
            BUILTINS
                .iter()
                .map(|b| recipe(b).name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let r = recipe(b);
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
    let images = home.images_dir();
    std::fs::create_dir_all(&images).path_ctx("create", &images)?;
    let _lock = fsutil::lock_exclusive(&images.join(".lock"))?;
    let target = home.image_dir(name, arch);
    let recipe_sha256 = recipe_digest(b, arch);
    if target.join("image.toml").exists() {
        let current = Image::load(&target)?;
        let users = crate::def::store::vms_using(home, name, arch);
        if current.manifest.recipe_sha256 == recipe_sha256 && !force {
            return Ok((current, false));
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
            eprintln!(
                "vmctl: the recipe of image {name} changed, but {msg}. Keeping the old build."
            );
            return Ok((current, false));
        }
        eprintln!("vmctl: rebuilding image {name} for {arch}");
    }
    // Leftovers of interrupted builds (we hold the lock, so none is running).
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".build-") {
                fsutil::remove_tree(&e.path());
            }
        }
    }
    let tmp = fsutil::TempDir::new(&images, &format!(".build-{name}-{arch}-"))?;
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&src).path_ctx("create", &src)?;
    std::fs::create_dir_all(&out).path_ctx("create", &out)?;
    for (file, text) in b.files {
        let p = src.join(file);
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
        .arg(&out)
        .env("VMCTL_CACHE_DIR", &cache)
        .envs(r.env.get(&arch).into_iter().flatten())
        .spawn()
        .ctx(|| "Cannot run bash for the image build".to_string())?;
    // Ctrl-C reaches the build script too (same process group); it cleans up its mounts and
    // exits, and we outlive it to remove the temporary directory.
    let status = {
        let _guard = crate::sys::process::IgnoreInterrupts::new();
        child
            .wait()
            .ctx(|| "Cannot wait for the image build".to_string())?
    };
    if !status.success() {
        return Err(Error::Other(format!(
            "Building image {name} for {arch} failed ({status}); nothing was installed"
        )));
    }
    let disk = out.join("disk.qcow2");
    if !disk.exists() {
        let size: ByteSize = r
            .disk_size
            .as_deref()
            .unwrap_or("1G")
            .parse()
            .map_err(|e| Error::Other(format!("recipe {name}: disk_size: {e}")))?;
        crate::qemu::img::create(&disk, size, None)?;
    }
    let virtual_size = crate::qemu::img::virtual_size(&disk)?;
    let cmdline = std::fs::read_to_string(out.join("cmdline"))
        .ok()
        .map(|c| c.trim().to_string())
        .or_else(|| r.cmdline.clone());
    let _ = std::fs::remove_file(out.join("cmdline"));
    let has = |f: &str| out.join(f).exists().then(|| f.to_string());
    let packages = std::fs::read_to_string(out.join("packages.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let manifest = Manifest {
        name: name.to_string(),
        arch,
        description: r.description.clone(),
        disk: "disk.qcow2".into(),
        virtual_size,
        kernel: has("kernel"),
        initrd: has("initrd"),
        cmdline,
        built_at: fsutil::unix_now(),
        recipe_sha256,
        provision: r.provision,
        apps: r.apps.clone(),
        sha256: Default::default(),
        packages,
    };
    let _ = std::fs::remove_file(out.join("packages.txt"));
    let mut manifest = manifest;
    manifest.sha256 = sha256_files(&out)?;
    let img = install(&out, &target, &manifest, tmp.path())?;
    drop(tmp);
    Ok((img, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_recipe_parses_and_has_its_files() {
        for b in BUILTINS {
            let r: Recipe = toml::from_str(b.recipe_toml).unwrap();
            assert!(!r.arches.is_empty());
            if let Some(d) = &r.disk_size {
                d.parse::<ByteSize>().unwrap();
            }
            assert!(b.files.iter().any(|(f, _)| *f == "build.sh"));
            // Every file of the recipe's directory is embedded (the build finds them beside
            // build.sh).
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("images")
                .join(&r.name);
            for e in std::fs::read_dir(&dir).unwrap() {
                let f = e.unwrap().file_name().to_string_lossy().into_owned();
                if f != "image.toml" {
                    assert!(
                        b.files.iter().any(|(name, _)| *name == f),
                        "images/{}/{f} is not embedded in image::BUILTINS",
                        r.name
                    );
                }
            }
        }
    }
}
