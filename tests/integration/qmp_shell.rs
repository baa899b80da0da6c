//! `vmctl qmp` against real QEMU (TCG) and the tiny guest: the interactive shell driven through a
//! pseudo-terminal (completion of command and argument names, history across sessions, `hmp`, a
//! QMP error that leaves the shell usable, built-in verbs, events (also one that arrives while
//! the prompt waits with a half-typed line), a multi-line paste, the guarded QMP `quit`, one shell
//! at a time, the restart hint for a VM without the shell socket), and the script modes
//! (`--exec`, stdin) with their JSON replies and exit codes.

use std::io::Write;
use std::process::Stdio;

use rexpect::session::{PtySession, spawn_command};
use serde_json::Value;

use crate::harness::*;

const PROMPT: &str = "qmp:sh> ";

/// `vmctl qmp sh` on a pseudo-terminal.
fn spawn_shell(t: &TestHome) -> PtySession {
    let mut cmd = t.cmd(&["qmp", "sh"]);
    cmd.env("TERM", "xterm");
    spawn_command(cmd, Some(30_000)).expect("spawn vmctl qmp in a pty")
}

/// A shell that has shown its prompt.
fn shell(t: &TestHome) -> PtySession {
    let mut p = spawn_shell(t);
    p.exp_string("QMP shell on VM sh").expect("the banner");
    p.exp_string(PROMPT).expect("the prompt");
    p
}

/// Send `keys` without a newline and flush them to the pty.
fn keys(p: &mut PtySession, keys: &str) {
    p.send(keys).unwrap();
    p.flush().unwrap();
}

#[test]
fn interactive_shell_through_a_pty() {
    let t = TestHome::new();
    create_tiny(&t, "sh", free_port());
    t.ok(&["start", "sh"]);

    let mut p = shell(&t);
    // Command names: the first Tab completes the common prefix, the second lists the choices.
    keys(&mut p, "query-st\t\t");
    p.exp_string("query-status").expect("query-status offered");
    keys(&mut p, "\x15"); // Ctrl-U: clear the line
    // Argument names after a command, from its arg-type in the schema.
    keys(&mut p, "human-monitor-command \t\t");
    p.exp_string("command-line=")
        .expect("argument names offered");
    keys(&mut p, "\x15");

    p.send_line("hmp info status").unwrap();
    p.exp_string("VM status: running").expect("HMP passthrough");

    p.send_line("no-such-command").unwrap();
    p.exp_string("CommandNotFound")
        .expect("the QMP error class");
    p.send_line("query-status").unwrap();
    p.exp_string("\"status\": \"running\"")
        .expect("the shell goes on after an error");

    p.send_line("help human-monitor-command").unwrap();
    p.exp_string("cpu-index=int  (optional)").expect("help CMD");

    // Built-in verbs, and their events.
    p.send_line("pause").unwrap();
    p.exp_string("event STOP").expect("the STOP event");
    p.send_line("resume").unwrap();
    p.exp_string("event RESUME").expect("the RESUME event");
    p.exp_string(PROMPT).unwrap();

    // An event that arrives while the prompt waits shows at once, above a half-typed line that
    // stays as it was: no key is pressed between the type-ahead and the event.
    keys(&mut p, "query-na");
    p.exp_string("query-na")
        .expect("the echo of the typed-ahead text");
    t.ok(&["pause", "sh"]);
    p.exp_string("event STOP")
        .expect("an event shown while the prompt waits");
    p.exp_string("query-na")
        .expect("the half-typed line redrawn under the event");
    keys(&mut p, "me\r");
    p.exp_string("\"name\"")
        .expect("the line finished after the event runs");
    t.ok(&["resume", "sh"]);
    p.exp_string("event RESUME").expect("the RESUME event");

    // A paste of several lines in one write runs each line, none waits for another key.
    keys(&mut p, "hmp info name\rquery-status\r");
    p.exp_string("\"status\": \"running\"")
        .expect("the second pasted line ran without a further key press");
    p.exp_string(PROMPT).unwrap();

    // The snapshot verb, through the snapshot module (it uses the control socket meanwhile).
    p.send_line("snapshot create t1").unwrap();
    p.exp_string("\"live\": true").expect("snapshot create");
    p.send_line("snapshot list").unwrap();
    p.exp_string("\"vm_state_size\"").expect("snapshot list");
    p.exp_string(PROMPT).unwrap();

    // QMP quit asks first; anything but "yes" keeps the VM.
    p.send_line("{\"execute\": \"quit\"}").unwrap();
    p.exp_string("type yes")
        .expect("quit asks for confirmation");
    p.send_line("no").unwrap();
    p.exp_string("Not sent.").unwrap();
    p.send_line("query-name").unwrap();
    p.exp_string(PROMPT).unwrap();

    // A second shell is refused while this one is open.
    let mut second = spawn_shell(&t);
    second
        .exp_string("Another `vmctl qmp sh` shell is open")
        .expect("a second shell is refused");
    second.exp_eof().unwrap();
    // ...while scripts still get through on the control socket.
    assert!(
        t.ok(&["qmp", "sh", "-e", "query-status"])
            .contains("running")
    );

    p.send_line("exit").unwrap();
    p.exp_eof().expect("exit leaves the shell");
    assert_eq!(t.status("sh")["state"], "running", "leaving keeps the VM");

    // History persists: the file has the commands, and Up recalls the last one.
    let hist = std::fs::read_to_string(t.home().join("vms/sh/qmp-history")).unwrap();
    assert!(hist.contains("hmp info status"), "{hist}");
    let mut p = shell(&t);
    keys(&mut p, "\x1b[A"); // Up: "exit"
    keys(&mut p, "\x1b[A"); // Up: "query-name"
    keys(&mut p, "\r");
    p.exp_string("\"name\"")
        .expect("Up recalls the previous session's command");
    p.send_control('d').unwrap();
    p.exp_eof().expect("Ctrl-D leaves the shell");
    assert_eq!(t.status("sh")["state"], "running");

    // A VM started by an older vmctl has no shell socket: the shell says to restart it.
    std::fs::remove_file(t.home().join("vms/sh/run/qmp-shell.sock")).unwrap();
    let mut old = spawn_shell(&t);
    old.exp_string("vmctl restart sh").expect("restart hint");
    old.exp_eof().unwrap();
}

/// A terminal that takes no control sequences (TERM=dumb: Emacs' shell mode edits the line
/// itself) gets plain lines, and events still show while the prompt waits.
#[test]
fn a_dumb_terminal_gets_plain_lines_and_events() {
    let t = TestHome::new();
    create_tiny(&t, "sh", free_port());
    t.ok(&["start", "sh"]);
    let mut cmd = t.cmd(&["qmp", "sh"]);
    cmd.env("TERM", "dumb");
    let mut p = spawn_command(cmd, Some(30_000)).expect("spawn vmctl qmp in a pty");
    let mut seen = p.exp_string(PROMPT).expect("the prompt");
    p.send_line("query-status").unwrap();
    seen += &p.exp_string("\"status\": \"running\"").expect("a reply");
    seen += &p.exp_string(PROMPT).unwrap();
    t.ok(&["pause", "sh"]);
    seen += &p
        .exp_string("event STOP")
        .expect("an event shown while the prompt waits");
    seen += &p.exp_string(PROMPT).expect("the prompt again after it");
    assert!(!seen.contains('\x1b'), "no control sequences: {seen:?}");
    p.send_control('d').unwrap();
    p.exp_eof().expect("Ctrl-D leaves the shell");
    let hist = std::fs::read_to_string(t.home().join("vms/sh/qmp-history")).unwrap();
    assert!(hist.contains("query-status"), "{hist}");
}

#[test]
fn exec_and_stdin_print_json_and_fail_on_qmp_errors() {
    let t = TestHome::new();
    create_tiny(&t, "sh", free_port());
    t.ok(&["start", "sh"]);

    let out = t.ok(&[
        "qmp",
        "sh",
        "--exec",
        "query-status",
        "-e",
        "hmp info status",
        "-e",
        r#"{"execute": "query-name"}"#,
    ]);
    let replies: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON reply per line"))
        .collect();
    assert_eq!(replies.len(), 3, "{out}");
    assert_eq!(replies[0]["return"]["status"], "running");
    assert!(
        replies[1]["return"]
            .as_str()
            .unwrap()
            .contains("VM status: running")
    );
    assert!(replies[2]["return"].is_object());

    // A QMP error: its reply is printed, the exit is QEMU's (5), later commands do not run.
    let out = t
        .cmd(&["qmp", "sh", "-e", "no-such-command", "-e", "query-status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reply: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(reply["error"]["class"], "CommandNotFound");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CommandNotFound"));

    // Arguments: key=value with a str argument, and QMP quit refused without a terminal.
    let out = t.ok(&[
        "qmp",
        "sh",
        "-e",
        "human-monitor-command command-line='info name'",
    ]);
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(reply["return"].is_string(), "{out}");
    t.fails(&["qmp", "sh", "-e", "{\"execute\": \"quit\"}"], 2);

    // Commands on stdin (not a terminal); comments and blank lines are skipped.
    let mut child = t
        .cmd(&["qmp", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# a script\nquery-status\n\nsnapshot list\nquery-kvm\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert_eq!(replies[0]["return"]["status"], "running");
    assert!(replies[1]["return"].is_array(), "snapshot list");
    assert!(replies[2]["return"]["present"].is_boolean());

    // A stopped VM: the usual wrong-state error.
    t.ok(&["stop", "sh"]);
    t.fails(&["qmp", "sh", "-e", "query-status"], 7);
}
