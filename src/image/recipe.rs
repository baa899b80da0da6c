//! The built-in image recipes, embedded in the binary so vmctl needs no checkout: each is an
//! `images/NAME/image.toml` with the files its build runs (`build.sh` and what sits beside it),
//! plus, for images vmctl provisions, the guest payload (`images/guest/`, see `payload`).

use serde::{Deserialize, Serialize};

use crate::image::payload::{self, GuestFile};
use crate::types::{App, Arch};

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

/// A built-in image: its recipe and the files its build runs (all embedded).
pub struct Builtin {
    pub recipe_toml: &'static str,
    /// Files of `images/NAME/`, by name; the build runs `build.sh` among them.
    pub files: &'static [(&'static str, &'static str)],
    /// The guest payload the build installs, given to it as `guest/NAME` beside build.sh.
    pub guest: &'static [GuestFile],
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        recipe_toml: include_str!("../../images/tiny/image.toml"),
        files: &[
            ("build.sh", include_str!("../../images/tiny/build.sh")),
            ("init", include_str!("../../images/tiny/init")),
        ],
        guest: &[],
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
        guest: &payload::ALL,
    },
];

pub fn recipe(b: &Builtin) -> Recipe {
    toml::from_str(b.recipe_toml).expect("built-in recipes are tested to parse")
}

/// The built-in recipe named `name`, if there is one.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| recipe(b).name == name)
}

/// Every built-in recipe's name, for messages.
pub fn names() -> Vec<String> {
    BUILTINS.iter().map(|b| recipe(b).name).collect()
}

impl Builtin {
    /// Every file the build gets, by its path in the build's source directory.
    pub fn sources(&self) -> impl Iterator<Item = (String, &'static str)> + '_ {
        let own = self.files.iter().map(|(f, t)| (f.to_string(), *t));
        let guest = self
            .guest
            .iter()
            .map(|g| (format!("guest/{}", g.name), g.text));
        own.chain(guest)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ByteSize;
    use std::path::Path;

    #[test]
    fn every_builtin_recipe_parses_and_has_its_files() {
        for b in BUILTINS {
            let r: Recipe = toml::from_str(b.recipe_toml).unwrap();
            assert!(!r.arches.is_empty());
            if let Some(d) = &r.disk_size {
                d.parse::<ByteSize>().unwrap();
            }
            assert!(b.files.iter().any(|(f, _)| *f == "build.sh"));
            if r.provision == Provision::Vmctl {
                assert_eq!(b.guest.len(), payload::ALL.len(), "{}", r.name);
            }
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
                        "images/{}/{f} is not embedded in image::recipe::BUILTINS",
                        r.name
                    );
                }
            }
        }
    }
}
