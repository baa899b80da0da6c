//! The service side of systemd's protocols, without libsystemd: `sd_notify` datagrams to
//! `$NOTIFY_SOCKET` (`READY=1`, `STATUS=…`, `STOPPING=1`; a path, or an abstract socket written
//! with a leading `@`), and whether stderr is the journal (`$JOURNAL_STREAM` names stderr's
//! device and inode), which makes `vmctl run` log without timestamps and with syslog priorities.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// One assignment of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// Startup is finished: the guest is up.
    Ready,
    /// The service is stopping (the graceful stop began).
    Stopping,
    /// Free-form status text for `systemctl status` (one line).
    Status(&'a str),
}

/// The datagram for `fields`: one `KEY=VALUE` line each. Status text is kept on one line.
pub fn message(fields: &[Field]) -> String {
    let mut out = String::new();
    for f in fields {
        match f {
            Field::Ready => out.push_str("READY=1\n"),
            Field::Stopping => out.push_str("STOPPING=1\n"),
            Field::Status(s) => {
                out.push_str("STATUS=");
                out.extend(s.chars().map(|c| if c.is_control() { ' ' } else { c }));
                out.push('\n');
            }
        }
    }
    out
}

/// `$NOTIFY_SOCKET` as a socket address: an absolute path, or `@name` for an abstract socket.
pub fn socket_addr(value: &str) -> std::io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None if value.starts_with('/') => SocketAddr::from_pathname(value),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unsupported NOTIFY_SOCKET {value:?}"),
        )),
    }
}

/// Sends notifications to the service manager that started us.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset (not run by systemd as `Type=notify`).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        match socket_addr(&value).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok((sock, addr)) => Some(Notifier { sock, addr }),
            Err(e) => {
                tracing::warn!("cannot notify systemd: {e}");
                None
            }
        }
    }

    /// Send one notification; failures are logged, not fatal (the VM runs on regardless).
    pub fn send(&self, fields: &[Field]) {
        let msg = message(fields);
        tracing::debug!(notify = %msg.trim_end().replace('\n', " "), "sd_notify");
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }
}

/// Send through an optional notifier (not run by systemd: nothing to do).
pub fn notify(n: Option<&Notifier>, fields: &[Field]) {
    if let Some(n) = n {
        n.send(fields);
    }
}

/// Is stderr connected to the journal? `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream
/// systemd gave us; it only counts while stderr is still that stream (not redirected since).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)] // dev_t and ino_t are not u64 on every target
    let (dev, ino) = (st.st_dev as u64, st.st_ino as u64);
    journal_stream_matches(&v, dev, ino)
}

fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(
            message(&[Field::Ready, Field::Status("guest up\nafter 3 s")]),
            "READY=1\nSTATUS=guest up after 3 s\n"
        );
        assert_eq!(message(&[Field::Stopping]), "STOPPING=1\n");
    }

    #[test]
    fn socket_addresses() {
        let a = socket_addr("@vmctl/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"vmctl/notify"[..]));
        let p = socket_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(socket_addr("vsock:2:1234").is_err());
    }

    #[test]
    fn notifications_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: socket_addr(path.to_str().unwrap()).unwrap(),
        };
        n.send(&[Field::Ready, Field::Status("ready")]);
        n.send(&[Field::Stopping]);
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ready\n");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\n");
    }

    #[test]
    fn abstract_sockets_work_too() {
        let name = format!("vmctl-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: socket_addr(&format!("@{name}")).unwrap(),
        };
        n.send(&[Field::Ready]);
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 1));
        assert!(!journal_stream_matches("junk", 8, 12345));
    }
}
