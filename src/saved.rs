//! A VM's saved state (`vmctl suspend`, `stop --save`): the migration stream QEMU wrote
//! (`saved.state`) and what it fits (`saved.json`, written last): QEMU's command line and
//! version, and the disk and base image as they were when QEMU let go of them (device, inode,
//! size, modification time). A state whose disk, base image or command line changed since is
//! never loaded — QEMU would resume a guest whose memory disagrees with its disk and corrupt its
//! file system — and is said to be stale instead.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::Result;
use crate::paths::VmPaths;
use crate::sys::fsutil;

/// A file as the kernel knows it: the same values mean nobody wrote it in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

/// What `saved.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMeta {
    /// Unix seconds.
    pub saved_at: u64,
    /// The size of `saved.state`.
    pub bytes: u64,
    pub qemu_version: String,
    /// SHA-256 of the QEMU command line the state was saved from: the machine and devices it
    /// holds the state of.
    pub machine: String,
    /// The VM's disk (its qcow2 overlay) after QEMU exited.
    pub disk: FileId,
    /// The base image's disk under it.
    pub base: FileId,
}

/// The fingerprint of a QEMU command line (`SavedMeta::machine`).
pub fn machine_of(argv: &[String]) -> String {
    let mut h = sha2::Sha256::new();
    for a in argv {
        h.update(a.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The saved state's record, when there is one (`saved.json` and `saved.state` both there).
pub fn read(paths: &VmPaths) -> Option<SavedMeta> {
    if !paths.saved_state().exists() {
        return None;
    }
    let text = std::fs::read_to_string(paths.saved_meta()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Record a saved state (after `saved.state` is in place), atomically.
pub fn write(paths: &VmPaths, meta: &SavedMeta) -> Result<()> {
    let json = serde_json::to_string_pretty(meta).expect("serializes");
    fsutil::write_atomic(&paths.saved_meta(), json.as_bytes())
}

/// Forget the saved state: the record first, so that a state without one is never loaded.
pub fn discard(paths: &VmPaths) {
    let _ = std::fs::remove_file(paths.saved_meta());
    let _ = std::fs::remove_file(paths.saved_state());
}

/// What a VM's saved state says of a start with this command line and version.
#[derive(Debug, PartialEq)]
pub enum Fit {
    /// No saved state: boot.
    None,
    /// Load it.
    Loads(SavedMeta),
    /// It no longer fits; why, in words.
    Stale(String),
}

/// Whether the saved state fits the disk, the base image and QEMU as they are now.
pub fn fit(paths: &VmPaths, base: &Path, argv: &[String], qemu_version: &str) -> Fit {
    let Some(meta) = read(paths) else {
        return Fit::None;
    };
    let now = |p: &Path| FileId::of(p).ok();
    let why = if now(&paths.disk()).as_ref() != Some(&meta.disk) {
        "its disk changed since the save (a snapshot taken or reverted, or the file written)"
            .to_string()
    } else if now(base).as_ref() != Some(&meta.base) {
        format!("its base image {} changed since the save", base.display())
    } else if meta.qemu_version != qemu_version {
        format!(
            "it was saved by QEMU {} and this is QEMU {qemu_version}",
            meta.qemu_version
        )
    } else if meta.machine != machine_of(argv) {
        "the VM's QEMU command line changed since the save (its definition, image or accelerator)"
            .to_string()
    } else {
        return Fit::Loads(meta);
    };
    Fit::Stale(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;
    use crate::types::VmName;

    fn setup() -> (tempfile::TempDir, VmPaths, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let home = Home {
            root: d.path().to_path_buf(),
        };
        let paths = home.vm(&"web".parse::<VmName>().unwrap());
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(paths.disk(), "disk").unwrap();
        let base = d.path().join("base.qcow2");
        std::fs::write(&base, "base").unwrap();
        (d, paths, base)
    }

    fn save(paths: &VmPaths, base: &Path, argv: &[String]) -> SavedMeta {
        std::fs::write(paths.saved_state(), "QEVM").unwrap();
        let meta = SavedMeta {
            saved_at: 1,
            bytes: 4,
            qemu_version: "7.2.22".into(),
            machine: machine_of(argv),
            disk: FileId::of(&paths.disk()).unwrap(),
            base: FileId::of(base).unwrap(),
        };
        write(paths, &meta).unwrap();
        meta
    }

    #[test]
    fn a_state_loads_only_onto_the_disk_image_and_machine_it_was_saved_from() {
        let (_d, paths, base) = setup();
        let argv: Vec<String> = vec!["qemu".into(), "-m".into(), "1024M".into()];
        assert_eq!(fit(&paths, &base, &argv, "7.2.22"), Fit::None);
        let meta = save(&paths, &base, &argv);
        assert_eq!(fit(&paths, &base, &argv, "7.2.22"), Fit::Loads(meta));
        let other: Vec<String> = vec!["qemu".into(), "-m".into(), "2048M".into()];
        assert!(
            matches!(fit(&paths, &base, &other, "7.2.22"), Fit::Stale(w) if w.contains("command line"))
        );
        assert!(
            matches!(fit(&paths, &base, &argv, "8.0.0"), Fit::Stale(w) if w.contains("QEMU 7.2.22"))
        );
        // Arguments are told apart, not run together.
        let joined: Vec<String> = vec!["qemu".into(), "-m1024M".into()];
        assert_ne!(machine_of(&argv), machine_of(&joined));
        // The disk written after the save: stale.
        std::fs::write(paths.disk(), "disk, written").unwrap();
        assert!(
            matches!(fit(&paths, &base, &argv, "7.2.22"), Fit::Stale(w) if w.contains("disk changed"))
        );
        save(&paths, &base, &argv);
        std::fs::write(&base, "rebuilt").unwrap();
        assert!(
            matches!(fit(&paths, &base, &argv, "7.2.22"), Fit::Stale(w) if w.contains("base image"))
        );
    }

    #[test]
    fn a_state_without_its_record_is_no_saved_state() {
        let (_d, paths, base) = setup();
        let argv = vec!["qemu".to_string()];
        save(&paths, &base, &argv);
        std::fs::remove_file(paths.saved_meta()).unwrap();
        assert_eq!(fit(&paths, &base, &argv, "7.2.22"), Fit::None);
        save(&paths, &base, &argv);
        discard(&paths);
        assert!(!paths.saved_state().exists() && read(&paths).is_none());
    }
}
