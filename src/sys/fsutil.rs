//! File-system primitives that keep state whole: atomic writes (temp file + rename), advisory
//! locks (flock) and self-removing temporary directories. None of them follows a symbolic link
//! at the path it is given: a link planted where vmctl writes is refused (`O_NOFOLLOW`), never
//! written through.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};

/// Write `data` to `path` so that readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        // A leftover (or planted) temporary file is removed, never opened: a link there would
        // be written through.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.path_ctx("write", path)
}

pub type Lock = Flock<File>;

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refuse_link(e, path))
        .path_ctx("open lock", path)
}

/// ELOOP from `O_NOFOLLOW` means a symbolic link: say so.
fn refuse_link(e: std::io::Error, path: &Path) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return std::io::Error::other(format!(
            "{} is a symbolic link, which vmctl does not follow; remove it",
            path.display()
        ));
    }
    e
}

/// Open `path` for reading, refusing a symbolic link.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refuse_link(e, path))
}

/// Block until the exclusive lock on `path` is ours; released on drop.
pub fn lock_exclusive(path: &Path) -> Result<Lock> {
    let f = open_lock(path)?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
        context: format!("Cannot lock {}", path.display()),
        source: e.into(),
    })
}

/// Take the lock if nobody holds it; `Ok(None)` when somebody does.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<Lock>> {
    let f = open_lock(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::Io {
            context: format!("Cannot lock {}", path.display()),
            source: e.into(),
        }),
    }
}

/// A directory removed with its contents when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(parent: &Path, prefix: &str) -> Result<TempDir> {
        let path = parent.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).path_ctx("create", &path)?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v
}

/// Remove a directory tree that an interrupted build may have left with file systems mounted
/// inside (a chroot's /proc, a loop-mounted disk): unmount them first, and never delete
/// through a mount that would not go away.
pub fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    for m in mounts_below(dir) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m)
            .status();
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        tracing::warn!(
            "not removing {}: {} is still mounted",
            dir.display(),
            left[0].display()
        );
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Create `dir` and its missing parents with mode 0755, for directories outside vmctl's own
/// (systemd's generator and unit folders) that other users and tools must be able to pass,
/// whatever vmctl's umask (0077).
pub fn create_dirs_public(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        if path.exists() {
            continue;
        }
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).path_ctx("create", &path);
            }
            _ => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .path_ctx("set the mode of", &path)?,
        }
    }
    Ok(())
}

/// Open a log file for appending, creating it if need be; a symbolic link there is refused.
pub fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refuse_link(e, path))
        .path_ctx("open", path)
}

/// Create `path` afresh for writing (emptied if it exists); a symbolic link there is refused.
pub fn create_new_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refuse_link(e, path))
        .path_ctx("create", path)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The last `n` lines of a text file (for error messages quoting a log).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` non-empty lines written to a log after `offset` (what one process said in a log
/// others append to as well).
pub fn tail_since(path: &Path, offset: u64, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = (offset as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The folder a file is in, absolute (from here, for a relative path), where names it holds
/// are taken from.
pub fn folder_of(file: &Path) -> PathBuf {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Why a file cannot give the text asked for.
#[derive(Debug)]
pub enum FileProblem {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It can be read but holds no such text: what it is, to follow its path ("is a directory").
    Content(String),
}

/// The text of a file (symlinks followed): a regular file or a pipe, at most `max` bytes,
/// UTF-8; `what` says what the file should be when it is too big or not text ("a VM
/// definition is a few lines of TOML").
pub fn read_text(path: &Path, max: u64, what: &str) -> std::result::Result<String, FileProblem> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path)
        .map_err(FileProblem::Io)?
        .file_type();
    let not = |what: &str| Err(FileProblem::Content(format!("is {what}, not a file")));
    if kind.is_dir() {
        return not("a directory");
    }
    if kind.is_char_device() || kind.is_block_device() {
        return not("a device");
    }
    if kind.is_socket() {
        return not("a socket");
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(FileProblem::Io)?;
    if bytes.len() as u64 > max {
        let size = match max {
            m if m >= 1 << 20 && m % (1 << 20) == 0 => format!("{} MiB", m >> 20),
            m if m >= 1 << 10 && m % (1 << 10) == 0 => format!("{} KiB", m >> 10),
            m => format!("{m} bytes"),
        };
        return Err(FileProblem::Content(format!(
            "is larger than {size}; {what}"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = ok.iter().filter(|b| **b == b'\n').count() + 1;
        FileProblem::Content(format!("is not UTF-8 text (line {line}); {what}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.toml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn links_are_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        for name in ["log", "lock", "new", ".f.toml.tmp-1"] {
            std::os::unix::fs::symlink(&target, d.path().join(name)).unwrap();
        }
        let e = open_append(&d.path().join("log")).unwrap_err();
        let why = std::error::Error::source(&e).unwrap().to_string();
        assert!(why.contains("is a symbolic link"), "{e}: {why}");
        assert!(lock_exclusive(&d.path().join("lock")).is_err());
        assert!(create_new_file(&d.path().join("new")).is_err());
        assert!(open_read(&d.path().join("log")).is_err());
        // The atomic write replaces a link at its target path, and one at its temporary path
        // is removed rather than written through.
        let f = d.path().join("f.toml");
        std::os::unix::fs::symlink(&target, &f).unwrap();
        write_atomic(&f, b"new").unwrap();
        assert!(
            !std::fs::symlink_metadata(&f)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn a_held_lock_is_not_taken_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = lock_exclusive(&p).unwrap();
        assert!(try_lock_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(try_lock_exclusive(&p).unwrap().is_some());
    }
}
