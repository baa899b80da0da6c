//! passt's command line for a VM, a pure function of its forwards. passt talks to QEMU over a
//! connected socket it is given ([`TAP_FD`]), stays in the foreground (the supervisor is its
//! parent and reaps it), says only what goes wrong, and networks the guest as QEMU's user
//! networking did, so guests keep their static 10.0.2.15/24, gateway 10.0.2.2 and DNS 10.0.2.3
//! (forwarded to the host's resolver). `--no-map-gw` is the point: the gateway's address is not
//! the host, so the guest reaches nothing bound to the host's loopback. Each forward is bound to
//! its own address, as QEMU's `hostfwd` did.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::types::{PortForward, Protocol};

/// The descriptor passt gets its end of the link to QEMU at (`--fd`).
pub const TAP_FD: i32 = 3;
/// The guest's address, gateway, prefix and DNS server: QEMU's user networking's.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const PREFIX: u8 = 24;
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// The passt argv (binary first) that forwards `ports` to the guest.
pub fn argv(binary: &Path, ports: &[PortForward]) -> Vec<String> {
    let mut a: Vec<String> = vec![binary.display().to_string()];
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["--foreground", "--quiet", "--stderr"]);
    push(&["--fd", &TAP_FD.to_string()]);
    push(&["--no-map-gw"]);
    push(&[
        "--address",
        &GUEST.to_string(),
        "--netmask",
        &PREFIX.to_string(),
    ]);
    push(&["--gateway", &GATEWAY.to_string()]);
    push(&["--dns-forward", &DNS.to_string()]);
    for f in ports {
        let flag = match f.proto {
            Protocol::Tcp => "--tcp-ports",
            Protocol::Udp => "--udp-ports",
        };
        push(&[flag, &format!("{}/{}:{}", f.addr, f.host, f.guest)]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_keep_their_address_and_protocol() {
        let ports: Vec<PortForward> = ["8080:80", "0.0.0.0:2222:22", "5353:53/udp"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let a = argv(Path::new("/usr/bin/passt"), &ports).join(" ");
        assert_eq!(
            a,
            "/usr/bin/passt --foreground --quiet --stderr --fd 3 --no-map-gw \
             --address 10.0.2.15 --netmask 24 --gateway 10.0.2.2 --dns-forward 10.0.2.3 \
             --tcp-ports 127.0.0.1/8080:80 --tcp-ports 0.0.0.0/2222:22 --udp-ports 127.0.0.1/5353:53"
        );
    }

    #[test]
    fn no_forwards_no_port_options() {
        let a = argv(Path::new("passt"), &[]);
        assert!(!a.iter().any(|s| s.ends_with("-ports")), "{a:?}");
        assert!(a.contains(&"--no-map-gw".to_string()));
    }
}
