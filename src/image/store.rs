//! The store of built images: `images/NAME/ARCH/` with an `image.toml` manifest, a qcow2 disk,
//! and optionally a kernel + initrd + command line for direct boot. Builds and imports happen in
//! a temporary directory beside the target and are installed by a rename under the images lock,
//! so an interrupted one leaves no half image.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::image::recipe::{self, Provision};
use crate::paths::{Home, ImagePaths};
use crate::sys::fsutil;
use crate::types::{App, Arch};

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
        let path = ImagePaths {
            dir: dir.to_path_buf(),
        }
        .manifest();
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
    let dir = home.image(name, arch);
    if dir.manifest().exists() {
        return Image::load(&dir.dir);
    }
    let hint = if recipe::builtin(name).is_some() {
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

/// The kernel and initrd of the tiny image for `arch` (the accelerator's test guest), if it is
/// built.
pub fn probe_kernel(home: &Home, arch: Arch) -> Option<(PathBuf, PathBuf)> {
    let img = find(home, "tiny", arch).ok()?;
    Some((img.kernel()?, img.initrd()?))
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

/// Write the manifest into the finished directory `out` and rename it to `target`; a previous
/// build at `target` is moved into `trash` (removed with the temporary directory).
pub fn install(out: &Path, target: &Path, manifest: &Manifest, trash: &Path) -> Result<Image> {
    fsutil::write_atomic(
        &ImagePaths {
            dir: out.to_path_buf(),
        }
        .manifest(),
        toml::to_string(manifest)
            .expect("manifests serialize")
            .as_bytes(),
    )?;
    let parent = target.parent().expect("image dirs have a parent");
    std::fs::create_dir_all(parent).path_ctx("create", parent)?;
    // QEMU, run as its own user when vmctl is root, opens the image by path: its group may
    // pass the image's folders and read the image (and nothing else of the home).
    if let Some(user) = crate::host::qemu_user::for_this_process()? {
        crate::host::qemu_user::let_read(out, &user)?;
        let images = parent.parent().unwrap_or(parent);
        for dir in [images.parent().unwrap_or(images), images, parent] {
            crate::host::qemu_user::let_pass(dir, &user)?;
        }
    }
    if target.exists() {
        let old = trash.join("old");
        std::fs::rename(target, &old).path_ctx("move aside", target)?;
    }
    std::fs::rename(out, target).path_ctx("install", target)?;
    Image::load(target)
}

/// sha256 of every file in `dir` (through `sha256sum`, which is much faster than hashing a
/// large disk in a debug build of vmctl).
pub fn sha256_files(dir: &Path) -> Result<std::collections::BTreeMap<String, String>> {
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
