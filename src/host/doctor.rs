//! `vmctl doctor`'s report, as data (the CLI prints it): the host facts vmctl acts on and the
//! accelerator it would choose for each guest architecture, with the reason: the first thing to
//! read when a VM is slow or does not start.

use serde::Serialize;

use crate::host::accel::{self, BootVerdict, Decision};
use crate::host::facts::{HostFacts, QemuBinary};
use crate::host::qemu_user;
use crate::paths::Home;
use crate::types::{AccelChoice, Arch};

#[derive(Debug, Serialize)]
pub struct ArchReport {
    pub arch: Arch,
    pub qemu: Option<String>,
    pub qemu_version: Option<String>,
    /// The KVM boot test's verdict (host architecture only).
    pub kvm_boot_test: Option<BootVerdict>,
    pub decision: Option<Decision>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Doctor {
    pub home: String,
    pub cache: String,
    /// Who QEMU runs as: `vmctl-qemu (uid 999, groups 995 109)` when vmctl is root, else the
    /// invoking user.
    pub qemu_runs_as: String,
    /// The guests' network: passt's path (the default), or that it is missing.
    pub network: String,
    pub host: HostFacts,
    pub arches: Vec<ArchReport>,
}

/// The report for this host; `probe_kernel` finds the test guest the KVM boot test runs.
pub fn run(home: &Home, probe_kernel: accel::ProbeKernel) -> Doctor {
    let host = HostFacts::probe();
    let user = qemu_user::for_this_process();
    let identity = user
        .as_ref()
        .ok()
        .and_then(|u| u.as_ref().map(|u| u.identity.clone()));
    let arches = host
        .qemu
        .iter()
        .map(|q| {
            let boot = (host.arch == Some(q.arch) && host.kvm.basic_ok() && q.path.is_some())
                .then(|| accel::verdict_cached(q.arch, identity.as_ref(), probe_kernel))
                .flatten();
            report(&host, q, boot)
        })
        .collect();
    let me = nix::unistd::geteuid();
    let qemu_runs_as = match user {
        Ok(Some(u)) => format!(
            "{} (uid {}, groups {})",
            u.name,
            u.identity.uid,
            u.identity
                .groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Ok(None) => format!("you (uid {me})"),
        Err(e) => format!("cannot tell: {e}"),
    };
    let network = match crate::host::facts::find_in_path("passt") {
        Some(p) => format!(
            "passt {} (guests reach out, not the host's loopback; host_access = true: QEMU's user networking)",
            p.display()
        ),
        None => {
            "passt missing (apt-get install passt): only VMs with host_access = true start".into()
        }
    };
    Doctor {
        home: home.root.display().to_string(),
        cache: crate::paths::cache_dir().display().to_string(),
        qemu_runs_as,
        network,
        host,
        arches,
    }
}

/// What guests of `q`'s architecture get on this host, given the KVM boot test's verdict.
fn report(host: &HostFacts, q: &QemuBinary, boot: Option<BootVerdict>) -> ArchReport {
    let (decision, error) = if q.path.is_none() {
        (None, Some(format!("{} is not installed", q.name)))
    } else {
        match accel::decide(
            AccelChoice::Auto,
            q.arch,
            host.arch,
            &host.kvm,
            boot.as_ref(),
        ) {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        }
    };
    ArchReport {
        arch: q.arch,
        qemu: q.path.as_ref().map(|p| p.display().to_string()),
        qemu_version: q.version.clone(),
        kvm_boot_test: boot,
        decision,
        error,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::facts::KvmFacts;
    use crate::types::Accel;

    /// An x86_64 host whose KVM passes the cheap checks, with QEMU for x86_64 only.
    pub(crate) fn host() -> HostFacts {
        HostFacts {
            arch: Some(Arch::X86_64),
            kernel: "6.1.0-28-amd64".into(),
            cpus: 2,
            memory_total: 24 << 30,
            memory_available: 20 << 30,
            qemu: vec![
                QemuBinary {
                    arch: Arch::X86_64,
                    name: "qemu-system-x86_64",
                    path: Some("/usr/bin/qemu-system-x86_64".into()),
                    version: Some("7.2.22".into()),
                },
                QemuBinary {
                    arch: Arch::Aarch64,
                    name: "qemu-system-aarch64",
                    path: None,
                    version: None,
                },
            ],
            qemu_img: Some("7.2.22".into()),
            kvm: KvmFacts {
                device: true,
                open_error: None,
                api_version: Some(12),
                create_vm_error: None,
            },
        }
    }

    #[test]
    fn each_architecture_gets_a_decision_or_why_not() {
        let h = host();
        let hangs = BootVerdict::Hangs {
            seconds: 15.0,
            last_line: "Probing EDD".into(),
        };
        let x86 = report(&h, &h.qemu[0], Some(hangs.clone()));
        let d = x86.decision.expect("a decision");
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("hung under KVM"), "{}", d.reason);
        assert_eq!(x86.kvm_boot_test, Some(hangs));
        let works = report(&h, &h.qemu[0], Some(BootVerdict::Works { seconds: 0.8 }));
        assert_eq!(works.decision.unwrap().accel, Accel::Kvm);
        let arm = report(&h, &h.qemu[1], None);
        assert_eq!(arm.decision, None);
        assert_eq!(
            arm.error.as_deref(),
            Some("qemu-system-aarch64 is not installed")
        );
    }
}
