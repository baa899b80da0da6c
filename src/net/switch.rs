//! The switch of one private network (`vmctl network switch NAME`): an Ethernet switch between
//! the NICs of the VMs that join the network, and nothing else — no host interface, no route
//! out, no root once it runs.
//!
//! Each VM's supervisor connects to the switch's socket (`networks/NAME/run/switch.sock`) and
//! hands it, with `SCM_RIGHTS`, a connection to the VM's NIC (QEMU's `-netdev stream` listening
//! socket), with the VM's name, MAC and address ([`Hello`]). The switch answers `OK` and then
//! carries the NIC's frames (QEMU's stream framing: a 4-byte big-endian length, then the frame)
//! to the other NICs. The supervisor keeps its connection to the switch open while the VM runs:
//! when it closes, the NIC leaves; when the switch goes away, the supervisor sees the end of
//! that connection and attaches the NIC to a new one (`net::attach`).
//!
//! Forwarding is static, as the supervisors said, not learnt: a frame goes to the NIC whose MAC
//! it is addressed to, or to every other NIC when broadcast or multicast; a frame whose source
//! is not its NIC's own MAC is dropped, so no guest can take another's MAC ([`Table`]).
//!
//! Lifetime: the switch holds `switch.lock` while it runs (so whether one runs is a lock test,
//! [`is_running`]) and ends when its last VM leaves, unless it is the network's systemd unit
//! (`--persist`, which systemd stops when no VM unit needs it). Started by root, it binds its
//! socket, then becomes QEMU's user (`vmctl-qemu`) for the rest of its life.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::addr::{MacAddr, NetName};
use crate::error::{Error, IoContext, Result};
use crate::paths::NetPaths;
use crate::sys::child::Identity;
use crate::sys::{fdpass, fsutil};

/// The line the switch prints on stdout once it takes VMs (its starter waits for it).
pub const READY: &str = "READY";

/// What a supervisor sends with its NIC's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub vm: String,
    pub mac: String,
    pub address: String,
}

/// The switch's answer once the NIC is attached.
pub const OK: &[u8] = b"OK\n";

/// QEMU's largest frame on a stream netdev (its NET_BUFSIZE).
const MAX_FRAME: usize = 4096 + 65536;

/// Frames queued for one NIC before more are dropped (a switch drops what it cannot send).
const QUEUE: usize = 512;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the network's switch runs: its lock is held. A network whose run directory does not
/// exist has never had one.
pub fn is_running(paths: &NetPaths) -> bool {
    if !paths.run_dir().is_dir() {
        return false;
    }
    matches!(fsutil::try_lock_exclusive(&paths.switch_lock()), Ok(None))
}

/// A NIC of the switch.
pub type PortId = u64;

/// Where a NIC's frames are queued for it.
type Outbox = mpsc::Sender<Arc<Vec<u8>>>;

/// Where frames go: the NICs and their MACs.
#[derive(Debug, Default)]
pub struct Table {
    macs: HashMap<PortId, MacAddr>,
}

/// What to do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    To(Vec<PortId>),
    Drop(&'static str),
}

impl Table {
    pub fn attach(&mut self, port: PortId, mac: MacAddr) {
        self.macs.insert(port, mac);
    }

    pub fn detach(&mut self, port: PortId) {
        self.macs.remove(&port);
    }

    pub fn len(&self) -> usize {
        self.macs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// Where a frame from `from` goes.
    pub fn route(&self, from: PortId, frame: &[u8]) -> Route {
        if frame.len() < 14 {
            return Route::Drop("shorter than an Ethernet header");
        }
        let Some(own) = self.macs.get(&from) else {
            return Route::Drop("from a NIC that left");
        };
        if frame[6..12] != own.0 {
            return Route::Drop("its source is not its NIC's MAC");
        }
        let dst = &frame[0..6];
        if dst[0] & 1 == 1 {
            let mut all: Vec<PortId> = self.macs.keys().copied().filter(|p| *p != from).collect();
            all.sort_unstable();
            return Route::To(all);
        }
        match self.macs.iter().find(|(p, m)| m.0 == dst && **p != from) {
            Some((p, _)) => Route::To(vec![*p]),
            None => Route::Drop("to a MAC no NIC has"),
        }
    }
}

/// The NICs and where their frames go, shared by every NIC's reader (which routes its frames
/// itself, under this lock, held only to pick the queues).
#[derive(Default)]
struct Ports {
    table: Table,
    outs: HashMap<PortId, (Outbox, String)>,
    dropped: u64,
}

type Shared = Arc<std::sync::Mutex<Ports>>;

impl Ports {
    /// Queue `frame` from `from` for the NICs it goes to; a full queue drops it.
    fn forward(&mut self, from: PortId, frame: Arc<Vec<u8>>) {
        match self.table.route(from, &frame) {
            Route::To(ports) => {
                for p in ports {
                    if let Some((out, _)) = self.outs.get(&p) {
                        if out.try_send(frame.clone()).is_err() {
                            self.dropped += 1;
                        }
                    }
                }
            }
            Route::Drop(why) => {
                self.dropped += 1;
                tracing::debug!(port = from, "frame dropped: {why}");
            }
        }
    }
}

/// A NIC left (the hub decides whether the switch ends).
struct Left;

/// Run the switch of `name` until its last VM leaves (or, with `persist`, until SIGTERM):
/// take its lock, bind its socket, become `identity` (when root), say [`READY`] (and call
/// `on_ready`: a systemd unit's READY=1), serve.
pub fn serve(
    name: &NetName,
    paths: &NetPaths,
    identity: Option<Identity>,
    persist: bool,
    on_ready: impl FnOnce(),
) -> Result<u8> {
    let run = paths.run_dir();
    std::fs::create_dir_all(&run).path_ctx("create", &run)?;
    let Some(_lock) = fsutil::try_lock_exclusive(&paths.switch_lock())? else {
        return Err(Error::State(format!(
            "The switch of network {name} already runs"
        )));
    };
    let sock = paths.switch_socket();
    let _ = std::fs::remove_file(&sock);
    let listener = StdListener::bind(&sock).path_ctx("create the socket", &sock)?;
    listener
        .set_nonblocking(true)
        .path_ctx("set up the socket", &sock)?;
    fsutil::write_atomic(
        &paths.switch_pid(),
        std::process::id().to_string().as_bytes(),
    )?;
    if let Some(id) = &identity {
        id.assume()
            .ctx(|| format!("Cannot run the switch of network {name} as uid {}", id.uid))?;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY}").and_then(|_| out.flush());
    on_ready();
    tracing::info!(network = %name, pid = std::process::id(), persist, "switch up");
    let result = crate::sys::rt::block_on(hub(listener, persist));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(paths.switch_pid());
    result.map(|()| 0)
}

/// Accept NICs and carry their frames until the last leaves (or SIGTERM).
async fn hub(listener: StdListener, persist: bool) -> Result<()> {
    let listener =
        tokio::net::UnixListener::from_std(listener).ctx(|| "Cannot serve the switch".into())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .ctx(|| "Cannot handle SIGTERM".into())?;
    let (left_tx, mut left_rx) = mpsc::unbounded_channel::<Left>();
    let shared: Shared = Arc::default();
    let mut next: PortId = 1;
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((conn, _)) => {
                    tokio::spawn(nic(conn, next, shared.clone(), left_tx.clone()));
                    next += 1;
                }
                Err(e) => tracing::warn!("accept: {e}"),
            },
            Some(Left) = left_rx.recv() => {
                let empty = shared.lock().expect("not poisoned").table.is_empty();
                if empty && !persist {
                    tracing::info!("the last VM left; the switch ends");
                    return Ok(());
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: the switch ends");
                return Ok(());
            }
        }
    }
}

/// One supervisor's connection: its hello and NIC, then the NIC's frames both ways until the
/// supervisor or QEMU closes its end.
async fn nic(control: UnixStream, port: PortId, shared: Shared, left: mpsc::UnboundedSender<Left>) {
    let ((control, hello), qemu) = match hello(control).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("a connection to the switch was not a NIC: {e}");
            return;
        }
    };
    let Ok(mac) = parse_mac(&hello.mac) else {
        tracing::warn!(vm = %hello.vm, mac = %hello.mac, "not a MAC address; NIC refused");
        return;
    };
    let (out_tx, out_rx) = mpsc::channel::<Arc<Vec<u8>>>(QUEUE);
    {
        let mut p = shared.lock().expect("not poisoned");
        p.table.attach(port, mac);
        p.outs.insert(port, (out_tx, hello.vm.clone()));
    }
    tracing::info!(vm = %hello.vm, %mac, port, "NIC attached");
    let (mut control_r, mut control_w) = control.into_split();
    if control_w.write_all(OK).await.is_ok() {
        let (qemu_r, qemu_w) = qemu.into_split();
        let mut writer = tokio::spawn(write_frames(qemu_w, out_rx));
        let mut reader = tokio::spawn(read_frames(qemu_r, port, shared.clone()));
        let mut buf = [0u8; 64];
        // The NIC leaves when its supervisor closes the connection (or dies), or QEMU closes
        // the link (the VM stopped).
        tokio::select! {
            _ = control_r.read(&mut buf) => {}
            _ = &mut reader => {}
            _ = &mut writer => {}
        }
        reader.abort();
        writer.abort();
    }
    let dropped = {
        let mut p = shared.lock().expect("not poisoned");
        p.table.detach(port);
        p.outs.remove(&port);
        p.dropped
    };
    tracing::info!(vm = %hello.vm, port, dropped, "NIC left");
    let _ = left.send(Left);
}

/// Read the hello and its descriptor: (control connection, hello), QEMU's end of the NIC.
async fn hello(control: UnixStream) -> std::io::Result<((UnixStream, Hello), UnixStream)> {
    let std_control = control.into_std()?;
    std_control.set_nonblocking(false)?;
    std_control.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let (std_control, msg, fd) = tokio::task::spawn_blocking(move || {
        fdpass::recv_message(&std_control).map(|(m, fd)| (std_control, m, fd))
    })
    .await
    .map_err(std::io::Error::other)??;
    let fd = fd.ok_or_else(|| std::io::Error::other("no NIC descriptor came with the hello"))?;
    let hello: Hello = serde_json::from_slice(&msg).map_err(std::io::Error::other)?;
    std_control.set_nonblocking(true)?;
    let qemu = std::os::unix::net::UnixStream::from(fd);
    qemu.set_nonblocking(true)?;
    Ok((
        (UnixStream::from_std(std_control)?, hello),
        UnixStream::from_std(qemu)?,
    ))
}

/// Frames from QEMU, each sent on its way, until QEMU closes the link. Read through a buffer:
/// a read brings as many frames as QEMU has written.
async fn read_frames(r: tokio::net::unix::OwnedReadHalf, port: PortId, shared: Shared) {
    let mut r = tokio::io::BufReader::with_capacity(4 * MAX_FRAME, r);
    let mut len = [0u8; 4];
    loop {
        if r.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            tracing::warn!(port, n, "a frame longer than QEMU sends; NIC dropped");
            return;
        }
        let mut frame = vec![0u8; n];
        if r.read_exact(&mut frame).await.is_err() {
            return;
        }
        shared
            .lock()
            .expect("not poisoned")
            .forward(port, Arc::new(frame));
    }
}

/// Frames to QEMU: what is queued when the writer wakes goes in one write.
async fn write_frames(
    mut w: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4 * MAX_FRAME);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            buf.extend_from_slice(&frame);
            if buf.len() < 3 * MAX_FRAME {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// "52:54:00:12:34:56" → its bytes.
pub fn parse_mac(s: &str) -> std::result::Result<MacAddr, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut b = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address"));
    }
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(format!("{s:?} is not a MAC address"));
        }
        b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(MacAddr(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    #[test]
    fn frames_go_to_their_nic_or_to_all_others() {
        let (a, b, c) = (
            MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            MacAddr([0x52, 0x54, 0, 0, 0, 2]),
            MacAddr([0x52, 0x54, 0, 0, 0, 3]),
        );
        let mut t = Table::default();
        t.attach(1, a);
        t.attach(2, b);
        t.attach(3, c);
        assert_eq!(t.route(1, &frame(b.0, a.0)), Route::To(vec![2]));
        assert_eq!(t.route(1, &frame([0xff; 6], a.0)), Route::To(vec![2, 3]));
        // IPv6 neighbour discovery and other multicast: every other NIC.
        let mcast = [0x33, 0x33, 0, 0, 0, 1];
        assert_eq!(t.route(2, &frame(mcast, b.0)), Route::To(vec![1, 3]));
        t.detach(3);
        assert_eq!(t.route(1, &frame([0xff; 6], a.0)), Route::To(vec![2]));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn spoofed_short_and_stray_frames_are_dropped() {
        let (a, b) = (
            MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            MacAddr([0x52, 0x54, 0, 0, 0, 2]),
        );
        let mut t = Table::default();
        t.attach(1, a);
        t.attach(2, b);
        // NIC 1 pretending to be NIC 2.
        assert!(matches!(t.route(1, &frame([0xff; 6], b.0)), Route::Drop(_)));
        assert!(matches!(t.route(1, &[0u8; 10]), Route::Drop(_)));
        assert!(matches!(
            t.route(1, &frame([0x52, 0x54, 0, 0, 0, 9], a.0)),
            Route::Drop(_)
        ));
        // To itself: not sent back.
        assert!(matches!(t.route(1, &frame(a.0, a.0)), Route::Drop(_)));
        assert!(matches!(t.route(7, &frame(a.0, b.0)), Route::Drop(_)));
    }

    #[test]
    fn macs_parse_back_from_their_text() {
        let m = MacAddr::derive("web", "backend");
        assert_eq!(parse_mac(&m.to_string()), Ok(m));
        assert!(parse_mac("52:54:00:12:34").is_err());
        assert!(parse_mac("52:54:00:12:34:zz").is_err());
        assert!(parse_mac("5254.0012.3456").is_err());
    }
}
