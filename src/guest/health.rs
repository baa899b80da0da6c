//! Is the guest up, and is it still healthy? A TCP connect alone proves nothing under user-mode
//! networking (QEMU accepts it on the host side even with no guest), so every probe needs an
//! answer from inside the guest: an SSH banner, an HTTP reply, or the `[health]` check.
//!
//! [`Readiness`] waits until the guest is up: its `[health]` check passes when it has one, else
//! every forwarded TCP port answers (`vmctl start --wait`, and `READY=1` from `vmctl run`).
//! [`Monitor`] is the pure state machine of the health check after that: healthy until `retries`
//! checks in a row fail; a guest that never passes is unhealthy after [`give_up_after`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::def::spec::{HealthCheck, HealthSpec, VmSpec};
use crate::types::{PortForward, Protocol};

/// What `vmctl status` shows of the health check (kept in the VM's `state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    /// The check, as `http 8080/healthz` or `tcp 5432`.
    pub check: String,
    /// Checks failed in a row since the last pass.
    pub failing_streak: u32,
    /// Unix seconds of the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_at: Option<u64>,
    /// Why the last failed check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not passed yet (the guest is booting).
    Starting,
    Healthy,
    /// `retries` checks in a row failed, or the guest never passed in time.
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// A guest that has not passed its check this long after QEMU started is unhealthy: the start
/// period, then `retries` intervals.
pub fn give_up_after(h: &HealthSpec) -> Duration {
    h.start_period + h.interval * h.retries
}

/// How long one check may take.
pub fn probe_timeout(h: &HealthSpec) -> Duration {
    h.interval.min(Duration::from_secs(5))
}

/// The health check's state after the guest is up.
#[derive(Debug, Clone)]
pub struct Monitor {
    retries: u32,
    pub state: HealthState,
}

impl Monitor {
    pub fn new(h: &HealthSpec) -> Monitor {
        Monitor {
            retries: h.retries,
            state: HealthState {
                status: HealthStatus::Starting,
                check: h.check.to_string(),
                failing_streak: 0,
                last_check_at: None,
                last_failure: None,
            },
        }
    }

    /// Record one check's result at `now` (unix seconds); returns the status after it.
    pub fn record(&mut self, result: Result<(), String>, now: u64) -> HealthStatus {
        let s = &mut self.state;
        s.last_check_at = Some(now);
        match result {
            Ok(()) => {
                s.failing_streak = 0;
                s.status = HealthStatus::Healthy;
            }
            Err(why) => {
                s.failing_streak += 1;
                s.last_failure = Some(why);
                if s.failing_streak >= self.retries {
                    s.status = HealthStatus::Unhealthy;
                }
            }
        }
        s.status
    }

    /// The guest did not pass within [`give_up_after`]; its last check failed for `why`.
    pub fn never_passed(&mut self, why: String, now: u64) {
        self.state.status = HealthStatus::Unhealthy;
        self.state.last_check_at = Some(now);
        self.state.last_failure = Some(format!("{why}; never passed since the start"));
    }
}

/// One health check through the forward `via` (the host side of the check's guest port).
pub async fn probe(
    check: &HealthCheck,
    via: &PortForward,
    timeout: Duration,
) -> Result<(), String> {
    let mut s = connect(via, timeout).await?;
    match check {
        HealthCheck::Http { path, .. } => {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: vmctl-health\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("cannot send the request: {e}"))?;
            let reply = read_some(&mut s, timeout).await?;
            match http_status(&reply) {
                Some(code) if code < 400 => Ok(()),
                Some(code) => Err(format!("HTTP status {code}")),
                None if reply.is_empty() => Err("the connection was closed without a reply".into()),
                None => Err("the reply is not HTTP".into()),
            }
        }
        HealthCheck::Tcp { port: 22 } => {
            say_ssh_hello(&mut s).await?;
            let banner = read_some(&mut s, timeout).await?;
            if banner.starts_with(b"SSH-") {
                Ok(())
            } else {
                Err("no SSH banner".into())
            }
        }
        HealthCheck::Tcp { .. } => {
            // QEMU closes the host side at once when nothing listens in the guest; a service
            // keeps the connection open (waiting for a request) or speaks first.
            let hold = timeout.min(Duration::from_secs(1));
            let mut buf = [0u8; 64];
            match tokio::time::timeout(hold, s.read(&mut buf)).await {
                Err(_) | Ok(Ok(1..)) => Ok(()),
                Ok(Ok(_)) => Err("the guest closed the connection (nothing listens?)".into()),
                Ok(Err(e)) => Err(format!("connection failed: {e}")),
            }
        }
    }
}

async fn connect(f: &PortForward, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    let ip = if f.addr.is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST
    } else {
        f.addr
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, f.host))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {ip}:{}: {e}", f.host)),
        Err(_) => Err(format!(
            "no connection to {ip}:{} within {timeout:?}",
            f.host
        )),
    }
}

/// Send an SSH client's identification first, as OpenSSH does (RFC 4253 lets either side
/// speak first). Needed through passt up to at least 2023-03 (Debian 12's), which completes a
/// forwarded connection's handshake with the guest only once the host side sends something, so a
/// server that speaks first would wait forever for a silent prober.
async fn say_ssh_hello(s: &mut tokio::net::TcpStream) -> Result<(), String> {
    s.write_all(b"SSH-2.0-vmctl-probe\r\n")
        .await
        .map_err(|e| format!("cannot send the SSH identification: {e}"))
}

/// The first bytes of the reply (empty when the peer closed without sending).
async fn read_some(s: &mut tokio::net::TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(timeout, s.read(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(buf)
        }
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Err(_) => Err(format!("no reply within {timeout:?}")),
    }
}

/// `HTTP/1.1 503 ...` → 503.
fn http_status(reply: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(reply)
        .strip_prefix("HTTP/")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Does a service in the guest answer on this forward? SSH ports must send their banner; any
/// other port must send at least one byte in reply to an HTTP request.
pub async fn port_answers(f: &PortForward) -> bool {
    let t = if f.guest == 22 {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(5)
    };
    let Ok(mut s) = connect(f, t).await else {
        return false;
    };
    if f.guest == 22 {
        return say_ssh_hello(&mut s).await.is_ok()
            && matches!(read_some(&mut s, t).await, Ok(b) if b.starts_with(b"SSH-"));
    }
    if s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    matches!(read_some(&mut s, t).await, Ok(b) if !b.is_empty() && reply_means_ready(&b))
}

/// Any reply counts, except an HTTP 5xx: that is a proxy (nginx) whose backend is not up yet.
fn reply_means_ready(reply: &[u8]) -> bool {
    http_status(reply).is_none_or(|code| code < 500)
}

/// One condition of readiness.
#[derive(Debug, Clone)]
enum Check {
    Port(PortForward),
    Health {
        check: HealthCheck,
        via: PortForward,
        timeout: Duration,
    },
}

impl Check {
    fn forward(&self) -> &PortForward {
        match self {
            Check::Port(f) | Check::Health { via: f, .. } => f,
        }
    }

    async fn attempt(self) -> bool {
        match self {
            Check::Port(f) => port_answers(&f).await,
            Check::Health {
                check,
                via,
                timeout,
            } => probe(&check, &via, timeout).await.is_ok(),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Port(p) => write!(f, "{p}"),
            Check::Health { check, .. } => write!(f, "health check {check}"),
        }
    }
}

/// Waits until the guest is up (see the module documentation). Attempts overlap (see
/// [`attempt_pacing`]), so the first moment the guest answers is seen without a polling delay.
pub struct Readiness {
    checks: Vec<Check>,
    ready: Vec<bool>,
}

impl Readiness {
    pub fn for_spec(spec: &VmSpec) -> Readiness {
        let health = spec.health.as_ref().and_then(|h| {
            Some(Check::Health {
                check: h.check.clone(),
                via: *spec.forward_to(h.check.guest_port())?,
                timeout: probe_timeout(h),
            })
        });
        let checks: Vec<Check> = match health {
            Some(c) => vec![c],
            None => spec
                .ports
                .iter()
                .filter(|p| p.proto == Protocol::Tcp)
                .map(|p| Check::Port(*p))
                .collect(),
        };
        Readiness {
            ready: vec![false; checks.len()],
            checks,
        }
    }

    /// What is waited for, e.g. `ports 5080:8080 5022:22`.
    pub fn describe(&self) -> String {
        match self.checks.as_slice() {
            [] => "nothing (no TCP port is forwarded)".into(),
            [c @ Check::Health { .. }] => c.to_string(),
            cs => {
                let list: Vec<String> = cs.iter().map(|c| c.to_string()).collect();
                format!("an answer on {}", list.join(" "))
            }
        }
    }

    /// Returns once every check has passed once.
    pub async fn wait(&mut self) {
        let n = self.checks.len();
        let mut in_flight = vec![0usize; n];
        let mut last_spawn = vec![None::<std::time::Instant>; n];
        let mut attempts = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.ready.iter().all(|r| *r) {
            tokio::select! {
                _ = tick.tick() => {
                    for (i, c) in self.checks.iter().enumerate() {
                        let (limit, every) = attempt_pacing(c.forward());
                        let due = last_spawn[i].is_none_or(|t| t.elapsed() >= every);
                        if !self.ready[i] && in_flight[i] < limit && due {
                            in_flight[i] += 1;
                            last_spawn[i] = Some(std::time::Instant::now());
                            let c = c.clone();
                            attempts.spawn(async move { (i, c.attempt().await) });
                        }
                    }
                }
                Some(Ok((i, ok))) = attempts.join_next(), if !attempts.is_empty() => {
                    in_flight[i] -= 1;
                    self.ready[i] |= ok;
                }
            }
        }
        attempts.abort_all();
    }

    /// One line per check: whether it passed.
    pub fn report(&self) -> String {
        let lines: Vec<String> = self
            .checks
            .iter()
            .zip(&self.ready)
            .map(|(c, r)| format!("  {c}: {}", if *r { "answers" } else { "no answer" }))
            .collect();
        lines.join("\n")
    }
}

/// How many readiness attempts may be in flight on a port, and how often a new one starts. A
/// new attempt while older ones wait on a guest that is not up yet catches the first moment it
/// answers; few of them, because each SSH connection makes sshd fork and re-exec itself, which
/// under TCG slows the very boot being waited for (and sshd drops connections past
/// MaxStartups).
fn attempt_pacing(f: &PortForward) -> (usize, Duration) {
    if f.guest == 22 {
        (2, Duration::from_millis(1000))
    } else {
        (4, Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> VmSpec {
        let cfg = crate::def::config::VmConfig::parse(toml, "t").unwrap();
        let limits = crate::def::spec::Limits {
            host_memory: u64::MAX,
        };
        crate::def::spec::validate(&"web".parse().unwrap(), &cfg, limits, "t").unwrap()
    }

    #[test]
    fn http_5xx_is_not_ready() {
        use super::reply_means_ready as r;
        assert!(r(b"HTTP/1.1 200 OK\r\n"));
        assert!(r(b"HTTP/1.0 404 Not Found\r\n"));
        assert!(!r(b"HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(!r(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r(b"+OK redis\r\n"));
    }

    #[test]
    fn health_fails_after_retries_in_a_row() {
        let s = spec("ports = [\"5080:8080\"]\n[health]\nhttp = \"8080/\"\nretries = 2\n");
        let h = s.health.as_ref().unwrap();
        let mut m = Monitor::new(h);
        assert_eq!(m.state.status, HealthStatus::Starting);
        assert_eq!(m.record(Ok(()), 10), HealthStatus::Healthy);
        assert_eq!(
            m.record(Err("HTTP status 503".into()), 20),
            HealthStatus::Healthy
        );
        assert_eq!(m.state.failing_streak, 1);
        assert_eq!(m.record(Ok(()), 30), HealthStatus::Healthy);
        assert_eq!(m.state.failing_streak, 0);
        m.record(Err("a".into()), 40);
        assert_eq!(m.record(Err("b".into()), 50), HealthStatus::Unhealthy);
        assert_eq!(m.state.last_failure.as_deref(), Some("b"));
        assert_eq!(m.state.last_check_at, Some(50));
        assert_eq!(m.state.check, "http 8080/");
    }

    #[test]
    fn a_guest_that_never_passes_gives_up_after_the_start_period_and_retries() {
        let s = spec(
            "ports = [\"5080:8080\"]\n[health]\ntcp = 8080\ninterval = \"5s\"\nretries = 4\nstart_period = \"1m\"\n",
        );
        let h = s.health.as_ref().unwrap();
        assert_eq!(give_up_after(h), Duration::from_secs(80));
        assert_eq!(probe_timeout(h), Duration::from_secs(5));
        let mut m = Monitor::new(h);
        m.never_passed("HTTP status 404".into(), 7);
        assert_eq!(m.state.status, HealthStatus::Unhealthy);
        assert_eq!(
            m.state.last_failure.as_deref(),
            Some("HTTP status 404; never passed since the start")
        );
    }

    #[test]
    fn readiness_is_the_health_check_when_there_is_one() {
        let r = Readiness::for_spec(&spec(
            "ports = [\"5080:8080\", \"5022:22\", \"5353:53/udp\"]\n",
        ));
        assert_eq!(r.describe(), "an answer on 5080:8080 5022:22");
        let r = Readiness::for_spec(&spec(
            "ports = [\"5080:8080\", \"5022:22\"]\n[health]\nhttp = \"8080/ok\"\n",
        ));
        assert_eq!(r.describe(), "health check http 8080/ok");
        assert_eq!(r.report(), "  health check http 8080/ok: no answer");
        assert_eq!(
            Readiness::for_spec(&spec("")).describe(),
            "nothing (no TCP port is forwarded)"
        );
    }

    /// A one-shot server on a loopback port that (after reading the request, if `read_first`)
    /// sends `reply` and closes; returns a forward to it.
    fn serve(reply: &'static [u8], read_first: bool) -> PortForward {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut s, _)) = l.accept() {
                if read_first {
                    let _ = s.read(&mut [0u8; 512]);
                }
                let _ = s.write_all(reply);
            }
        });
        format!("{port}:8080").parse().unwrap()
    }

    #[test]
    fn http_probes_judge_the_status() {
        crate::sys::rt::block_on(async {
            let http = HealthCheck::Http {
                port: 8080,
                path: "/healthz".into(),
            };
            let t = Duration::from_secs(2);
            let ok = serve(b"HTTP/1.1 204 No Content\r\n\r\n", true);
            assert_eq!(probe(&http, &ok, t).await, Ok(()));
            let busy = serve(b"HTTP/1.1 503 Busy\r\n\r\n", true);
            assert_eq!(probe(&http, &busy, t).await, Err("HTTP status 503".into()));
            let closed = serve(b"", true);
            assert_eq!(
                probe(&http, &closed, t).await,
                Err("the connection was closed without a reply".into())
            );
            let tcp = HealthCheck::Tcp { port: 8080 };
            assert_eq!(probe(&tcp, &serve(b"hello", false), t).await, Ok(()));
            let refused = probe(&tcp, &serve(b"", false), t).await.unwrap_err();
            assert!(refused.contains("closed the connection"), "{refused}");
            Ok(())
        })
        .unwrap();
    }
}
