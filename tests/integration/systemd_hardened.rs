//! The hardened system unit under a real systemd (nspawn.rs): systemd itself rates it OK
//! (`systemd-analyze security` of the loaded unit), QEMU under it runs as vmctl-qemu with its
//! own seccomp filter on top of the unit's, every command that talks to a running VM works
//! through both filters (pause, resume, live port add/rm, live snapshot and revert, reset, the
//! QMP shell, the ACPI stop), and killing every process of the unit at once gets it restarted
//! with one QEMU, no orphan, and a disk `qemu-img check` passes.
//! (`systemd-analyze security --offline` of both units, without a systemd: systemd_units.rs.)

use crate::harness::*;
use crate::nspawn::Container;
use crate::systemd_e2e::*;

/// The exposure `systemd-analyze security` gives a unit, from its last line.
pub(crate) fn exposure(report: &str, unit: &str) -> f64 {
    let needle = format!("Overall exposure level for {unit}: ");
    let line = report
        .lines()
        .find_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no exposure level for {unit} in:\n{report}"));
    line.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("exposure {line:?} is not a number"))
}

/// A field of `/proc/PID/status` in the container, e.g. `Uid`.
fn status_field(c: &Container, pid: u64, field: &str) -> String {
    let status = c.read(&format!("/proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_string()
}

/// `vmctl ARGS` in the container, bounded; its stdout.
fn vmctl(c: &Container, args: &[&str]) -> String {
    let mut argv = vec!["timeout", COMMAND_TIMEOUT, "vmctl"];
    argv.extend(args);
    c.ok(&argv)
}

#[test]
fn systemd_rates_the_hardened_unit_ok_and_every_vm_command_works_under_it() {
    let (c, port) = container_running_web("hard-cmds");
    let report = c.ok(&["systemd-analyze", "security", "--no-pager", &unit("web")]);
    let score = exposure(&report, &unit("web"));
    eprintln!("hardened unit: systemd rates vmctl-web.service {score}");
    assert!(score <= 3.5, "exposure {score} > 3.5:\n{report}");

    let qemu = qemu_pid(&c, "web");
    let uid = status_field(&c, qemu, "Uid");
    assert!(
        !uid.split_whitespace().any(|u| u == "0"),
        "QEMU runs as root under the unit: Uid {uid}"
    );
    assert_eq!(status_field(&c, qemu, "Seccomp"), "2");
    assert_eq!(status_field(&c, qemu, "CapEff"), "0000000000000000");

    vmctl(&c, &["pause", "web"]);
    assert!(vmctl(&c, &["status", "web"]).contains("paused"));
    vmctl(&c, &["resume", "web"]);
    wait_port(&c, "web", port);

    let extra = free_port();
    vmctl(&c, &["port", "add", "web", &format!("{extra}:8080")]);
    wait_port(&c, "web", extra);
    vmctl(&c, &["port", "rm", "web", &format!("{extra}:8080")]);
    assert!(
        http_get(extra).is_none(),
        "port {extra} still forwarded after rm"
    );

    vmctl(&c, &["snapshot", "create", "web", "live"]);
    let list = vmctl(&c, &["snapshot", "list", "web"]);
    assert!(list.contains("live"), "{list}");
    vmctl(&c, &["snapshot", "revert", "--force", "web", "live"]);
    wait_port(&c, "web", port);

    vmctl(&c, &["reset", "web"]);
    wait_port(&c, "web", port);

    let reply = vmctl(&c, &["qmp", "web", "--exec", "query-status"]);
    assert!(reply.contains("\"running\""), "{reply}");

    assert_eq!(
        qemu_pid(&c, "web"),
        qemu,
        "every command ran on the same QEMU\n{}",
        units_report(&c)
    );
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "systemctl",
        "stop",
        &unit("web"),
    ]);
    assert_acpi_exit(&c, &format!("{VMS}/web"), "systemctl stop (hardened unit)");
    assert_no_qemu(&c, "after systemctl stop");
}

#[test]
fn killing_every_process_of_the_unit_restarts_it_with_one_qemu_and_a_sound_disk() {
    let (c, port) = container_running_web("hard-kill");
    let old = qemu_pid(&c, "web");
    // SIGKILL to `vmctl run` and QEMU at once (systemctl kill's default is every process).
    c.ok(&["systemctl", "kill", "--signal=KILL", &unit("web")]);
    wait_for(
        &c,
        "the unit restarted after SIGKILL of all its processes",
        GUEST_UP,
        || (show_u64(&c, &unit("web"), "NRestarts") >= 1).then_some(()),
    );
    wait_port(&c, "web", port);
    let pids = c.ok(&["sh", "-c", &format!("{VM_QEMU}\nvm_qemu")]);
    let new = qemu_pid(&c, "web");
    assert_ne!(new, old, "state.json names the new QEMU");
    assert_eq!(
        pids.split_whitespace().collect::<Vec<_>>(),
        [new.to_string()],
        "exactly one QEMU runs: the new one\n{}",
        units_report(&c)
    );
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "systemctl",
        "stop",
        &unit("web"),
    ]);
    assert_no_qemu(&c, "after systemctl stop");
    let check = c.exec(&["qemu-img", "check", &format!("{VMS}/web/disk.qcow2")]);
    assert!(
        check.status.success(),
        "qemu-img check after the kill: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
