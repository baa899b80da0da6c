//! `vmctl app deploy NAME [--dir DIR]`: a new release of your app. Packed from DIR (default: the
//! definition's `app.dir`); to a running VM it goes over the VM's SSH into the guest's installer
//! (`sudo /usr/local/lib/vmctl/app-install -`), which unpacks it beside the running release,
//! installs its requirements, switches the `current` link and reloads gunicorn with SIGHUP: new
//! workers start on the new code while the old ones finish their requests, on the same
//! listening socket, so no request fails. It returns once only new workers serve. Either way the
//! VM keeps the release as its `app.tar`, which it installs from at each boot (a stopped VM gets
//! it at its next start). Deploys of one VM take turns (`app.lock`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::app::bundle;
use crate::error::{Error, IoContext, Result};
use crate::paths::Home;
use crate::runstate;
use crate::sys::fsutil;
use crate::types::VmName;

/// Where the guest's installer is (`image::payload::APP_INSTALLER`).
pub const INSTALLER: &str = "/usr/local/lib/vmctl/app-install";

#[derive(Debug, Serialize)]
pub struct Deployed {
    pub name: String,
    /// The release's id (the guest's `/srv/vmctl-app/releases/ID`).
    pub release: String,
    pub bytes: usize,
    /// Installed in the running guest now (else at the next start).
    pub live: bool,
    /// What the guest's installer said it did ("reloaded", "unchanged", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub seconds: f64,
}

/// Deploy `dir` (default: the definition's) as VM `name`'s app.
pub fn deploy(home: &Home, name: &VmName, dir: Option<&Path>) -> Result<Deployed> {
    let t0 = Instant::now();
    let spec = crate::def::store::load(home, name)?;
    let Some(app) = &spec.wsgi_app else {
        return Err(Error::Usage(format!(
            "VM {name} has no app of its own to deploy: give it an [app] table with your app's dir (see README)"
        )));
    };
    let dir: PathBuf = match dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(Error::Usage(format!(
                    "--dir: {} is not a directory",
                    d.display()
                )));
            }
            d.to_path_buf()
        }
        None => app.dir.clone(),
    };
    let tar = bundle::build(app, &dir)?;
    let release = bundle::release_id(&tar);
    let paths = home.vm(name);
    let _turn = fsutil::lock_exclusive(&paths.app_lock())?;
    let live = runstate::liveness(&paths).is_running();
    let outcome = if live {
        Some(ship(home, name, &tar)?)
    } else {
        None
    };
    fsutil::write_atomic(&paths.app_bundle(), &tar)?;
    Ok(Deployed {
        name: name.to_string(),
        release,
        bytes: tar.len(),
        live,
        outcome,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Pipe the release into the guest's installer; its last line says what it did. What it
/// writes to stderr (its progress) goes to ours.
fn ship(home: &Home, name: &VmName, tar: &[u8]) -> Result<String> {
    let target = crate::guest::ssh::target(home, name)?;
    let argv = crate::guest::ssh::argv(
        &target,
        &["BatchMode=yes".into(), "ConnectTimeout=30".into()],
        &["sudo".into(), "-n".into(), INSTALLER.into(), "-".into()],
    );
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ctx(|| "Cannot run ssh (apt-get install openssh-client)".into())?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = tar.to_vec();
    // Written from a thread: the installer may talk before it has read everything.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .ctx(|| "Cannot read from ssh".into())?;
    let status = child.wait().ctx(|| "Cannot wait for ssh".into())?;
    let sent = writer.join().unwrap_or(Ok(()));
    if !status.success() {
        let code = status.code().unwrap_or(-1);
        let why = if code == 255 {
            format!(
                "ssh to VM {name} failed (exit 255): is the guest up? (`vmctl start {name} --wait`)"
            )
        } else {
            format!(
                "the guest's installer failed (exit {code}); what it said is above; the release that ran before still serves"
            )
        };
        return Err(Error::Other(format!("app deploy: {why}")));
    }
    if let Err(e) = sent {
        return Err(Error::Other(format!(
            "app deploy: the release was not all sent: {e}"
        )));
    }
    Ok(out
        .lines()
        .last()
        .unwrap_or("done")
        .trim_start_matches("vmctl-app-install: ")
        .to_string())
}
