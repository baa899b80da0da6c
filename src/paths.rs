//! Every file vmctl keeps, named in one place: the home directory, each VM's definition, disk,
//! sockets, pidfile, logs and lock, the image store, and the cache.
//!
//! Layout under the home (`--home`, `VMCTL_HOME`, `/var/lib/vmctl` for root, else
//! `$XDG_DATA_HOME/vmctl`):
//! ```text
//! vms/NAME/vm.toml        definition           vms/NAME/disk.qcow2    overlay disk
//! vms/NAME/run/           runtime state: qmp.sock, qmp-ctl.sock, qmp-shell.sock, qemu.pid,
//!                         qemu.start, state.json
//! vms/NAME/qmp-history    the `vmctl qmp` shell's history
//! vms/NAME/serial.log     guest console        vms/NAME/qemu.log      QEMU's and the supervisor's stderr
//! vms/NAME/lock           flock for start/stop vms/NAME/last-exit.json how QEMU last ended
//! vms/NAME/drop-in        the drop-in file that defines the VM (vmctl-generator)
//! vms/NAME/provision.json the provisioning credential (vmctl's images)
//! vms/NAME/seed.img       the cloud-init NoCloud seed (imported images)
//! vms/NAME/app.tar        your app's last release   vms/NAME/provision.log your scripts' output
//! vms/NAME/ssh/           authorized_keys, the VM's host key, known_hosts, identity
//! images/NAME/ARCH/       image.toml manifest, disk.qcow2, kernel, initrd
//! ```

use std::path::{Path, PathBuf};

use crate::addr::NetName;
use crate::error::{Error, Result};
use crate::types::{Arch, VmName};

/// A unix socket path must fit `sockaddr_un.sun_path` (108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// Resolve the home from the flag/env value or the per-user default.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Home> {
        let root = match explicit {
            Some(p) => p,
            None => default_home()?,
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Usage(format!("Cannot resolve home {}: {e}", root.display())))?
                .join(root)
        };
        // The home may be a link (an administrator's choice); what counts is whose it is.
        check_owner(&root.canonicalize().unwrap_or(root.clone()), "home")?;
        Ok(Home { root })
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }
    /// Serialises creation and removal of definitions (name and port uniqueness).
    pub fn vms_lock(&self) -> PathBuf {
        self.root.join("vms/.lock")
    }
    pub fn vm(&self, name: &VmName) -> VmPaths {
        VmPaths {
            dir: self.vms_dir().join(name.as_str()),
        }
    }
    /// The paths of VM `name` if it is defined (its `vm.toml` exists); else "not found".
    pub fn defined(&self, name: &VmName) -> Result<VmPaths> {
        let paths = self.vm(name);
        if !paths.definition().exists() {
            return Err(Error::vm_not_found(name.as_str()));
        }
        check_owner(&paths.dir, "VM directory")?;
        Ok(paths)
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }
    /// Serialises network creation and removal, and address assignment.
    /// What happened to the home's VMs, one JSON line per event (`events`).
    pub fn events_log(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn networks_lock(&self) -> PathBuf {
        self.networks_dir().join(".lock")
    }
    pub fn network(&self, name: &NetName) -> NetPaths {
        NetPaths {
            dir: self.networks_dir().join(name.as_str()),
        }
    }
    /// Serialises builds and imports of images.
    pub fn images_lock(&self) -> PathBuf {
        self.images_dir().join(".lock")
    }
    pub fn image_dir(&self, name: &str, arch: Arch) -> PathBuf {
        self.images_dir().join(name).join(arch.as_str())
    }
    pub fn image(&self, name: &str, arch: Arch) -> ImagePaths {
        ImagePaths {
            dir: self.image_dir(name, arch),
        }
    }
}

/// The files of one image directory (`images/NAME/ARCH/`, or a build's output before it is
/// installed there).
#[derive(Debug, Clone)]
pub struct ImagePaths {
    pub dir: PathBuf,
}

impl ImagePaths {
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("image.toml")
    }
    /// The disk an image build or import writes (the manifest names the disk of a built image).
    pub fn disk(&self) -> PathBuf {
        self.dir.join(Self::DISK)
    }
    pub const DISK: &str = "disk.qcow2";
}

/// vmctl acts only in directories of its own user: one that belongs to someone else could hold
/// links that make vmctl (maybe root) write or read where that user points it.
fn check_owner(dir: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    if m.file_type().is_symlink() {
        return Err(Error::Usage(format!(
            "The {what} {} is a symbolic link, which vmctl does not follow; name the directory itself",
            dir.display()
        )));
    }
    if m.uid() != me {
        return Err(Error::Usage(format!(
            "The {what} {} belongs to uid {}, not to you (uid {me}): vmctl does not act in another user's directories",
            dir.display(),
            m.uid()
        )));
    }
    Ok(())
}

/// Cache for downloaded packages and the accelerator verdict: `VMCTL_CACHE_DIR`, else
/// `/var/cache/vmctl` for root, else `$XDG_CACHE_HOME/vmctl`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VMCTL_CACHE_DIR") {
        return PathBuf::from(p);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/vmctl");
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("vmctl");
    }
    home_env().join(".cache/vmctl")
}

fn home_env() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn default_home() -> Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/vmctl"));
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(p).join("vmctl"));
    }
    Ok(home_env().join(".local/share/vmctl"))
}

#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn definition(&self) -> PathBuf {
        self.dir.join("vm.toml")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// The guest's network link: QEMU listens here (on a descriptor it is given) and passt is
    /// connected to it; a new passt connects again when the forwards change.
    pub fn net_socket(&self) -> PathBuf {
        self.run_dir().join("net.sock")
    }
    /// The guest's NIC on its `index`-th network (1-based, in the order of the definition's
    /// `networks`): QEMU listens here and the network's switch is handed a connection to it.
    pub fn nic_socket(&self, index: usize) -> PathBuf {
        self.run_dir().join(format!("nic{index}.sock"))
    }
    /// The `index`-th shared folder's virtiofsd listens here (0-based); QEMU is connected.
    pub fn share_socket(&self, index: usize) -> PathBuf {
        self.run_dir().join(format!("fs{index}.sock"))
    }
    /// The guest's serial console: QEMU listens here, `vmctl console` connects.
    /// The guest agent's socket (qemu-ga in the guest, at the other end of a virtio-serial
    /// port).
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("qga.sock")
    }
    pub fn console_socket(&self) -> PathBuf {
        self.run_dir().join("console.sock")
    }
    /// Held by the attached `vmctl console` (one at a time).
    pub fn console_lock(&self) -> PathBuf {
        self.run_dir().join("console.lock")
    }
    /// What the running passt forwards (`net::state`), written by the supervisor.
    pub fn net_state(&self) -> PathBuf {
        self.run_dir().join("net.json")
    }
    /// The supervisor's own QMP connection (events, graceful stop on SIGTERM).
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir().join("qmp.sock")
    }
    /// The socket one-shot clients (stop, status, pause...) use, serialised by `ctl_lock`.
    pub fn qmp_ctl_socket(&self) -> PathBuf {
        self.run_dir().join("qmp-ctl.sock")
    }
    pub fn ctl_lock(&self) -> PathBuf {
        self.run_dir().join("qmp-ctl.lock")
    }
    /// The interactive `vmctl qmp` shell's own socket (one shell at a time, by `shell_lock`), so
    /// an open shell never holds up `stop` or `snapshot` on the control socket.
    pub fn qmp_shell_socket(&self) -> PathBuf {
        self.run_dir().join("qmp-shell.sock")
    }
    pub fn shell_lock(&self) -> PathBuf {
        self.run_dir().join("qmp-shell.lock")
    }
    /// The shell's line history, kept across sessions and restarts.
    pub fn qmp_history(&self) -> PathBuf {
        self.dir.join("qmp-history")
    }
    /// QEMU's pid, written by the supervisor once it has spawned it.
    pub fn pidfile(&self) -> PathBuf {
        self.run_dir().join("qemu.pid")
    }
    /// When that process started (clock ticks since boot): with the pid, it names QEMU for good.
    pub fn qemu_start(&self) -> PathBuf {
        self.run_dir().join("qemu.start")
    }
    /// Written by the supervisor once QEMU answers QMP: pid, accel and its reason, start time.
    pub fn state(&self) -> PathBuf {
        self.run_dir().join("state.json")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// Your app's last release (`app::bundle`), attached at each boot for the guest to install.
    pub fn app_bundle(&self) -> PathBuf {
        self.dir.join("app.tar")
    }
    /// Taken by `vmctl app deploy`, so that deploys take turns.
    pub fn app_lock(&self) -> PathBuf {
        self.dir.join("app.lock")
    }
    /// The guest's machine-id (32 hex digits), made at create and at clone.
    pub fn machine_id(&self) -> PathBuf {
        self.dir.join("machine-id")
    }
    /// Your provisioning scripts' output, kept across starts (`vmctl logs NAME --provision`).
    pub fn provision_log(&self) -> PathBuf {
        self.dir.join("provision.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// The guest's saved state (RAM and devices, QEMU's migration stream) after `vmctl suspend`.
    pub fn saved_state(&self) -> PathBuf {
        self.dir.join("saved.state")
    }
    /// What the saved state fits: written last, so a state without it is no saved state.
    pub fn saved_meta(&self) -> PathBuf {
        self.dir.join("saved.json")
    }
    /// What the next stop through the supervisor (SIGTERM, `systemctl stop`) should do,
    /// "save" or "poweroff", when a command asked (`vmctl suspend`, `vmctl stop`); without
    /// it the definition's `on_host_shutdown` decides.
    pub fn stop_request(&self) -> PathBuf {
        self.run_dir().join("stop-request")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn last_exit(&self) -> PathBuf {
        self.dir.join("last-exit.json")
    }
    /// How many times the VM was started, and restarted after a crash (`runstate::Counters`).
    pub fn counters(&self) -> PathBuf {
        self.dir.join("counters.json")
    }
    /// For a VM made from a drop-in definition (`create --update`): that file's path. A VM whose
    /// drop-in is gone no longer autostarts.
    pub fn drop_in_record(&self) -> PathBuf {
        self.dir.join("drop-in")
    }
    /// The provisioning credential vmctl's own images read at boot (JSON, mode 0600).
    pub fn provision_credential(&self) -> PathBuf {
        self.dir.join("provision.json")
    }
    /// The cloud-init NoCloud seed disk of a VM on an imported image.
    pub fn cloud_init_seed(&self) -> PathBuf {
        self.dir.join("seed.img")
    }
    pub fn ssh(&self) -> SshPaths {
        SshPaths {
            dir: self.dir.join("ssh"),
        }
    }

    /// Every socket path must fit in `sun_path`, and no path may contain a comma (QEMU's option
    /// syntax would split it); say which one does not and what to do.
    pub fn check_socket_paths(&self) -> Result<()> {
        if self.dir.to_string_lossy().contains(',') {
            return Err(Error::Usage(format!(
                "VM directory {} contains a comma, which QEMU's command line cannot carry; use another --home",
                self.dir.display()
            )));
        }
        for p in [
            self.qmp_socket(),
            self.qmp_ctl_socket(),
            self.qmp_shell_socket(),
            self.net_socket(),
            self.console_socket(),
            self.agent_socket(),
        ] {
            check_socket_path(&p)?;
        }
        Ok(())
    }
}

/// The files of one network, under `networks/NAME/`: its definition, and its switch's socket,
/// locks and log while one runs.
#[derive(Debug, Clone)]
pub struct NetPaths {
    pub dir: PathBuf,
}

impl NetPaths {
    pub fn definition(&self) -> PathBuf {
        self.dir.join("network.toml")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Where the switch takes VMs' NICs (the supervisors connect here).
    pub fn switch_socket(&self) -> PathBuf {
        self.run_dir().join("switch.sock")
    }
    /// Held by the running switch for its whole life: whoever can take it knows none runs.
    pub fn switch_lock(&self) -> PathBuf {
        self.run_dir().join("switch.lock")
    }
    /// Serialises starting a switch (and a switch deciding to end) between supervisors.
    pub fn start_lock(&self) -> PathBuf {
        self.run_dir().join("start.lock")
    }
    pub fn switch_pid(&self) -> PathBuf {
        self.run_dir().join("switch.pid")
    }
    pub fn switch_log(&self) -> PathBuf {
        self.dir.join("switch.log")
    }
}

/// A VM's SSH files, under `vms/NAME/ssh/`.
#[derive(Debug, Clone)]
pub struct SshPaths {
    pub dir: PathBuf,
}

impl SshPaths {
    /// The public keys authorized for the login user (a copy taken at create).
    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }
    /// A client key pair vmctl generated because the user had none.
    pub fn generated_identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// The private key `vmctl ssh` passes with `-i`, recorded at create (absent: ssh's defaults).
    pub fn identity_record(&self) -> PathBuf {
        self.dir.join("identity")
    }
    /// The VM's SSH host key (private), generated by vmctl; `.pub` beside it.
    pub fn host_key(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key.pub")
    }
    /// Pins the host key under the alias `vmctl-NAME`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
}

pub fn check_socket_path(p: &Path) -> Result<()> {
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::Usage(format!(
            "Socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets; use a shorter --home or VM name",
            p.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_are_refused_with_the_path() {
        let home = Home {
            root: PathBuf::from(format!("/{}", "h".repeat(60))),
        };
        let vm = home.vm(&"x".repeat(40).parse().unwrap());
        let e = vm.check_socket_paths().unwrap_err().to_string();
        assert!(e.contains("qmp.sock") && e.contains("107-byte"), "{e}");
        let short = Home {
            root: PathBuf::from("/var/lib/vmctl"),
        };
        assert!(
            short
                .vm(&"x".repeat(64).parse().unwrap())
                .check_socket_paths()
                .is_ok()
        );
    }
}
