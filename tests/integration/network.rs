//! The guest's network, tried from inside a real Debian guest (TCG, commands over `vmctl ssh`):
//! by default (passt) the guest resolves names through 10.0.2.3 and opens services of the
//! host's network, but nothing bound to the host's loopback, neither through its gateway
//! 10.0.2.2 nor through the host's own address; with `host_access = true` (QEMU's user
//! networking) the host's loopback answers as 10.0.2.2. The forwarded SSH port works in both.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use crate::harness::*;

/// A host service on `addr` that greets every connection with `greeting`; its port.
fn serve(addr: Ipv4Addr, greeting: &'static str) -> u16 {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(greeting.as_bytes());
        }
    });
    port
}

/// This host's address on the way to other hosts (its default route), if it has one.
fn host_address() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() => Some(a),
        _ => None,
    }
}

/// What the guest reads from `addr:port` within 5 s (empty when it cannot connect).
fn guest_reads(t: &TestHome, name: &str, addr: Ipv4Addr, port: u16) -> String {
    let out = t.ssh(
        name,
        &format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port} && head -c 64 <&3' 2>&1 || true"
        ),
    );
    assert!(
        out.status.success(),
        "vmctl ssh {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_host_access(t: &TestHome, name: &str, on: bool) {
    let def = t.home().join("vms").join(name).join("vm.toml");
    let text = std::fs::read_to_string(&def).unwrap();
    let line = |v: bool| format!("host_access = {v}\n");
    assert!(text.contains(&line(!on)), "{text}");
    std::fs::write(&def, text.replace(&line(!on), &line(on))).unwrap();
}

#[test]
fn a_default_guest_reaches_out_but_not_the_hosts_loopback_unless_host_access() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let private = serve(Ipv4Addr::LOCALHOST, "host-private\n");
    let public = serve(Ipv4Addr::UNSPECIFIED, "host-public\n");
    let ssh_port = free_port();
    t.ok(&[
        "create",
        "net",
        "--image",
        "debian-12",
        "--mem",
        "1G",
        "--port",
        &format!("{ssh_port}:22"),
    ]);
    t.ok(&["start", "net", "--wait", "--timeout", "400"]);

    // Out: DNS through 10.0.2.3, and TCP to a service of the host's network.
    let dns = t.ssh("net", "getent hosts deb.debian.org");
    assert!(
        dns.status.success() && !dns.stdout.is_empty(),
        "the guest resolves names: {}",
        String::from_utf8_lossy(&dns.stderr)
    );
    let here = host_address();
    if let Some(addr) = here {
        assert_eq!(guest_reads(&t, "net", addr, public), "host-public\n");
    }
    // Not in: the host's loopback, by the gateway or by the host's address.
    let through_gateway = guest_reads(&t, "net", Ipv4Addr::new(10, 0, 2, 2), private);
    assert!(
        !through_gateway.contains("host-private"),
        "a default guest opened the host's 127.0.0.1:{private} as 10.0.2.2: {through_gateway:?}"
    );
    if let Some(addr) = here {
        let direct = guest_reads(&t, "net", addr, private);
        assert!(!direct.contains("host-private"), "{direct:?}");
    }
    t.ok(&["stop", "net"]);

    // host_access = true: the host's loopback answers as 10.0.2.2.
    set_host_access(&t, "net", true);
    t.ok(&["start", "net", "--wait", "--timeout", "400"]);
    assert_eq!(
        guest_reads(&t, "net", Ipv4Addr::new(10, 0, 2, 2), private),
        "host-private\n",
        "with host_access the guest reaches the host's loopback"
    );
    t.ok(&["stop", "net"]);
}
