//! Which forwards are bound: the listening TCP and bound UDP sockets of `/proc/net/{tcp,udp}`
//! (and their IPv6 files, for the any-address and IPv4-mapped ones), with the uid that owns
//! each. passt binds its forwards before it serves the guest, so a forward bound by passt's
//! user is a forward passt serves.

use std::net::Ipv4Addr;

use crate::types::{PortForward, Protocol};

/// One bound socket: its local address and port, and the uid of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub uid: u32,
}

/// `st` of a listening TCP socket, and of a bound, unconnected UDP one.
const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// The sockets a `/proc/net/tcp`-style table lists in `state` (IPv6 tables too: `::` reads as
/// 0.0.0.0 and `::ffff:a.b.c.d` as a.b.c.d; other IPv6 addresses are left out).
pub fn parse(table: &str, state: &str) -> Vec<Bound> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&state) {
                return None;
            }
            let (addr, port) = cols.get(1)?.split_once(':')?;
            Some(Bound {
                addr: address(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                uid: cols.get(7)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as the kernel prints it: the bytes of each 32-bit word in this machine's order.
fn address(hex: &str) -> Option<Ipv4Addr> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => word(hex).map(Ipv4Addr::from),
        32 => {
            let words: Vec<[u8; 4]> = (0..4)
                .map(|i| word(&hex[i * 8..i * 8 + 8]))
                .collect::<Option<_>>()?;
            let head: Vec<u8> = words[..3].concat();
            if head.iter().all(|b| *b == 0) && words[3] == [0; 4] {
                Some(Ipv4Addr::UNSPECIFIED)
            } else if head[..10].iter().all(|b| *b == 0) && head[10..] == [0xff, 0xff] {
                Some(Ipv4Addr::from(words[3]))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The sockets bound now for `proto`, from this network namespace's tables.
pub fn bound_now(proto: Protocol) -> Vec<Bound> {
    let (files, state) = match proto {
        Protocol::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], TCP_LISTEN),
        Protocol::Udp => (["/proc/net/udp", "/proc/net/udp6"], UDP_UNCONNECTED),
    };
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| parse(&t, state))
        .collect()
}

/// Whether `f` is bound by a socket of `uid`.
pub fn is_bound_by(f: &PortForward, uid: u32, bound: &[Bound]) -> bool {
    bound
        .iter()
        .any(|b| b.port == f.host && b.addr == f.addr && b.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   999        0 4244 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:0017 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";

    #[test]
    fn listening_sockets_with_their_owner() {
        let b = parse(TCP, TCP_LISTEN);
        assert_eq!(
            b,
            [
                Bound {
                    addr: Ipv4Addr::LOCALHOST,
                    port: 8080,
                    uid: 999
                },
                Bound {
                    addr: Ipv4Addr::UNSPECIFIED,
                    port: 2222,
                    uid: 0
                },
            ]
        );
        let f: PortForward = "8080:80".parse().unwrap();
        assert!(is_bound_by(&f, 999, &b));
        assert!(!is_bound_by(&f, 0, &b));
        assert!(!is_bound_by(&"0.0.0.0:8080:80".parse().unwrap(), 999, &b));
    }

    #[test]
    fn ipv6_any_and_mapped_addresses_read_as_ipv4() {
        let b = parse(TCP6, TCP_LISTEN);
        assert_eq!(
            b,
            [
                Bound {
                    addr: Ipv4Addr::UNSPECIFIED,
                    port: 22,
                    uid: 0
                },
                Bound {
                    addr: Ipv4Addr::LOCALHOST,
                    port: 8081,
                    uid: 1000
                },
            ]
        );
    }

    #[test]
    fn this_hosts_tables_read() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let uid = nix::unistd::geteuid().as_raw();
        let f: PortForward = format!("{port}:80").parse().unwrap();
        assert!(is_bound_by(&f, uid, &bound_now(Protocol::Tcp)));
    }
}
