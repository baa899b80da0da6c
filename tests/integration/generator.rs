//! vmctl-generator under a real systemd (nspawn.rs's `Container`): a definition dropped into
//! /etc/vmctl/vms (or a user's ~/.config/vmctl/vms) becomes a running VM after a reboot, or
//! after `daemon-reload` and `systemctl start`; edits to it are applied at the next start; a bad
//! one is skipped and reported; `after` orders two dropped VMs. The pure part (which definitions
//! become which units) is unit-tested in src/generator.rs.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::nspawn::Container;

/// Two tiny guests booting side by side under TCG, one after the other's READY=1.
const UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Write `text` to `path` in the container.
fn put(c: &Container, path: &str, text: &str) {
    c.ok(&[
        "sh",
        "-c",
        r#"mkdir -p "$(dirname "$0")" && printf '%s' "$1" >"$0""#,
        path,
        text,
    ]);
}

/// A tiny guest's definition forwarding `port` to its web server.
fn tiny(port: u16, extra: &str) -> String {
    format!("memory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\n{extra}")
}

/// Poll until the guest behind `port` serves its page naming `name`; how long that took.
fn guest_answers(c: &Container, port: u16, name: &str) -> Duration {
    let t0 = Instant::now();
    let want = format!("vmctl tiny guest: {name}");
    while !http_get(port).is_some_and(|page| page.contains(&want)) {
        assert!(
            t0.elapsed() < UP_TIMEOUT,
            "VM {name} did not answer on 127.0.0.1:{port} within {UP_TIMEOUT:?}; its unit:\n{}",
            unit_log(c, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

fn unit_log(c: &Container, name: &str) -> String {
    let out = c.exec(&[
        "sh",
        "-c",
        &format!(
            "systemctl status --no-pager vmctl-{name}; journalctl -b --no-pager -o cat -u vmctl-{name}; journalctl -b --no-pager -o cat _SYSTEMD_USER_UNIT=vmctl-{name}.service"
        ),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `systemctl show -p PROPERTY --value UNIT`.
fn show(c: &Container, unit: &str, property: &str) -> String {
    c.ok(&["systemctl", "show", "-p", property, "--value", unit])
        .trim()
        .to_string()
}

fn install_generator(c: &Container) -> String {
    let out = c.ok(&["vmctl", "systemd", "install-generator"]);
    assert!(
        out.contains(
            "Linked /etc/systemd/system-generators/vmctl-generator to /usr/local/bin/vmctl"
        ) && out.contains("Reloaded the system manager"),
        "{out}"
    );
    out
}

#[test]
fn generator_dropped_definition_autostarts_after_reboot() {
    let mut c = Container::boot("gen-drop");
    let out = install_generator(&c);
    assert!(
        out.contains("Created /etc/vmctl/vms") && out.contains("No VM to generate a unit for yet"),
        "{out}"
    );
    let port = free_port();
    put(
        &c,
        "/etc/vmctl/vms/web.toml",
        &tiny(port, "autostart = true\n"),
    );
    c.reboot();
    let up = guest_answers(&c, port, "web");
    eprintln!("generator: VM web answered {up:.2?} after the container was up");

    let unit = "vmctl-web.service";
    assert_eq!(show(&c, unit, "ActiveState"), "active");
    assert_eq!(
        show(&c, unit, "FragmentPath"),
        "/run/systemd/generator/vmctl-web.service"
    );
    assert_eq!(show(&c, unit, "SourcePath"), "/etc/vmctl/vms/web.toml");
    // Its ExecStartPre made the VM in the home from the drop-in.
    let def = c.read("/var/lib/vmctl/vms/web/vm.toml");
    assert!(
        def.contains("written by vmctl from /etc/vmctl/vms/web.toml"),
        "{def}"
    );
    let log = unit_log(&c, "web");
    assert!(
        log.contains("Created VM web: 1 CPU, 256M RAM, 1G disk"),
        "{log}"
    );
    // systemd 252 itself finds nothing to say about the generated unit.
    let verify = c.exec(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/run/systemd/generator/vmctl-web.service",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.is_empty(), "{said}");
    // `vmctl stop` goes through the generated unit (else Restart= would bring the VM back).
    let stopped = c.ok(&["vmctl", "stop", "web"]);
    assert!(stopped.contains("Stopped VM web"), "{stopped}");
    assert_eq!(show(&c, unit, "ActiveState"), "inactive");
    let started = c.ok(&["vmctl", "start", "web"]);
    assert!(started.contains("Started VM web"), "{started}");
    assert_eq!(show(&c, unit, "ActiveState"), "active");
    // `vmctl rm` stops the unit; the drop-in still defines the VM, so its next start makes it
    // again (with a new disk).
    let removed = c.ok(&["vmctl", "rm", "--force", "web"]);
    assert!(
        removed.contains("Stopped vmctl-web.service")
            && removed.contains(
                "vmctl-web.service creates VM web again from /etc/vmctl/vms/web.toml when it next starts"
            ),
        "{removed}"
    );
    c.ok(&["systemctl", "start", "vmctl-web"]);
    assert!(
        c.read("/var/lib/vmctl/vms/web/vm.toml")
            .contains("autostart = true")
    );
    guest_answers(&c, port, "web");
    // The drop-in deleted while its VM runs: the unit stays (from the home's definition) until
    // the VM stops, so that stop is still graceful; then it goes.
    c.ok(&["rm", "/etc/vmctl/vms/web.toml"]);
    c.ok(&["systemctl", "daemon-reload"]);
    assert_eq!(show(&c, unit, "ActiveState"), "active");
    assert_eq!(
        show(&c, unit, "SourcePath"),
        "/var/lib/vmctl/vms/web/vm.toml"
    );
    c.ok(&["systemctl", "stop", unit]);
    let last: serde_json::Value =
        serde_json::from_str(&c.read("/var/lib/vmctl/vms/web/last-exit.json")).unwrap();
    assert_eq!(last["stopped_by"], "acpi", "{last}");
    c.ok(&["systemctl", "daemon-reload"]);
    assert_eq!(show(&c, unit, "LoadState"), "not-found");
}

#[test]
fn generator_runtime_drop_in_starts_updates_and_bad_ones_are_reported() {
    let c = Container::boot("gen-late");
    install_generator(&c);
    // Dropped while the system runs: a reload makes the unit, `systemctl start` returns once the
    // guest is up (Type=notify).
    let port = free_port();
    put(&c, "/etc/vmctl/vms/late.toml", &tiny(port, ""));
    c.ok(&["systemctl", "daemon-reload"]);
    assert_eq!(show(&c, "vmctl-late.service", "UnitFileState"), "generated");
    c.ok(&["systemctl", "start", "vmctl-late"]);
    let page = http_get(port).expect("the guest answers once systemctl start returns");
    assert!(page.contains("vmctl tiny guest: late"), "{page}");

    // An edit is applied at the next start: the stopped VM's definition follows the file.
    put(&c, "/etc/vmctl/vms/late.toml", &tiny(port, "cpus = 2\n"));
    assert_eq!(show(&c, "vmctl-late.service", "NeedDaemonReload"), "yes");
    c.ok(&["systemctl", "daemon-reload"]);
    c.ok(&["systemctl", "restart", "vmctl-late"]);
    let log = unit_log(&c, "late");
    assert!(
        log.contains("Updated VM late from /etc/vmctl/vms/late.toml: cpus: 1 → 2"),
        "{log}"
    );
    assert!(
        c.read("/var/lib/vmctl/vms/late/vm.toml")
            .contains("cpus = 2\n")
    );
    // A change the VM's disk depends on is refused, and the unit says why.
    put(
        &c,
        "/etc/vmctl/vms/late.toml",
        &tiny(port, "").replace("1G", "2G"),
    );
    let restart = c.exec(&["systemctl", "restart", "vmctl-late"]);
    assert!(!restart.status.success());
    let log = unit_log(&c, "late");
    assert!(
        log.contains("disk: VM late has \"1G\"") && log.contains("vmctl rm late"),
        "{log}"
    );

    // A bad definition gets no unit; the boot goes on. A unit installed in /etc/systemd/system
    // takes precedence over a drop-in's (systemd reads /etc first; the generator also leaves the
    // VM alone). A dry run names each file and problem.
    put(
        &c,
        "/etc/vmctl/vms/bad.toml",
        "cpus = 0\nautostart = true\n",
    );
    c.ok(&["vmctl", "systemd", "install", "late"]);
    assert_eq!(show(&c, "vmctl-bad.service", "LoadState"), "not-found");
    assert_eq!(
        show(&c, "vmctl-late.service", "FragmentPath"),
        "/etc/systemd/system/vmctl-late.service"
    );
    let dry = c.exec(&["/etc/systemd/system-generators/vmctl-generator", "--dryrun"]);
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert_eq!(dry.status.code(), Some(1), "{stderr}");
    for needle in [
        "vmctl-generator: error: /etc/vmctl/vms/bad.toml: invalid VM definition: cpus: must be 1-255; got 0; no unit for VM bad",
        "vmctl-generator: warning: /etc/vmctl/vms/late.toml: not used: /etc/systemd/system/vmctl-late.service is installed and takes precedence",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&dry.stdout), "");
}

#[test]
fn generator_orders_dropped_vms_by_after() {
    let mut c = Container::boot("gen-after");
    install_generator(&c);
    let (db_port, api_port) = (free_port(), free_port());
    put(
        &c,
        "/etc/vmctl/vms/db.toml",
        &tiny(db_port, "autostart = true\n"),
    );
    put(
        &c,
        "/etc/vmctl/vms/api.toml",
        &tiny(api_port, "autostart = true\nafter = [\"db\"]\n"),
    );
    c.reboot();
    guest_answers(&c, api_port, "api");
    guest_answers(&c, db_port, "db");
    // api began to start only once db was up (READY=1: its guest answered).
    let db_up: u64 = show(&c, "vmctl-db.service", "ActiveEnterTimestampMonotonic")
        .parse()
        .unwrap();
    let api_began: u64 = show(&c, "vmctl-api.service", "InactiveExitTimestampMonotonic")
        .parse()
        .unwrap();
    assert!(
        db_up > 0 && api_began >= db_up,
        "db up at {db_up} µs, api started at {api_began} µs"
    );
    let requires = show(&c, "vmctl-api.service", "Requires");
    assert!(requires.contains("vmctl-db.service"), "{requires}");

    // Uninstalling the generator stops the VMs its units run (gracefully: a unit that lost its
    // file at the reload could not), then the units go.
    let out = c.ok(&["vmctl", "systemd", "uninstall-generator"]);
    assert!(
        out.contains("Stopped vmctl-api.service, vmctl-db.service")
            && out.contains("Removed /etc/systemd/system-generators/vmctl-generator"),
        "{out}"
    );
    for vm in ["api", "db"] {
        let last: serde_json::Value =
            serde_json::from_str(&c.read(&format!("/var/lib/vmctl/vms/{vm}/last-exit.json")))
                .unwrap();
        assert_eq!(last["stopped_by"], "acpi", "{vm}: {last}");
        assert_eq!(last["code"], 0, "{vm}: {last}");
        assert_eq!(
            show(&c, &format!("vmctl-{vm}.service"), "LoadState"),
            "not-found"
        );
    }
}

#[test]
fn generator_user_drop_in_autostarts_with_linger() {
    let mut c = Container::boot("gen-user");
    let out = c.ok(&["vmctl", "systemd", "install-generator", "--user"]);
    assert!(
        out.contains("Linked /etc/systemd/user-generators/vmctl-generator"),
        "{out}"
    );
    c.ok(&["useradd", "--create-home", "alice"]);
    // The user's own home gets the tiny image the container has in the system's.
    c.ok(&[
        "sh",
        "-c",
        "mkdir -p ~alice/.local/share/vmctl/images && cp -r /var/lib/vmctl/images/tiny ~alice/.local/share/vmctl/images/ && chown -R alice: ~alice/.local",
    ]);
    let port = free_port();
    put(
        &c,
        "/home/alice/.config/vmctl/vms/dev.toml",
        &tiny(port, "autostart = true\n"),
    );
    c.ok(&["chown", "-R", "alice:", "/home/alice/.config"]);
    c.ok(&["loginctl", "enable-linger", "alice"]);
    c.reboot();
    guest_answers(&c, port, "dev");
    let def = c.read("/home/alice/.local/share/vmctl/vms/dev/vm.toml");
    assert!(
        def.contains("written by vmctl from /home/alice/.config/vmctl/vms/dev.toml"),
        "{def}"
    );
    // Not the system manager's: root's home has no VM dev.
    assert_eq!(
        c.exec(&["test", "-e", "/var/lib/vmctl/vms/dev"])
            .status
            .code(),
        Some(1)
    );
}

/// `vmctl create --from FILE --update`, which a drop-in's unit runs before each start, on the
/// host: create, no-op, update while stopped, refusals naming the field and what to do.
#[test]
fn generator_create_update_follows_the_file() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    let f = file.to_str().unwrap();
    let port = free_port();
    std::fs::write(&file, tiny(port, "")).unwrap();
    let update = ["create", "web", "--from", f, "--update"];

    let out = t.ok(&update);
    assert!(
        out.starts_with("Created VM web: 1 CPU, 256M RAM, 1G disk"),
        "{out}"
    );
    let def = std::fs::read_to_string(t.home().join("vms/web/vm.toml")).unwrap();
    assert!(def.contains(&format!("written by vmctl from {f}")), "{def}");
    assert_eq!(t.ok(&update), format!("VM web is up to date with {f}\n"));

    std::fs::write(&file, tiny(port, "cpus = 2\nafter = [\"db\"]\n")).unwrap();
    assert_eq!(
        t.ok(&update),
        format!("Updated VM web from {f}: after: - → [\"db\"]; cpus: 1 → 2\n")
    );
    assert_eq!(t.status("web")["cpus"], 2);

    // What the disk was made from cannot change in place; the home is left as it was.
    std::fs::write(&file, tiny(port, "").replace("1G", "2G")).unwrap();
    t.refused(
        &update,
        &[
            &format!("{f}: invalid VM definition"),
            "disk: VM web has \"1G\"",
            "\"2G\" takes a new VM: `vmctl rm web` (its disk is lost), then create it again",
        ],
    );
    // Without --update an existing VM is refused as before; --update needs --from.
    t.refused(&["create", "web", "--from", f], &["VM web already exists"]);
    t.refused(&["create", "web", "--update"], &["--from"]);

    // A running VM is not changed under it.
    std::fs::write(&file, tiny(port, "cpus = 1\n")).unwrap();
    t.ok(&["start", "web"]);
    let err = t.fails(&update, 7);
    assert!(
        err.contains("VM web is running")
            && err.contains("stop it to apply")
            && err.contains("cpus: 2 → 1"),
        "{err}"
    );
}
