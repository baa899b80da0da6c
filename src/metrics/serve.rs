//! The metrics endpoint: a small HTTP/1.1 server on one thread (a scrape every few seconds needs
//! no more), `GET /metrics` sampling the VMs anew each time; `/` points there. Requests are read
//! with a deadline and a size cap, so a slow or hostile client holds it for seconds at most.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::paths::Home;

/// The default address: loopback, Prometheus's port range (9187 is unassigned in its list).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// How long one client may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(5);
/// The longest request head read (a scrape's is a few hundred bytes).
const HEAD_LIMIT: usize = 8192;

/// Where to listen: `IP:PORT`. Another host's scrapers reach a non-loopback address only when
/// `--listen` names it (the default is loopback); a bare port or `:PORT` is refused, so that
/// every interface is never chosen by omission.
pub fn parse_listen(text: &str) -> Result<SocketAddr> {
    text.parse::<SocketAddr>().map_err(|_| {
        Error::Usage(format!(
            "--listen: {text:?} is not an address; give IP:PORT, e.g. {DEFAULT_LISTEN} (loopback) or 0.0.0.0:9187 (every interface)"
        ))
    })
}

/// Serve until the process is stopped; `ready` is called once the socket listens.
pub fn serve(home: &Home, addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let listener = TcpListener::bind(addr).ctx(|| format!("Cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .ctx(|| "Cannot read the bound address".into())?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "metrics are served to other hosts: VM names, images and usage are readable from {local}");
    }
    ready(local);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(home, stream) {
                    tracing::debug!("metrics request: {e}");
                }
            }
            Err(e) => tracing::warn!("metrics: accept failed: {e}"),
        }
    }
    Ok(())
}

/// Read one request and answer it; the connection closes after.
fn answer(home: &Home, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_LIMIT))?;
    stream.set_write_timeout(Some(READ_LIMIT))?;
    let path = match request_path(&mut BufReader::new(&stream)) {
        Ok(p) => p,
        Err(status) => return respond(&stream, status, "text/plain", status),
    };
    match path.as_str() {
        "/metrics" => {
            let t0 = Instant::now();
            match crate::vm::stats::sample(home, &[]) {
                Ok(vms) => {
                    let body = super::exposition::render(&vms, t0.elapsed().as_secs_f64());
                    respond(
                        &stream,
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        &body,
                    )
                }
                Err(e) => respond(
                    &stream,
                    "500 Internal Server Error",
                    "text/plain",
                    &e.to_string(),
                ),
            }
        }
        "/" => respond(
            &stream,
            "200 OK",
            "text/plain",
            "vmctl metrics: see /metrics\n",
        ),
        _ => respond(
            &stream,
            "404 Not Found",
            "text/plain",
            "404: only /metrics is here\n",
        ),
    }
}

/// The path of a `GET` (or `HEAD`) request, its query dropped; the status line to refuse with
/// otherwise.
fn request_path(r: &mut impl BufRead) -> std::result::Result<String, &'static str> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = std::io::Read::take(
            &mut *r,
            (HEAD_LIMIT - head.len().min(HEAD_LIMIT)) as u64 + 1,
        )
        .read_until(b'\n', &mut line)
        .map_err(|_| "408 Request Timeout")?;
        if n == 0 || head.len() + n > HEAD_LIMIT {
            return Err("400 Bad Request");
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend(line);
        if blank {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return Err("405 Method Not Allowed");
    }
    Ok(target.split('?').next().unwrap_or("").to_string())
}

fn respond(mut s: &TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(req: &str) -> std::result::Result<String, &'static str> {
        request_path(&mut std::io::Cursor::new(req.as_bytes().to_vec()))
    }

    #[test]
    fn a_scrape_request_is_read_to_its_path() {
        assert_eq!(
            path("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n"),
            Ok("/metrics".into())
        );
        assert_eq!(path("HEAD / HTTP/1.0\n\n"), Ok("/".into()));
        assert_eq!(
            path("POST /metrics HTTP/1.1\r\n\r\n"),
            Err("405 Method Not Allowed")
        );
        assert_eq!(
            path("GET /metrics HTTP/1.1\r\n"),
            Err("400 Bad Request"),
            "cut short"
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(HEAD_LIMIT));
        assert_eq!(path(&huge), Err("400 Bad Request"));
    }

    #[test]
    fn listen_addresses_are_ip_and_port() {
        assert!(parse_listen(DEFAULT_LISTEN).unwrap().ip().is_loopback());
        assert!(!parse_listen("0.0.0.0:9187").unwrap().ip().is_loopback());
        assert!(parse_listen("[::1]:9187").is_ok());
        for bad in ["9187", ":9187", "localhost:9187", ""] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(
                e.contains("--listen") && e.contains("IP:PORT"),
                "{bad}: {e}"
            );
        }
    }
}
