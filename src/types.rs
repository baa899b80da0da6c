//! Value types shared across the domains: the newtypes the command line and the TOML
//! definitions share (sizes, durations, port forwards, VM names, login names, apps, guest
//! architectures, accelerator choices), the accelerator a VM runs on, and which systemd manager
//! runs a VM's unit.
//!
//! Each parses with `FromStr` (so clap and serde use the same rules) and prints back in the form it
//! parses, so a definition written by vmctl reads back to the same value.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes written as `512M`, `2G`, `10G`, `1T` (binary units; a bare number is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;
    pub const TIB: u64 = 1 << 40;

    pub fn bytes(self) -> u64 {
        self.0
    }
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "{s:?} is not a size; use a number with an optional unit K, M, G or T (e.g. 512M, 2G)"
            ));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is too large to be a size"))?;
        let mult = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => Self::KIB,
            "M" | "MB" | "MIB" => Self::MIB,
            "G" | "GB" | "GIB" => Self::GIB,
            "T" | "TB" | "TIB" => Self::TIB,
            other => {
                return Err(format!(
                    "{s:?} has an unknown unit {other:?}; use K, M, G or T (e.g. 512M, 2G)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large to be a size"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that represents the value exactly: `2G`, `1536M`, `1T`, `123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, m) in [
            ("T", Self::TIB),
            ("G", Self::GIB),
            ("M", Self::MIB),
            ("K", Self::KIB),
        ] {
            if n >= m && n % m == 0 {
                return write!(f, "{}{unit}", n / m);
            }
        }
        write!(f, "{n}")
    }
}

/// A duration written as `500ms`, `10s`, `2m` or `1h` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let hint = "use a whole number with ms, s, m or h (e.g. \"10s\", \"2m\")";
        let n: u64 = match num.parse() {
            Ok(n) if !num.is_empty() => n,
            _ => return Err(format!("{s:?} is not a duration; {hint}")),
        };
        let millis = match unit.trim() {
            "ms" => Some(n),
            "" | "s" | "sec" => n.checked_mul(1000),
            "m" | "min" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            other => return Err(format!("{s:?} has an unknown unit {other:?}; {hint}")),
        };
        millis
            .map(|ms| Span(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{s:?} is too long to be a duration"))
    }
}

impl fmt::Display for Span {
    /// The largest unit that represents the value exactly: `2m`, `90s`, `1h`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        match s {
            0 => write!(f, "0s"),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// Human-readable approximate size for tables (`1.5 GiB`).
/// `YYYY-MM-DDTHH{sep}MM{sep}SS` of a unix time, UTC.
pub fn format_utc(unix: i64, sep: char) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}{sep}{:02}{sep}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A user-mode networking port forward: `[ADDR:]HOST:GUEST[/tcp|/udp]`.
/// The host side binds 127.0.0.1 unless an address is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortForward {
    pub addr: Ipv4Addr,
    pub host: u16,
    pub guest: u16,
    pub proto: Protocol,
}

fn parse_port(s: &str, which: &str, whole: &str) -> Result<u16, String> {
    let n: u64 = s.parse().map_err(|_| {
        format!(
            "{which} port {s:?} in {whole:?} is not a number; expected [ADDR:]HOST:GUEST[/tcp|/udp]"
        )
    })?;
    if n == 0 || n > 65535 {
        return Err(format!(
            "{which} port must be 1-65535; got {n} in {whole:?}"
        ));
    }
    Ok(n as u16)
}

impl FromStr for PortForward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (spec, proto) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some((_, other)) => {
                return Err(format!(
                    "unknown protocol {other:?} in {s:?}; use /tcp or /udp"
                ));
            }
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (addr, host, guest) = match parts.as_slice() {
            [host, guest] => (Ipv4Addr::LOCALHOST, *host, *guest),
            [addr, host, guest] => {
                let addr: Ipv4Addr = addr
                    .parse()
                    .map_err(|_| format!("{addr:?} in {s:?} is not an IPv4 address"))?;
                (addr, *host, *guest)
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a port forward; expected [ADDR:]HOST:GUEST[/tcp|/udp], e.g. 8080:80"
                ));
            }
        };
        Ok(PortForward {
            addr,
            host: parse_port(host, "host", s)?,
            guest: parse_port(guest, "guest", s)?,
            proto,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.addr != Ipv4Addr::LOCALHOST {
            write!(f, "{}:", self.addr)?;
        }
        write!(f, "{}:{}", self.host, self.guest)?;
        if self.proto == Protocol::Udp {
            write!(f, "/udp")?;
        }
        Ok(())
    }
}

impl serde::Serialize for PortForward {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A VM name: 1-64 characters of ASCII letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit. That keeps it safe as a directory name, a systemd unit instance and a hostname.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmName(String);

impl VmName {
    pub const MAX_LEN: usize = 64;
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VmName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("VM name must not be empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!(
                "VM name {s:?} is {} characters; at most {} are allowed",
                s.len(),
                Self::MAX_LEN
            ));
        }
        if s.contains("..") || s.contains('/') {
            return Err(format!("VM name {s:?} must not contain '/' or '..'"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "VM name {s:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!("VM name {s:?} must start with a letter or digit"));
        }
        Ok(VmName(s.to_string()))
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A guest login name: a POSIX user name (lower-case letters, digits, '_' and '-', starting with
/// a letter or '_', at most 32 characters), and not root (root cannot log in over SSH).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginName(String);

impl FromStr for LoginName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok_start = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
        let ok_rest = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if s.is_empty() || s.len() > 32 || !ok_start || !ok_rest {
            return Err(format!(
                "{s:?} is not a valid user name; use up to 32 lower-case letters, digits, '_' and '-', starting with a letter"
            ));
        }
        if s == "root" {
            return Err(
                "\"root\" cannot be the login user: root login over SSH is disabled; pick another name"
                    .into(),
            );
        }
        Ok(LoginName(s.to_string()))
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A web app an image can run in the guest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum App {
    /// gunicorn "Hello, World" on guest port 8080.
    GunicornHello,
    /// The same app on a unix socket behind nginx on guest port 8080.
    NginxGunicorn,
}

impl App {
    pub const ALL: [App; 2] = [App::GunicornHello, App::NginxGunicorn];
    pub fn as_str(self) -> &'static str {
        match self {
            App::GunicornHello => "gunicorn-hello",
            App::NginxGunicorn => "nginx-gunicorn",
        }
    }
}

impl FromStr for App {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        App::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown app {s:?}; known apps: {}",
                    App::ALL.map(|a| a.as_str()).join(", ")
                )
            })
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Guest CPU architecture.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }
    /// The guest kernel's serial console device name.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!("unknown architecture {s:?}; use x86_64 or aarch64")),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for; the accelerator actually used is decided in `accel`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!("unknown accelerator {s:?}; use auto, kvm or tcg")),
        }
    }
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

/// The accelerator a VM runs on, as decided by `host::accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Whose service manager runs the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// PID 1: starts at boot, runs as root.
    System,
    /// The user's manager (`systemctl --user`): starts at login, or at boot with linger.
    User,
}

impl Scope {
    pub fn user(user: bool) -> Scope {
        if user { Scope::User } else { Scope::System }
    }

    /// `systemctl` arguments that select this manager.
    pub fn flag(self) -> &'static [&'static str] {
        match self {
            Scope::System => &[],
            Scope::User => &["--user"],
        }
    }

    /// `systemctl`, or `systemctl --user`, for messages.
    pub fn systemctl(self) -> &'static str {
        match self {
            Scope::System => "systemctl",
            Scope::User => "systemctl --user",
        }
    }
}

/// A unit that runs a VM's supervisor (recorded in its `state.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceUnit {
    pub name: String,
    pub scope: Scope,
}

/// `2.0 GiB total, 1.5 GiB available`.
pub fn memory_line(total: u64, avail: u64) -> String {
    format!(
        "{} total, {} available",
        human_bytes(total),
        human_bytes(avail)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("512M".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("2G".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert_eq!("10g".parse::<ByteSize>().unwrap().0, 10 << 30);
        assert_eq!("1T".parse::<ByteSize>().unwrap().0, 1 << 40);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
    }

    #[test]
    fn bad_sizes_name_the_value() {
        let e = "2X".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("\"2X\"") && e.contains("unknown unit"), "{e}");
        assert!("G".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("99999999999T".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_print_as_they_parse() {
        for s in ["512M", "2G", "1T", "1536M", "123", "4K"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn spans_parse_and_print_back() {
        assert_eq!("10s".parse::<Span>().unwrap().0, Duration::from_secs(10));
        assert_eq!("10".parse::<Span>().unwrap().0, Duration::from_secs(10));
        assert_eq!("2m".parse::<Span>().unwrap().0, Duration::from_secs(120));
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        for s in ["500ms", "90s", "2m", "1h", "0s", "1500ms"] {
            assert_eq!(s.parse::<Span>().unwrap().to_string(), s);
        }
        let e = "10x".parse::<Span>().unwrap_err();
        assert!(e.contains("\"10x\"") && e.contains("unknown unit"), "{e}");
        let e = "1.5s".parse::<Span>().unwrap_err();
        assert!(e.contains("\"1.5s\""), "{e}");
        assert!("s".parse::<Span>().is_err());
        assert!("".parse::<Span>().is_err());
        assert!("99999999999999999h".parse::<Span>().is_err());
    }

    #[test]
    fn port_forwards_parse() {
        let p: PortForward = "5080:8080".parse().unwrap();
        assert_eq!(
            p,
            PortForward {
                addr: Ipv4Addr::LOCALHOST,
                host: 5080,
                guest: 8080,
                proto: Protocol::Tcp
            }
        );
        let p: PortForward = "0.0.0.0:5022:22/tcp".parse().unwrap();
        assert_eq!(p.addr, Ipv4Addr::UNSPECIFIED);
        let p: PortForward = "5353:53/udp".parse().unwrap();
        assert_eq!(p.proto, Protocol::Udp);
        assert_eq!(p.to_string(), "5353:53/udp");
    }

    #[test]
    fn bad_port_forwards_name_the_value() {
        let e = "0:80".parse::<PortForward>().unwrap_err();
        assert!(e.contains("host port must be 1-65535; got 0"), "{e}");
        let e = "70000:80".parse::<PortForward>().unwrap_err();
        assert!(e.contains("got 70000"), "{e}");
        let e = "80:70000".parse::<PortForward>().unwrap_err();
        assert!(e.contains("guest port"), "{e}");
        assert!("80".parse::<PortForward>().is_err());
        assert!("80:80/sctp".parse::<PortForward>().is_err());
        assert!("foo:80:80".parse::<PortForward>().is_err());
    }

    #[test]
    fn vm_names() {
        for ok in ["web", "db-1", "a.b_c", "9lives"] {
            assert!(ok.parse::<VmName>().is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", "a..b", "has space", "-x", &"x".repeat(65)] {
            assert!(bad.parse::<VmName>().is_err(), "{bad}");
        }
        assert!("x".repeat(64).parse::<VmName>().is_ok());
    }

    /// Every parser of user input: a value or an error naming the input, never a panic; what
    /// parses prints back to text that parses to the same value. The generators here are shared
    /// by the other parsers' property tests.
    pub(crate) mod proptests {
        use super::*;
        use proptest::prelude::*;

        /// `cases` cases; a failure is not written to a file (it becomes a plain test).
        pub(crate) fn config(cases: u32) -> ProptestConfig {
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Up to `max` characters from `alphabet` (much cheaper than a regex strategy).
        pub(crate) fn text(alphabet: &str, max: usize) -> BoxedStrategy<String> {
            let chars: Vec<char> = alphabet.chars().collect();
            prop::collection::vec(prop::sample::select(chars), 0..=max)
                .prop_map(String::from_iter)
                .boxed()
        }

        /// Up to `max` arbitrary characters.
        pub(crate) fn any_text(max: usize) -> BoxedStrategy<String> {
            prop::collection::vec(any::<char>(), 0..=max)
                .prop_map(String::from_iter)
                .boxed()
        }

        /// Text near a syntax (`near`) three times in four, else anything.
        pub(crate) fn or_any(near: BoxedStrategy<String>) -> BoxedStrategy<String> {
            prop_oneof![3 => near, 1 => any_text(24)].boxed()
        }

        /// One of `words`.
        pub(crate) fn one_of(words: &[&'static str]) -> BoxedStrategy<String> {
            prop::sample::select(words.to_vec())
                .prop_map(String::from)
                .boxed()
        }

        /// A number as a user might write it: digits, sometimes signed, sometimes huge.
        pub(crate) fn number() -> BoxedStrategy<String> {
            let digits = prop_oneof![3 => text("0123456789", 5), 1 => text("0123456789", 22)];
            (one_of(&["", "", "", "+", "-", " "]), digits)
                .prop_map(|(sign, digits)| format!("{sign}{digits}"))
                .boxed()
        }

        fn quantity(units: &[&'static str]) -> BoxedStrategy<String> {
            or_any(
                (
                    number(),
                    one_of(&["", "", " "]),
                    one_of(units),
                    one_of(&["", "", " "]),
                )
                    .prop_map(|(n, a, u, b)| format!("{n}{a}{u}{b}"))
                    .boxed(),
            )
        }

        fn port_forward_text() -> BoxedStrategy<String> {
            let addr = prop_oneof![
                4 => Just(String::new()),
                1 => one_of(&["127.0.0.1:", "0.0.0.0:", "1.2.3:", "256.0.0.1:", "a:", ":"]),
                1 => any::<[u8; 4]>().prop_map(|a| format!("{}:", Ipv4Addr::from(a))),
            ];
            let port = prop_oneof![
                1 => number(),
                3 => (0u32..70000).prop_map(|n| n.to_string()),
            ];
            let colon = prop_oneof![6 => one_of(&[":"]), 1 => one_of(&["::", ""])];
            let proto = prop_oneof![
                4 => Just(String::new()),
                2 => one_of(&["/tcp", "/udp"]),
                1 => one_of(&["/sctp", "/", "/tcp/udp", "/TCP"]),
            ];
            let near = prop_oneof![
                4 => (addr, port.clone(), colon, port, proto)
                    .prop_map(|(a, h, c, g, p)| format!("{a}{h}{c}{g}{p}")),
                1 => text("0123456789:./tcpud+ ", 20),
            ];
            or_any(near.boxed())
        }

        proptest! {
            #![proptest_config(config(5000))]

            #[test]
            fn byte_sizes(s in quantity(&["", "k", "K", "m", "M", "g", "G", "t", "T", "b", "B", "KB", "MiB", "gib", "TIB", "P", "x", "M M", "kb "])) {
                match s.parse::<ByteSize>() {
                    Ok(v) => prop_assert_eq!(v.to_string().parse::<ByteSize>(), Ok(v)),
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
            }

            #[test]
            fn byte_size_display_round_trips(n in any::<u64>(), shift in 0u32..41) {
                for v in [n, n >> shift << shift] {
                    prop_assert_eq!(ByteSize(v).to_string().parse::<ByteSize>(), Ok(ByteSize(v)));
                }
            }

            #[test]
            fn spans(s in quantity(&["", "ms", "s", "sec", "m", "min", "h", "d", "us", "S", "MS", "s s"])) {
                match s.parse::<Span>() {
                    Ok(v) => prop_assert_eq!(v.to_string().parse::<Span>(), Ok(v)),
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
            }

            #[test]
            fn span_display_round_trips(ms in any::<u64>(), unit in prop::sample::select(vec![1u64, 1000, 60_000, 3_600_000])) {
                for ms in [ms, ms / unit * unit] {
                    let v = Span(Duration::from_millis(ms));
                    prop_assert_eq!(v.to_string().parse::<Span>(), Ok(v));
                }
            }

            #[test]
            fn port_forwards(s in port_forward_text()) {
                match s.parse::<PortForward>() {
                    Ok(v) => {
                        prop_assert!(v.host > 0 && v.guest > 0);
                        prop_assert_eq!(v.to_string().parse::<PortForward>(), Ok(v));
                    }
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
            }

            #[test]
            fn port_forward_display_round_trips(
                addr in any::<[u8; 4]>(),
                host in 1u16..,
                guest in 1u16..,
                udp in any::<bool>(),
            ) {
                let v = PortForward {
                    addr: Ipv4Addr::from(addr),
                    host,
                    guest,
                    proto: if udp { Protocol::Udp } else { Protocol::Tcp },
                };
                prop_assert_eq!(v.to_string().parse::<PortForward>(), Ok(v));
            }

            #[test]
            fn vm_names(s in or_any(prop_oneof![text("abz09._-", 8), text("aZ09._/ -é", 70)].boxed())) {
                let rule = !s.is_empty()
                    && s.len() <= VmName::MAX_LEN
                    && !s.contains("..")
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && s.starts_with(|c: char| c.is_ascii_alphanumeric());
                match s.parse::<VmName>() {
                    Ok(v) => {
                        prop_assert!(rule, "{:?} accepted", s);
                        prop_assert_eq!(v.to_string(), s.clone());
                        prop_assert_eq!(v.to_string().parse::<VmName>(), Ok(v));
                    }
                    Err(e) => {
                        prop_assert!(!rule, "{:?} refused: {}", s, e);
                        prop_assert!(e.starts_with("VM name"), "{}", e);
                    }
                }
            }

            #[test]
            fn login_names(s in or_any(prop_oneof![text("az09_-", 8), text("az09_-A. é", 34), one_of(&["root", "_", "-a"])].boxed())) {
                let rule = !s.is_empty()
                    && s.len() <= 32
                    && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
                    && s != "root";
                match s.parse::<LoginName>() {
                    Ok(v) => {
                        prop_assert!(rule, "{:?} accepted", s);
                        prop_assert_eq!(v.to_string().parse::<LoginName>(), Ok(v));
                    }
                    Err(e) => {
                        prop_assert!(!rule, "{:?} refused: {}", s, e);
                        prop_assert!(e.contains(&format!("{s:?}")), "{}", e);
                    }
                }
            }

            #[test]
            fn apps_arches_and_accelerators(s in or_any(prop_oneof![
                one_of(&["gunicorn-hello", "nginx-gunicorn", "x86_64", "amd64", "aarch64", "arm64", "auto", "kvm", "tcg", "KVM", "x86-64", " tcg"]),
                text("abcdefghiklmnorstuvxyz0123456789_-", 16),
            ].boxed())) {
                match s.parse::<App>() {
                    Ok(a) => prop_assert_eq!(a.as_str(), s.as_str()),
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
                match s.parse::<Arch>() {
                    Ok(a) => prop_assert!(
                        ["x86_64", "amd64", "aarch64", "arm64"].contains(&s.as_str())
                            && a.to_string().parse::<Arch>() == Ok(a)
                    ),
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
                match s.parse::<AccelChoice>() {
                    Ok(a) => prop_assert_eq!(a.to_string(), s.clone()),
                    Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{}", e),
                }
            }
        }

        #[test]
        fn every_enum_value_prints_as_it_parses() {
            for a in App::ALL {
                assert_eq!(a.to_string().parse::<App>(), Ok(a));
            }
            for a in [Arch::X86_64, Arch::Aarch64] {
                assert_eq!(a.to_string().parse::<Arch>(), Ok(a));
            }
            for a in [AccelChoice::Auto, AccelChoice::Kvm, AccelChoice::Tcg] {
                assert_eq!(a.to_string().parse::<AccelChoice>(), Ok(a));
            }
        }
    }
}
