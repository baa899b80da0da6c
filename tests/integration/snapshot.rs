//! Snapshots and run control against real QEMU (TCG) and the tiny guest: a live snapshot brings
//! the guest's RAM back (its `/cgi-bin/counter` marker goes back through the forwarded port),
//! list/delete, refusals (duplicate and unknown tags, revert of a running VM without --force),
//! offline snapshots of a stopped VM's disk, and pause/resume/reset.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The tiny guest's counter: each request adds one and returns the new value.
fn counter(port: u16) -> Option<u64> {
    let r = http_get_path(port, "/cgi-bin/counter")?;
    r.lines()
        .find_map(|l| l.trim().strip_prefix("counter "))
        .and_then(|n| n.parse().ok())
}

fn tags(t: &TestHome, name: &str) -> Vec<String> {
    t.json(&["snapshot", "list", name, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tag"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn live_snapshot_revert_brings_the_guest_memory_back() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "snap", port);
    t.ok(&["start", "snap", "--wait"]);
    let first = counter(port).expect("the guest serves its counter");
    assert_eq!(counter(port), Some(first + 1));

    let out = t.ok(&["snapshot", "create", "snap", "before"]);
    assert!(
        out.contains("Created snapshot before") && out.contains("live"),
        "{out}"
    );
    assert_eq!(
        counter(port),
        Some(first + 2),
        "the marker moves on after the snapshot"
    );
    assert_eq!(counter(port), Some(first + 3));

    // Reverting a running VM loses its state: refused without --force (stdin is no terminal).
    let err = t.fails(&["snapshot", "revert", "snap", "before"], 7);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        counter(port),
        Some(first + 4),
        "a refused revert changes nothing"
    );

    t.ok(&["snapshot", "revert", "snap", "before", "--force"]);
    assert_eq!(
        counter(port),
        Some(first + 2),
        "revert brings back the counter of the snapshot"
    );

    // Refusals name the tags.
    let err = t.fails(&["snapshot", "create", "snap", "before"], 2);
    assert!(
        err.contains("\"before\"") && err.contains("already"),
        "{err}"
    );
    let err = t.fails(&["snapshot", "revert", "snap", "nope", "--force"], 3);
    assert!(err.contains("nope") && err.contains("before"), "{err}");
    let err = t.fails(&["snapshot", "delete", "snap", "nope"], 3);
    assert!(err.contains("its snapshots: before"), "{err}");

    // A default tag is the UTC time; list --json shows tags, sizes and dates.
    t.ok(&["snapshot", "create", "snap"]);
    let list = t.json(&["snapshot", "list", "snap", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["tag"], "before");
    let stamp = list[1]["tag"].as_str().unwrap();
    assert!(
        stamp.len() == 19 && stamp.starts_with("20") && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for s in list {
        assert!(s["vm_state_size"].as_u64().unwrap() > 0, "{s}");
        assert!((now - s["date_unix"].as_i64().unwrap()).abs() < 600, "{s}");
        assert!(s["date"].as_str().unwrap().ends_with('Z'), "{s}");
        assert!(s["vm_clock_secs"].as_f64().unwrap() > 0.0, "{s}");
    }

    assert_eq!(
        t.json(&["list", "--json"])[0]["snapshots"],
        2,
        "list counts them"
    );

    t.ok(&["snapshot", "delete", "snap", "before"]);
    assert_eq!(tags(&t, "snap"), vec![stamp.to_string()]);
    t.fails(&["snapshot", "revert", "snap", "before", "--force"], 3);

    // Snapshots live in the disk: a stopped VM still lists them (read by qemu-img).
    t.ok(&["stop", "snap"]);
    let list = t.json(&["snapshot", "list", "snap", "--json"]);
    assert_eq!(list[0]["tag"], stamp, "{list}");
    assert!(list[0]["vm_state_size"].as_u64().unwrap() > 0, "{list}");
}

/// `qemu-io -c CMD disk`: whether it succeeded (a `read -P` fails on other data), and its stdout.
fn qemu_io(disk: &std::path::Path, cmd: &str) -> (bool, String) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(disk)
        .output()
        .expect("qemu-io (qemu-utils) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.contains("failed"), text)
}

#[test]
fn offline_snapshot_and_revert_of_a_stopped_vm() {
    let t = TestHome::new();
    create_tiny(&t, "cold", free_port());
    let disk = t.home().join("vms/cold/disk.qcow2");
    assert!(qemu_io(&disk, "write -P 0xaa 0 64k").0);

    t.refused(
        &["snapshot", "create", "cold", "bad tag"],
        &["snapshot tag"],
    );
    let out = t.ok(&["snapshot", "create", "cold", "clean"]);
    assert!(out.contains("disk only"), "{out}");
    let list = t.json(&["snapshot", "list", "cold", "--json"]);
    assert_eq!(list[0]["tag"], "clean");
    assert_eq!(list[0]["vm_state_size"], 0, "{list}");
    assert_eq!(t.json(&["list", "--json"])[0]["snapshots"], 1);
    let err = t.fails(&["snapshot", "create", "cold", "clean"], 2);
    assert!(err.contains("\"clean\""), "{err}");

    assert!(qemu_io(&disk, "write -P 0xbb 0 64k").0);
    assert!(!qemu_io(&disk, "read -P 0xaa 0 64k").0, "the disk changed");
    // A stopped VM has no state to lose beyond its disk: no --force needed.
    t.ok(&["snapshot", "revert", "cold", "clean"]);
    let (same, read) = qemu_io(&disk, "read -P 0xaa 0 64k");
    assert!(same, "revert brings the old disk back: {read}");

    let err = t.fails(&["snapshot", "revert", "cold", "nope"], 3);
    assert!(err.contains("its snapshots: clean"), "{err}");
    t.ok(&["snapshot", "delete", "cold", "clean"]);
    assert!(tags(&t, "cold").is_empty());
    assert_eq!(t.json(&["list", "--json"])[0]["snapshots"], 0);
    let err = t.fails(&["snapshot", "delete", "cold", "clean"], 3);
    assert!(err.contains("no snapshots"), "{err}");
    t.fails(&["snapshot", "list", "ghost"], 3);
}

#[test]
fn pause_resume_and_reset() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "ctl", port);
    let err = t.fails(&["pause", "ctl"], 7);
    assert!(err.contains("not running"), "{err}");
    t.fails(&["pause", "ghost"], 3);

    t.ok(&["start", "ctl", "--wait"]);
    let n = counter(port).expect("the guest answers");
    t.ok(&["pause", "ctl"]);
    assert_eq!(t.status("ctl")["state"], "paused");
    assert_eq!(counter(port), None, "a paused guest does not answer");
    let err = t.fails(&["pause", "ctl"], 7);
    assert!(err.contains("already paused"), "{err}");

    t.ok(&["resume", "ctl"]);
    assert_eq!(t.status("ctl")["state"], "running");
    let after = counter(port).expect("a resumed guest answers");
    assert!(after > n, "{after} after {n}: memory kept across the pause");
    let err = t.fails(&["resume", "ctl"], 7);
    assert!(err.contains("not paused"), "{err}");

    // Reset reboots the guest: its counter (in RAM) starts again at 1.
    t.ok(&["reset", "ctl"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(c) = counter(port) {
            assert_eq!(c, 1, "a reset guest starts afresh");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not come back after reset"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.ok(&["stop", "ctl"]);
}
