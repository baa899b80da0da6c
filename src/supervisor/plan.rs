//! The launch plan: everything QEMU is started with, decided before anything is started — the
//! image, the accelerator with its reason, the binary and its version, the exact argv (which
//! `vmctl show-cmd` prints) and the guest's network (passt, unless the VM has `host_access`)
//! — and the check that the VM's host ports are free.

use crate::def::spec::VmSpec;
use crate::error::{Error, Result};
use crate::guest::credential::GuestNet;
use crate::host::accel::{self, Decision};
use crate::host::qemu_user::{self, QemuUser};
use crate::image;
use crate::net::attach::Nic;
use crate::paths::Home;
use crate::qemu::argv::{self, Lan, Launch};
use crate::saved::Fit;
use crate::types::{PortForward, Protocol, VmName};

/// Everything needed to spawn QEMU, decided before anything is started.
pub struct LaunchPlan {
    pub argv: Vec<String>,
    pub image: image::store::Image,
    pub decision: Decision,
    pub qemu_version: String,
    /// Who QEMU runs as, when not as us (vmctl is root: `vmctl-qemu`).
    pub user: Option<QemuUser>,
    /// The passt that networks the guest (`None`: QEMU's user networking, `host_access`).
    pub net: Option<crate::net::link::Setup>,
    /// The NICs on private networks, for their switches.
    pub nics: Vec<Nic>,
    /// The guest's view of its private networks (its NICs, the other VMs' names) and of its
    /// shared folders, for its provisioning.
    pub guest_net: GuestNet,
    /// The shared folders' daemons to start before QEMU.
    pub shares: Vec<PlannedShare>,
    /// The guest kernel's command line on a direct boot (as in `argv`).
    pub cmdline: Option<String>,
    /// The guest has an agent port (`qga.sock`): vmctl's debian-12 image runs qemu-ga.
    pub agent: bool,
    /// The fingerprint of the argv without what a restore adds: what a saved state is for.
    pub machine: String,
    /// What the VM's saved state says of this start: none, load it (then `argv` takes it in,
    /// `-S -incoming`), or stale.
    pub saved: Fit,
}

/// A shared folder's daemon: what it serves, as whom, on which socket, with which binary.
#[derive(Debug, Clone)]
pub struct PlannedShare {
    pub mount: crate::def::mounts::MountSpec,
    pub owner: crate::def::mounts::Owner,
    pub socket: std::path::PathBuf,
    pub binary: std::path::PathBuf,
}

/// Resolve image, accelerator and binary into the exact argv. Also used by `show-cmd`.
pub fn plan(home: &Home, spec: &VmSpec) -> Result<LaunchPlan> {
    let paths = home.vm(&spec.name);
    paths.check_socket_paths()?;
    let img = image::store::find(home, &spec.image, spec.arch)?;
    let binary = qemu_binary(spec.arch)?;
    let qemu_version = crate::host::facts::qemu_version(&binary).unwrap_or_default();
    let user = qemu_user::for_this_process()?;
    let identity = user.as_ref().map(|u| u.identity.clone());
    let decision = accel::choose(spec.accel, spec.arch, identity.as_ref(), &|arch| {
        image::store::probe_kernel(home, arch)
    })?;
    let (lans, nics) = lans(home, spec)?;
    let shares = shares(home, spec)?;
    let guest_shares: Vec<argv::Share> = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| argv::Share {
            tag: crate::share::virtiofsd::tag(i),
            path: m.guest.clone(),
            ro: m.ro,
        })
        .collect();
    let peers = crate::def::network::peers(home, spec);
    let provision = img.manifest.provision;
    let agent = provision == image::recipe::Provision::Vmctl;
    let launch = Launch {
        spec,
        accel: decision.accel,
        paths: &paths,
        binary,
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: img.manifest.cmdline.clone(),
        set_hostname: img.manifest.provision == image::recipe::Provision::Vmctl,
        machine_id: crate::guest::provision::machine_id(&paths),
        boot_files: crate::guest::provision::planned(&paths, spec, &img),
        lans: lans.clone(),
        lans_on_cmdline: (provision == image::recipe::Provision::None).then(|| peers.clone()),
        shares: guest_shares.clone(),
        guest_agent: agent,
    };
    let argv = argv::argv(&launch);
    let cmdline = launch
        .kernel
        .is_some()
        .then(|| argv::kernel_cmdline(&launch));
    let (argv, machine, saved) = with_saved(&paths, &img, argv, &qemu_version);
    let net = match spec.host_access {
        true => None,
        false => Some(crate::net::link::Setup {
            binary: passt_binary()?,
            identity: user.as_ref().map(|u| u.identity.clone()),
        }),
    };
    Ok(LaunchPlan {
        argv,
        image: img,
        decision,
        qemu_version,
        user,
        net,
        nics,
        guest_net: GuestNet {
            lans,
            peers,
            shares: guest_shares,
        },
        shares,
        agent,
        cmdline,
        machine,
        saved,
    })
}

/// The QEMU binary for `arch`, from PATH.
fn qemu_binary(arch: crate::types::Arch) -> Result<std::path::PathBuf> {
    crate::host::facts::find_in_path(arch.qemu_binary()).ok_or_else(|| {
        Error::Host(format!(
            "{} is not installed (apt-get install {})",
            arch.qemu_binary(),
            match arch {
                crate::types::Arch::X86_64 => "qemu-system-x86",
                crate::types::Arch::Aarch64 => "qemu-system-arm",
            }
        ))
    })
}

/// The argv, with what loads the VM's saved state when it has one that fits (`-S -incoming`:
/// QEMU loads it paused, the supervisor lets it run); the fingerprint of the argv without that;
/// and what the saved state says.
fn with_saved(
    paths: &crate::paths::VmPaths,
    img: &image::store::Image,
    mut argv: Vec<String>,
    qemu_version: &str,
) -> (Vec<String>, String, Fit) {
    let machine = crate::saved::machine_of(&argv);
    let saved = crate::saved::fit(paths, &img.disk(), &argv, qemu_version);
    if matches!(saved, Fit::Loads(_)) {
        argv.extend([
            "-S".to_string(),
            "-incoming".into(),
            format!("fd:{}", argv::fd::INCOMING),
        ]);
    }
    (argv, machine, saved)
}

/// The shared folders' daemons: each directory checked again (it may have gone or changed
/// hands since create), the virtiofsd found.
fn shares(home: &Home, spec: &VmSpec) -> Result<Vec<PlannedShare>> {
    if spec.mounts.is_empty() {
        return Ok(vec![]);
    }
    let binary = crate::share::virtiofsd::binary()?;
    let paths = home.vm(&spec.name);
    let mut out = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let owner = crate::def::mounts::check_host(m, &home.root)
            .map_err(|why| Error::Usage(format!("VM {}: mounts[{i}]: {why}", spec.name)))?;
        let socket = paths.share_socket(i);
        crate::paths::check_socket_path(&socket)?;
        out.push(PlannedShare {
            mount: m.clone(),
            owner,
            socket,
            binary: binary.clone(),
        });
    }
    Ok(out)
}

/// The NICs of `spec` on its private networks, each network read (it must exist: else "not
/// found") and the VM's address on it checked against its subnet.
fn lans(home: &Home, spec: &VmSpec) -> Result<(Vec<Lan>, Vec<Nic>)> {
    let paths = home.vm(&spec.name);
    let mut lans = Vec::new();
    let mut nics = Vec::new();
    for (i, a) in spec.networks.iter().enumerate() {
        let net = crate::def::network::load(home, &a.network)?;
        let address = a.address.ok_or_else(|| {
            Error::Usage(format!(
                "VM {} has no address on network {}: set networks[{i}].address in its definition (`vmctl create --update`)",
                spec.name, a.network
            ))
        })?;
        net.subnet.check_host(address).map_err(|why| {
            Error::Usage(format!(
                "VM {}'s address on network {}: {why}",
                spec.name, a.network
            ))
        })?;
        let socket = paths.nic_socket(i + 1);
        crate::paths::check_socket_path(&socket)?;
        lans.push(Lan {
            mac: a.mac,
            address,
            prefix: net.subnet.prefix(),
        });
        nics.push(Nic {
            network: a.network.clone(),
            mac: a.mac,
            address,
            socket,
        });
    }
    Ok((lans, nics))
}

/// passt, which networks guests without the host's loopback; `Error::Host` when it is missing.
pub fn passt_binary() -> Result<std::path::PathBuf> {
    crate::host::facts::find_in_path("passt").ok_or_else(|| {
        Error::Host(
            "passt is not installed (apt-get install passt): it networks guests without letting them reach the host's own services; `host_access = true` in a definition uses QEMU's user networking instead, which does".into(),
        )
    })
}

/// Refuse forwards whose host port is taken, naming the port and, when it is one, the VM.
pub fn check_ports_free(home: &Home, spec: &VmSpec) -> Result<()> {
    for (i, f) in spec.ports.iter().enumerate() {
        check_port_free(home, &spec.name, f, &format!("ports[{i}] ({f})"))?;
    }
    Ok(())
}

/// Refuse a forward whose host port cannot be bound now, naming it (`what`) and, when it is
/// one, the VM that forwards it.
pub fn check_port_free(home: &Home, me: &VmName, f: &PortForward, what: &str) -> Result<()> {
    let addr = std::net::SocketAddr::from((f.addr, f.host));
    let free = match f.proto {
        Protocol::Tcp => std::net::TcpListener::bind(addr).map(|_| ()),
        Protocol::Udp => std::net::UdpSocket::bind(addr).map(|_| ()),
    };
    if let Err(e) = free {
        let owner = crate::def::store::port_owner(home, me, f)
            .map(|(vm, p)| format!("VM {vm} forwards it ({p})"))
            .unwrap_or_else(|| format!("another process holds it ({e})"));
        return Err(Error::State(format!(
            "Host port {}:{}/{} of {what} is already in use: {owner}",
            f.addr, f.host, f.proto
        )));
    }
    Ok(())
}
