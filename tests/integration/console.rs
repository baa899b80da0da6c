//! `vmctl console` through a pseudo-terminal, on a real guest: what is typed reaches the guest's
//! serial port and what it writes comes back, one console at a time, Ctrl-] detaches, and the
//! console log has the same lines whether anyone is attached or not (debian-12's login prompt on
//! the console: vps.rs); and what `vmctl cp` refuses before it runs scp (the copies: vps.rs).

use rexpect::session::{PtySession, spawn_command};

use crate::harness::*;

/// `vmctl console NAME` in a pseudo-terminal.
pub fn console(t: &TestHome, name: &str) -> PtySession {
    let mut cmd = t.cmd(&["console", name]);
    cmd.env("TERM", "xterm");
    spawn_command(cmd, Some(30_000)).expect("spawn vmctl console in a pty")
}

#[test]
fn console_attaches_one_at_a_time_detaches_on_ctrl_bracket_and_the_log_keeps_the_lines() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "con", port);
    // Not running: exit 7.
    let err = t.fails(&["console", "con"], 7);
    assert!(err.contains("not running"), "{err}");
    t.ok(&["start", "con", "--wait"]);

    let mut c = console(&t, "con");
    c.exp_string("Connected to the serial console of VM con (Ctrl-] detaches)")
        .expect("the banner");
    // The guest's terminal echoes what reaches its serial port.
    c.send_line("marker-4711").unwrap();
    c.exp_string("marker-4711")
        .expect("the guest echoes the line");
    // A second console is refused while this one is attached.
    let err = t.fails(&["console", "con"], 7);
    assert!(
        err.contains("A console is attached to VM con already"),
        "{err}"
    );
    // Ctrl-] detaches; the VM runs on.
    c.send_control(']').unwrap();
    c.exp_string("Detached from VM con's console")
        .expect("detached");
    c.exp_eof().expect("vmctl console ends");
    assert_eq!(t.status("con")["state"], "running");
    // The log has what the console showed, and the guest's own lines from before.
    let log = t.ok(&["logs", "con"]);
    assert!(
        log.contains("vmctl-tiny: ready") && log.contains("marker-4711"),
        "{log}"
    );
    // Attached again after the detach: the console is free.
    let mut c = console(&t, "con");
    c.exp_string("Connected").expect("attached again");
    // The VM stopping ends the console.
    t.ok(&["stop", "con"]);
    c.exp_string("VM con stopped; its console closed")
        .expect("the console ends with the VM");
}

/// `vmctl cp` refuses copies it cannot make before running anything (the copy itself: vps.rs).
#[test]
fn cp_needs_one_side_in_a_vm() {
    let t = TestHome::new();
    create_tiny(&t, "a", free_port());
    create_tiny(&t, "b", free_port());
    for (args, needle) in [
        (vec!["cp", "x", "y"], "neither side is in a VM"),
        (
            vec!["cp", "a:/x", "b:/y"],
            "copies between this host and one VM",
        ),
        (
            vec!["cp", "a:/x", "y", "z"],
            "every source of one copy is in the same VM; y is not in VM a",
        ),
        (vec!["cp", "a:/x", "b:/y", "z"], "b:… is not in VM a"),
        (
            vec!["cp", "x", "a:/y"],
            "VM a runs image tiny, which has no SSH login",
        ),
    ] {
        t.refused(&args, &[needle]);
    }
    t.refused(&["cp", "onlyone"], &["required"]);
}
