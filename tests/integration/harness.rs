//! Test helpers: a temporary vmctl home that cleans up its VMs on drop, the tiny image built once
//! per test run and shared, free loopback ports, and HTTP through a forwarded port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn vmctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmctl")
}

/// Shared state of one test run: under target/, kept between runs so the package cache and
/// built images are reused.
pub fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vmctl-test");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("VMCTL_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| work_dir().join("cache"))
}

/// The home whose images every test home links to; the tiny image for `arch` is built there once.
pub fn shared_images(arch: &str) -> PathBuf {
    shared_images_for("tiny", arch)
}

/// Build (once per test run) a built-in image in the shared images home; returns its images dir.
pub fn shared_images_for(name: &str, arch: &str) -> PathBuf {
    static BUILT: OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<OnceLock<PathBuf>>>>,
    > = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(format!("{name}/{arch}"))
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let home = work_dir().join("images-home");
        let out = Command::new(vmctl_bin())
            .args(["--home"])
            .arg(&home)
            .args(["image", "build", name, "--arch", arch])
            .env("VMCTL_CACHE_DIR", cache_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building image {name} for {arch} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        home.join("images")
    })
    .clone()
}

pub struct TestHome {
    pub dir: tempfile::TempDir,
    /// $HOME for vmctl: no ~/.ssh keys unless a test puts them there.
    pub user_home: tempfile::TempDir,
}

impl TestHome {
    /// A fresh home with the x86_64 tiny image available.
    pub fn new() -> TestHome {
        let t = TestHome::bare();
        t.link_image("tiny", "x86_64");
        t
    }

    /// Make the shared build of image `name` for `arch` visible in this home (read-only use:
    /// the link is per image, so imports and builds in this home stay in this home).
    pub fn link_image(&self, name: &str, arch: &str) {
        let dir = self.home().join("images").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(
            shared_images_for(name, arch).join(name).join(arch),
            dir.join(arch),
        )
        .unwrap();
    }

    /// A fresh home with no images.
    pub fn bare() -> TestHome {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vmctl-t{}-", run_id()))
            .tempdir()
            .unwrap();
        let user_home = tempfile::Builder::new()
            .prefix("vmctl-u")
            .tempdir()
            .unwrap();
        TestHome { dir, user_home }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vmctl_bin());
        c.args(args)
            .env("VMCTL_HOME", self.home())
            .env("VMCTL_CACHE_DIR", cache_dir())
            .env("HOME", self.user_home.path())
            .env_remove("SUDO_USER")
            .env_remove("VMCTL_LOG");
        c
    }

    /// `vmctl ssh NAME -- CMD` in batch mode (no prompt), with a bounded connect.
    pub fn ssh(&self, name: &str, cmd: &str) -> Output {
        self.run(&[
            "ssh",
            name,
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "--",
            cmd,
        ])
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vmctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and require exit `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "vmctl {args:?}: expected exit {code}, got {}\nstdout: {}\nstderr: {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
        );
        stderr
    }

    /// Require exit 2 (usage/config error) with every needle in stderr, and no change to the
    /// home.
    pub fn refused(&self, args: &[&str], needles: &[&str]) {
        let before = self.snapshot();
        let err = self.fails(args, 2);
        for n in needles {
            assert!(
                err.contains(n),
                "vmctl {args:?}: {n:?} missing from:\n{err}"
            );
        }
        assert_eq!(self.snapshot(), before, "vmctl {args:?} changed the home");
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn status(&self, name: &str) -> Value {
        self.json(&["status", name, "--json"])
    }

    /// Every file below the home with its size, for "nothing changed" assertions.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        walk(self.home(), self.home(), &mut out);
        out.sort();
        out
    }

    /// Wait, bounded, until `list` no longer shows the VM as running.
    pub fn wait_not_running(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.json(&["list", "--json"]);
            let state = l
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .map(|v| v["state"].as_str().unwrap().to_string());
            if state.as_deref() != Some("running") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if m.is_dir() {
            out.push((format!("{rel}/"), 0));
            walk(root, &p, out);
        } else {
            out.push((rel, m.len()));
        }
    }
}

impl Drop for TestHome {
    /// Kill every VM the test left with a process (running, paused, starting, unhealthy, ...)
    /// before the home goes away.
    fn drop(&mut self) {
        let Ok(out) = self.cmd(&["list", "--json"]).output() else {
            return;
        };
        let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
            return;
        };
        for vm in list.as_array().into_iter().flatten() {
            if vm["pid"].is_number() {
                let _ = self.cmd(&["kill", vm["name"].as_str().unwrap()]).output();
            }
        }
    }
}

/// What names this test run's homes (`VMCTL_TEST_RUN`, set by scripts/test.sh), so that what
/// outlives the run can be told from other runs' processes.
pub fn run_id() -> String {
    std::env::var("VMCTL_TEST_RUN").unwrap_or_default()
}

/// Define a tiny VM (256M RAM, 1G disk) that forwards host `port` to the guest's HTTP port.
pub fn create_tiny(t: &TestHome, name: &str, port: u16) {
    t.ok(&[
        "create",
        name,
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--port",
        &format!("{port}:8080"),
    ]);
}

/// A loopback port nobody listens on right now. Ports are handed out once per test process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20000 + (std::process::id() % 2000) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// GET / through a forwarded port (with a timeout); the body, or None if nothing answered.
pub fn http_get(port: u16) -> Option<String> {
    http_get_path(port, "/")
}

/// GET `path` through a forwarded port (with a timeout); the response, or None if nothing
/// answered.
pub fn http_get_path(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(3),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    (!buf.is_empty()).then_some(buf)
}

pub fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
}
