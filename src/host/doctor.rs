//! `vmctl doctor`: the host facts vmctl acts on and the accelerator it would choose for each guest
//! architecture, with the reason: the first thing to read when a VM is slow or does not start.

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

pub fn print(d: &Doctor) {
    let h = &d.host;
    println!(
        "Host:     {} , kernel {}",
        h.arch.map(|a| a.as_str()).unwrap_or("unknown"),
        h.kernel
    );
    println!("CPUs:     {}", h.cpus);
    println!(
        "Memory:   {}",
        crate::types::memory_line(h.memory_total, h.memory_available)
    );
    println!("Home:     {}", d.home);
    println!("Cache:    {}", d.cache);
    println!(
        "qemu-img: {}",
        h.qemu_img
            .as_deref()
            .unwrap_or("not installed (apt-get install qemu-utils)")
    );
    let k = &h.kvm;
    let kvm = if !k.device {
        "no /dev/kvm".to_string()
    } else if let Some(e) = &k.open_error {
        format!("/dev/kvm cannot be opened: {e}")
    } else if let Some(e) = &k.create_vm_error {
        format!("/dev/kvm opens but KVM_CREATE_VM fails: {e}")
    } else {
        format!(
            "/dev/kvm opens, API version {}, KVM_CREATE_VM works",
            k.api_version.unwrap_or(-1)
        )
    };
    println!("KVM:      {kvm}");
    for a in &d.arches {
        println!();
        println!(
            "{} guests: {}",
            a.arch,
            match (&a.qemu, &a.qemu_version) {
                (Some(p), Some(v)) => format!("{p} (QEMU {v})"),
                (Some(p), None) => p.clone(),
                _ => "QEMU not installed".into(),
            }
        );
        if let Some(b) = &a.kvm_boot_test {
            let line = match b {
                BootVerdict::Works { seconds } => format!("test guest booted in {seconds:.1} s"),
                BootVerdict::Hangs { seconds, last_line } => {
                    format!("test guest hung ({seconds:.0} s; last line {last_line:?})")
                }
                BootVerdict::Fails { error } => format!("test guest failed: {error}"),
            };
            println!("  KVM boot test: {line}");
        }
        match (&a.decision, &a.error) {
            (Some(dec), _) => println!("  accelerator: {} — {}", dec.accel, dec.reason),
            (None, Some(e)) => println!("  cannot run: {e}"),
            _ => {}
        }
    }
}
