//! `vmctl export NAME [-o FILE]`: a stopped VM and its base image in one zstd-compressed archive
//! (`vm::archive`), written under a temporary name beside FILE and renamed once complete, with a
//! progress bar on a terminal (plain lines at each tenth elsewhere). A running VM is refused (its disk would not hold still), and so
//! is one with a saved state (its disk belongs to a guest that is still running in it).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::def::store::load;
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::sys::fsutil;
use crate::types::VmName;
use crate::vm::archive::{self, Hashing, Manifest, Member};

/// zstd's default level: fast, and disks compress well at it.
const LEVEL: i32 = 3;

#[derive(Debug, Serialize)]
pub struct Exported {
    pub name: String,
    pub file: PathBuf,
    /// Bytes of the archive, and of what it holds.
    pub bytes: u64,
    pub content_bytes: u64,
    pub seconds: f64,
}

/// Export the stopped VM `name` to `out` (default: `NAME.vmctl.tar.zst` here); an existing
/// `out` is replaced only with `force`.
pub fn export(home: &Home, name: &VmName, out: Option<&Path>, force: bool) -> Result<Exported> {
    let t0 = std::time::Instant::now();
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{name}.vmctl.tar.zst")));
    if out.exists() && !force {
        return Err(Error::Usage(format!(
            "-o: {} exists; pick another file or add --force to replace it",
            out.display()
        )));
    }
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    crate::vm::disk::still(&paths, name, "exporting it")?;
    let image = crate::image::store::find(home, &spec.image, spec.arch)?;
    let mut members: Vec<(String, PathBuf)> = archive::VM_FILES
        .iter()
        .map(|f| (format!("vm/{f}"), paths.dir.join(f)))
        .filter(|(_, p)| p.is_file())
        .collect();
    members.extend(files_of(&paths.ssh().dir, "vm/ssh")?);
    members.extend(files_of(&image.dir, "image")?);
    let total: u64 = members
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile_in(&parent, &out)?;
    let manifest = Manifest {
        format: archive::FORMAT.into(),
        version: archive::VERSION,
        vm: name.to_string(),
        exported_at: fsutil::unix_now(),
        vmctl: env!("CARGO_PKG_VERSION").into(),
        image: archive::ImageRef {
            name: spec.image.clone(),
            arch: spec.arch,
        },
        files: vec![],
    };
    let result = write(&tmp, manifest, &members, total, name);
    match result.and_then(|()| std::fs::rename(&tmp, &out).path_ctx("write", &out)) {
        Ok(()) => Ok(Exported {
            name: name.to_string(),
            bytes: std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
            file: out,
            content_bytes: total,
            seconds: t0.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The regular files directly in `dir` (sorted), as members under `prefix`.
fn files_of(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.path_ctx("read", dir)?;
        let member = format!("{prefix}/{}", e.file_name().to_string_lossy());
        if e.file_type().is_ok_and(|t| t.is_file()) && archive::allowed(&member) {
            out.push((member, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A new file beside `out` to write the archive into.
fn tempfile_in(dir: &Path, out: &Path) -> Result<PathBuf> {
    let base = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    Ok(dir.join(format!(".{base}.{}.tmp", std::process::id())))
}

/// The archive: every member hashed as it is written, the manifest last.
fn write(
    tmp: &Path,
    mut manifest: Manifest,
    members: &[(String, PathBuf)],
    total: u64,
    name: &VmName,
) -> Result<()> {
    let file = fsutil::create_new_file(tmp)?;
    let zstd = zstd::Encoder::new(BufWriter::new(file), LEVEL).path_ctx("compress", tmp)?;
    let mut tar = tar::Builder::new(zstd);
    let progress = crate::term::progress::Progress::bytes(&format!("exporting VM {name}"), total);
    for (member, path) in members {
        let f = std::fs::File::open(path).path_ctx("read", path)?;
        let size = f.metadata().path_ctx("read", path)?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(manifest.exported_at);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = Hashing::new(progress.reading(f));
        tar.append_data(&mut header, member, &mut reader)
            .path_ctx("write", tmp)?;
        let (sha256, bytes) = reader.finish();
        manifest.files.push(Member {
            path: member.clone(),
            size: bytes,
            sha256,
        });
    }
    let json = serde_json::to_vec_pretty(&manifest).expect("serializes");
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(manifest.exported_at);
    tar.append_data(&mut header, archive::MANIFEST, json.as_slice())
        .path_ctx("write", tmp)?;
    let zstd = tar.into_inner().path_ctx("write", tmp)?;
    let mut buffered = zstd.finish().path_ctx("write", tmp)?;
    buffered.flush().path_ctx("write", tmp)?;
    let file = buffered
        .into_inner()
        .map_err(|e| Error::Other(format!("Cannot write {}: {e}", tmp.display())))?;
    file.sync_all().path_ctx("write", tmp)?;
    progress.finish();
    Ok(())
}
