//! A VM's NICs on its private networks, from the supervisor's side: for each network, make
//! sure its switch runs (start one, detached, if none does), connect to it, and hand it a
//! connection to the NIC (QEMU listens on the VM's `nicN.sock`) with the VM's name, MAC and
//! address. The connection to the switch stays open while the VM runs; should the switch go
//! away, [`Nics::lost`] says which NIC and [`Nics::reattach`] gives it to a new switch (QEMU
//! takes the new connection once it has seen the old one end).
//!
//! Starting a switch is serialised by the network's `start.lock`, so two VMs starting at once
//! start one switch; a switch that is ending as a VM attaches answers with the end of the
//! connection instead of `OK`, and the VM tries again with a new switch.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::addr::{MacAddr, NetName};
use crate::error::{Error, IoContext, Result};
use crate::net::switch::{self, Hello};
use crate::paths::{Home, NetPaths};
use crate::sys::{fdpass, fsutil, process};

/// How long a new switch may take to say it is ready, and a switch to answer a NIC.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times attaching is tried (a switch may be ending as a VM attaches).
const ATTEMPTS: usize = 5;

/// A VM's NIC on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub network: NetName,
    pub mac: MacAddr,
    pub address: Ipv4Addr,
    /// QEMU's listening socket for this NIC.
    pub socket: PathBuf,
}

/// The VM's NICs, attached to their switches.
pub struct Nics {
    home: Home,
    vm: String,
    nics: Vec<Nic>,
    lost_tx: mpsc::UnboundedSender<usize>,
    lost_rx: mpsc::UnboundedReceiver<usize>,
}

impl Nics {
    /// Attach every NIC of `vm` (in the order given).
    pub async fn attach(home: &Home, vm: &str, nics: Vec<Nic>) -> Result<Nics> {
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let mut n = Nics {
            home: home.clone(),
            vm: vm.to_string(),
            nics,
            lost_tx,
            lost_rx,
        };
        for i in 0..n.nics.len() {
            n.reattach(i).await?;
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.nics.is_empty()
    }

    pub fn nic(&self, i: usize) -> &Nic {
        &self.nics[i]
    }

    /// Resolves with the index of a NIC whose switch went away; never without NICs.
    pub async fn lost(&mut self) -> usize {
        match self.lost_rx.recv().await {
            Some(i) => i,
            None => std::future::pending().await,
        }
    }

    /// (Re)attach NIC `i` to its network's switch, starting one if none runs.
    pub async fn reattach(&mut self, i: usize) -> Result<()> {
        let (home, vm, nic) = (self.home.clone(), self.vm.clone(), self.nics[i].clone());
        let control = tokio::task::spawn_blocking(move || attach_one(&home, &vm, &nic))
            .await
            .map_err(|e| Error::Other(format!("attaching a NIC: {e}")))??;
        control
            .set_nonblocking(true)
            .ctx(|| "Cannot watch the switch's connection".into())?;
        let mut control = tokio::net::UnixStream::from_std(control)
            .ctx(|| "Cannot watch the switch's connection".into())?;
        let lost = self.lost_tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // The switch says nothing more: a read returns only at its end.
            while let Ok(n) = control.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = lost.send(i);
        });
        Ok(())
    }
}

/// Attach `nic` of `vm` to its switch; the open connection to the switch.
fn attach_one(home: &Home, vm: &str, nic: &Nic) -> Result<UnixStream> {
    let paths = home.network(&nic.network);
    let run = paths.run_dir();
    std::fs::create_dir_all(&run).path_ctx("create", &run)?;
    let _start = fsutil::lock_exclusive(&paths.start_lock())?;
    let hello = serde_json::to_vec(&Hello {
        vm: vm.to_string(),
        mac: nic.mac.to_string(),
        address: nic.address.to_string(),
    })
    .expect("a hello serializes");
    let mut why = String::new();
    for _ in 0..ATTEMPTS {
        if !switch::is_running(&paths) {
            spawn_switch(home, &nic.network, &paths)?;
        }
        match offer(&paths, &nic.socket, &hello) {
            Ok(control) => return Ok(control),
            Err(e) => why = e.to_string(),
        }
        // The switch was ending: wait until it has (its lock is free), then start another.
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        while switch::is_running(&paths) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(Error::Host(format!(
        "Cannot attach VM {vm} to network {}: {why}",
        nic.network
    )))
}

/// Connect to the switch, hand it a connection to QEMU's NIC socket, wait for `OK`.
fn offer(paths: &NetPaths, qemu_socket: &std::path::Path, hello: &[u8]) -> Result<UnixStream> {
    let sock = paths.switch_socket();
    let control = UnixStream::connect(&sock).path_ctx("connect to", &sock)?;
    let link = UnixStream::connect(qemu_socket).path_ctx("connect to", qemu_socket)?;
    fdpass::send(&control, hello, &link).path_ctx("hand the NIC to", &sock)?;
    drop(link);
    control
        .set_read_timeout(Some(SWITCH_TIMEOUT))
        .path_ctx("wait for", &sock)?;
    let mut line = String::new();
    BufReader::new(&control)
        .read_line(&mut line)
        .path_ctx("wait for", &sock)?;
    if line.as_bytes() != switch::OK {
        return Err(Error::Other(format!(
            "the switch at {} ended instead of taking the NIC",
            sock.display()
        )));
    }
    control.set_read_timeout(None).path_ctx("wait for", &sock)?;
    Ok(control)
}

/// Start the network's switch, detached (its own session, not killed with this process), and
/// wait until it says it is ready. It is reaped by a thread of ours should it end first.
fn spawn_switch(home: &Home, name: &NetName, paths: &NetPaths) -> Result<()> {
    let exe = std::env::current_exe().ctx(|| "Cannot find the vmctl binary".into())?;
    let log = fsutil::open_append(&paths.switch_log())?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(exe);
    // -v: its log (switch.log) tells when NICs come and go.
    cmd.arg("--home")
        .arg(&home.root)
        .args(["-v", "network", "switch", name.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    process::not_a_service(&mut cmd);
    process::detach_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .ctx(|| format!("Cannot start the switch of network {name}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
        let _ = child.wait();
    });
    match rx.recv_timeout(SWITCH_TIMEOUT) {
        Ok(line) if line.trim() == switch::READY => Ok(()),
        _ => {
            let said = fsutil::tail_since(&paths.switch_log(), offset, 5);
            Err(Error::Host(format!(
                "The switch of network {name} did not start{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            )))
        }
    }
}
