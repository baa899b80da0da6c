//! `vmctl doctor`'s handler and the text of its report: the host facts and the accelerator each
//! guest architecture would get, with the reason.

use std::fmt::Write;

use crate::cli::args::JsonArg;
use crate::cli::output::{Show, show};
use crate::error::Result;
use crate::host::accel::BootVerdict;
use crate::host::doctor::{ArchReport, Doctor};
use crate::host::facts::KvmFacts;
use crate::paths::Home;

pub fn doctor(home: &Home, a: JsonArg) -> Result<u8> {
    let probe_kernel = |arch| crate::image::store::probe_kernel(home, arch);
    show(&crate::host::doctor::run(home, &probe_kernel), a.json);
    Ok(0)
}

impl Show for Doctor {
    fn text(&self) -> String {
        let h = &self.host;
        let mut out = format!(
            "Host:     {} , kernel {}\nCPUs:     {}\nMemory:   {}\nHome:     {}\nCache:    {}\nQEMU as:  {}\nNetwork:  {}\n",
            h.arch.map(|a| a.as_str()).unwrap_or("unknown"),
            h.kernel,
            h.cpus,
            crate::types::memory_line(h.memory_total, h.memory_available),
            self.home,
            self.cache,
            self.qemu_runs_as,
            self.network
        );
        let _ = writeln!(
            out,
            "qemu-img: {}",
            h.qemu_img
                .as_deref()
                .unwrap_or("not installed (apt-get install qemu-utils)")
        );
        let _ = writeln!(out, "KVM:      {}", kvm_line(&h.kvm));
        for a in &self.arches {
            out.push_str(&arch_text(a));
        }
        out
    }
}

fn kvm_line(k: &KvmFacts) -> String {
    if !k.device {
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
    }
}

/// A blank line, then what one guest architecture gets.
fn arch_text(a: &ArchReport) -> String {
    let qemu = match (&a.qemu, &a.qemu_version) {
        (Some(p), Some(v)) => format!("{p} (QEMU {v})"),
        (Some(p), None) => p.clone(),
        _ => "QEMU not installed".into(),
    };
    let mut out = format!("\n{} guests: {qemu}\n", a.arch);
    if let Some(b) = &a.kvm_boot_test {
        let line = match b {
            BootVerdict::Works { seconds } => format!("test guest booted in {seconds:.1} s"),
            BootVerdict::Hangs { seconds, last_line } => {
                format!("test guest hung ({seconds:.0} s; last line {last_line:?})")
            }
            BootVerdict::Fails { error } => format!("test guest failed: {error}"),
        };
        let _ = writeln!(out, "  KVM boot test: {line}");
    }
    match (&a.decision, &a.error) {
        (Some(dec), _) => {
            let _ = writeln!(out, "  accelerator: {} — {}", dec.accel, dec.reason);
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "  cannot run: {e}");
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::accel::Decision;
    use crate::types::{Accel, Arch};

    #[test]
    fn the_report_reads_as_it_always_did() {
        let d = Doctor {
            home: "/var/lib/vmctl".into(),
            cache: "/var/cache/vmctl".into(),
            qemu_runs_as: "vmctl-qemu (uid 999, groups 995)".into(),
            network: "passt /usr/bin/passt".into(),
            host: crate::host::doctor::tests::host(),
            arches: vec![
                ArchReport {
                    arch: Arch::X86_64,
                    qemu: Some("/usr/bin/qemu-system-x86_64".into()),
                    qemu_version: Some("7.2.22".into()),
                    kvm_boot_test: Some(BootVerdict::Fails {
                        error: "failed to set MSR 0x10a".into(),
                    }),
                    decision: Some(Decision {
                        accel: Accel::Tcg,
                        reason: "KVM not used: a test guest failed to start under KVM".into(),
                    }),
                    error: None,
                },
                ArchReport {
                    arch: Arch::Aarch64,
                    qemu: None,
                    qemu_version: None,
                    kvm_boot_test: None,
                    decision: None,
                    error: Some("qemu-system-aarch64 is not installed".into()),
                },
            ],
        };
        assert_eq!(
            d.text(),
            "Host:     x86_64 , kernel 6.1.0-28-amd64
CPUs:     2
Memory:   24.0 GiB total, 20.0 GiB available
Home:     /var/lib/vmctl
Cache:    /var/cache/vmctl
QEMU as:  vmctl-qemu (uid 999, groups 995)
Network:  passt /usr/bin/passt
qemu-img: 7.2.22
KVM:      /dev/kvm opens, API version 12, KVM_CREATE_VM works

x86_64 guests: /usr/bin/qemu-system-x86_64 (QEMU 7.2.22)
  KVM boot test: test guest failed: failed to set MSR 0x10a
  accelerator: tcg — KVM not used: a test guest failed to start under KVM

aarch64 guests: QEMU not installed
  cannot run: qemu-system-aarch64 is not installed
"
        );
    }
}
