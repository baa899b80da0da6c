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
            "Host:     {} , kernel {}\nCPUs:     {}\nMemory:   {}\nHome:     {}\nCache:    {}\n",
            h.arch.map(|a| a.as_str()).unwrap_or("unknown"),
            h.kernel,
            h.cpus,
            crate::types::memory_line(h.memory_total, h.memory_available),
            self.home,
            self.cache
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
