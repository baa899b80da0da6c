//! Port forwards changed at run time against real QEMU (TCG) and the tiny guest: a forward added
//! to a running VM answers without a restart and survives stop/start, `port rm` closes it,
//! conflicting ports are refused, and a stopped VM's definition changes for its next start.

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
