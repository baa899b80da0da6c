//! vmctl under a real systemd: `Container` boots a Debian bookworm systemd 252 with
//! systemd-nspawn (this host's PID 1 is not systemd; ../shared/HOST.md, "systemd for tests"), with
//! the real vmctl binary at /usr/local/bin/vmctl and the tiny image in /var/lib/vmctl; smoke tests
//! run vmctl in it.
//!
//! The root file system comes from `scripts/nspawn-rootfs.sh` (run once per test run; it returns
//! at once when its recipe is unchanged) and is never written: each container boots an overlay of
//! it (upper/, work/, merged/ in a temporary directory), mounted in a private mount namespace so
//! nothing stays mounted once the container is gone. The container runs in a cgroup of its own,
//! `vmctl-nspawn.<test pid>.<name>`, which also holds every command run in it; cleanup powers it
//! off, kills what is left in that cgroup and removes it. A test process that died without
//! cleaning up leaves a cgroup whose pid is gone: the next `Container::boot` reaps it.
//!
//! The container shares the host's network namespace, so a VM's forward (127.0.0.1:PORT inside)
//! answers the test directly; ports come from `free_port`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// systemd's boot (or reboot) to `running`/`degraded` takes ~1 s here; this bounds a hang.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Names a container's cgroup and temporary directory: `vmctl-nspawn.<test pid>.<name>`.
const KEY_PREFIX: &str = "vmctl-nspawn.";
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Move this shell into the cgroups named in $1 (space-separated directories), then exec the rest.
const JOIN_CGROUP: &str =
    r#"for d in $1; do echo $$ >"$d/cgroup.procs" || exit 1; done; shift; exec "$@""#;

/// Runs in a private mount namespace: the overlay, the tmpfs systemd-nspawn wants on
/// /run/systemd/nspawn (this host's /run is no tmpfs), and the boot loop — `systemctl reboot`
/// makes systemd-nspawn exit with 133, and booting it again is the reboot.
const BOOT_LOOP: &str = r#"
set -u
lower=$1 dir=$2 name=$3 uuid=$4
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn || exit 1
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged" || exit 1
while :; do
	TERM=dumb systemd-nspawn -D "$dir/merged" -M "$name" --uuid="$uuid" --boot --register=no \
		--keep-unit --console=read-only --link-journal=no
	rc=$?
	echo "vmctl-test: systemd-nspawn exited with status $rc"
	[ "$rc" = 133 ] || exit "$rc"
done
"#;

/// A booted container; powered off and removed on drop.
pub struct Container {
    name: String,
    dir: tempfile::TempDir,
    /// Directories of the container's cgroup, one per mounted hierarchy (v2 first).
    cgroups: Vec<PathBuf>,
    /// The boot loop (bash, then unshare's bash): its exit means the container is gone.
    boot_loop: Child,
    pid1: u32,
}

impl Container {
    /// Boot a fresh container named `name` (also its hostname) and wait until systemd is up.
    pub fn boot(name: &str) -> Container {
        Container::boot_with(name, &["tiny"])
    }

    /// A container whose vmctl home has these images (built once on the host, copied in).
    pub fn boot_with(name: &str, images: &[&str]) -> Container {
        let lower = rootfs();
        reap_stale();
        let key = format!("{KEY_PREFIX}{}.{name}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .tempdir()
            .unwrap();
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let upper = dir.path().join("upper");
        // Written into the upper layer before the mount: the container sees them as its own.
        copy_into(Path::new(vmctl_bin()), &upper.join("usr/local/bin/vmctl"));
        for image in images {
            let dir = shared_images_for(image, "x86_64")
                .join(image)
                .join("x86_64");
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                copy_into(
                    &e.path(),
                    &upper
                        .join(format!("var/lib/vmctl/images/{image}/x86_64"))
                        .join(e.file_name()),
                );
            }
        }

        let cgroups: Vec<PathBuf> = hierarchies().iter().map(|h| h.join(&key)).collect();
        for cg in &cgroups {
            std::fs::create_dir(cg).unwrap_or_else(|e| panic!("mkdir {}: {e}", cg.display()));
        }
        let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .replace('-', "");
        let boot_loop = Command::new("bash")
            .args(["-c", JOIN_CGROUP, "join-cgroup", &paths_arg(&cgroups)])
            .args(["unshare", "-m", "--propagation", "private"])
            .args(["bash", "-c", BOOT_LOOP, "boot-loop"])
            .arg(&lower)
            .arg(dir.path())
            .args([name, &uuid])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("run bash");
        let mut c = Container {
            name: name.to_string(),
            dir,
            cgroups,
            boot_loop,
            pid1: 0,
        };
        let took = c.wait_up(None);
        eprintln!("nspawn {name}: systemd up in {took:.2?}");
        c
    }

    /// The container's PID 1 (systemd) as the host sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// Run a command in the container (its namespaces and root; as root, with a clean
    /// environment), with no stdin.
    pub fn exec(&self, args: &[&str]) -> Output {
        let pid = self.pid1.to_string();
        Command::new("bash")
            .args(["-c", JOIN_CGROUP, "join-cgroup", &paths_arg(&self.cgroups)])
            .args([
                "nsenter", "-t", &pid, "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
            ])
            .args(["--", "env", "-i", &format!("PATH={GUEST_PATH}")])
            .args(["HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "SYSTEMD_PAGER="])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A file of the container's, as text.
    pub fn read(&self, path: &str) -> String {
        self.ok(&["cat", path])
    }

    /// `systemctl reboot`, then wait until a new PID 1 is up; returns how long that took.
    pub fn reboot(&mut self) -> Duration {
        let old = self.pid1;
        let t0 = Instant::now();
        // Its exit status says nothing (the bus may go away under it): PID 1 changing does.
        let _ = self.exec(&["systemctl", "reboot"]);
        self.wait_up(Some(old));
        let took = t0.elapsed();
        eprintln!("nspawn {}: rebooted in {took:.2?}", self.name);
        took
    }

    /// The journal of a boot: 0 this one, -1 the one before, ...
    pub fn journal(&self, boot_offset: i32) -> String {
        self.ok(&[
            "journalctl",
            &format!("--boot={boot_offset}"),
            "--no-pager",
            "-o",
            "short-monotonic",
        ])
    }

    /// The end of what systemd-nspawn printed (the boot console), for failure messages.
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Wait until a PID 1 other than `previous` says the system is running (or degraded).
    fn wait_up(&mut self, previous: Option<u32>) -> Duration {
        let t0 = Instant::now();
        let mut last = String::from("no PID 1 yet");
        loop {
            if let Ok(Some(status)) = self.boot_loop.try_wait() {
                panic!(
                    "{}: systemd-nspawn ended ({status}) before systemd was up; console:\n{}",
                    self.name,
                    self.console_tail()
                );
            }
            if let Some(pid) = self.find_pid1().filter(|p| Some(*p) != previous) {
                self.pid1 = pid;
                // Blocks while systemd starts up; fails while its bus is not there yet.
                let left = BOOT_TIMEOUT.saturating_sub(t0.elapsed()).as_secs() + 1;
                let out = self.exec(&[
                    "timeout",
                    &left.to_string(),
                    "systemctl",
                    "is-system-running",
                    "--wait",
                ]);
                let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if state == "running" || state == "degraded" {
                    return t0.elapsed();
                }
                last = format!("{state} {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            assert!(
                t0.elapsed() < BOOT_TIMEOUT,
                "{}: systemd not up after {BOOT_TIMEOUT:?} (last: {last}); console:\n{}",
                self.name,
                self.console_tail()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The process of this container's cgroup that is PID 1 of its own PID namespace.
    fn find_pid1(&self) -> Option<u32> {
        cgroup_pids(&self.cgroups[0]).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|ns| {
                        ns.split_whitespace().collect::<Vec<_>>() == [&*pid.to_string(), "1"]
                    })
                })
                .unwrap_or(false)
        })
    }
}

impl Drop for Container {
    /// Power off (SIGTERM to systemd-nspawn), kill what is left, remove the cgroup; the overlay
    /// goes with the mount namespace, the temporary directory with `dir`.
    fn drop(&mut self) {
        for pid in cgroup_pids(&self.cgroups[0]) {
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd-nspawn")
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        if !wait_exit(&mut self.boot_loop, POWEROFF_TIMEOUT) {
            eprintln!(
                "nspawn {}: no poweroff after {POWEROFF_TIMEOUT:?}; killing it",
                self.name
            );
        }
        remove_cgroup(&self.cgroups);
        let _ = self.boot_loop.kill();
        let _ = self.boot_loop.wait();
    }
}

/// The root file system, built or found up to date by scripts/nspawn-rootfs.sh once per run.
fn rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            assert!(
                nix::unistd::geteuid().is_root(),
                "the systemd tests boot containers with systemd-nspawn: run them as root"
            );
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nspawn-rootfs.sh");
            // Its progress lines (a build takes ~35 s) go straight to the terminal.
            let out = Command::new(&script)
                .env("VMCTL_CACHE_DIR", cache_dir())
                .env("VMCTL_NSPAWN_DIR", work_dir().join("nspawn"))
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed ({}); its errors are above",
                script.display(),
                out.status
            );
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                Path::new(&path).join("etc/vmctl-test-rootfs").is_file(),
                "{} printed no root file system (stdout: {path:?})",
                script.display()
            );
            PathBuf::from(path)
        })
        .clone()
}

fn copy_into(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// The cgroup hierarchies a container's processes go into: the cgroup2 one, and on a hybrid
/// host (like ours) also systemd's named v1 hierarchy.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let v2 = if root.join("unified/cgroup.procs").exists() {
        root.join("unified")
    } else if root.join("cgroup.controllers").exists() {
        root.to_path_buf()
    } else {
        panic!(
            "no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup: systemd-nspawn needs one"
        )
    };
    let mut hs = vec![v2];
    if root.join("systemd/cgroup.procs").exists() {
        hs.push(root.join("systemd"));
    }
    hs
}

fn paths_arg(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every process in a cgroup and below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

/// Kill everything in the container's cgroup (cgroup2's cgroup.kill), wait until it is empty,
/// then remove its directories, deepest first, in every hierarchy.
fn remove_cgroup(cgroups: &[PathBuf]) {
    let v2 = &cgroups[0];
    if v2.exists() {
        let _ = std::fs::write(v2.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cgroup_pids(v2).is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
    for cg in cgroups {
        let mut dirs = Vec::new();
        subdirs(cg, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Err(e) = std::fs::remove_dir(&d) {
                eprintln!("nspawn: cannot remove cgroup {}: {e}", d.display());
            }
        }
    }
}

fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs(&e.path(), out);
        }
    }
}

/// Containers of test processes that died without cleaning up: kill them, remove their
/// cgroups, then their temporary directories (their overlays went with their processes).
fn reap_stale() {
    let hs = hierarchies();
    for name in stale_entries(&hs[0]) {
        eprintln!("nspawn: removing the container of a dead test process: {name}");
        remove_cgroup(&hs.iter().map(|h| h.join(&name)).collect::<Vec<_>>());
    }
    let tmp = std::env::temp_dir();
    for name in stale_entries(&tmp) {
        let _ = std::fs::remove_dir_all(tmp.join(name));
    }
}

/// Entries of `dir` named by `KEY_PREFIX` whose test process is gone.
fn stale_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix(KEY_PREFIX)
                .and_then(|r| r.split('.').next())
                .and_then(|p| p.parse::<i64>().ok())
                .is_some_and(|owner| !pid_alive(owner))
        })
        .collect()
}

/// Wait, bounded, for a child to exit; true if it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(POLL),
        }
    }
}

/// Poll a forwarded port until the guest's page names `name`.
fn wait_http(port: u16, name: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let want = format!("vmctl tiny guest: {name}");
    loop {
        if http_get(port).is_some_and(|p| p.contains(&want)) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "127.0.0.1:{port} did not serve {want:?} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `vmctl create NAME ...` of a tiny guest whose port 8080 is forwarded from host port `port`.
pub fn tiny_create_args(name: &str, port: u16) -> Vec<String> {
    let forward = format!("{port}:8080");
    [
        "vmctl", "create", name, "--mem", "256M", "--disk", "1G", "--port", &forward,
    ]
    .map(String::from)
    .to_vec()
}

pub fn create_tiny(c: &Container, name: &str, port: u16) {
    let args = tiny_create_args(name, port);
    c.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

// --- smoke tests ------------------------------------------------------------------------------

#[test]
fn nspawn_container_boots_to_a_running_systemd() {
    let c = Container::boot("boot");
    let state = c.exec(&["systemctl", "is-system-running"]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "running",
        "failed units:\n{}",
        c.ok(&["systemctl", "--failed", "--no-legend"])
    );
    assert_eq!(c.read("/proc/1/comm").trim(), "systemd");
    assert_eq!(c.ok(&["hostname"]).trim(), "boot");
    assert!(c.ok(&["systemctl", "--version"]).starts_with("systemd 252"));
    // The real vmctl, and the host's QEMU version (the recipe pins it).
    assert!(c.ok(&["vmctl", "--version"]).starts_with("vmctl "));
    let host_qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        c.ok(&["qemu-system-x86_64", "--version"]).lines().next(),
        String::from_utf8_lossy(&host_qemu.stdout).lines().next()
    );
}

#[test]
fn nspawn_vm_started_inside_answers_on_its_forwarded_port() {
    let c = Container::boot("vm");
    let port = free_port();
    create_tiny(&c, "web", port);
    let t0 = Instant::now();
    let started: Value =
        serde_json::from_str(&c.ok(&["vmctl", "start", "web", "--wait", "--json"])).unwrap();
    eprintln!("nspawn vm: vmctl start --wait took {:.2?}", t0.elapsed());
    assert_eq!(started["accel"], "tcg", "{started}");
    let page = http_get(port).expect("the guest answers the test through the container");
    assert!(page.contains("vmctl tiny guest: web"), "{page}");

    let stopped: Value = serde_json::from_str(&c.ok(&["vmctl", "stop", "web", "--json"])).unwrap();
    assert_eq!(stopped["step"], "acpi", "{stopped}");
    assert_eq!(stopped["exit"]["code"], 0, "{stopped}");
}

#[test]
fn nspawn_transient_unit_stop_powers_the_guest_off_by_acpi() {
    let c = Container::boot("unit");
    let port = free_port();
    create_tiny(&c, "web", port);
    // `vmctl run` sends no READY=1 yet, so Type=simple and the test polls the port. KillMode=mixed:
    // SIGTERM goes to vmctl alone (QEMU would quit on a SIGTERM of its own, skipping the ACPI stop).
    c.ok(&[
        "systemd-run",
        "--unit=vmctl-t1",
        "-p",
        "Type=simple",
        "-p",
        "KillMode=mixed",
        "-p",
        "TimeoutStopSec=90",
        "/usr/local/bin/vmctl",
        "run",
        "web",
    ]);
    let up = wait_http(port, "web", Duration::from_secs(60));
    eprintln!("nspawn unit: the guest answered {up:.2?} after systemd-run");
    let pid = c.ok(&["systemctl", "show", "-p", "MainPID", "--value", "vmctl-t1"]);
    assert_ne!(pid.trim(), "0", "vmctl-t1 has a main process");

    let t0 = Instant::now();
    c.ok(&["systemctl", "stop", "vmctl-t1"]);
    eprintln!("nspawn unit: systemctl stop took {:.2?}", t0.elapsed());
    let last: Value =
        serde_json::from_str(&c.read("/var/lib/vmctl/vms/web/last-exit.json")).unwrap();
    assert_eq!(last["stopped_by"], "acpi", "{last}");
    assert_eq!(last["code"], 0, "{last}");
    assert!(last["signal"].is_null(), "{last}");
    let serial = c.read("/var/lib/vmctl/vms/web/serial.log");
    assert!(serial.contains("vmctl-tiny: power button"), "{serial}");
    let qemu_log = c.read("/var/lib/vmctl/vms/web/qemu.log");
    assert!(
        !qemu_log.contains("terminating on signal"),
        "QEMU got a signal instead of the ACPI stop:\n{qemu_log}"
    );
    // The unit ended cleanly (vmctl run exited 0); transient units are gone once inactive, so
    // read the journal, which systemd writes as it stops the unit.
    let journal = c.ok(&["journalctl", "-u", "vmctl-t1", "-o", "cat", "--no-pager"]);
    assert!(
        journal.contains("vmctl-t1.service: Deactivated successfully"),
        "{journal}"
    );
    assert!(!journal.contains("Failed with result"), "{journal}");
}

#[test]
fn nspawn_container_reboots_with_a_new_pid_1() {
    let mut c = Container::boot("reboot");
    let old_pid1 = c.pid1();
    let old_boot = c.read("/proc/sys/kernel/random/boot_id");
    c.reboot();
    assert_ne!(c.pid1(), old_pid1);
    assert_ne!(c.read("/proc/sys/kernel/random/boot_id"), old_boot);
    let previous = c.journal(-1);
    assert!(
        previous.contains("Reached target reboot.target"),
        "{previous}"
    );
    let boots = c.ok(&["journalctl", "--list-boots"]);
    let indexes: Vec<&str> = boots
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|i| i.parse::<i32>().is_ok())
        .collect();
    assert_eq!(indexes, ["-1", "0"], "{boots}");
}
