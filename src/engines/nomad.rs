//! A VM as a Nomad job (`vmctl export NAME --format nomad`), rendered purely and golden-tested:
//! one group, one task on the `qemu` driver — `image_path` the VM's disk (flattened first, the
//! header says how), `accelerator`, `graceful_shutdown` (ACPI) within the stop timeout, the
//! forwards as the group's static ports mapped to guest ports (`port_map`), and what vmctl adds
//! to QEMU's command line as `args`: the direct kernel boot and the provisioning credential.
//! Nomad's qemu driver forwards on every interface of the client, not on 127.0.0.1 as vmctl
//! does: the job says so in a comment.

use std::fmt::Write;
use std::path::PathBuf;

use crate::types::{Accel, PortForward, Protocol};

/// What a job is made of.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub credential: Option<PathBuf>,
    pub forwards: Vec<PortForward>,
    pub stop_timeout_secs: u64,
}

/// `s` as an HCL string literal.
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn label(f: &PortForward) -> String {
    let p = match f.proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{p}_{}", f.guest)
}

/// The job, in HCL.
pub fn render(j: &Job) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# VM {}, exported by vmctl for Nomad's qemu driver.",
        j.name
    );
    let _ = writeln!(
        s,
        "# image_path must be a disk the client can read: flatten the VM's first\n# (`qemu-img convert -O qcow2 {} {}.qcow2`) and point image_path at the copy.",
        j.disk.display(),
        j.name
    );
    if !j.forwards.is_empty() {
        let _ = writeln!(
            s,
            "# Nomad's qemu driver forwards these ports on EVERY interface of the client, not on\n# 127.0.0.1 as vmctl does: firewall them if the guest's services are private."
        );
    }
    let _ = writeln!(s, "job {} {{", q(&j.name));
    let _ = writeln!(s, "  type = \"service\"\n");
    let _ = writeln!(s, "  group {} {{", q(&j.name));
    if !j.forwards.is_empty() {
        let _ = writeln!(s, "    network {{");
        for f in &j.forwards {
            let _ = writeln!(s, "      port {} {{ static = {} }}", q(&label(f)), f.host);
        }
        let _ = writeln!(s, "    }}\n");
    }
    let _ = writeln!(s, "    task {} {{", q(&j.name));
    let _ = writeln!(s, "      driver       = \"qemu\"");
    let _ = writeln!(s, "      kill_timeout = \"{}s\"\n", j.stop_timeout_secs);
    let _ = writeln!(s, "      config {{");
    let _ = writeln!(
        s,
        "        image_path        = {}",
        q(&j.disk.display().to_string())
    );
    let accel = match j.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let _ = writeln!(s, "        accelerator       = \"{accel}\"");
    let _ = writeln!(s, "        graceful_shutdown = true");
    if !j.forwards.is_empty() {
        let _ = writeln!(s, "        port_map {{");
        for f in &j.forwards {
            let _ = writeln!(s, "          {} = {}", label(f), f.guest);
        }
        let _ = writeln!(s, "        }}");
    }
    let args = args(j);
    if !args.is_empty() {
        let list: Vec<String> = args.iter().map(|a| q(a)).collect();
        let _ = writeln!(
            s,
            "        args = [\n          {},\n        ]",
            list.join(",\n          ")
        );
    }
    let _ = writeln!(s, "      }}\n");
    let _ = writeln!(s, "      resources {{");
    let _ = writeln!(s, "        cores  = {}", j.cpus);
    let _ = writeln!(s, "        memory = {}", j.memory_mib);
    let _ = writeln!(s, "      }}");
    let _ = writeln!(s, "    }}");
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// QEMU arguments vmctl adds beyond what the driver sets: the direct kernel boot and the
/// provisioning credential.
fn args(j: &Job) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(k) = &j.kernel {
        a.extend(["-kernel".to_string(), k.display().to_string()]);
        if let Some(i) = &j.initrd {
            a.extend(["-initrd".to_string(), i.display().to_string()]);
        }
        if let Some(c) = &j.cmdline {
            a.extend(["-append".to_string(), c.clone()]);
        }
    }
    if let Some(c) = &j.credential {
        a.extend([
            "-fw_cfg".to_string(),
            format!(
                "name=opt/io.systemd.credentials/vmctl.provision,file={}",
                c.display()
            ),
        ]);
    }
    a
}

/// What the job does not carry, one line each.
pub fn gaps(spec: &crate::def::spec::VmSpec) -> Vec<String> {
    let mut out = super::common_gaps(spec, "Nomad");
    if spec.health.is_some() {
        out.push("[health]: add a Nomad service check on the forwarded port".into());
    }
    if !spec.host_access {
        out.push(super::libvirt::LOOPBACK.replace("the domain", "the job"));
    }
    if spec.ports.iter().any(|f| f.addr.is_loopback()) {
        out.push("ports on 127.0.0.1: Nomad's qemu driver binds them on every interface".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check as golden;

    #[test]
    fn the_seed_vm_as_a_nomad_job() {
        let home = PathBuf::from("/var/lib/vmctl");
        let img = home.join("images/debian-12/x86_64");
        let job = Job {
            name: "web".into(),
            accel: Accel::Kvm,
            cpus: 1,
            memory_mib: 2048,
            disk: home.join("vms/web/disk.qcow2"),
            kernel: Some(img.join("kernel")),
            initrd: Some(img.join("initrd")),
            cmdline: Some("root=/dev/vda1 rw console=ttyS0 vmctl.name=web".into()),
            credential: Some(home.join("vms/web/provision.json")),
            forwards: vec!["5022:22".parse().unwrap(), "5080:8080".parse().unwrap()],
            stop_timeout_secs: 60,
        };
        golden("web-nomad.hcl", &render(&job));
    }

    #[test]
    fn strings_are_hcl_literals() {
        assert_eq!(q("a\"b\\c${x}%{y}"), "\"a\\\"b\\\\c$${x}%%{y}\"");
    }
}
