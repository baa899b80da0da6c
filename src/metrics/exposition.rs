//! The VMs' samples in Prometheus's text exposition format (version 0.0.4): each metric's
//! `# HELP` and `# TYPE` once, then one series per VM labelled `vm`. A pure renderer,
//! golden-tested; names follow Prometheus's conventions (`_total` counters, base units).

use std::fmt::Write;

use crate::vm::stats::VmStats;

/// The states `vmctl_vm_state` has a series for, one set to 1.
pub const STATES: [&str; 5] = ["running", "paused", "stopped", "saved", "crashed"];

/// One metric: name, type, help, and its value for a VM (no series when `None`).
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&VmStats) -> Option<f64>,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "vmctl_vm_up",
        kind: "gauge",
        help: "Whether the VM's QEMU runs (1, paused included) or not (0).",
        value: |s| Some(f64::from(u8::from(s.pid.is_some()))),
    },
    Metric {
        name: "vmctl_vm_ready",
        kind: "gauge",
        help: "Whether the running guest is up: its health check, or its forwarded ports, answered.",
        value: |s| s.ready.map(|r| f64::from(u8::from(r))),
    },
    Metric {
        name: "vmctl_vm_health",
        kind: "gauge",
        help: "The [health] check of a running VM: 1 healthy, 0 unhealthy, -1 not passed yet.",
        value: |s| {
            s.health.as_deref().map(|h| match h {
                "healthy" => 1.0,
                "unhealthy" => 0.0,
                _ => -1.0,
            })
        },
    },
    Metric {
        name: "vmctl_vm_cpu_seconds_total",
        kind: "counter",
        help: "CPU time of the VM's QEMU process, every thread, since it started.",
        value: |s| s.cpu_seconds,
    },
    Metric {
        name: "vmctl_vm_vcpu_seconds_total",
        kind: "counter",
        help: "CPU time of the VM's vCPU threads since QEMU started.",
        value: |s| s.vcpu_seconds,
    },
    Metric {
        name: "vmctl_vm_memory_rss_bytes",
        kind: "gauge",
        help: "Resident memory of the VM's QEMU process.",
        value: |s| s.rss_bytes.map(|b| b as f64),
    },
    Metric {
        name: "vmctl_vm_memory_bytes",
        kind: "gauge",
        help: "The guest's RAM as defined.",
        value: |s| Some(s.memory_bytes as f64),
    },
    Metric {
        name: "vmctl_vm_disk_virtual_bytes",
        kind: "gauge",
        help: "The size of the VM's disk as the guest sees it.",
        value: |s| Some(s.disk_virtual_bytes as f64),
    },
    Metric {
        name: "vmctl_vm_disk_allocated_bytes",
        kind: "gauge",
        help: "What the VM's own disk layer takes on the host (its image not counted).",
        value: |s| Some(s.disk_allocated_bytes as f64),
    },
    Metric {
        name: "vmctl_vm_disk_read_bytes_total",
        kind: "counter",
        help: "Bytes the guest read from its disk since QEMU started.",
        value: |s| s.disk_read_bytes.map(|b| b as f64),
    },
    Metric {
        name: "vmctl_vm_disk_written_bytes_total",
        kind: "counter",
        help: "Bytes the guest wrote to its disk since QEMU started.",
        value: |s| s.disk_written_bytes.map(|b| b as f64),
    },
    Metric {
        name: "vmctl_vm_uptime_seconds",
        kind: "gauge",
        help: "Seconds since the VM's QEMU started.",
        value: |s| s.uptime_secs.map(|u| u as f64),
    },
    Metric {
        name: "vmctl_vm_starts_total",
        kind: "counter",
        help: "Times the VM was started.",
        value: |s| Some(s.starts as f64),
    },
    Metric {
        name: "vmctl_vm_restarts_total",
        kind: "counter",
        help: "Starts that followed a failed run (a crash, a kill, a failed health check).",
        value: |s| Some(s.restarts as f64),
    },
    Metric {
        name: "vmctl_vm_last_exit_code",
        kind: "gauge",
        help: "QEMU's exit status the last time it exited by itself.",
        value: |s| s.last_exit_code.map(f64::from),
    },
];

/// `s` as a label value: backslash, double quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of every VM's sample, and of the scrape itself (`scrape_seconds`).
pub fn render(vms: &[VmStats], scrape_seconds: f64) -> String {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "vmctl_vm_info",
        "gauge",
        "The VM's definition and accelerator, as labels; always 1.",
    );
    for s in vms {
        let _ = writeln!(
            out,
            "vmctl_vm_info{{vm=\"{}\",image=\"{}\",arch=\"{}\",accel=\"{}\",cpus=\"{}\"}} 1",
            label(&s.name),
            label(&s.image),
            label(&s.arch),
            label(s.accel.as_deref().unwrap_or("")),
            s.cpus
        );
    }
    head(
        &mut out,
        "vmctl_vm_state",
        "gauge",
        "The VM's state: 1 for the one it is in, 0 for the others.",
    );
    for s in vms {
        for state in STATES {
            let on = u8::from(s.state == state);
            let _ = writeln!(
                out,
                "vmctl_vm_state{{vm=\"{}\",state=\"{state}\"}} {on}",
                label(&s.name)
            );
        }
    }
    for m in METRICS {
        head(&mut out, m.name, m.kind, m.help);
        for s in vms {
            if let Some(v) = (m.value)(s) {
                let _ = writeln!(out, "{}{{vm=\"{}\"}} {v}", m.name, label(&s.name));
            }
        }
    }
    head(
        &mut out,
        "vmctl_scrape_duration_seconds",
        "gauge",
        "How long sampling the VMs took for this scrape.",
    );
    let _ = writeln!(out, "vmctl_scrape_duration_seconds {scrape_seconds}");
    out
}

/// Every metric name the exposition can carry (for the dashboard's test and the docs).
pub fn names() -> Vec<&'static str> {
    let mut n = vec!["vmctl_vm_info", "vmctl_vm_state"];
    n.extend(METRICS.iter().map(|m| m.name));
    n.push("vmctl_scrape_duration_seconds");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, state: &str, running: bool) -> VmStats {
        VmStats {
            name: name.into(),
            state: state.into(),
            pid: running.then_some(4242),
            image: "debian-12".into(),
            arch: "x86_64".into(),
            accel: running.then(|| "tcg".into()),
            cpus: 1,
            memory_bytes: 2 << 30,
            cpu_seconds: running.then_some(12.5),
            vcpu_seconds: running.then_some(10.25),
            cpu_percent: None,
            vcpu_percent: None,
            rss_bytes: running.then_some(600 << 20),
            disk_virtual_bytes: 10 << 30,
            disk_allocated_bytes: 5 << 20,
            disk_read_bytes: running.then_some(123_456),
            disk_written_bytes: running.then_some(7890),
            uptime_secs: running.then_some(61),
            starts: 3,
            restarts: 1,
            ready: running.then_some(true),
            health: running.then(|| "healthy".into()),
            last_exit_code: Some(0),
        }
    }

    #[test]
    fn the_exposition_of_a_running_and_a_stopped_vm() {
        let text = render(
            &[vm("web", "running", true), vm("db", "stopped", false)],
            0.004,
        );
        crate::golden::check("metrics.txt", &text);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_metric_has_help_and_type_once() {
        let text = render(&[vm("web", "running", true)], 0.0);
        for n in names() {
            assert_eq!(text.matches(&format!("# TYPE {n} ")).count(), 1, "{n}");
            assert_eq!(text.matches(&format!("# HELP {n} ")).count(), 1, "{n}");
        }
    }
}
