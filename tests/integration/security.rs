//! The host side of the security model, tried as an attacker would: QEMU never runs as root and
//! cannot open what is not its own VM's, every file of a VM is private, one disk is never
//! opened twice, links planted in a VM's folder are not followed, a supervisor killed during a
//! start leaves no QEMU behind, and concurrent commands on one VM lose nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Whether this test process runs as root (its effective uid, from /proc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// A field of `/proc/PID/status`, e.g. `Uid`.
fn status_field(pid: i64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Can the user QEMU runs as read `path`? (`runuser` as that user, as root.)
fn qemu_user_reads(path: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "vmctl-qemu", "--", "head", "-c", "1"])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_root_started_qemu_runs_as_its_own_user_sandboxed_and_reaches_only_its_image() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = TestHome::new();
    create_tiny(&t, "a", free_port());
    create_tiny(&t, "b", free_port());
    t.ok(&["start", "a"]);
    let pid = t.status("a")["pid"].as_i64().unwrap();
    let uid = status_field(pid, "Uid");
    assert!(
        !uid.split_whitespace().any(|u| u == "0"),
        "QEMU runs as root: Uid {uid}"
    );
    assert_eq!(status_field(pid, "Seccomp"), "2", "QEMU's seccomp filter");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    // The user QEMU runs as reads the base image it boots, and nothing of the home that is not
    // the image: no definition, no other VM's disk, no private key, no credential.
    let image = t.home().join("images/tiny/x86_64");
    assert!(qemu_user_reads(&image.join("kernel")));
    assert!(qemu_user_reads(&image.join("disk.qcow2")));
    for private in [
        "vms/a/vm.toml",
        "vms/a/disk.qcow2",
        "vms/b/disk.qcow2",
        "vms/a/qemu.log",
        "vms/a/serial.log",
    ] {
        assert!(
            !qemu_user_reads(&t.home().join(private)),
            "QEMU's user reads {private}"
        );
    }
    // What QEMU holds open: its own disk and console, the image, no path of another VM.
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        held.iter().any(|p| p.ends_with("vms/a/disk.qcow2")),
        "{held:?}"
    );
    assert!(!held.iter().any(|p| p.contains("vms/b/")), "{held:?}");
    t.ok(&["kill", "a"]);
}

#[test]
fn every_file_of_a_vm_is_its_owners_alone() {
    let t = TestHome::new();
    create_tiny(&t, "m", free_port());
    t.ok(&["start", "m"]);
    t.ok(&["qmp", "m", "--exec", "query-status"]);
    t.ok(&["snapshot", "create", "m", "live"]);
    let vm = t.home().join("vms/m");
    for file in ["vm.toml", "disk.qcow2", "qemu.log", "serial.log"] {
        assert_eq!(mode(&vm.join(file)), 0o600, "{file}");
    }
    for dir in ["", "run"] {
        assert_eq!(mode(&vm.join(dir)), 0o700, "vms/m/{dir}");
    }
    assert_eq!(mode(&t.home().join("vms")), 0o700);
    for sock in ["qmp.sock", "qmp-ctl.sock", "qmp-shell.sock"] {
        assert_eq!(mode(&vm.join("run").join(sock)) & 0o077, 0, "{sock}");
    }
    // The home: its owner's, and the QEMU user's group may only pass it (to the images).
    let home = mode(t.home());
    assert_eq!(home & 0o007, 0, "the home is closed to others: {home:o}");
    t.ok(&["kill", "m"]);
}

#[test]
fn a_disk_is_never_opened_by_two_qemus() {
    let t = TestHome::new();
    create_tiny(&t, "d", free_port());
    t.ok(&["start", "d"]);
    let disk = t.home().join("vms/d/disk.qcow2");
    let out = Command::new("timeout")
        .args([
            "30",
            "qemu-system-x86_64",
            "-nodefaults",
            "-display",
            "none",
            "-S",
        ])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", disk.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Failed to get \"write\" lock"),
        "a second QEMU opened the running VM's disk: {} {err}",
        out.status
    );
    let again = t.fails(&["start", "d"], 7);
    assert!(again.contains("already running"), "{again}");
    t.ok(&["kill", "d"]);
}

#[test]
fn links_planted_in_a_vms_folder_are_not_followed() {
    let t = TestHome::new();
    create_tiny(&t, "l", free_port());
    let vm = t.home().join("vms/l");
    let outside = tempfile::tempdir().unwrap();
    // A dangling console log link: QEMU (or root) would create its target.
    let target = outside.path().join("created-by-vmctl");
    std::os::unix::fs::symlink(&target, vm.join("serial.log")).unwrap();
    t.ok(&["start", "l"]);
    assert!(!target.exists(), "the console log link was followed");
    let serial = std::fs::symlink_metadata(vm.join("serial.log")).unwrap();
    assert!(serial.is_file(), "a fresh console log replaces the link");
    t.ok(&["kill", "l"]);
    // A qemu.log link: refused, its target untouched.
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::fs::remove_file(vm.join("qemu.log")).unwrap();
    std::os::unix::fs::symlink(&victim, vm.join("qemu.log")).unwrap();
    let err = t.fails(&["start", "l"], 1);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    std::fs::remove_file(vm.join("qemu.log")).unwrap();
    // `vmctl logs` does not print what a console log link points to.
    std::fs::remove_file(vm.join("serial.log")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", vm.join("serial.log")).unwrap();
    let out = t.run(&["logs", "l"]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_file(vm.join("serial.log")).unwrap();
    // The lock: a link there is refused, nothing is created at its target.
    let lock_target = outside.path().join("lock-target");
    std::fs::remove_file(vm.join("lock")).ok();
    std::os::unix::fs::symlink(&lock_target, vm.join("lock")).unwrap();
    let err = t.fails(&["start", "l"], 1);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(!lock_target.exists());
}

#[test]
fn a_vm_folder_or_home_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = TestHome::new();
    create_tiny(&t, "o", free_port());
    let vm = t.home().join("vms/o");
    std::os::unix::fs::chown(&vm, Some(65534), None).unwrap();
    let err = t.fails(&["start", "o"], 2);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    std::os::unix::fs::chown(&vm, Some(0), None).unwrap();
    std::os::unix::fs::chown(t.home(), Some(65534), None).unwrap();
    let err = t.fails(&["list"], 2);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    std::os::unix::fs::chown(t.home(), Some(0), None).unwrap();
}

/// The supervisor is killed (SIGKILL) right after it spawned QEMU: QEMU dies with it, and the
/// next start works.
#[test]
fn a_supervisor_killed_during_start_leaves_no_qemu() {
    let t = TestHome::new();
    create_tiny(&t, "k", free_port());
    let mut run = t.cmd(&["run", "k"]).spawn().unwrap();
    let pidfile = t.home().join("vms/k/run/qemu.pid");
    let t0 = Instant::now();
    let qemu: i64 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no QEMU started");
        std::thread::sleep(Duration::from_millis(10));
    };
    run.kill().unwrap();
    run.wait().unwrap();
    let t0 = Instant::now();
    while pid_alive(qemu) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "QEMU {qemu} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t.status("k")["state"], "crashed");
    t.ok(&["start", "k", "--wait"]);
    t.ok(&["kill", "k"]);
}

/// Ten commands at once on one VM: one create of ten wins (the others are refused whole), ten
/// port adds are all kept, ten snapshots are taken or clearly refused, and the disk is sound.
#[test]
fn concurrent_commands_lose_nothing_and_leave_nothing_half_made() {
    let t = TestHome::new();
    let spawn_all = |args: Vec<Vec<String>>| -> Vec<std::process::Output> {
        let children: Vec<_> = args
            .iter()
            .map(|a| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                t.cmd(&a)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    };
    let creates = spawn_all(
        (0..10)
            .map(|_| {
                ["create", "race", "--mem", "128M", "--disk", "1G"]
                    .map(String::from)
                    .to_vec()
            })
            .collect(),
    );
    let won = creates.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "exactly one create of ten");
    for o in creates.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(t.home().join("vms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".create-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let base = free_port();
    let adds = spawn_all(
        (0..10)
            .map(|i| {
                vec![
                    "port".into(),
                    "add".into(),
                    "race".into(),
                    format!("{}:{}", base + 100 + i, 8000 + i),
                ]
            })
            .collect(),
    );
    for o in &adds {
        assert!(
            o.status.success(),
            "port add: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let ports = t.json(&["port", "list", "race", "--json"]);
    assert_eq!(
        ports.as_array().unwrap().len(),
        10,
        "every port add kept: {ports}"
    );

    let snaps = spawn_all(
        (0..10)
            .map(|i| {
                vec![
                    "snapshot".into(),
                    "create".into(),
                    "race".into(),
                    format!("s{i}"),
                ]
            })
            .collect(),
    );
    for o in &snaps {
        assert!(
            o.status.success(),
            "snapshot create: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let list = t.json(&["snapshot", "list", "race", "--json"]);
    let mut tags: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, (0..10).map(|i| format!("s{i}")).collect::<Vec<_>>());
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(t.home().join("vms/race/disk.qcow2"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let owner = std::fs::metadata(t.home().join("vms/race/disk.qcow2"))
        .unwrap()
        .uid();
    assert_eq!(owner, std::fs::metadata(t.home()).unwrap().uid());
}
