//! One release of your app as a tar the guest installs: `vmctl-app.json` (the settings the
//! guest's gunicorn and nginx get), `app/` (the app's directory) and `wheels/` (the wheel
//! directory's `.whl` files). The same files give the same bytes (sorted names, no owners,
//! times or extra mode bits), so the guest names a release by the tar's SHA-256 and installs a
//! release it has once. Only regular files and directories are taken: a symbolic link, device
//! or socket in the app's directory is refused by path; `.git`, `__pycache__` and `*.pyc` are
//! left out.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::def::app::{Proxy, WsgiApp};
use crate::error::{Error, Result};

/// The largest release (the tar is a disk of the VM, and goes over SSH at each deploy).
pub const MAX_BYTES: u64 = 256 << 20;

/// Names left out of the app's directory.
const SKIPPED: [&str; 2] = [".git", "__pycache__"];

/// The settings file the guest's installer reads (`images/guest/vmctl-app-install`).
pub fn settings(app: &WsgiApp) -> String {
    let doc = json!({
        "wsgi": app.wsgi,
        "workers": app.workers,
        "proxy": match app.proxy { Proxy::None => "none", Proxy::Nginx => "nginx" },
        "port": app.port,
        "packages": app.packages,
    });
    serde_json::to_string_pretty(&doc).expect("json") + "\n"
}

/// A release's size is a multiple of this (it is attached as a disk).
const DISK_ALIGN: usize = 64 << 10;

/// The release's tar, from `dir` (your app's directory, or `--dir` at deploy).
pub fn build(app: &WsgiApp, dir: &Path) -> Result<Vec<u8>> {
    pack(dir, members(app, dir)?)
}

/// What goes in the release, sorted by name: the settings, the app's files, the wheels.
fn members(app: &WsgiApp, dir: &Path) -> Result<Vec<(String, Entry)>> {
    let mut files: Vec<(String, Entry)> = Vec::new();
    files.push((
        "vmctl-app.json".into(),
        Entry::Data(settings(app).into_bytes()),
    ));
    files.push(("app".into(), Entry::Dir));
    walk(dir, "app", &mut files)?;
    if let Some(w) = &app.wheels {
        files.push(("wheels".into(), Entry::Dir));
        let mut wheels: Vec<PathBuf> = read_dir(w, "app.requirements")?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "whl"))
            .collect();
        wheels.sort();
        for p in wheels {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            files.push((
                format!("wheels/{name}"),
                file_entry(&p, "app.requirements")?,
            ));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A tar of `files` with fixed owners and times, so the same app gives the same bytes.
fn pack(dir: &Path, files: Vec<(String, Entry)>) -> Result<Vec<u8>> {
    let mut total = 0u64;
    let mut out = tar::Builder::new(Vec::new());
    for (name, entry) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let data = match entry {
            Entry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                Vec::new()
            }
            Entry::File { path, exec } => {
                h.set_mode(if exec { 0o755 } else { 0o644 });
                std::fs::read(&path).map_err(|e| {
                    Error::Usage(format!("app.dir: cannot read {}: {e}", path.display()))
                })?
            }
            Entry::Data(d) => {
                h.set_mode(0o644);
                d
            }
        };
        total += data.len() as u64;
        if total > MAX_BYTES {
            return Err(Error::Usage(format!(
                "app.dir: {} holds more than {} MiB; an app's code is smaller (data belongs on the guest's disk or in a shared folder)",
                dir.display(),
                MAX_BYTES >> 20
            )));
        }
        if !matches!(h.entry_type(), tar::EntryType::Directory) {
            h.set_size(data.len() as u64);
        }
        let name = if matches!(h.entry_type(), tar::EntryType::Directory) {
            format!("{name}/")
        } else {
            name
        };
        out.append_data(&mut h, &name, data.as_slice())
            .map_err(|e| Error::Usage(format!("app.dir: {name}: {e}")))?;
    }
    let mut bytes = out
        .into_inner()
        .map_err(|e| Error::Other(format!("Cannot pack the app: {e}")))?;
    // The tar is also a disk: padded with zero blocks (the end of a tar) to whole 64 KiB, so
    // the guest kernel's partition probe, which reads the first 16 sectors, finds them.
    bytes.resize(bytes.len().next_multiple_of(DISK_ALIGN), 0);
    bytes.flush().ok();
    Ok(bytes)
}

/// The release's name: the first 16 hex digits of the tar's SHA-256 (what the guest names its
/// release directory).
pub fn release_id(tar: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(tar);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

enum Entry {
    Dir,
    File { path: PathBuf, exec: bool },
    Data(Vec<u8>),
}

fn read_dir(dir: &Path, field: &str) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::Usage(format!("{field}: cannot read {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in rd {
        let e =
            e.map_err(|e| Error::Usage(format!("{field}: cannot read {}: {e}", dir.display())))?;
        out.push(e.path());
    }
    Ok(out)
}

fn file_entry(path: &Path, field: &str) -> Result<Entry> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::symlink_metadata(path)
        .map_err(|e| Error::Usage(format!("{field}: cannot read {}: {e}", path.display())))?;
    if !m.file_type().is_file() {
        return Err(Error::Usage(format!(
            "{field}: {} is {}; an app's directory holds only files and directories",
            path.display(),
            if m.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file"
            }
        )));
    }
    Ok(Entry::File {
        path: path.to_path_buf(),
        exec: m.permissions().mode() & 0o111 != 0,
    })
}

/// Every directory and file under `dir`, named `prefix/...`.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Entry)>) -> Result<()> {
    for path in read_dir(dir, "app.dir")? {
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if SKIPPED.contains(&name.as_str()) || name.ends_with(".pyc") {
            continue;
        }
        if name.chars().any(char::is_control) || name.contains('\\') {
            return Err(Error::Usage(format!(
                "app.dir: {:?} has a control character or a backslash in its name",
                path.display()
            )));
        }
        let at = format!("{prefix}/{name}");
        let m = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::Usage(format!("app.dir: cannot read {}: {e}", path.display())))?;
        if m.file_type().is_dir() {
            out.push((at.clone(), Entry::Dir));
            walk(&path, &at, out)?;
        } else {
            out.push((at, file_entry(&path, "app.dir")?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(dir: &Path) -> WsgiApp {
        WsgiApp {
            dir: dir.to_path_buf(),
            wsgi: "app:app".into(),
            workers: 2,
            proxy: Proxy::Nginx,
            port: 8080,
            packages: vec!["python3-flask".into()],
            wheels: None,
        }
    }

    fn names(tar: &[u8]) -> Vec<(String, u32)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_same_files_give_the_same_release() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.py"), "def app(e, s): pass\n").unwrap();
        std::fs::create_dir_all(d.path().join("pkg/__pycache__")).unwrap();
        std::fs::write(d.path().join("pkg/__pycache__/x.pyc"), "").unwrap();
        std::fs::write(d.path().join("pkg/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            d.path().join("pkg/run.sh"),
            PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let one = build(&app(d.path()), d.path()).unwrap();
        assert_eq!(
            names(&one),
            [
                ("app/".to_string(), 0o755),
                ("app/app.py".into(), 0o644),
                ("app/pkg/".into(), 0o755),
                ("app/pkg/run.sh".into(), 0o755),
                ("vmctl-app.json".into(), 0o644),
            ]
        );
        // Another time, other mtimes: the same bytes.
        std::fs::write(d.path().join("app.py"), "def app(e, s): pass\n").unwrap();
        let two = build(&app(d.path()), d.path()).unwrap();
        assert_eq!(release_id(&one), release_id(&two));
        assert_eq!(release_id(&one).len(), 16);
        assert_eq!(one.len() % DISK_ALIGN, 0, "whole 64 KiB, as a disk");
        std::fs::write(d.path().join("app.py"), "def app(e, s): return []\n").unwrap();
        assert_ne!(
            release_id(&one),
            release_id(&build(&app(d.path()), d.path()).unwrap())
        );
        let settings: serde_json::Value =
            serde_json::from_str(&super::settings(&app(d.path()))).unwrap();
        assert_eq!(settings["proxy"], "nginx");
        assert_eq!(settings["packages"][0], "python3-flask");
    }

    #[test]
    fn links_are_refused_by_path() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("passwd")).unwrap();
        let e = build(&app(d.path()), d.path()).unwrap_err().to_string();
        assert!(
            e.contains("app.dir: ") && e.contains("passwd is a symbolic link"),
            "{e}"
        );
    }

    #[test]
    fn wheels_go_in_wheels() {
        let d = tempfile::tempdir().unwrap();
        let w = tempfile::tempdir().unwrap();
        std::fs::write(w.path().join("x-1.0-py3-none-any.whl"), "PK").unwrap();
        std::fs::write(w.path().join("README"), "").unwrap();
        let mut a = app(d.path());
        a.wheels = Some(w.path().to_path_buf());
        let names: Vec<String> = names(&build(&a, d.path()).unwrap())
            .into_iter()
            .map(|n| n.0)
            .collect();
        assert!(
            names.contains(&"wheels/x-1.0-py3-none-any.whl".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("README")), "{names:?}");
    }
}
