//! The value types of VM networks: a network's name ([`NetName`]), its IPv4 subnet in CIDR
//! notation ([`Subnet`]) and a NIC's MAC address ([`MacAddr`], derived from the VM and network
//! names so that a VM keeps it across restarts). Like `types`, each parses with `FromStr` and
//! prints back in the form it parses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A network's name: letters, digits and '-', starting with a letter or digit, at most
/// [`NetName::MAX_LEN`] characters. No '.', since guests resolve `VM.NETWORK`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetName(String);

impl NetName {
    pub const MAX_LEN: usize = 32;
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NetName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("network name must not be empty".into());
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(format!(
                "network name {s:?} is {} characters; at most {} are allowed",
                s.chars().count(),
                Self::MAX_LEN
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "network name {s:?} contains {c:?}; use letters, digits and '-'"
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "network name {s:?} must start with a letter or digit"
            ));
        }
        Ok(NetName(s.to_string()))
    }
}

impl fmt::Display for NetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 subnet, "10.89.0.0/24": a network address (no host bits set) and a prefix of
/// [`Subnet::MIN_PREFIX`] to [`Subnet::MAX_PREFIX`] bits, inside the private ranges (RFC 1918)
/// and apart from the guests' own user network (10.0.2.0/24). Its first host address is the
/// network's own (kept free for vmctl); VMs get the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// The private ranges a subnet must lie in (RFC 1918).
const PRIVATE: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// The network every guest's first NIC is on (passt or QEMU's user networking).
pub const USER_NET: Subnet = Subnet {
    network: Ipv4Addr::new(10, 0, 2, 0),
    prefix: 24,
};

impl Subnet {
    pub const MIN_PREFIX: u8 = 16;
    pub const MAX_PREFIX: u8 = 29;

    /// `network/prefix`, checked as [`FromStr`] checks it.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, String> {
        format!("{network}/{prefix}").parse()
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix))
    }

    /// The address vmctl keeps for the network itself (the first host address).
    pub fn reserved(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The addresses a VM may have, lowest first: every host address but the reserved one.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let first = u32::from(self.network) + 2;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }

    /// Why `ip` cannot be a VM's address here, if it cannot.
    pub fn check_host(&self, ip: Ipv4Addr) -> Result<(), String> {
        if !self.contains(ip) {
            return Err(format!("{ip} is not in the network's subnet {self}"));
        }
        if ip == self.network || ip == self.broadcast() {
            return Err(format!(
                "{ip} is the {} address of {self}; give a host address",
                if ip == self.network {
                    "network"
                } else {
                    "broadcast"
                }
            ));
        }
        if ip == self.reserved() {
            return Err(format!(
                "{ip} is kept for the network itself; VMs of {self} get {} and up",
                Ipv4Addr::from(u32::from(ip) + 1)
            ));
        }
        Ok(())
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let not =
            || format!("{s:?} is not a subnet; write it as ADDRESS/PREFIX, e.g. 10.89.0.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(not)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| not())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 2 {
            return Err(not());
        }
        let prefix: u8 = prefix.parse().map_err(|_| not())?;
        if !(Self::MIN_PREFIX..=Self::MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "{s:?}: the prefix must be /{} to /{}; got /{prefix}",
                Self::MIN_PREFIX,
                Self::MAX_PREFIX
            ));
        }
        let network = Ipv4Addr::from(u32::from(addr) & Self::mask(prefix));
        if network != addr {
            return Err(format!(
                "{s:?} has host bits set; the network is {network}/{prefix}"
            ));
        }
        let subnet = Subnet { network, prefix };
        if !PRIVATE.iter().any(|(net, p)| {
            Subnet {
                network: *net,
                prefix: *p,
            }
            .contains(network)
                && prefix >= *p
        }) {
            return Err(format!(
                "{s:?} is not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
            ));
        }
        if subnet.overlaps(&USER_NET) {
            return Err(format!(
                "{s:?} overlaps {USER_NET}, the network every guest's first NIC is on"
            ));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A NIC's MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The MAC of `vm`'s NIC on `network`: QEMU's prefix 52:54:00 and three bytes of a hash of
    /// both names, so it stays the same across restarts and differs between VMs (barring a
    /// 1 in 16 million coincidence, which `def::store` checks for).
    pub fn derive(vm: &str, network: &str) -> MacAddr {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("vmctl\0{vm}\0{network}").as_bytes());
        MacAddr([0x52, 0x54, 0x00, h[0], h[1], h[2]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_print_back() {
        let s: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.89.0.0/24");
        assert_eq!(s.reserved(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 0, 255));
        let hosts: Vec<_> = s.hosts().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(hosts[252], Ipv4Addr::new(10, 89, 0, 254));
        let small: Subnet = "192.168.7.8/29".parse().unwrap();
        assert_eq!(small.hosts().count(), 5);
    }

    #[test]
    fn bad_subnets_say_why() {
        let cases = [
            ("10.89.0.0", "is not a subnet"),
            ("10.89.0/24", "is not a subnet"),
            ("10.89.0.0/", "is not a subnet"),
            ("10.89.0.0/+8", "is not a subnet"),
            ("banana", "is not a subnet"),
            ("10.89.0.1/24", "host bits set; the network is 10.89.0.0/24"),
            ("10.89.0.0/8", "the prefix must be /16 to /29; got /8"),
            ("10.89.0.0/30", "got /30"),
            ("8.8.8.0/24", "not a private range"),
            ("172.32.0.0/16", "not a private range"),
            ("10.0.0.0/16", "overlaps 10.0.2.0/24"),
            ("10.0.2.0/24", "overlaps 10.0.2.0/24"),
        ];
        for (text, why) in cases {
            let e = text.parse::<Subnet>().unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn overlap_and_host_checks() {
        let a: Subnet = "10.89.0.0/16".parse().unwrap();
        let b: Subnet = "10.89.5.0/24".parse().unwrap();
        let c: Subnet = "10.90.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(b.check_host(Ipv4Addr::new(10, 89, 5, 10)).is_ok());
        for (ip, why) in [
            ("10.89.6.10", "not in the network's subnet 10.89.5.0/24"),
            ("10.89.5.0", "network address"),
            ("10.89.5.255", "broadcast address"),
            ("10.89.5.1", "kept for the network itself"),
        ] {
            let e = b.check_host(ip.parse().unwrap()).unwrap_err();
            assert!(e.contains(why), "{ip}: {e}");
        }
    }

    #[test]
    fn network_names() {
        assert!("backend".parse::<NetName>().is_ok());
        assert!("db-2".parse::<NetName>().is_ok());
        for (bad, why) in [
            ("", "must not be empty"),
            ("a/b", "contains '/'"),
            ("a.b", "contains '.'"),
            ("-x", "must start with a letter or digit"),
            (&"n".repeat(33), "at most 32"),
        ] {
            let e = bad.parse::<NetName>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn macs_are_stable_and_local_to_qemu_prefix() {
        let a = MacAddr::derive("web", "backend");
        assert_eq!(a, MacAddr::derive("web", "backend"));
        assert_ne!(a, MacAddr::derive("db", "backend"));
        assert_ne!(a, MacAddr::derive("web", "frontend"));
        assert!(a.to_string().starts_with("52:54:00:"));
        assert_eq!(a.to_string().len(), 17);
    }
}
