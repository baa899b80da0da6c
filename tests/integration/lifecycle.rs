//! Lifecycle against real QEMU (TCG) and the tiny guest: create, start, HTTP through the
//! forward, status/list, stop by ACPI, restart, rm; two VMs; kill -9 recovery; locking.

use std::time::Duration;

use crate::harness::*;

#[test]
fn create_start_http_status_stop_start_rm() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "web", port);

    let started = t.json(&["start", "web", "--wait", "--json"]);
    assert_eq!(started["accel"], "tcg", "{started}");
    let page = http_get(port).expect("the guest answers through the forwarded port");
    assert!(page.contains("vmctl tiny guest: web"), "{page}");

    let st = t.status("web");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["accel"], "tcg");
    assert!(st["accel_reason"].as_str().unwrap().contains("KVM"), "{st}");
    assert_eq!(st["ports"][0], format!("{port}:8080"));
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid_alive(pid));
    assert!(st["uptime_secs"].as_u64().is_some());

    let list = t.json(&["list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["pid"], pid);

    // Stop: the guest powers off on the ACPI button and QEMU exits 0.
    let stopped = t.json(&["stop", "web", "--json"]);
    assert_eq!(stopped["step"], "acpi", "{stopped}");
    assert_eq!(stopped["exit"]["code"], 0, "{stopped}");
    assert!(!pid_alive(pid), "QEMU {pid} must be gone when stop returns");
    let st = t.status("web");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["last_exit"]["code"], 0);
    assert!(
        !t.home().join("vms/web/run").exists(),
        "runtime files are cleaned up"
    );
    let log = t.ok(&["logs", "web"]);
    assert!(log.contains("vmctl-tiny: power button"), "{log}");
    assert!(http_get(port).is_none_or(|r| !r.contains("vmctl tiny guest")));

    // Stopping a stopped VM is not an error.
    assert!(t.ok(&["stop", "web"]).contains("not running"));

    // Start again.
    t.ok(&["start", "web", "--wait"]);
    assert!(http_get(port).unwrap().contains("vmctl tiny guest: web"));

    // rm refuses a running VM, then works once it is stopped.
    let err = t.fails(&["rm", "web"], 7);
    assert!(err.contains("running"), "{err}");
    t.ok(&["stop", "web"]);
    t.ok(&["rm", "web"]);
    assert!(!t.home().join("vms/web").exists());
    assert_eq!(t.json(&["list", "--json"]), serde_json::json!([]));
    t.fails(&["status", "web"], 3);
}

#[test]
fn two_vms_run_side_by_side() {
    let t = TestHome::new();
    let (pa, pb) = (free_port(), free_port());
    create_tiny(&t, "alpha", pa);
    create_tiny(&t, "beta", pb);
    t.ok(&["start", "alpha", "--wait"]);
    t.ok(&["start", "beta", "--wait"]);
    assert!(http_get(pa).unwrap().contains("vmctl tiny guest: alpha"));
    assert!(http_get(pb).unwrap().contains("vmctl tiny guest: beta"));
    let list = t.json(&["list", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "running"),
        "{list}"
    );
    t.ok(&["stop", "alpha"]);
    assert!(
        http_get(pb).unwrap().contains("beta"),
        "beta is unaffected by alpha's stop"
    );
    t.ok(&["stop", "beta"]);
}

#[test]
fn port_taken_by_another_process_is_refused_before_launch() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "web", port);
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = t.fails(&["start", "web"], 7);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("already in use"),
        "{err}"
    );
    assert_eq!(t.status("web")["state"], "stopped");
    drop(holder);
    t.ok(&["start", "web", "--wait"]);
    t.ok(&["kill", "web"]);
}

#[test]
fn port_of_another_vms_definition_is_refused() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "a", port);
    let before = t.snapshot();
    let err = t.fails(&["create", "b", "--port", &format!("{port}:80")], 2);
    assert!(
        err.contains(&format!("host port {port}")) && err.contains("VM a"),
        "{err}"
    );
    assert_eq!(t.snapshot(), before);
}

#[test]
fn kill_9_of_qemu_then_start_works() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "web", port);
    t.ok(&["start", "web", "--wait"]);
    let pid = t.status("web")["pid"].as_i64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    t.wait_not_running("web", Duration::from_secs(10));
    t.ok(&["start", "web", "--wait"]);
    assert!(http_get(port).unwrap().contains("vmctl tiny guest: web"));
    let st = t.status("web");
    assert_ne!(st["pid"].as_i64().unwrap(), pid);

    // Now the supervisor and QEMU both die: stale files stay behind; start cleans them.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.home().join("vms/web/run/state.json")).unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap();
    let qemu = state["qemu_pid"].as_i64().unwrap();
    for p in [sup, qemu] {
        std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status()
            .unwrap();
    }
    t.wait_not_running("web", Duration::from_secs(10));
    assert!(
        t.home().join("vms/web/run/qmp.sock").exists(),
        "stale socket left by the crash"
    );
    assert_eq!(t.status("web")["state"], "crashed");
    t.ok(&["start", "web", "--wait"]);
    assert!(http_get(port).unwrap().contains("vmctl tiny guest: web"));
    t.ok(&["stop", "web"]);
}

#[test]
fn two_concurrent_starts_start_one_qemu() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "web", port);
    let spawn = || {
        t.cmd(&["start", "web"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(7)),
        "{codes:?}"
    );
    let loser = if a.status.code() == Some(7) { &a } else { &b };
    let msg = String::from_utf8_lossy(&loser.stderr);
    assert!(msg.contains("already running"), "{msg}");
    let n = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("qemu-system") && c.contains(t.home().to_str().unwrap())
                })
                .unwrap_or(false)
        })
        .count();
    assert_eq!(n, 1, "exactly one QEMU for the VM");
    t.ok(&["kill", "web"]);
}

#[test]
fn stop_during_early_boot_still_powers_off_by_acpi() {
    let t = TestHome::new();
    create_tiny(&t, "web", free_port());
    t.ok(&["start", "web"]);
    // No wait: the guest's ACPI driver is not loaded yet; the button is pressed until it reacts.
    let stopped = t.json(&["stop", "web", "--json"]);
    assert_eq!(stopped["step"], "acpi", "{stopped}");
    assert!(stopped["presses"].as_u64().unwrap() >= 1);
    assert_eq!(stopped["exit"]["code"], 0);
}

#[test]
fn stop_timeout_falls_back_to_quit() {
    let t = TestHome::new();
    create_tiny(&t, "web", free_port());
    t.ok(&["start", "web"]);
    // One second is too short for the guest to load its ACPI driver under TCG: quit follows.
    let stopped = t.json(&["stop", "web", "--timeout", "1", "--json"]);
    assert_eq!(stopped["step"], "quit", "{stopped}");
    assert!(stopped["seconds"].as_f64().unwrap() < 10.0);
    assert_eq!(t.status("web")["state"], "stopped");
}

#[test]
fn show_cmd_and_thin_disks() {
    let t = TestHome::new();
    t.ok(&[
        "create",
        "big",
        "--disk",
        "1T",
        "--port",
        "127.0.0.1:18022:22",
    ]);
    let disk = t.home().join("vms/big/disk.qcow2");
    assert!(
        std::fs::metadata(&disk).unwrap().len() < 1 << 20,
        "a 1T overlay is metadata only"
    );
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 40));
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with("images/tiny/x86_64/disk.qcow2")
    );
    let cmd = t.ok(&["show-cmd", "big"]);
    for needle in [
        "qemu-system-x86_64",
        "-nodefaults",
        // passt networks the guest and binds the forwards (QEMU listens for it on fd 11).
        "stream,id=net0,server=on,addr.type=fd,addr.str=11",
        "\n/usr/bin/passt --foreground",
        "--no-map-gw",
        "--tcp-ports 127.0.0.1/18022:22",
        // QEMU gets its sockets and files as descriptors, and runs sandboxed.
        "socket,id=qmp-ctl,fd=4,server=on,wait=off",
        "file=/dev/fdset/2,if=none,id=disk0",
        "vms/big/disk.qcow2",
        "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "tcg,tb-size=",
    ] {
        assert!(cmd.contains(needle), "{needle} missing from {cmd}");
    }
}
