//! Saved state on the tiny guest (its root file system is RAM): `suspend` and `stop --save`
//! keep what the guest wrote in memory, the next `start` resumes it instead of booting; a disk
//! changed behind vmctl's back makes the state refused, `start --fresh` throws it away; what
//! cannot be saved or discarded is refused with its exit code.

use std::process::Command;

use crate::harness::*;

const MARKER: &str = "/tmp/vmctl-suspend-marker";

fn marker(port: u16) -> String {
    let r = http_get_path(port, &format!("/cgi-bin/cat?{MARKER}")).unwrap_or_default();
    r.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()
}

#[test]
fn a_suspended_guest_resumes_with_its_memory_and_a_changed_disk_is_refused() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "s", port);
    let err = t.fails(&["suspend", "s"], 7);
    assert!(err.contains("VM s is not running"), "{err}");
    let err = t.fails(&["start", "s", "--fresh", "--force"], 7);
    assert!(err.contains("VM s has no saved state to discard"), "{err}");

    t.ok(&["start", "s", "--wait"]);
    let put = http_get_path(port, &format!("/cgi-bin/put?{MARKER}")).unwrap();
    assert!(put.ends_with("ok\n"), "{put}");
    let saved = t.json(&["suspend", "s", "--json"]);
    assert!(saved["bytes"].as_u64().unwrap() > 1 << 20, "{saved}");
    assert_eq!(t.json(&["list", "--json"])[0]["state"], "saved");
    let st = t.status("s");
    assert_eq!(st["state"], "saved");
    assert_eq!(st["saved"]["bytes"], saved["bytes"]);
    assert_eq!(st["last_exit"]["stopped_by"], "save");
    let text = t.ok(&["status", "s"]);
    assert!(
        text.contains("State:   saved\n") && text.contains("`vmctl start s` resumes it"),
        "{text}"
    );
    // Its disk may not change while the state waits for it.
    let err = t.fails(&["snapshot", "create", "s", "before"], 7);
    assert!(err.contains("VM s has a saved state"), "{err}");

    let resumed = t.json(&["start", "s", "--wait", "--json"]);
    assert_eq!(resumed["restored"], true, "{resumed}");
    assert_eq!(
        marker(port),
        "written by the guest",
        "the guest's memory came back"
    );
    assert!(
        !t.home().join("vms/s/saved.state").exists(),
        "a resumed guest moves on from its state"
    );
    assert_eq!(t.status("s")["state"], "running");

    // Saved again, then the disk written behind vmctl's back: the state no longer fits.
    let stopped = t.ok(&["stop", "s", "--save"]);
    assert!(stopped.starts_with("Saved VM s in "), "{stopped}");
    let disk = t.home().join("vms/s/disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["snapshot", "-c", "behind-its-back"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let err = t.fails(&["start", "s", "--wait"], 7);
    assert!(
        err.contains("VM s has a saved state that no longer fits: its disk changed since the save"),
        "{err}"
    );
    assert!(err.contains("vmctl start s --fresh"), "{err}");
    assert_eq!(
        t.status("s")["state"],
        "saved",
        "the refusal kept the state"
    );
    // Throwing it away needs a yes on a terminal, or --force.
    let err = t.fails(&["start", "s", "--fresh"], 2);
    assert!(
        err.contains("answer on a terminal, or add --force"),
        "{err}"
    );
    let fresh = t.json(&["start", "s", "--fresh", "--force", "--wait", "--json"]);
    assert_eq!(fresh["restored"], false);
    assert!(
        marker(port).contains("No such file"),
        "a fresh boot has a fresh memory"
    );
    assert!(!t.home().join("vms/s/saved.json").exists());
    t.ok(&["stop", "s"]);
}

/// The marker through the container's forwarded port (the container shares the host's network).
fn put_marker(port: u16) {
    let put = http_get_path(port, &format!("/cgi-bin/put?{MARKER}")).unwrap();
    assert!(put.ends_with("ok\n"), "{put}");
}

/// `on_host_shutdown = "save"` under a real systemd (nspawn): `systemctl stop` saves the guest
/// and `systemctl start` resumes it; a reboot of the container saves it on the way down and
/// its enabled unit resumes it at boot, with what the guest had in memory.
#[test]
fn a_save_vm_is_saved_by_its_units_stop_and_a_reboot_and_resumed_after() {
    use crate::nspawn::{Container, tiny_create_args};
    use crate::systemd_e2e::{COMMAND_TIMEOUT, VMS, json, show, unit, wait_port};
    let mut c = Container::boot("e2e-save");
    let port = free_port();
    let mut args = tiny_create_args("web", port);
    args.extend(["--on-host-shutdown".into(), "save".into()]);
    c.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "vmctl",
        "systemd",
        "install",
        "web",
        "--enable",
        "--now",
    ]);
    wait_port(&c, "web", port);
    put_marker(port);
    let start_unit = || {
        c.ok(&[
            "timeout",
            COMMAND_TIMEOUT,
            "systemctl",
            "start",
            &unit("web"),
        ]);
        wait_port(&c, "web", port);
    };

    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "systemctl",
        "stop",
        &unit("web"),
    ]);
    let last = json(&c, &format!("{VMS}/web/last-exit.json"));
    assert_eq!(last["stopped_by"], "save", "{last}");
    assert_eq!(show(&c, &unit("web"), "Result"), "success");
    let listed: serde_json::Value =
        serde_json::from_str(&c.ok(&["vmctl", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["state"], "saved", "{listed}");

    start_unit();
    assert_eq!(
        marker(port),
        "written by the guest",
        "resumed by systemctl start"
    );

    // `vmctl stop` is a power-off whatever on_host_shutdown says.
    c.ok(&["timeout", COMMAND_TIMEOUT, "vmctl", "stop", "web"]);
    let last = json(&c, &format!("{VMS}/web/last-exit.json"));
    assert_eq!(last["stopped_by"], "acpi", "{last}");
    start_unit();
    put_marker(port);

    c.reboot();
    let previous = c.journal(-1);
    assert!(
        previous.contains("SIGTERM: saving the guest's state"),
        "the reboot did not save the guest:\n{}",
        previous
            .lines()
            .filter(|l| l.contains("vm=web") || l.contains("vmctl-web"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    wait_port(&c, "web", port);
    assert_eq!(marker(port), "written by the guest", "resumed at boot");
    let st: serde_json::Value =
        serde_json::from_str(&c.ok(&["vmctl", "status", "web", "--json"])).unwrap();
    assert_eq!(st["state"], "running", "{st}");
}

/// The seed VM (`vm-configs/web.toml`, debian-12) resumed from its saved state: no reboot, its
/// clock set to the host's by the guest agent although it stood still while saved, SSH and the
/// app answering, and a forward added at run time back.
#[test]
fn a_resumed_debian_guest_keeps_its_boot_and_gets_the_hosts_time_and_its_forwards() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let (ssh, http, extra) = (free_port(), free_port(), free_port());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/web.toml");
    t.ok(&[
        "create",
        "web",
        "--from",
        example,
        "--port",
        &format!("{ssh}:22"),
        "--port",
        &format!("{http}:8080"),
    ]);
    t.ok(&["start", "web", "--wait", "--timeout", "500"]);
    t.ok(&["port", "add", "web", &format!("{extra}:8080")]);
    let guest = |cmd: &str| {
        let out = t.ssh("web", cmd);
        assert!(out.status.success(), "{cmd}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let boot_id = guest("cat /proc/sys/kernel/random/boot_id");
    t.ok(&["suspend", "web"]);
    // Time passes while the guest is saved (what is under test, not a wait for readiness): a
    // clock nobody set would be this far behind.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let resumed = t.json(&["start", "web", "--wait", "--timeout", "300", "--json"]);
    assert_eq!(resumed["restored"], true, "{resumed}");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = unix();
    let out = guest("date +%s.%N; cat /proc/sys/kernel/random/boot_id");
    let after = unix();
    let (clock, id) = out.split_once('\n').unwrap();
    let clock: f64 = clock.parse().unwrap();
    assert!(
        clock > before - 1.0 && clock < after + 1.0,
        "the guest's clock {clock} is not the host's ({before}..{after})\n{}",
        std::fs::read_to_string(t.home().join("vms/web/qemu.log")).unwrap_or_default()
    );
    assert_eq!(id, boot_id, "resumed, not rebooted");
    for port in [http, extra] {
        let page = http_get(port).unwrap_or_default();
        assert!(page.contains("Hello, World!"), "port {port}: {page}");
    }
    t.ok(&["stop", "web"]);
}
