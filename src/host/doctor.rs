//! `vmctl doctor`'s report, as data (the CLI prints it): the host facts vmctl acts on and the
//! accelerator it would choose for each guest architecture, with the reason: the first thing to
//! read when a VM is slow or does not start.

use serde::Serialize;

use crate::host::accel::{self, BootVerdict, Decision};
use crate::host::facts::HostFacts;
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
    pub host: HostFacts,
    pub arches: Vec<ArchReport>,
}

/// The report for this host; `probe_kernel` finds the test guest the KVM boot test runs.
pub fn run(home: &Home, probe_kernel: accel::ProbeKernel) -> Doctor {
    let host = HostFacts::probe();
    let arches = host
        .qemu
        .iter()
        .map(|q| {
            let boot = (host.arch == Some(q.arch) && host.kvm.basic_ok() && q.path.is_some())
                .then(|| accel::verdict_cached(q.arch, probe_kernel))
                .flatten();
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
        })
        .collect();
    Doctor {
        home: home.root.display().to_string(),
        cache: crate::paths::cache_dir().display().to_string(),
        host,
        arches,
    }
}
