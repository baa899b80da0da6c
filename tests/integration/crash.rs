//! Crash consistency with a real guest (Debian, TCG): what the guest wrote and synced before
//! QEMU was killed with SIGKILL is on its disk when it boots again, and `qemu-img check` finds
//! the overlay sound in between. (A supervisor killed mid-start: security.rs; every process of a
//! unit killed under systemd: systemd_hardened.rs.)

use crate::harness::*;

fn ssh_ok(t: &TestHome, name: &str, cmd: &str) -> String {
    let out = t.ssh(name, cmd);
    assert!(
        out.status.success(),
        "vmctl ssh {name} -- {cmd}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_file_the_guest_synced_survives_kill_9_and_the_disk_checks_clean() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let ssh_port = free_port();
    t.ok(&[
        "create",
        "c",
        "--image",
        "debian-12",
        "--mem",
        "1G",
        "--port",
        &format!("{ssh_port}:22"),
    ]);
    t.ok(&["start", "c", "--wait", "--timeout", "400"]);
    // 1 MiB of random data, written with fsync, then its digest.
    let written = ssh_ok(
        &t,
        "c",
        "dd if=/dev/urandom of=$HOME/crash.bin bs=64k count=16 conv=fsync status=none && sha256sum $HOME/crash.bin",
    );
    assert!(written.contains("crash.bin"), "{written}");

    t.ok(&["kill", "c"]);
    assert_eq!(t.status("c")["state"], "stopped");
    let disk = t.home().join("vms/c/disk.qcow2");
    let check = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check after kill -9 (exit {:?}): {}{}",
        check.status.code(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    t.ok(&["start", "c", "--wait", "--timeout", "400"]);
    assert_eq!(
        ssh_ok(&t, "c", "sha256sum $HOME/crash.bin"),
        written,
        "the synced file after kill -9 and a new boot"
    );
    t.ok(&["stop", "c"]);
}
