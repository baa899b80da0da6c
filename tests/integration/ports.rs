//! Port forwards changed at run time against real QEMU (TCG) and the tiny guest: a forward added
//! to a running VM answers without a restart and survives stop/start, `port rm` closes it,
//! conflicting ports are refused, and a stopped VM's definition changes for its next start; a
//! VM defined by a drop-in file is told where to make the change last.

use crate::harness::*;

fn ports(t: &TestHome, name: &str) -> Vec<serde_json::Value> {
    t.json(&["port", "list", name, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn guest_answers(port: u16, name: &str) -> bool {
    http_get(port).is_some_and(|r| r.contains(&format!("vmctl tiny guest: {name}")))
}

#[test]
fn port_add_rm_on_a_running_vm_without_restart() {
    let t = TestHome::new();
    let (p1, p2, p3, p4, p5) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    create_tiny(&t, "web", p1);
    create_tiny(&t, "other", p3);
    t.ok(&["start", "web", "--wait"]);
    let pid = t.status("web")["pid"].clone();

    let out = t.ok(&["port", "add", "web", &format!("{p2}:8080")]);
    assert!(out.contains("now"), "{out}");
    assert!(guest_answers(p2, "web"), "the new port answers at once");
    assert_eq!(t.status("web")["pid"], pid, "without a restart");
    let l = ports(&t, "web");
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l.iter().all(|p| p["active"] == true), "{l:?}");

    // Conflicts: another definition's port, this VM's own, a port another process holds.
    let err = t.fails(&["port", "add", "web", &format!("{p3}:8080")], 2);
    assert!(err.contains("VM other"), "{err}");
    let err = t.fails(&["port", "add", "web", &format!("{p2}:22")], 2);
    assert!(err.contains("already forwards"), "{err}");
    let holder = std::net::TcpListener::bind(("127.0.0.1", p4)).unwrap();
    let err = t.fails(&["port", "add", "web", &format!("{p4}:8080")], 7);
    assert!(err.contains("already in use"), "{err}");
    drop(holder);
    assert_eq!(ports(&t, "web").len(), 2, "refusals change nothing");

    // Saved to the definition: the next start has it.
    t.ok(&["stop", "web"]);
    t.ok(&["start", "web", "--wait"]);
    assert!(
        guest_answers(p2, "web"),
        "the added port survives stop/start"
    );

    t.ok(&["port", "rm", "web", &format!("{p2}:8080")]);
    assert!(!guest_answers(p2, "web"), "port rm closes it");
    assert!(guest_answers(p1, "web"), "the other forward stays");
    assert_eq!(ports(&t, "web").len(), 1);
    let err = t.fails(&["port", "rm", "web", &format!("{p2}:8080")], 3);
    assert!(err.contains(&format!("it forwards {p1}:8080")), "{err}");

    // A stopped VM: only the definition changes, for its next start.
    t.ok(&["stop", "web"]);
    let out = t.ok(&["port", "add", "web", &format!("{p5}:8080")]);
    assert!(out.contains("next start"), "{out}");
    assert!(ports(&t, "web").iter().all(|p| p["active"].is_null()));
    t.ok(&["start", "web", "--wait"]);
    assert!(guest_answers(p5, "web"));
    t.ok(&["kill", "web"]);
}

/// A VM a drop-in file defines (its unit runs `create --from FILE --update` before each start,
/// which would undo a saved change): running, a forward is added for now with a note naming the
/// file; stopped, the change is refused with where to make it, and nothing is written.
#[test]
fn port_changes_on_a_vm_defined_by_a_drop_in_say_where_to_keep_them() {
    let t = TestHome::new();
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    let f = file.to_str().unwrap();
    std::fs::write(
        &file,
        format!("memory = \"256M\"\ndisk = \"1G\"\nports = [\"{p1}:8080\"]\n"),
    )
    .unwrap();
    t.ok(&["create", "web", "--from", f, "--update"]);
    let def = t.home().join("vms/web/vm.toml");
    let before = std::fs::read_to_string(&def).unwrap();

    let err = t.fails(&["port", "add", "web", &format!("{p2}:8080")], 2);
    assert!(
        err.contains(&format!("VM web is defined by {f}"))
            && err.contains(&format!("add \"{p2}:8080\" to `ports`")),
        "{err}"
    );
    let err = t.fails(&["port", "rm", "web", &format!("{p1}:8080")], 2);
    assert!(
        err.contains(&format!("remove \"{p1}:8080\" from `ports`")),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&def).unwrap(),
        before,
        "nothing written"
    );

    t.ok(&["start", "web", "--wait"]);
    let out = t.run(&["port", "add", "web", &format!("{p2}:8080")]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("until the VM stops"), "{stdout}");
    assert!(
        stderr.contains(&format!("Note: {f} defines VM web")),
        "{stderr}"
    );
    assert!(
        guest_answers(p2, "web"),
        "the forward works while the VM runs"
    );
    t.ok(&["kill", "web"]);
}
