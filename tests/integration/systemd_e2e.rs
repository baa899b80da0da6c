//! Issue 4 end to end: vmctl's units under a real systemd 252 (a systemd-nspawn container, see
//! nspawn.rs), with the real vmctl binary and the tiny guest under TCG. Each test boots its own
//! container, waits with deadlines (never fixed sleeps) and, when something does not happen in
//! time, fails with the state of the VM units and their journal.
//!
//! What they prove: an enabled unit autostarts at boot and its port answers; `kill -9` of QEMU
//! is restarted by systemd within 5 s; `systemctl stop` (also during the guest's early boot) and a
//! container reboot power the guest off by ACPI with QEMU exiting 0; `after` orders two VMs'
//! units (db ready before api starts); an unhealthy guest is restarted (exit 8); a lingering
//! user's unit autostarts at boot and runs QEMU as that user.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::nspawn::{Container, create_tiny, tiny_create_args};

/// The system home inside the container (`vmctl` runs there as root).
pub(crate) const VMS: &str = "/var/lib/vmctl/vms";
/// A tiny guest answers ~3 s after QEMU starts under TCG; with two tests (and others' builds)
/// sharing the host's two cores it can take several times that.
pub(crate) const GUEST_UP: Duration = Duration::from_secs(90);
/// `vmctl systemd install --now` and `systemctl stop` are bounded by the unit's own timeouts
/// (300 s / 75 s); the tests give up sooner.
pub(crate) const COMMAND_TIMEOUT: &str = "120";
/// QEMU's process name (`comm`, truncated to 15 characters) in `pgrep -x`.
pub(crate) const QEMU_COMM: &str = "qemu-system-x86";
/// Shell: `vm_qemu` prints the pids of VMs' QEMU processes (not vmctl's short-lived
/// `qemu-system-x86_64 --version`).
pub(crate) const VM_QEMU: &str = r#"vm_qemu() {
	for p in $(pgrep -x qemu-system-x86); do
		grep -q "guest=" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
	done
}"#;

pub(crate) fn unit(vm: &str) -> String {
    format!("vmctl-{vm}.service")
}

/// `systemctl show -p PROP --value UNIT` of the system manager, trimmed.
pub(crate) fn show(c: &Container, unit: &str, prop: &str) -> String {
    show_in(c, &["systemctl"], unit, prop)
}

/// The same through `systemctl`, the command that selects the manager (`["systemctl"]`, or a
/// user's `systemctl --user` under runuser).
pub(crate) fn show_in(c: &Container, systemctl: &[&str], unit: &str, prop: &str) -> String {
    let mut args = systemctl.to_vec();
    args.extend(["show", "-p", prop, "--value", unit]);
    c.ok(&args).trim().to_string()
}

/// Wait until the unit is active: its `vmctl run` said READY=1.
pub(crate) fn wait_active(c: &Container, systemctl: &[&str], unit: &str) {
    let what = format!("{unit} active (READY=1)");
    wait_for(c, &what, GUEST_UP, || {
        (show_in(c, systemctl, unit, "ActiveState") == "active").then_some(())
    });
}

/// A numeric property such as `NRestarts` or `ActiveEnterTimestampMonotonic`.
pub(crate) fn show_u64(c: &Container, unit: &str, prop: &str) -> u64 {
    let v = show(c, unit, prop);
    v.parse()
        .unwrap_or_else(|_| panic!("{unit}: {prop}={v:?} is not a number"))
}

/// The VM units' state and the end of their journal, for failure messages.
pub(crate) fn units_report(c: &Container) -> String {
    let status = c.exec(&[
        "systemctl",
        "status",
        "--no-pager",
        "-l",
        "--all",
        "vmctl-*",
    ]);
    let journal = c.exec(&[
        "journalctl",
        "-b",
        "--no-pager",
        "-o",
        "short-monotonic",
        "-n",
        "60",
        "-u",
        "vmctl-*",
    ]);
    format!(
        "--- systemctl status vmctl-*:\n{}\n--- journal of vmctl-* (this boot):\n{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&journal.stdout)
    )
}

/// Call `probe` every 50 ms until it gives a value; panic after `timeout`, naming `what`.
pub(crate) fn wait_for<T>(
    c: &Container,
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe() {
            return (v, t0.elapsed());
        }
        assert!(
            t0.elapsed() < timeout,
            "{}: {what}: not within {timeout:?}\n{}",
            c.ok(&["hostname"]).trim(),
            units_report(c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the guest's page comes through the forwarded port; how long that took.
pub(crate) fn wait_port(c: &Container, vm: &str, port: u16) -> Duration {
    let want = format!("vmctl tiny guest: {vm}");
    let what = format!("VM {vm} answering on its forwarded port 127.0.0.1:{port}");
    wait_for(c, &what, GUEST_UP, || {
        http_get(port).filter(|p| p.contains(&want))
    })
    .1
}

/// A container whose VM "web" (tiny guest) runs under its unit (`systemd install web --now`)
/// and answers on the returned port.
pub(crate) fn container_running_web(name: &str) -> (Container, u16) {
    let c = Container::boot(name);
    let port = free_port();
    create_tiny(&c, "web", port);
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "vmctl",
        "systemd",
        "install",
        "web",
        "--now",
    ]);
    wait_port(&c, "web", port);
    (c, port)
}

/// A JSON file of the container's.
pub(crate) fn json(c: &Container, path: &str) -> Value {
    let text = c.read(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// The pid (in the container) of the QEMU that VM `vm`'s supervisor started, from state.json.
pub(crate) fn qemu_pid(c: &Container, vm: &str) -> u64 {
    let state = json(c, &format!("{VMS}/{vm}/run/state.json"));
    state["qemu_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no qemu_pid in {vm}'s state.json: {state}"))
}

/// Write `text` to `path` in the container.
fn write_file(c: &Container, path: &str, text: &str) {
    c.ok(&["sh", "-c", r#"printf '%s' "$1" >"$2""#, "sh", text, path]);
}

/// The VM's last exit was the graceful stop: ACPI, QEMU's status 0, no signal, and QEMU's log
/// has no "terminating on signal" (QEMU's own line when SIGTERM/SIGINT ends it).
pub(crate) fn assert_acpi_exit(c: &Container, dir: &str, context: &str) {
    let last = json(c, &format!("{dir}/last-exit.json"));
    assert!(
        last["stopped_by"] == "acpi" && last["code"] == 0 && last["signal"].is_null(),
        "{context}: expected an ACPI power-off with QEMU exiting 0, last-exit.json says {last}\n{}",
        units_report(c)
    );
    let serial = c.read(&format!("{dir}/serial.log"));
    assert!(
        serial.contains("vmctl-tiny: power button, powering off"),
        "{context}: the guest did not see the power button; serial.log:\n{serial}"
    );
    let qemu_log = c.read(&format!("{dir}/qemu.log"));
    assert!(
        !qemu_log.contains("terminating on signal"),
        "{context}: QEMU got a signal instead of the ACPI stop; qemu.log:\n{qemu_log}"
    );
}

/// No QEMU left running in the container.
pub(crate) fn assert_no_qemu(c: &Container, context: &str) {
    let left = c.exec(&["pgrep", "-a", "-x", QEMU_COMM]);
    assert!(
        left.stdout.is_empty(),
        "{context}: QEMU still runs: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn systemd_enabled_unit_autostarts_after_reboot_and_its_port_answers() {
    let t0 = Instant::now();
    let mut c = Container::boot("e2e-autostart");
    let port = free_port();
    create_tiny(&c, "web", port);
    let out = c.ok(&["vmctl", "systemd", "install", "web", "--enable"]);
    assert!(out.contains("Enabled vmctl-web.service"), "{out}");
    assert_eq!(
        show(&c, &unit("web"), "ActiveState"),
        "inactive",
        "--enable alone starts nothing"
    );

    c.reboot();
    let up = wait_port(&c, "web", port);
    eprintln!(
        "e2e autostart: the VM answered {up:.2?} after the reboot (which waits for its READY=1)"
    );
    wait_active(&c, &["systemctl"], &unit("web"));
    assert_eq!(show(&c, &unit("web"), "UnitFileState"), "enabled");
    // The unit's own process supervises this QEMU, which it found as its unit.
    let state = json(&c, &format!("{VMS}/web/run/state.json"));
    assert_eq!(state["unit"]["name"], "vmctl-web.service", "{state}");
    assert_eq!(state["ready"], true, "{state}");
    assert_eq!(
        state["supervisor_pid"].as_u64().map(|p| p.to_string()),
        Some(show(&c, &unit("web"), "MainPID")),
        "{state}"
    );
    eprintln!("e2e autostart: test took {:.2?}", t0.elapsed());
}

#[test]
fn systemd_restarts_a_killed_qemu_within_5_s() {
    let t0 = Instant::now();
    let (c, port) = container_running_web("e2e-restart");
    let old = qemu_pid(&c, "web");

    // Kill and time, inside the container, until a QEMU process other than the old one exists:
    // that is systemd having restarted the unit (the guest's boot comes after).
    let out = c.ok(&[
        "sh",
        "-c",
        &format!(
            r#"{VM_QEMU}
old=$1
kill -9 "$old" || exit 1
t0=$(date +%s%N)
while :; do
	for p in $(vm_qemu); do
		[ "$p" != "$old" ] && {{ echo "$p $((($(date +%s%N) - t0) / 1000000))"; exit 0; }}
	done
	[ $(($(date +%s%N) - t0)) -lt 30000000000 ] || {{ echo "timeout"; exit 0; }}
	sleep 0.01
done"#
        ),
        "sh",
        &old.to_string(),
    ]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    let [new, ms] = fields[..] else {
        panic!(
            "no new QEMU within 30 s of kill -9 {old} ({out:?})\n{}",
            units_report(&c)
        );
    };
    let ms: u64 = ms.parse().unwrap();
    eprintln!("e2e restart: a new QEMU ({new}) ran {ms} ms after kill -9 of QEMU {old}");
    assert_ne!(new, old.to_string(), "QEMU's pid did not change");
    assert!(
        ms < 5000,
        "systemd restarted the VM {ms} ms after kill -9 (goal < 5 s)\n{}",
        units_report(&c)
    );
    let up = wait_port(&c, "web", port);
    eprintln!("e2e restart: the restarted guest answered {up:.2?} later");
    assert_eq!(show_u64(&c, &unit("web"), "NRestarts"), 1);
    assert_eq!(
        qemu_pid(&c, "web").to_string(),
        new,
        "state.json names the new QEMU"
    );
    let last = json(&c, &format!("{VMS}/web/last-exit.json"));
    assert!(
        last["signal"] == 9 && last["stopped_by"].is_null(),
        "last-exit.json should record the kill: {last}"
    );
    let journal = c.ok(&["journalctl", "-u", &unit("web"), "-o", "cat", "--no-pager"]);
    assert!(
        journal.contains("Main process exited, code=exited, status=137"),
        "vmctl run should exit 128+9 when QEMU is killed:\n{journal}"
    );
    // The supervisor's records carry the VM and the event as journal fields.
    let records = c.ok(&["journalctl", "VMCTL_VM=web", "-o", "json", "--no-pager"]);
    let events: Vec<String> = records
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["VMCTL_EVENT"].as_str().map(str::to_string))
        .collect();
    for want in ["started", "ready", "crashed", "restarted"] {
        assert!(
            events.iter().any(|e| e == want),
            "journalctl VMCTL_VM=web has no VMCTL_EVENT={want}: {events:?}"
        );
    }
    let log = c.ok(&["vmctl", "events", "--all", "--no-follow"]);
    assert!(
        log.contains(" web crashed signal=9") && log.contains(" web restarted restarts=1"),
        "{log}"
    );
    let stats = c.ok(&["vmctl", "stats", "web", "--json", "--interval", "0.2"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats[0]["restarts"], 1, "{stats}");
    eprintln!("e2e restart: test took {:.2?}", t0.elapsed());
}

#[test]
fn systemctl_stop_powers_the_guest_off_by_acpi_and_qemu_exits_0() {
    let t0 = Instant::now();
    let (c, _) = container_running_web("e2e-stop");

    let t = Instant::now();
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "systemctl",
        "stop",
        &unit("web"),
    ]);
    eprintln!("e2e stop: systemctl stop took {:.2?}", t.elapsed());
    assert_acpi_exit(&c, &format!("{VMS}/web"), "systemctl stop");
    assert_eq!(show(&c, &unit("web"), "ActiveState"), "inactive");
    assert_eq!(show(&c, &unit("web"), "Result"), "success");
    assert_eq!(
        show(&c, &unit("web"), "ExecMainStatus"),
        "0",
        "vmctl run's exit status"
    );
    assert_no_qemu(&c, "after systemctl stop");

    // Again, stopped while the guest is still booting: as soon as the VM's QEMU exists, before
    // the unit is active (READY=1), when the guest has not loaded its power button driver yet.
    let last_exit = format!("{VMS}/web/last-exit.json");
    c.ok(&["rm", last_exit.as_str()]);
    let out = c.ok(&[
        "sh",
        "-c",
        &format!(
            r#"{VM_QEMU}
unit=$1
systemctl start --no-block "$unit" || exit 1
i=0
until [ -n "$(vm_qemu)" ]; do
	i=$((i + 1)); [ "$i" -lt 3000 ] || {{ echo "no QEMU"; exit 0; }}
	sleep 0.01
done
systemctl show -p ActiveState --value "$unit"
t0=$(date +%s%N)
timeout 120 systemctl stop "$unit"
echo "$((($(date +%s%N) - t0) / 1000000))""#
        ),
        "sh",
        &unit("web"),
    ]);
    let (state, ms) = out.trim().split_once('\n').unwrap_or((out.trim(), "?"));
    assert_eq!(
        state,
        "activating",
        "the stop should come during the start (before READY=1)\n{}",
        units_report(&c)
    );
    eprintln!("e2e stop: systemctl stop during the guest's boot took {ms} ms");
    let early = "systemctl stop during early boot";
    assert_acpi_exit(&c, &format!("{VMS}/web"), early);
    assert_eq!(show(&c, &unit("web"), "Result"), "success", "{early}");
    assert_eq!(show(&c, &unit("web"), "ExecMainStatus"), "0", "{early}");
    assert_no_qemu(&c, early);

    // And right after `systemctl start --no-block`, wherever `vmctl run` is then: killed before
    // it handles SIGTERM (no QEMU yet), or serving it once QEMU answers: by ACPI.
    c.ok(&["rm", last_exit.as_str()]);
    c.ok(&[
        "sh",
        "-c",
        r#"systemctl start --no-block "$1" && timeout 120 systemctl stop "$1""#,
        "sh",
        &unit("web"),
    ]);
    let immediate = "systemctl stop right after systemctl start --no-block";
    assert_eq!(
        show(&c, &unit("web"), "ActiveState"),
        "inactive",
        "{immediate}"
    );
    assert_eq!(show(&c, &unit("web"), "Result"), "success", "{immediate}");
    assert_no_qemu(&c, immediate);
    if c.exec(&["test", "-f", &last_exit]).status.success() {
        eprintln!("e2e stop: the immediate stop found a QEMU to stop");
        assert_acpi_exit(&c, &format!("{VMS}/web"), immediate);
    } else {
        eprintln!("e2e stop: the immediate stop came before QEMU was started");
    }
    eprintln!("e2e stop: test took {:.2?}", t0.elapsed());
}

#[test]
fn container_reboot_stops_the_vm_gracefully_by_acpi() {
    let t0 = Instant::now();
    let (mut c, _) = container_running_web("e2e-shutdown");

    c.reboot();
    // What the unit logged while the system went down, in the previous boot's journal: the
    // supervisor's records (its fields as VMCTL_* journal fields) and systemd's of the unit.
    let previous = c.ok(&["journalctl", "--boot=-1", "--no-pager", "-o", "json"]);
    let lines: Vec<String> = previous
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["VMCTL_VM"] == "web"
                || r["UNIT"] == "vmctl-web.service"
                || r["_SYSTEMD_UNIT"] == "vmctl-web.service"
        })
        .map(|r| {
            let step = r["VMCTL_STEP"].as_str().map(|s| format!(" step={s}"));
            format!(
                "{}{}",
                r["MESSAGE"].as_str().unwrap_or(""),
                step.unwrap_or_default()
            )
        })
        .collect();
    let log = lines.join("\n");
    for want in [
        "SIGTERM: stopping the guest",
        "stopped step=acpi",
        "Stopping vmctl-web.service",
        "vmctl-web.service: Deactivated successfully",
    ] {
        assert!(
            log.contains(want),
            "the previous boot's journal lacks {want:?}; its lines of vmctl-web:\n{log}"
        );
    }
    for bad in ["Killing process", "timed out", "Failed with result"] {
        assert!(
            !log.contains(bad),
            "the reboot did not stop vmctl-web cleanly ({bad:?}):\n{log}"
        );
    }
    assert_acpi_exit(&c, &format!("{VMS}/web"), "container reboot");
    // Not enabled: it stays down after the reboot.
    assert_eq!(show(&c, &unit("web"), "ActiveState"), "inactive");
    eprintln!("e2e shutdown: test took {:.2?}", t0.elapsed());
}

#[test]
fn after_dependency_starts_db_before_api_at_boot() {
    let t0 = Instant::now();
    let mut c = Container::boot("e2e-after");
    let (db_port, api_port) = (free_port(), free_port());
    create_tiny(&c, "db", db_port);
    let mut api = tiny_create_args("api", api_port);
    api.extend(["--after".to_string(), "db".to_string()]);
    c.ok(&api.iter().map(String::as_str).collect::<Vec<_>>());
    c.ok(&["vmctl", "systemd", "install", "db", "--enable"]);
    c.ok(&["vmctl", "systemd", "install", "api", "--enable"]);

    c.reboot();
    wait_port(&c, "db", db_port);
    wait_port(&c, "api", api_port);
    for vm in ["db", "api"] {
        wait_active(&c, &["systemctl"], &unit(vm));
    }
    // db became active (its READY=1: the guest answers) before api's `vmctl run` was started.
    let db_ready = show_u64(&c, &unit("db"), "ActiveEnterTimestampMonotonic");
    let api_exec = show_u64(&c, &unit("api"), "ExecMainStartTimestampMonotonic");
    let db_exec = show_u64(&c, &unit("db"), "ExecMainStartTimestampMonotonic");
    eprintln!(
        "e2e after: db started at {db_exec} us, ready at {db_ready} us; api started at {api_exec} us"
    );
    assert!(
        db_exec < db_ready && db_ready <= api_exec,
        "api's unit started before db's was ready (db exec {db_exec}, db ready {db_ready}, api exec {api_exec}; monotonic us)\n{}",
        units_report(&c)
    );
    // The journal tells the same story, in order.
    let journal = c.ok(&[
        "journalctl",
        "-b",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        &unit("db"),
        "-u",
        &unit("api"),
    ]);
    let at = |needle: &str| {
        journal
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} is not in the journal:\n{journal}"))
    };
    assert!(
        at("Started vmctl-db.service") < at("Starting vmctl-api.service"),
        "the journal shows api starting before db was up:\n{journal}"
    );
    eprintln!("e2e after: test took {:.2?}", t0.elapsed());
}

#[test]
fn unhealthy_guest_is_restarted_with_exit_status_8() {
    let t0 = Instant::now();
    let c = Container::boot("e2e-health");
    let port = free_port();
    // The tiny guest's httpd answers 404 for this path: the check fails on the guest's answer.
    // (The start period leaves a loaded machine time to boot the guest, ~5 s alone, so that
    // what fails is the answer, not its absence.)
    write_file(
        &c,
        "/root/web.toml",
        &format!(
            "memory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\n\n[health]\nhttp = \"8080/nonexistent\"\ninterval = \"1s\"\nretries = 2\nstart_period = \"15s\"\n"
        ),
    );
    c.ok(&["vmctl", "create", "web", "--from", "/root/web.toml"]);
    c.ok(&["vmctl", "systemd", "install", "web"]);
    c.ok(&["systemctl", "start", "--no-block", &unit("web")]);

    let (restarts, took) = wait_for(&c, "vmctl-web restarted twice by systemd", GUEST_UP, || {
        Some(show_u64(&c, &unit("web"), "NRestarts")).filter(|n| *n >= 2)
    });
    eprintln!("e2e health: NRestarts={restarts} after {took:.2?}");
    let journal = c.ok(&["journalctl", "-u", &unit("web"), "-o", "cat", "--no-pager"]);
    for want in [
        "HTTP status 404",
        "the guest is unhealthy",
        "Main process exited, code=exited, status=8",
        "Scheduled restart job",
    ] {
        assert!(
            journal.contains(want),
            "{want:?} is not in vmctl-web's journal:\n{journal}"
        );
    }
    let last = json(&c, &format!("{VMS}/web/last-exit.json"));
    assert_eq!(last["stopped_by"], "health-check", "{last}");
    c.ok(&[
        "timeout",
        COMMAND_TIMEOUT,
        "systemctl",
        "stop",
        &unit("web"),
    ]);
    eprintln!("e2e health: test took {:.2?}", t0.elapsed());
}

#[test]
fn lingering_user_unit_autostarts_after_reboot_as_that_user() {
    let t0 = Instant::now();
    let mut c = Container::boot("e2e-linger");
    let port = free_port();
    let (user, uid) = ("alice", "1500");
    let home = format!("/home/{user}");
    let runtime = format!("/run/user/{uid}");
    c.ok(&[
        "useradd",
        "--create-home",
        "--uid",
        uid,
        "--shell",
        "/bin/sh",
        user,
    ]);
    // The user's own vmctl home (vmctl's default for a non-root user) with the tiny image.
    let images = format!("{home}/.local/share/vmctl/images");
    c.ok(&["mkdir", "-p", &images]);
    c.ok(&["cp", "-a", "/var/lib/vmctl/images/tiny", &images]);
    c.ok(&[
        "chown",
        "-R",
        &format!("{user}:{user}"),
        &format!("{home}/.local"),
    ]);
    c.ok(&["loginctl", "enable-linger", user]);
    wait_for(
        &c,
        "alice's user manager after enable-linger",
        GUEST_UP,
        || {
            c.exec(&["test", "-S", &format!("{runtime}/systemd/private")])
                .status
                .success()
                .then_some(())
        },
    );

    // Commands as alice, with what a login would set (vmctl and systemctl --user need them).
    let env = [
        format!("HOME={home}"),
        format!("USER={user}"),
        format!("LOGNAME={user}"),
        format!("XDG_RUNTIME_DIR={runtime}"),
    ];
    let mut runuser: Vec<&str> = vec!["runuser", "-u", user, "--", "env"];
    runuser.extend(env.iter().map(|s| s.as_str()));
    let as_user = |c: &Container, args: &[&str]| c.ok(&[&runuser[..], args].concat());
    let create = tiny_create_args("web", port);
    as_user(&c, &create.iter().map(String::as_str).collect::<Vec<_>>());
    let out = as_user(
        &c,
        &["vmctl", "systemd", "install", "web", "--user", "--enable"],
    );
    assert!(out.contains("Enabled vmctl-web.service"), "{out}");
    assert!(
        c.exec(&[
            "test",
            "-f",
            &format!("{home}/.config/systemd/user/vmctl-web.service")
        ])
        .status
        .success(),
        "the user unit is not in ~/.config/systemd/user: {out}"
    );

    c.reboot();
    let up = wait_port(&c, "web", port);
    eprintln!("e2e linger: the user's VM answered {up:.2?} after the reboot");
    // Through the user manager's private socket (`-M USER@` needs a user D-Bus session bus).
    let systemctl = [&runuser[..], &["systemctl", "--user"]].concat();
    wait_active(&c, &systemctl, &unit("web"));
    // QEMU runs as alice, supervised from her manager's unit.
    let pids = c.ok(&["pgrep", "-u", user, "-x", QEMU_COMM]);
    assert_eq!(pids.lines().count(), 1, "alice's QEMU processes: {pids:?}");
    let root_qemu = c.exec(&["pgrep", "-u", "root", "-x", QEMU_COMM]);
    assert!(root_qemu.stdout.is_empty(), "a QEMU runs as root");
    let state = json(
        &c,
        &format!("{home}/.local/share/vmctl/vms/web/run/state.json"),
    );
    assert_eq!(state["unit"]["name"], "vmctl-web.service", "{state}");
    assert_eq!(state["unit"]["scope"], "user", "{state}");
    eprintln!("e2e linger: test took {:.2?}", t0.elapsed());
}

/// A property of the service manager itself, in µs of CLOCK_MONOTONIC (the container shares
/// the host's clock).
fn manager_us(c: &Container, prop: &str) -> u64 {
    let v = c.ok(&["systemctl", "show", "-p", prop, "--value"]);
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("systemd's {prop}={v:?} is not a number"))
}

/// Run a shell script in the container that prints one number: elapsed time it measured.
fn timed(c: &Container, script: &str, args: &[&str]) -> u64 {
    let mut argv = vec!["sh", "-c", script, "sh"];
    argv.extend(args);
    let out = c.ok(&argv);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script}: printed {out:?}, not a number"))
}

/// For scripts/bench-systemd.sh (`--ignored`): `BENCH_N` (default 5) rounds, each: reboot the
/// container, whose VM "web" autostarts; `systemctl stop` it; start the same guest without a
/// unit. Prints one `bench-systemd:` line a measurement.
///
/// Boot: from the container's PID 1 start (`UserspaceTimestampMonotonic`) to the unit's
/// `READY=1` (`ActiveEnterTimestampMonotonic`), which `vmctl run` sends when its HTTP request
/// through the forwarded port got the guest's reply; the test then checks the port itself.
/// Stop: the wall time of `systemctl stop` inside the container, and the part of it that was the
/// guest's own poweroff: `vmctl run`'s journal line `stopped ... seconds=S`, the time from its
/// first ACPI press (QMP `system_powerdown`) to QEMU's exit (seen on a pidfd).
#[test]
#[ignore = "benchmark: run by scripts/bench-systemd.sh"]
fn benchmark_systemd_boot_to_port_and_stop_overhead() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut c, port) = container_running_web("bench");
    c.ok(&["systemctl", "enable", &unit("web")]);
    create_tiny(&c, "plain", free_port());
    for _ in 0..n {
        c.reboot();
        wait_active(&c, &["systemctl"], &unit("web"));
        let boot = manager_us(&c, "UserspaceTimestampMonotonic");
        let exec = show_u64(&c, &unit("web"), "ExecMainStartTimestampMonotonic");
        let ready = show_u64(&c, &unit("web"), "ActiveEnterTimestampMonotonic");
        assert!(
            http_get(port).is_some_and(|p| p.contains("vmctl tiny guest: web")),
            "the unit is active but port {port} does not serve the guest's page"
        );
        println!(
            "bench-systemd: boot boot_to_port_ms={} boot_to_exec_ms={} exec_to_ready_ms={}",
            (ready - boot) / 1000,
            (exec - boot) / 1000,
            (ready - exec) / 1000
        );

        let cursor = c.ok(&["journalctl", "-n", "0", "--show-cursor", "-q"]);
        let cursor = cursor
            .trim()
            .strip_prefix("-- cursor: ")
            .unwrap_or_else(|| panic!("no journal cursor in {cursor:?}"))
            .to_string();
        let wall_us = timed(
            &c,
            r#"t0=$(date +%s%N); timeout 120 systemctl stop "$1" || exit 1; echo $((($(date +%s%N) - t0) / 1000))"#,
            &[&unit("web")],
        );
        assert_acpi_exit(&c, &format!("{VMS}/web"), "benchmark stop");
        let journal = c.ok(&[
            "journalctl",
            "--after-cursor",
            &cursor,
            "-u",
            &unit("web"),
            "-o",
            "json",
            "--no-pager",
        ]);
        // The supervisor's record of the stop, its fields as journal fields.
        let seconds: f64 = journal
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["MESSAGE"] == "stopped" && r["VMCTL_STEP"] == "acpi")
            .find_map(|r| r["VMCTL_SECONDS"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("no `stopped` record with VMCTL_STEP=acpi in:\n{journal}"));
        let guest_us = (seconds * 1e6) as u64;
        println!(
            "bench-systemd: stop stop_ms={} guest_poweroff_ms={} overhead_ms={}",
            wall_us / 1000,
            guest_us / 1000,
            (wall_us as i64 - guest_us as i64) / 1000
        );

        // For comparison: the same guest without a unit (`vmctl start --wait`: the detached
        // supervisor), in the same container, from launch to the guest's answer.
        let ms = timed(
            &c,
            r#"t0=$(date +%s%N); timeout 120 vmctl start plain --wait >/dev/null || exit 1; echo $((($(date +%s%N) - t0) / 1000000))"#,
            &[],
        );
        c.ok(&["vmctl", "stop", "plain"]);
        println!("bench-systemd: plain start_wait_ms={ms}");
    }
}
