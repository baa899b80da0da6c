//! The VM archive of `vmctl export` and `vmctl import`: a tar, compressed with zstd, that holds
//! the VM's folder (definition, disk with its snapshots, SSH keys, machine-id, app release) under
//! `vm/`, its base image under `image/` (so it restores where that image is missing), and, last,
//! `vmctl-export.json`: what it is and the size and SHA-256 of every other member. An import
//! takes nothing it does not list, and nothing whose bytes do not match.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::types::Arch;

/// The last member: the archive's own table of contents.
pub const MANIFEST: &str = "vmctl-export.json";
/// What `format` says in every vmctl archive.
pub const FORMAT: &str = "vmctl-export";
/// The version of the layout this vmctl writes and reads.
pub const VERSION: u32 = 1;
/// The VM folder's files that travel (logs, sockets, run state and a saved state do not).
pub const VM_FILES: [&str; 5] = [
    "vm.toml",
    "disk.qcow2",
    "machine-id",
    "app.tar",
    "provision.log",
];
/// The largest manifest an import reads.
pub const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The VM's name where it was exported.
    pub vm: String,
    /// Unix seconds.
    pub exported_at: u64,
    /// The vmctl that wrote it.
    pub vmctl: String,
    pub image: ImageRef,
    pub files: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    pub name: String,
    pub arch: Arch,
}

/// One member: its name in the tar, its size and SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Whether `path` may be a member: one of the VM's files, a file of its `ssh/` folder, or a
/// file of its image (plain names: no folders, no `..`, nothing hidden).
pub fn allowed(path: &str) -> bool {
    let plain = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["vm", f] => VM_FILES.contains(f),
        ["vm", "ssh", f] | ["image", f] => plain(f),
        _ => false,
    }
}

/// Copies bytes through, counting them and hashing them with SHA-256.
pub struct Hashing<T> {
    inner: T,
    hash: sha2::Sha256,
    pub bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: sha2::Sha256::new(),
            bytes: 0,
        }
    }
    /// The hex SHA-256 of what went through.
    pub fn finish(self) -> (String, u64) {
        let digest = self.hash.finalize();
        (
            digest.iter().map(|b| format!("{b:02x}")).collect(),
            self.bytes,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What is wrong with the members read against the manifest (missing, extra, another size or
/// hash), or None when they match.
pub fn mismatch(manifest: &Manifest, read: &[Member]) -> Option<String> {
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Some(format!(
            "is a {} archive of version {}; this vmctl reads {FORMAT} version {VERSION}",
            manifest.format, manifest.version
        ));
    }
    for want in &manifest.files {
        match read.iter().find(|m| m.path == want.path) {
            None => return Some(format!("lacks {}, which its manifest lists", want.path)),
            Some(got) if got != want => {
                return Some(format!(
                    "has {} of {} bytes and SHA-256 {}, where its manifest says {} bytes and {}",
                    got.path, got.size, got.sha256, want.size, want.sha256
                ));
            }
            Some(_) => {}
        }
    }
    read.iter()
        .find(|m| !manifest.files.iter().any(|w| w.path == m.path))
        .map(|m| format!("holds {}, which its manifest does not list", m.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vms_files_its_keys_and_its_image_may_be_members() {
        for ok in [
            "vm/vm.toml",
            "vm/disk.qcow2",
            "vm/ssh/id_ed25519",
            "image/image.toml",
            "image/kernel",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "vm.toml",
            "vm/lock",
            "vm/run/qmp.sock",
            "vm/saved.state",
            "vm/../etc/passwd",
            "image/../../x",
            "image/a/b",
            "vm/ssh/.hidden",
            "/vm/vm.toml",
            "vm/ssh/a b",
            "",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }

    #[test]
    fn members_must_match_the_manifest_exactly() {
        let m = |p: &str, n: u64, h: &str| Member {
            path: p.into(),
            size: n,
            sha256: h.into(),
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            vm: "web".into(),
            exported_at: 1,
            vmctl: "0.1.0".into(),
            image: ImageRef {
                name: "tiny".into(),
                arch: Arch::X86_64,
            },
            files: vec![m("vm/vm.toml", 3, "aa"), m("vm/disk.qcow2", 5, "bb")],
        };
        let good = manifest.files.clone();
        assert_eq!(mismatch(&manifest, &good), None);
        assert!(
            mismatch(&manifest, &good[..1])
                .unwrap()
                .contains("lacks vm/disk.qcow2")
        );
        let mut other = good.clone();
        other[1].sha256 = "cc".into();
        assert!(mismatch(&manifest, &other).unwrap().contains("SHA-256 cc"));
        let mut extra = good.clone();
        extra.push(m("image/kernel", 1, "dd"));
        assert!(
            mismatch(&manifest, &extra)
                .unwrap()
                .contains("does not list")
        );
        let newer = Manifest {
            version: 2,
            ..manifest.clone()
        };
        assert!(mismatch(&newer, &good).unwrap().contains("version 2"));
    }

    #[test]
    fn hashing_counts_and_hashes_what_goes_through() {
        let mut r = Hashing::new(&b"abc"[..]);
        let mut out = Vec::new();
        std::io::copy(&mut r, &mut out).unwrap();
        let (hex, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
