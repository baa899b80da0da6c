//! Stacks (`vmctl up|down|ps`, `systemd install --stack`) with real QEMU: the example stack of
//! vm-configs/ (a Debian app VM whose gunicorn page shows what it fetched from a db VM that has
//! no forwarded port) up, down by ACPI, up again and removed; a stack of tiny VMs under a real
//! systemd, up in order after a reboot; and a stack file's bad input.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::nspawn::Container;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/stack-shop.toml");

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn ps(t: &TestHome, file: &str) -> Value {
    t.json(&["ps", "-f", file, "--json"])
}

fn state_of(ps: &Value, service: &str) -> String {
    ps.as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {service} in {ps}"))
}

#[test]
fn example_stack_up_shows_the_dbs_data_down_by_acpi_up_again_and_down_rm_leaves_nothing() {
    let t = TestHome::new();
    t.link_image("debian-12", "x86_64");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("\"5090:8080\"", &format!("\"{port}:8080\""));
    let file = write(dir.path(), "vmctl-stack.toml", &text);
    let before = t.snapshot();

    let up = t.json(&["up", "-f", &file, "--json", "--timeout", "600"]);
    let states: Vec<&str> = up["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["started", "started"], "{up}");
    // The app's page, through its forward, holds the db's answer over the private network.
    let page = http_get(port).unwrap_or_default();
    assert!(
        page.contains("Hello, World!")
            && page.contains("From http://db:8080/:")
            && page.contains("vmctl tiny guest: shop-db"),
        "{page}"
    );
    // The db VM has no forwarded port at all.
    assert_eq!(t.status("shop-db")["ports"], serde_json::json!([]));
    let p = ps(&t, &file);
    assert_eq!(state_of(&p, "app"), "running");
    assert_eq!(state_of(&p, "db"), "running");

    // Twice: nothing changes.
    let again = t.json(&["up", "-f", &file, "--json"]);
    for v in again["vms"].as_array().unwrap() {
        assert_eq!(v["definition"], "unchanged", "{again}");
        assert_eq!(v["state"], "running", "{again}");
    }

    // down: app first (it starts after db), both by ACPI.
    let down = t.json(&["down", "-f", &file, "--json"]);
    for v in down["vms"].as_array().unwrap() {
        assert!(
            v["state"].as_str().unwrap().starts_with("stopped (acpi"),
            "{down}"
        );
    }
    for vm in ["shop-app", "shop-db"] {
        let st = t.status(vm);
        assert_eq!(st["state"], "stopped", "{st}");
        assert_eq!(st["last_exit"]["code"], 0, "{st}");
    }
    let app_stopped = t.status("shop-app")["last_exit"]["at"].as_u64().unwrap();
    let db_stopped = t.status("shop-db")["last_exit"]["at"].as_u64().unwrap();
    assert!(app_stopped <= db_stopped, "db stopped before app");

    // Up again: the same VMs, the page again.
    t.ok(&["up", "-f", &file]);
    let page = http_get(port).unwrap_or_default();
    assert!(page.contains("vmctl tiny guest: shop-db"), "{page}");

    // down --rm: the VMs and the network the stack made are gone; the home is as it was.
    t.ok(&["down", "--rm", "-f", &file]);
    assert_eq!(t.json(&["list", "--json"]), serde_json::json!([]));
    assert_eq!(t.json(&["network", "ls", "--json"]), serde_json::json!([]));
    let after: Vec<_> = t
        .snapshot()
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".lock") && !p.starts_with("networks/"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".lock"))
        .collect();
    assert_eq!(
        after
            .iter()
            .filter(|(p, _)| p.starts_with("vms/") && p != "vms/")
            .count(),
        0,
        "{after:?}"
    );
    assert!(
        before.iter().all(|b| after.contains(b)),
        "{before:?}\n{after:?}"
    );
}

#[test]
fn stack_files_are_checked_whole_before_anything_is_made() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let before = t.snapshot();
    for (text, needles) in [
        (
            "name = \"s\"\n[vms.a]\nafter = [\"b\"]\n[vms.b]\nafter = [\"a\"]\n",
            vec!["vms.a.after: a cycle: a → b → a"],
        ),
        (
            "name = \"s\"\n[vms.a]\nafter = [\"ghost\"]\nnetworks = [\"nowhere\"]\n",
            vec![
                "vms.a.after[0]: \"ghost\" is not another VM of this stack",
                "vms.a.networks[0]: unknown network \"nowhere\"",
            ],
        ),
        (
            "name = \"s\"\nvolumes = []\n[vms.a]\nmemroy = \"1G\"\n",
            vec![
                "volumes: unknown key (line 2); a stack file's keys are name, networks, vms",
                "vms.a.memroy: unknown key",
            ],
        ),
        (
            "name = \"s\"\n[networks.a]\nsubnet = \"10.89.9.0/24\"\n[networks.b]\nsubnet = \"10.89.9.128/25\"\n[vms.x]\n",
            vec!["networks.b.subnet: 10.89.9.128/25 overlaps networks.a's subnet"],
        ),
        (
            "name = \"a/b\"\n[vms.x]\n",
            vec!["name: stack name \"a/b\" contains '/'"],
        ),
        (
            "name = \"s\"\n[networks.n]\nsubnet = \"10.89.9.0\"\n[vms.x]\n",
            vec!["networks.n.subnet: \"10.89.9.0\" is not a subnet"],
        ),
    ] {
        let file = write(dir.path(), "s.toml", text);
        for cmd in ["up", "down", "ps"] {
            t.refused(&[cmd, "-f", &file], &needles);
        }
    }
    // Valid as a file, but the address is outside the subnet the new network gets: refused at
    // up, by field, before the network or the VM is made.
    let file = write(
        dir.path(),
        "s.toml",
        "name = \"s\"\n[networks.n]\n[vms.x]\nnetworks = [{ name = \"n\", address = \"10.1.2.3\" }]\n",
    );
    t.refused(
        &["up", "-f", &file],
        &["vms.x.networks[0].address: network s-n: 10.1.2.3 is not in the network's subnet 10.89.0.0/24"],
    );
    assert_eq!(t.snapshot(), before);
    // No stack file: a usage error saying so.
    let err = t.fails(&["up", "-f", "/nonexistent/vmctl-stack.toml"], 2);
    assert!(
        err.contains("No stack file /nonexistent/vmctl-stack.toml"),
        "{err}"
    );
    // Two stacks' VMs on one host port: the second is refused before it makes anything.
    let port = free_port();
    let one = write(
        dir.path(),
        "one.toml",
        &format!(
            "name = \"one\"\n[vms.web]\nmemory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\n"
        ),
    );
    let two = write(
        dir.path(),
        "two.toml",
        &format!(
            "name = \"two\"\n[vms.web]\nmemory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\n"
        ),
    );
    t.ok(&["up", "-f", &one]);
    // What a running VM's supervisor keeps changing is not the home's definitions.
    let defined = || -> Vec<(String, u64)> {
        t.snapshot()
            .into_iter()
            .filter(|(p, _)| !p.contains("/run/") && !p.ends_with(".log"))
            .collect()
    };
    let snap = defined();
    let err = t.fails(&["up", "-f", &two], 2);
    assert!(
        err.contains(&format!(
            "vms.web.ports[0]: host port {port} is already forwarded by VM one-web"
        )),
        "{err}"
    );
    assert_eq!(defined(), snap);
    // A VM named on the command line that the stack lacks: not found.
    t.fails(&["up", "-f", &one, "nosuch"], 3);
    t.ok(&["down", "--rm", "-f", &one]);
}

/// Under a real systemd: `systemd install --stack FILE --enable`, reboot, and the whole stack is
/// up, each VM after those it starts after, its network's switch a unit of its own.
#[test]
fn stack_under_systemd_comes_up_in_order_after_a_reboot() {
    let t0 = Instant::now();
    let mut c = Container::boot("stack-boot");
    let port = free_port();
    let stack = format!(
        "name = \"lab\"\n[networks.back]\n[vms.db]\nmemory = \"256M\"\ndisk = \"1G\"\nnetworks = [\"back\"]\n[vms.web]\nmemory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\nnetworks = [\"back\"]\nafter = [\"db\"]\n"
    );
    c.ok(&[
        "sh",
        "-c",
        r#"printf '%s' "$1" >/root/lab.toml"#,
        "sh",
        &stack,
    ]);
    let out = c.ok(&[
        "vmctl",
        "systemd",
        "install",
        "--stack",
        "/root/lab.toml",
        "--enable",
    ]);
    assert!(out.contains("Enabled vmctl-stack-lab.target"), "{out}");
    c.reboot();
    crate::systemd_e2e::wait_port(&c, "lab-web", port);
    for unit in ["vmctl-lab-db.service", "vmctl-lab-web.service"] {
        crate::systemd_e2e::wait_active(&c, &["systemctl"], unit);
    }
    assert_eq!(
        crate::systemd_e2e::show(&c, "vmctl-net-lab-back.service", "ActiveState"),
        "active"
    );
    let db_ready =
        crate::systemd_e2e::show_u64(&c, "vmctl-lab-db.service", "ActiveEnterTimestampMonotonic");
    let web_exec = crate::systemd_e2e::show_u64(
        &c,
        "vmctl-lab-web.service",
        "ExecMainStartTimestampMonotonic",
    );
    assert!(db_ready <= web_exec, "web started before db was up");
    // web reaches db over the network, by its name in the stack.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = crate::vm_networks::guest_fetch(port, "db:8080/");
        if got.contains("vmctl tiny guest: lab-db") {
            break;
        }
        assert!(Instant::now() < deadline, "web did not reach db: {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stopping the target stops the stack, and its network's switch with it (once no VM unit
    // needs it).
    // (`systemctl stop` returns once the target's own job is done; its VMs' stop jobs, web's
    // before db's, and then the switch's follow.)
    c.ok(&["systemctl", "stop", "vmctl-stack-lab.target"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    for unit in [
        "vmctl-lab-web.service",
        "vmctl-lab-db.service",
        "vmctl-net-lab-back.service",
    ] {
        while crate::systemd_e2e::show(&c, unit, "ActiveState") != "inactive" {
            assert!(
                Instant::now() < deadline,
                "{unit} still runs after the target stopped"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let db = c.read("/var/lib/vmctl/vms/lab-db/last-exit.json");
    assert!(db.contains("\"stopped_by\": \"acpi\""), "{db}");
    eprintln!("stack under systemd: test took {:.2?}", t0.elapsed());
}
