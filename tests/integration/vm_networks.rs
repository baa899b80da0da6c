//! Private networks between VMs (`vmctl network`, `networks = [...]`), with real QEMU and tiny
//! guests: VMs of one network reach each other by address and by name, a VM of another
//! network does not reach them, a restarted VM keeps its address and is reached again, the
//! switch is restarted when it dies and ends with its last VM; and the bad input around them.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// What the guest behind `port` gets when it fetches `http://TARGET` itself (the tiny guest's
/// fetch CGI), or why it got nothing.
pub fn guest_fetch(port: u16, target: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(3),
    ) else {
        return "no connection to the guest".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.write_all(format!("GET /cgi-bin/fetch?{target} HTTP/1.0\r\n\r\n").as_bytes());
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

/// Fetch until the answer holds `needle` (bounded: the guest may still be setting up).
fn fetch_until(port: u16, target: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let got = guest_fetch(port, target);
        if got.contains(needle) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the guest on port {port} did not get {needle:?} from {target} within {timeout:?}; last: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tiny_on(t: &TestHome, name: &str, net: &str, port: Option<u16>) {
    let mut args = vec![
        "create".to_string(),
        name.into(),
        "--mem".into(),
        "256M".into(),
        "--disk".into(),
        "1G".into(),
        "--network".into(),
        net.into(),
    ];
    if let Some(p) = port {
        args.push("--port".into());
        args.push(format!("{p}:8080"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.ok(&args);
}

fn address(t: &TestHome, vm: &str) -> String {
    t.status(vm)["networks"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{vm} has no address: {}", t.status(vm)))
        .to_string()
}

fn network(t: &TestHome, name: &str) -> Value {
    t.json(&["network", "ls", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no network {name}"))
}

#[test]
fn vms_of_a_network_reach_each_other_by_name_and_others_do_not() {
    let t = TestHome::new();
    t.ok(&["network", "create", "backend"]);
    t.ok(&["network", "create", "other", "--subnet", "10.89.77.0/24"]);
    let (pa, pc) = (free_port(), free_port());
    tiny_on(&t, "app", "backend", Some(pa));
    tiny_on(&t, "db", "backend", None);
    tiny_on(&t, "lone", "other", Some(pc));
    // Addresses are given at create, in the network's subnet, and kept in the definition.
    let db_ip = address(&t, "db");
    assert_eq!(address(&t, "app"), "10.89.0.2");
    assert_eq!(db_ip, "10.89.0.3");
    assert_eq!(address(&t, "lone"), "10.89.77.2");
    for vm in ["db", "app", "lone"] {
        t.ok(&["start", vm, "--wait"]);
    }
    let net = network(&t, "backend");
    assert_eq!(net["active"], true, "{net}");
    assert_eq!(net["vms"].as_array().unwrap().len(), 2, "{net}");
    // By address, by name and by NAME.NETWORK.
    for target in [
        format!("{db_ip}:8080/"),
        "db:8080/".into(),
        "db.backend:8080/".into(),
    ] {
        fetch_until(pa, &target, "vmctl tiny guest: db", Duration::from_secs(30));
    }
    // The VM of the other network reaches neither the address nor the name.
    let got = guest_fetch(pc, &format!("{db_ip}:8080/"));
    assert!(!got.contains("vmctl tiny guest"), "{got}");
    assert!(guest_fetch(pc, "db:8080/").contains("bad address 'db'"));

    // A restarted VM keeps its address, and its peers reach it again.
    t.ok(&["stop", "db"]);
    t.ok(&["start", "db", "--wait"]);
    assert_eq!(address(&t, "db"), db_ip);
    fetch_until(
        pa,
        "db:8080/",
        "vmctl tiny guest: db",
        Duration::from_secs(30),
    );

    // The switch killed: the VMs attach to a new one, and reach each other again.
    let pid_file = t.home().join("networks/backend/run/switch.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid as i64));
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    fetch_until(
        pa,
        "db:8080/",
        "vmctl tiny guest: db",
        Duration::from_secs(30),
    );
    let new_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, pid);

    // Removing a network that VMs join is refused, naming them.
    let err = t.fails(&["network", "rm", "backend"], 7);
    assert!(err.contains("used by VMs app, db"), "{err}");

    // The switch ends with its network's last VM.
    for vm in ["app", "db", "lone"] {
        t.ok(&["stop", vm]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while network(&t, "backend")["active"] == true {
        assert!(Instant::now() < deadline, "the switch outlived its VMs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_alive(new_pid as i64));
}

#[test]
fn bad_network_input_is_refused_by_field() {
    let t = TestHome::new();
    t.ok(&["network", "create", "backend", "--subnet", "10.89.5.0/24"]);
    t.ok(&[
        "create",
        "a",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--network",
        "backend",
    ]);
    // Unknown network: not found.
    let before = t.snapshot();
    let err = t.fails(&["create", "b", "--network", "nowhere"], 3);
    assert!(err.contains("network \"nowhere\" not found"), "{err}");
    assert_eq!(t.snapshot(), before);
    for (args, needles) in [
        (
            vec!["network", "create", "x", "--subnet", "10.89.5.128/25"],
            vec!["--subnet 10.89.5.128/25 overlaps network backend (10.89.5.0/24)"],
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.89.5.0"],
            vec!["is not a subnet"],
        ),
        (vec!["network", "create", "a/b"], vec!["contains '/'"]),
        (
            vec!["network", "create", "backend"],
            vec!["Network backend already exists"],
        ),
        (
            vec!["create", "b", "--network", "backend=10.89.6.9"],
            vec![
                "networks[0].address: network backend: 10.89.6.9 is not in the network's subnet 10.89.5.0/24",
            ],
        ),
        (
            vec!["create", "b", "--network", "backend=10.89.5.2"],
            vec!["networks[0].address: 10.89.5.2 is VM a's address on network backend"],
        ),
        (
            vec!["create", "b", "--network", "backend=10.89.5.1"],
            vec!["kept for the network itself"],
        ),
        (
            vec!["create", "b", "--network", "backend=banana"],
            vec!["\"banana\" is not an IPv4 address"],
        ),
        (
            vec![
                "create",
                "b",
                "--network",
                "backend",
                "--network",
                "backend",
            ],
            vec!["networks[1]: network backend is listed twice"],
        ),
    ] {
        t.refused(&args, &needles);
    }
    let err = t.fails(&["network", "rm", "backend"], 7);
    assert!(err.contains("used by VM a"), "{err}");
    t.fails(&["network", "rm", "nowhere"], 3);
    // In a definition file too, by field and value.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.toml");
    std::fs::write(
        &f,
        "networks = [{ name = \"backend\", adress = \"10.89.5.9\" }, 7, { address = \"1.2.3.4\" }]\n",
    )
    .unwrap();
    t.refused(
        &["create", "b", "--from", f.to_str().unwrap()],
        &[
            "networks[0].adress: unknown key (line 1); a network entry's keys are name, address",
            "networks[1]: must be a network name such as \"backend\"",
            "networks[2]: needs a name",
        ],
    );
}
