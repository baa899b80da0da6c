//! The QEMU command line, rendered by one pure function from the validated spec, the image, the
//! accelerator decision and the VM's paths. Golden-tested (`tests/golden/*.argv`); `vmctl
//! show-cmd` prints exactly what `start` runs.
//!
//! QEMU opens none of its VM's own files: the supervisor gives it the QMP sockets (listening),
//! the disk, the seed and the console log as descriptors at the numbers of [`fd`] (files
//! through fd sets, `/dev/fdset/N`, with the path as the set's `opaque` for people), and the
//! provisioning credential as a pipe it reads once (`/dev/fd/N`). By path it opens only the
//! image: the backing file, kernel and initrd. It runs under QEMU's seccomp sandbox with every
//! optional restriction on (`host::qemu_user::SANDBOX`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::addr::MacAddr;
use crate::def::network::Peer;
use crate::def::spec::VmSpec;
use crate::paths::VmPaths;
use crate::types::Accel;
use crate::types::{Arch, ByteSize, Protocol};

/// What the argv is made from.
pub struct Launch<'a> {
    pub spec: &'a VmSpec,
    pub accel: Accel,
    pub paths: &'a VmPaths,
    /// The QEMU binary (from PATH, or a bare name when rendering for display).
    pub binary: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// vmctl's own images: the guest takes its hostname from the kernel command line
    /// (`systemd.hostname=`), from its first instruction on.
    pub set_hostname: bool,
    /// With `set_hostname`: the guest's machine-id (`systemd.machine_id=`), vmctl's for the
    /// VM, so that a clone of its disk is a machine of its own.
    pub machine_id: Option<String>,
    pub boot_files: BootFiles,
    /// The NICs on private networks, in the order of the definition's `networks`.
    pub lans: Vec<Lan>,
    /// Images without provisioning (tiny): the private NICs' addresses and the other VMs'
    /// names go on the kernel command line (`vmctl.nic=`, `vmctl.host=`), and so do the
    /// shared folders (`vmctl.mount=`).
    pub lans_on_cmdline: Option<Vec<Peer>>,
    /// Shared folders: a vhost-user-fs device each, served by virtiofsd.
    pub shares: Vec<Share>,
    /// A virtio-serial port for the guest agent (qemu-ga, in vmctl's debian-12 image), on a
    /// socket the supervisor talks to (it sets the clock of a resumed guest).
    pub guest_agent: bool,
}

/// A shared folder as the guest sees it: its virtio-fs tag, where it is mounted, read-only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
    pub ro: bool,
}

/// A NIC on a private network: its MAC, and the guest's address and prefix there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lan {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// The netdev id of the `index`-th private NIC (1-based).
pub fn lan_netdev(index: usize) -> String {
    format!("nic{index}")
}

/// What QEMU hands the guest's provisioning (see `guest::provision`): the credential file,
/// passed through fw_cfg, or the cloud-init seed, a read-only disk.
#[derive(Debug, Default, Clone)]
pub struct BootFiles {
    pub credential: Option<PathBuf>,
    pub seed: Option<PathBuf>,
    /// Your app's release (a tar), a read-only disk with the serial `vmctl-app`.
    pub app: Option<PathBuf>,
}

/// The `-netdev id=` of the guest's network: passt's stream, or QEMU's user networking (whose
/// forwards `vmctl port` changes through HMP), and the name QMP's `NETDEV_STREAM_*` events carry.
pub const NETDEV: &str = "net0";

/// The descriptor numbers QEMU is given its files and sockets at (see `supervisor::run`).
pub mod fd {
    /// The supervisor's QMP socket (listening).
    pub const QMP: i32 = 3;
    /// The control socket of one-shot commands (listening).
    pub const QMP_CTL: i32 = 4;
    /// The QMP shell's socket (listening).
    pub const QMP_SHELL: i32 = 5;
    /// The console log, open for writing (fd set 1).
    pub const SERIAL: i32 = 6;
    /// The VM's disk, open read-write and read-only (fd set 2: QEMU takes the one whose
    /// access mode it needs).
    pub const DISK: i32 = 7;
    pub const DISK_RO: i32 = 8;
    /// The cloud-init seed, read-only (fd set 3).
    pub const SEED: i32 = 9;
    /// Your app's release, read-only (fd set 4).
    pub const APP: i32 = 39;
    /// The saved state to load (`-incoming fd:38`), read-only.
    pub const INCOMING: i32 = 38;
    /// The guest agent's socket (listening; the supervisor connects to it).
    pub const AGENT: i32 = 37;
    /// A pipe holding the provisioning credential.
    pub const CREDENTIAL: i32 = 10;
    /// The guest network's socket (listening; passt connects to it), unless the VM has
    /// `host_access`.
    pub const NET: i32 = 11;
    /// The serial console's socket (listening; `vmctl console` connects to it). What the guest
    /// writes there also goes to the console log (fd set 1), attached or not.
    pub const CONSOLE: i32 = 12;
    /// The sockets of the NICs on private networks (listening; their switch is handed a
    /// connection): the `index`-th (1-based) is at `CONSOLE + index`.
    pub fn lan(index: usize) -> i32 {
        CONSOLE + index as i32
    }
    /// The connected sockets to the shared folders' virtiofsd: the `index`-th (0-based) at
    /// `SHARE + index`.
    pub const SHARE: i32 = 40;
    pub fn share(index: usize) -> i32 {
        SHARE + index as i32
    }
}

/// TCG's translation cache defaults to 1 GiB and dominates QEMU's RSS; a quarter of guest RAM,
/// between 64 and 256 MiB, cost no measurable boot time here (HOST.md).
pub fn tcg_tb_size_mib(memory: ByteSize) -> u64 {
    (memory.mib() / 4).clamp(64, 256)
}

pub fn argv(l: &Launch) -> Vec<String> {
    let s = l.spec;
    let p = l.paths;
    let mut a: Vec<String> = vec![l.binary.display().to_string()];
    let mut push = |args: &[&str]| a.extend(args.iter().map(|x| x.to_string()));
    let path = |p: &Path| p.display().to_string();

    push(&["-name", &format!("guest={},debug-threads=on", s.name)]);
    let machine = match s.arch {
        Arch::X86_64 => "pc",
        Arch::Aarch64 => "virt",
    };
    // vhost-user (the shared folders' virtiofsd) maps the guest's memory: a shared memfd.
    let machine = if l.shares.is_empty() {
        machine.to_string()
    } else {
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                s.memory.mib()
            ),
        ]);
        format!("{machine},memory-backend=mem")
    };
    push(&["-machine", &machine]);
    match l.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => {
            push(&[
                "-accel",
                &format!("tcg,tb-size={}", tcg_tb_size_mib(s.memory)),
            ]);
            if s.arch == Arch::Aarch64 {
                push(&["-cpu", "cortex-a57"]);
            }
        }
    }
    push(&[
        "-smp",
        &s.cpus.to_string(),
        "-m",
        &format!("{}M", s.memory.mib()),
    ]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-sandbox", crate::host::qemu_user::SANDBOX]);
    for (id, n) in [
        ("qmp", fd::QMP),
        ("qmp-ctl", fd::QMP_CTL),
        ("qmp-shell", fd::QMP_SHELL),
    ] {
        push(&[
            "-chardev",
            &format!("socket,id={id},fd={n},server=on,wait=off"),
            "-mon",
            &format!("chardev={id},mode=control"),
        ]);
    }
    push(&[
        "-add-fd",
        &format!("fd={},set=1,opaque={}", fd::SERIAL, path(&p.serial_log())),
        "-chardev",
        &format!(
            "socket,id=serial0,fd={},server=on,wait=off,logfile=/dev/fdset/1,logappend=on",
            fd::CONSOLE
        ),
        "-serial",
        "chardev:serial0",
    ]);
    push(&[
        "-add-fd",
        &format!("fd={},set=2,opaque={}", fd::DISK, path(&p.disk())),
        "-add-fd",
        &format!("fd={},set=2,opaque={}", fd::DISK_RO, path(&p.disk())),
        "-drive",
        "file=/dev/fdset/2,if=none,id=disk0,format=qcow2,discard=unmap",
        "-device",
        "virtio-blk-pci,drive=disk0",
    ]);
    // passt networks the guest (it connects to the socket QEMU listens on), unless the guest
    // may reach the host: then QEMU's user networking, with its forwards.
    let mut netdev = if s.host_access {
        format!("user,id={NETDEV}")
    } else {
        format!(
            "stream,id={NETDEV},server=on,addr.type=fd,addr.str={}",
            fd::NET
        )
    };
    for f in s.ports.iter().filter(|_| s.host_access) {
        netdev.push_str(&hostfwd(f));
    }
    push(&[
        "-netdev",
        &netdev,
        "-device",
        &format!("virtio-net-pci,netdev={NETDEV}"),
    ]);
    for (i, lan) in l.lans.iter().enumerate() {
        let id = lan_netdev(i + 1);
        push(&[
            "-netdev",
            &format!(
                "stream,id={id},server=on,addr.type=fd,addr.str={}",
                fd::lan(i + 1)
            ),
            "-device",
            &format!("virtio-net-pci,netdev={id},mac={}", lan.mac),
        ]);
    }
    for (i, sh) in l.shares.iter().enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=fs{i},fd={}", fd::share(i)),
            "-device",
            &format!("vhost-user-fs-pci,chardev=fs{i},tag={}", sh.tag),
        ]);
    }
    if l.guest_agent {
        push(&[
            "-chardev",
            &format!("socket,id=qga0,fd={},server=on,wait=off", fd::AGENT),
            "-device",
            "virtio-serial-pci,id=vser0",
            "-device",
            "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        ]);
    }
    if l.boot_files.credential.is_some() {
        push(&[
            "-fw_cfg",
            &format!(
                "name=opt/io.systemd.credentials/vmctl.provision,file=/dev/fd/{}",
                fd::CREDENTIAL
            ),
        ]);
    }
    if let Some(seed) = &l.boot_files.seed {
        push(&[
            "-add-fd",
            &format!("fd={},set=3,opaque={}", fd::SEED, path(seed)),
            "-drive",
            "file=/dev/fdset/3,if=none,id=seed,format=raw,readonly=on",
            "-device",
            "virtio-blk-pci,drive=seed",
        ]);
    }
    if let Some(app) = &l.boot_files.app {
        push(&[
            "-add-fd",
            &format!("fd={},set=4,opaque={}", fd::APP, path(app)),
            "-drive",
            "file=/dev/fdset/4,if=none,id=app,format=raw,readonly=on",
            "-device",
            "virtio-blk-pci,drive=app,serial=vmctl-app",
        ]);
    }
    if let Some(k) = &l.kernel {
        push(&["-kernel", &path(k)]);
        if let Some(i) = &l.initrd {
            push(&["-initrd", &path(i)]);
        }
        push(&["-append", &kernel_cmdline(l)]);
    }
    a
}

/// `,hostfwd=PROTO:ADDR:HOST-:GUEST`: one forward of QEMU's user networking.
pub fn hostfwd(f: &crate::types::PortForward) -> String {
    let proto = match f.proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!(",hostfwd={proto}:{}:{}-:{}", f.addr, f.host, f.guest)
}

/// The guest kernel's command line on a direct boot: the image's, then what vmctl tells the
/// guest (its console, name, hostname and machine-id, and on the tiny image its networks and
/// shares). Also what the libvirt export passes.
pub fn kernel_cmdline(l: &Launch) -> String {
    let s = l.spec;
    let mut cmdline = l.cmdline.clone().unwrap_or_default();
    let mut extras = vec![
        format!("console={}", s.arch.console()),
        format!("vmctl.name={}", s.name),
    ];
    if l.set_hostname {
        extras.push(format!("systemd.hostname={}", s.name));
        if let Some(id) = &l.machine_id {
            extras.push(format!("systemd.machine_id={id}"));
        }
    }
    if let Some(peers) = &l.lans_on_cmdline {
        extras.extend(lan_cmdline(&l.lans, peers));
        extras.extend(l.shares.iter().map(|sh| {
            format!(
                "vmctl.mount={},{},{}",
                sh.tag,
                sh.path.display(),
                if sh.ro { "ro" } else { "rw" }
            )
        }));
    }
    for extra in extras {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&extra);
    }
    cmdline
}

/// `vmctl.nic=MAC,ADDRESS/PREFIX` for each private NIC and `vmctl.host=ADDRESS,NAME,...` for
/// each other VM on those networks: what the tiny image's init reads.
fn lan_cmdline(lans: &[Lan], peers: &[Peer]) -> Vec<String> {
    let nics = lans
        .iter()
        .map(|n| format!("vmctl.nic={},{}/{}", n.mac, n.address, n.prefix));
    let hosts = peers
        .iter()
        .map(|p| format!("vmctl.host={},{}", p.address, p.names.join(",")));
    nics.chain(hosts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::config::VmConfig;
    use crate::def::spec::{Limits, validate};
    use crate::paths::Home;

    fn spec(toml: &str) -> VmSpec {
        let cfg = VmConfig::parse(toml, "t").unwrap();
        validate(
            &"web".parse().unwrap(),
            &cfg,
            Limits {
                host_memory: 64 * ByteSize::GIB,
            },
            "t",
        )
        .unwrap()
    }

    fn render(spec: &VmSpec, accel: Accel) -> String {
        let home = Home {
            root: PathBuf::from("/var/lib/vmctl"),
        };
        let paths = home.vm(&spec.name);
        let img = home.image_dir(&spec.image, spec.arch);
        let argv = argv(&Launch {
            spec,
            accel,
            paths: &paths,
            binary: spec.arch.qemu_binary().into(),
            kernel: Some(img.join("kernel")),
            initrd: Some(img.join("initrd")),
            cmdline: Some("panic=-1 quiet".into()),
            set_hostname: false,
            machine_id: None,
            boot_files: Default::default(),
            lans: vec![],
            lans_on_cmdline: None,
            shares: vec![],
            guest_agent: false,
        });
        let mut out = argv.join("\n");
        out.push('\n');
        out
    }

    use crate::golden::check as golden;

    /// Two private networks: a NIC each (its own socket descriptor and MAC), and for the tiny
    /// image the addresses and the other VMs on the kernel command line.
    #[test]
    fn tiny_on_two_private_networks() {
        let s = spec(
            "memory = \"256M\"\narch = \"x86_64\"\nports = [\"8080:8080\"]\nnetworks = [\"backend\", { name = \"front\", address = \"10.89.1.5\" }]\n",
        );
        let home = Home {
            root: PathBuf::from("/var/lib/vmctl"),
        };
        let paths = home.vm(&s.name);
        let img = home.image_dir(&s.image, s.arch);
        let lans = vec![
            Lan {
                mac: s.networks[0].mac,
                address: "10.89.0.2".parse().unwrap(),
                prefix: 24,
            },
            Lan {
                mac: s.networks[1].mac,
                address: "10.89.1.5".parse().unwrap(),
                prefix: 24,
            },
        ];
        let peers = vec![Peer {
            address: "10.89.0.3".parse().unwrap(),
            names: vec!["db".into(), "db.backend".into()],
        }];
        let argv = argv(&Launch {
            spec: &s,
            accel: Accel::Tcg,
            paths: &paths,
            binary: "qemu-system-x86_64".into(),
            kernel: Some(img.join("kernel")),
            initrd: Some(img.join("initrd")),
            cmdline: Some("panic=-1 quiet".into()),
            set_hostname: false,
            machine_id: None,
            boot_files: Default::default(),
            lans,
            lans_on_cmdline: Some(peers),
            shares: vec![Share {
                tag: "vmctl0".into(),
                path: "/srv/code".into(),
                ro: true,
            }],
            guest_agent: false,
        });
        golden("tiny-x86_64-lans.argv", &(argv.join("\n") + "\n"));
    }

    #[test]
    fn tiny_x86_64_under_tcg() {
        let s = spec(
            "memory = \"256M\"\nports = [\"8080:8080\", \"0.0.0.0:5353:53/udp\"]\narch = \"x86_64\"\n",
        );
        golden("tiny-x86_64-tcg.argv", &render(&s, Accel::Tcg));
    }

    #[test]
    fn vps_x86_64_under_kvm() {
        let s = spec(
            "cpus = 1\nmemory = \"2G\"\ndisk = \"10G\"\narch = \"x86_64\"\nports = [\"5022:22\", \"5080:8080\"]\n",
        );
        golden("vps-x86_64-kvm.argv", &render(&s, Accel::Kvm));
    }

    #[test]
    fn tiny_aarch64_under_tcg() {
        let s = spec("arch = \"aarch64\"\nmemory = \"256M\"\nports = [\"8081:8080\"]\n");
        golden("tiny-aarch64-tcg.argv", &render(&s, Accel::Tcg));
    }

    #[test]
    fn provisioned_vps_under_tcg() {
        let s = spec(
            "cpus = 1\nmemory = \"2G\"\narch = \"x86_64\"\nports = [\"5022:22\", \"5080:8080\"]\napp = \"gunicorn-hello\"\nuser = \"alice\"\n",
        );
        let home = Home {
            root: PathBuf::from("/var/lib/vmctl"),
        };
        let paths = home.vm(&s.name);
        let img = home.image_dir("debian-12", s.arch);
        let argv = argv(&Launch {
            spec: &s,
            accel: Accel::Tcg,
            paths: &paths,
            binary: "qemu-system-x86_64".into(),
            kernel: Some(img.join("kernel")),
            initrd: Some(img.join("initrd")),
            cmdline: Some("root=/dev/vda1 ro quiet".into()),
            set_hostname: true,
            machine_id: Some("5f1d3a0c9b7e4d2a8c6b0e1f2a3b4c5d".into()),
            boot_files: BootFiles {
                credential: Some(paths.provision_credential()),
                seed: None,
                app: Some(paths.app_bundle()),
            },
            lans: vec![],
            lans_on_cmdline: None,
            shares: vec![],
            guest_agent: true,
        });
        golden("vps-x86_64-tcg-provisioned.argv", &(argv.join("\n") + "\n"));
    }

    #[test]
    fn cloud_image_boots_from_disk_with_a_seed() {
        let s = spec("memory = \"1G\"\narch = \"x86_64\"\nports = [\"2222:22\"]\n");
        let home = Home {
            root: PathBuf::from("/var/lib/vmctl"),
        };
        let paths = home.vm(&s.name);
        let argv = argv(&Launch {
            spec: &s,
            accel: Accel::Tcg,
            paths: &paths,
            binary: "qemu-system-x86_64".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            set_hostname: false,
            machine_id: None,
            boot_files: BootFiles {
                credential: None,
                seed: Some(paths.cloud_init_seed()),
                app: None,
            },
            lans: vec![],
            lans_on_cmdline: None,
            shares: vec![],
            guest_agent: false,
        });
        golden("cloud-x86_64-tcg-seed.argv", &(argv.join("\n") + "\n"));
    }

    #[test]
    fn with_host_access_forwards_bind_loopback_unless_told() {
        let s = spec(
            "ports = [\"8080:80\", \"0.0.0.0:2222:22\"]\narch = \"x86_64\"\nhost_access = true\n",
        );
        let a = render(&s, Accel::Tcg);
        assert!(
            a.contains(
                "-netdev\nuser,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:0.0.0.0:2222-:22\n"
            ),
            "{a}"
        );
    }

    #[test]
    fn by_default_passt_networks_the_guest_and_qemu_binds_no_port() {
        let s = spec("ports = [\"8080:80\"]\narch = \"x86_64\"\n");
        let a = render(&s, Accel::Tcg);
        assert!(
            a.contains("-netdev\nstream,id=net0,server=on,addr.type=fd,addr.str=11\n"),
            "{a}"
        );
        assert!(!a.contains("hostfwd"), "{a}");
    }

    #[test]
    fn tb_size_follows_guest_memory() {
        assert_eq!(tcg_tb_size_mib(ByteSize(256 * ByteSize::MIB)), 64);
        assert_eq!(tcg_tb_size_mib(ByteSize(512 * ByteSize::MIB)), 128);
        assert_eq!(tcg_tb_size_mib(ByteSize(2 * ByteSize::GIB)), 256);
    }
}
