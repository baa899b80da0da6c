//! `vmctl events`: what happens to a tiny VM — created, started, ready, paused, resumed, a
//! snapshot, a port added, stopped by ACPI, crashed (its QEMU killed with SIGKILL), restarted,
//! killed by `vmctl kill` —
//! arrives on a running `vmctl events --json` as it happens, in order, and the log reads back
//! whole with `--all --no-follow`.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TestHome, create_tiny, free_port, vmctl_bin};

#[test]
fn a_vms_life_arrives_as_events_in_order() {
    let t = TestHome::new();
    let mut child = Command::new(vmctl_bin())
        .args([
            "--home",
            t.home().to_str().unwrap(),
            "events",
            "--json",
            "ev",
        ])
        .env("HOME", t.user_home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(serde_json::from_str(&line).expect("one JSON event per line"));
        }
    });
    // Another VM's events are not this reader's.
    create_tiny(&t, "other", free_port());
    create_tiny(&t, "ev", free_port());
    t.ok(&["start", "ev", "--wait"]);
    t.ok(&["pause", "ev"]);
    t.ok(&["resume", "ev"]);
    t.ok(&["snapshot", "create", "ev", "one"]);
    t.ok(&["port", "add", "ev", &format!("{}:8080", free_port())]);
    t.ok(&["stop", "ev"]);
    t.ok(&["start", "ev", "--wait"]);
    let pid = t.status("ev")["pid"].as_i64().unwrap();
    // The test's own QEMU, by its pid.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    t.wait_not_running("ev", Duration::from_secs(30));
    t.ok(&["start", "ev", "--wait"]);
    t.ok(&["kill", "ev"]);

    // In this order (a live snapshot pauses and resumes the guest too: those are in between).
    let want = [
        "created",
        "started",
        "ready",
        "paused",
        "resumed",
        "snapshot",
        "port-added",
        "stopped",
        "started",
        "ready",
        "crashed",
        "restarted",
        "started",
        "ready",
        "stopped",
    ];
    let mut got: Vec<Value> = Vec::new();
    let mut matched: Vec<usize> = Vec::new();
    let t0 = Instant::now();
    while matched.len() < want.len() && t0.elapsed() < Duration::from_secs(30) {
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(500)) {
            if e["event"] == want[matched.len()] {
                matched.push(got.len());
            }
            got.push(e);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let names: Vec<&str> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        matched.len(),
        want.len(),
        "{names:?} lacks {want:?} in order"
    );
    assert!(got.iter().all(|e| e["vm"] == "ev"), "only the VM asked for");
    let at = |i: usize| &got[matched[i]];
    assert_eq!(at(5)["detail"]["tag"], "one");
    assert_eq!(at(7)["detail"]["step"], "acpi", "{}", at(7));
    assert_eq!(at(10)["detail"]["signal"], 9, "{}", at(10));
    assert_eq!(at(14)["detail"]["step"], "kill", "{}", at(14));
    assert!(got[0]["time"].as_str().unwrap().ends_with('Z'));

    // The log reads back whole, in the text form too.
    let text = t.ok(&["events", "--all", "--no-follow"]);
    assert!(
        text.lines()
            .any(|l| l.ends_with(" other created image=tiny")),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" ev ")).count(),
        got.len(),
        "{text}\n{names:?}"
    );
}
