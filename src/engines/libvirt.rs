//! A VM as a libvirt domain (`vmctl export NAME --format libvirt`), rendered purely from a
//! [`Domain`] and golden-tested: `type='kvm'` or `'qemu'` (TCG) as vmctl would run it, the
//! direct kernel boot and command line of vmctl's images, the disk with its backing chain, the
//! provisioning credential as a `<sysinfo type='fwcfg'>` entry, the cloud-init seed and the app
//! release as read-only disks, the guest agent's channel, a serial console; the forwards as QEMU
//! user networking with `hostfwd` through `<qemu:commandline>` — libvirt 9.0 refuses passt's
//! `<portForward>` at define (HOST.md) — on a fixed PCI slot so that libvirt's own devices do
//! not take it. What libvirt cannot be told is listed by [`gaps`].

use std::path::PathBuf;

use crate::def::spec::VmSpec;
use crate::types::{Accel, Arch, PortForward};

/// QEMU's passthrough namespace in libvirt's domain XML.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// The PCI slot of the user-networking NIC (`addr=0x10`: away from libvirt's own devices).
const NIC_SLOT: &str = "0x10";

/// What a domain is made of, gathered from the VM's definition, its image and its files.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub accel: Accel,
    pub arch: Arch,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: PathBuf,
    /// The image the disk is an overlay on.
    pub base: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// The provisioning credential (vmctl's images), as a file.
    pub credential: Option<PathBuf>,
    /// The cloud-init seed (imported images).
    pub seed: Option<PathBuf>,
    /// Your app's release (a read-only disk with serial `vmctl-app`).
    pub app: Option<PathBuf>,
    pub agent: bool,
    pub forwards: Vec<PortForward>,
}

/// `s` as XML character data or attribute value.
pub fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn path(p: &std::path::Path) -> String {
    esc(&p.display().to_string())
}

/// The domain XML.
pub fn render(d: &Domain) -> String {
    let mut x = String::new();
    let mut line = |indent: usize, s: &str| {
        x.push_str(&"  ".repeat(indent));
        x.push_str(s);
        x.push('\n');
    };
    let kind = match d.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    line(0, &format!("<domain type='{kind}' xmlns:qemu='{QEMU_NS}'>"));
    line(1, &format!("<name>{}</name>", esc(&d.name)));
    line(1, &format!("<memory unit='MiB'>{}</memory>", d.memory_mib));
    line(1, &format!("<vcpu>{}</vcpu>", d.cpus));
    if let Some(c) = &d.credential {
        line(1, "<sysinfo type='fwcfg'>");
        line(
            2,
            &format!(
                "<entry name='opt/io.systemd.credentials/vmctl.provision' file='{}'/>",
                path(c)
            ),
        );
        line(1, "</sysinfo>");
    }
    os(d, &mut line);
    line(1, "<features>");
    line(2, "<acpi/>");
    line(1, "</features>");
    if d.accel == Accel::Kvm {
        line(1, "<cpu mode='host-passthrough'/>");
    }
    line(1, "<on_poweroff>destroy</on_poweroff>");
    line(1, "<on_reboot>restart</on_reboot>");
    line(1, "<on_crash>destroy</on_crash>");
    line(1, "<devices>");
    disks(d, &mut line);
    if d.agent {
        line(2, "<channel type='unix'>");
        line(3, "<target type='virtio' name='org.qemu.guest_agent.0'/>");
        line(2, "</channel>");
    }
    line(2, "<serial type='pty'>");
    line(3, "<target port='0'/>");
    line(2, "</serial>");
    line(2, "<console type='pty'>");
    line(3, "<target type='serial' port='0'/>");
    line(2, "</console>");
    line(2, "<memballoon model='none'/>");
    line(1, "</devices>");
    line(1, "<qemu:commandline>");
    for (flag, value) in [netdev(&d.forwards), nic()] {
        line(2, &format!("<qemu:arg value='{flag}'/>"));
        line(2, &format!("<qemu:arg value='{}'/>", esc(&value)));
    }
    line(1, "</qemu:commandline>");
    line(0, "</domain>");
    x
}

/// `<os>`: the machine, and the direct kernel boot of vmctl's images or the disk's bootloader.
fn os(d: &Domain, line: &mut impl FnMut(usize, &str)) {
    let (arch, machine) = match d.arch {
        Arch::X86_64 => ("x86_64", "pc"),
        Arch::Aarch64 => ("aarch64", "virt"),
    };
    line(1, "<os>");
    line(
        2,
        &format!("<type arch='{arch}' machine='{machine}'>hvm</type>"),
    );
    match &d.kernel {
        Some(k) => {
            line(2, &format!("<kernel>{}</kernel>", path(k)));
            if let Some(i) = &d.initrd {
                line(2, &format!("<initrd>{}</initrd>", path(i)));
            }
            if let Some(c) = &d.cmdline {
                line(2, &format!("<cmdline>{}</cmdline>", esc(c)));
            }
        }
        None => line(2, "<boot dev='hd'/>"),
    }
    line(1, "</os>");
}

/// The VM's disk (with its backing image), then the seed and the app release, read-only.
fn disks(d: &Domain, line: &mut impl FnMut(usize, &str)) {
    line(2, "<disk type='file' device='disk'>");
    line(3, "<driver name='qemu' type='qcow2' discard='unmap'/>");
    line(3, &format!("<source file='{}'/>", path(&d.disk)));
    if let Some(b) = &d.base {
        line(3, "<backingStore type='file'>");
        line(4, "<format type='qcow2'/>");
        line(4, &format!("<source file='{}'/>", path(b)));
        line(4, "<backingStore/>");
        line(3, "</backingStore>");
    }
    line(3, "<target dev='vda' bus='virtio'/>");
    line(2, "</disk>");
    let extra = [(&d.seed, None), (&d.app, Some("vmctl-app"))];
    for (i, (file, serial)) in extra.iter().enumerate() {
        let Some(f) = file else { continue };
        line(2, "<disk type='file' device='disk'>");
        line(3, "<driver name='qemu' type='raw'/>");
        line(3, &format!("<source file='{}'/>", path(f)));
        line(
            3,
            &format!("<target dev='vd{}' bus='virtio'/>", ['b', 'c'][i]),
        );
        if let Some(s) = serial {
            line(3, &format!("<serial>{s}</serial>"));
        }
        line(3, "<readonly/>");
        line(2, "</disk>");
    }
}

/// `-netdev user` with the forwards, as vmctl's `host_access` networking does.
fn netdev(forwards: &[PortForward]) -> (&'static str, String) {
    let mut v = "user,id=vmctlnet".to_string();
    for f in forwards {
        v.push_str(&crate::qemu::argv::hostfwd(f));
    }
    ("-netdev", v)
}

fn nic() -> (&'static str, String) {
    (
        "-device",
        format!("virtio-net-pci,netdev=vmctlnet,addr={NIC_SLOT}"),
    )
}

/// What the VM has that a libvirt domain does not carry, one line each (the export prints
/// them on stderr; `--strict` refuses instead). Its stop timeout and run-time forwards are
/// libvirt's own business (`virsh shutdown`, a redefine), not gaps.
pub fn gaps(spec: &VmSpec) -> Vec<String> {
    let mut out = super::common_gaps(spec, "libvirt");
    if spec.health.is_some() {
        out.push("[health]: libvirt has no health check; watch the guest from outside".into());
    }
    if spec.autostart {
        out.push(format!(
            "autostart: not in the XML; run `virsh autostart {}` after defining it",
            spec.name
        ));
    }
    if !spec.host_access {
        out.push(LOOPBACK.into());
    }
    out
}

/// Why QEMU's user networking (libvirt 9.0, Nomad) is less closed than vmctl's passt.
pub const LOOPBACK: &str = "host_access = false: without passt the domain uses QEMU's user networking, where the guest reaches the host's loopback (10.0.2.2)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check as golden;

    fn seed_vm() -> Domain {
        let home = PathBuf::from("/var/lib/vmctl");
        let img = home.join("images/debian-12/x86_64");
        Domain {
            name: "web".into(),
            accel: Accel::Tcg,
            arch: Arch::X86_64,
            cpus: 1,
            memory_mib: 2048,
            disk: home.join("vms/web/disk.qcow2"),
            base: Some(img.join("disk.qcow2")),
            kernel: Some(img.join("kernel")),
            initrd: Some(img.join("initrd")),
            cmdline: Some(
                "root=/dev/vda1 rw quiet console=ttyS0 vmctl.name=web systemd.hostname=web".into(),
            ),
            credential: Some(home.join("vms/web/provision.json")),
            seed: None,
            app: None,
            agent: true,
            forwards: vec!["5022:22".parse().unwrap(), "5080:8080".parse().unwrap()],
        }
    }

    #[test]
    fn the_seed_vm_as_a_libvirt_domain() {
        golden("web-libvirt.xml", &render(&seed_vm()));
    }

    #[test]
    fn a_cloud_image_boots_from_its_disk_with_its_seed_and_values_are_escaped() {
        let d = Domain {
            name: "a&b".into(),
            accel: Accel::Kvm,
            kernel: None,
            initrd: None,
            cmdline: None,
            credential: None,
            seed: Some("/v/seed's.img".into()),
            app: Some("/v/app.tar".into()),
            agent: false,
            ..seed_vm()
        };
        let x = render(&d);
        assert!(x.starts_with("<domain type='kvm'"), "{x}");
        assert!(x.contains("<name>a&amp;b</name>"));
        assert!(x.contains("<boot dev='hd'/>") && !x.contains("<kernel>"));
        assert!(x.contains("<source file='/v/seed&apos;s.img'/>"));
        assert!(x.contains("<target dev='vdc' bus='virtio'/>\n      <serial>vmctl-app</serial>"));
        assert!(x.contains("<cpu mode='host-passthrough'/>"));
        assert!(!x.contains("fwcfg") && !x.contains("guest_agent"));
    }
}
