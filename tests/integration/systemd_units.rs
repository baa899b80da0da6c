//! `vmctl systemd` without a running systemd: every rendered unit passes `systemd-analyze verify`
//! with no output at all; install/uninstall/rm handle the files and report that systemd could not
//! be reloaded; definitions with bad `after`/`[health]` are refused by field. And `vmctl run` under
//! a stand-in service manager: sd_notify READY=1 only once the guest answers, STOPPING=1 and exit
//! 0 on SIGTERM; an unhealthy guest is stopped with exit 8, a paused one is left alone and listed
//! as paused. (Under a real systemd: nspawn.rs.)

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Write a definition straight into the home: `generate` needs no image or disk.
fn define(t: &TestHome, name: &str, toml: &str) {
    let dir = t.home().join("vms").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vm.toml"), toml).unwrap();
}

/// `systemd-analyze [--user] security --offline=true` of `unit` in `dir`: its exposure score
/// and the report.
fn security(dir: &Path, unit: &str, user: bool) -> (f64, String) {
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user");
    }
    let out = cmd
        .args(["security", "--offline=true", "--no-pager", unit])
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("HOME", runtime.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (crate::systemd_hardened::exposure(&report, unit), report)
}

/// `systemd-analyze [--user] verify` on `unit` (with its dependencies beside it); its status and
/// everything it printed.
fn verify(dir: &Path, unit: &str, user: bool) -> (bool, String) {
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user");
    }
    let out: Output = cmd
        .args(["verify", "--man=no"])
        .arg(dir.join(unit))
        .current_dir(dir)
        // A user manager needs a runtime directory; HOME keeps the caller's own units out.
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("HOME", runtime.path())
        .env_remove("SYSTEMD_LOG_LEVEL")
        .output()
        .expect("systemd-analyze is installed (apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_rendered_unit_passes_systemd_analyze_verify_silently() {
    let t = TestHome::bare();
    define(&t, "db", "ports = [\"15432:5432\"]\n");
    define(&t, "web", "ports = [\"15080:8080\", \"15022:22\"]\n");
    define(
        &t,
        "api",
        "ports = [\"15081:8080\"]\nstop_timeout = 120\nafter = [\"db\", \"web\"]\n[health]\nhttp = \"8080/healthz\"\ninterval = \"5s\"\n",
    );
    define(
        &t,
        "files",
        "mounts = [\"/srv/code\", \"/srv/data:/data:ro\"]\n",
    );
    for user in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for name in ["db", "web", "api", "files"] {
            let mut args = vec!["systemd", "generate", name];
            if user {
                args.push("--user");
            }
            let unit = t.ok(&args);
            assert!(
                unit.contains(&format!("ExecStart={} run {name}\n", vmctl_bin())),
                "{unit}"
            );
            std::fs::write(dir.path().join(format!("vmctl-{name}.service")), unit).unwrap();
        }
        let files = std::fs::read_to_string(dir.path().join("vmctl-files.service")).unwrap();
        assert!(
            files.contains("\nReadWritePaths=/srv/code\nRestrictNamespaces=user mnt pid net\n"),
            "{files}"
        );
        for name in ["db", "web", "api", "files"] {
            let (ok, out) = verify(dir.path(), &format!("vmctl-{name}.service"), user);
            assert!(
                ok && out.is_empty(),
                "systemd-analyze{} verify vmctl-{name}.service: ok={ok}, output:\n{out}",
                if user { " --user" } else { "" }
            );
        }
        // The check is not vacuous: a unit systemd does not fully understand makes it speak.
        let bad = dir.path().join("vmctl-bad.service");
        let web = std::fs::read_to_string(dir.path().join("vmctl-web.service")).unwrap();
        std::fs::write(&bad, web.replace("KillMode=mixed", "KillMode=mixd")).unwrap();
        let (_, out) = verify(dir.path(), "vmctl-bad.service", user);
        assert!(out.contains("mixd"), "{out}");
    }
}

/// `systemd-analyze security --offline=true` of both units rates them as SECURITY.md says:
/// the system unit OK (at most 3.5), a user unit at most 4.5. (The score systemd gives the loaded
/// unit: systemd_hardened.rs.)
#[test]
fn systemd_analyze_security_rates_the_units_within_their_targets() {
    let t = TestHome::bare();
    define(&t, "web", "ports = [\"15080:8080\"]\n");
    for (user, target) in [(false, 3.5), (true, 4.5)] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["systemd", "generate", "web"];
        if user {
            args.push("--user");
        }
        std::fs::write(dir.path().join("vmctl-web.service"), t.ok(&args)).unwrap();
        let (score, report) = security(dir.path(), "vmctl-web.service", user);
        eprintln!(
            "systemd-analyze{} security: {score}",
            if user { " --user" } else { "" }
        );
        assert!(score <= target, "exposure {score} > {target}:\n{report}");
    }
}

/// A home whose path holds `@` and placeholder names (as an SSSD home does `@`): the unit
/// carries it as it is, with no line of its own added, and systemd reads it silently.
#[test]
fn a_home_with_placeholder_text_is_carried_as_it_is() {
    let t = TestHome::bare();
    let home = t
        .user_home
        .path()
        .join("u@DEPENDENCIES@/alice@example.com@HOME@");
    for (name, toml) in [
        ("db", "ports = [\"15432:5432\"]\n"),
        ("api", "ports = [\"15081:8080\"]\nafter = [\"db\"]\n"),
    ] {
        let dir = home.join("vms").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vm.toml"), toml).unwrap();
    }
    let units = tempfile::tempdir().unwrap();
    for name in ["db", "api"] {
        let unit = t.ok(&[
            "--home",
            home.to_str().unwrap(),
            "systemd",
            "generate",
            name,
        ]);
        std::fs::write(units.path().join(format!("vmctl-{name}.service")), unit).unwrap();
    }
    let api = std::fs::read_to_string(units.path().join("vmctl-api.service")).unwrap();
    assert!(
        api.contains(&format!("\nEnvironment=VMCTL_HOME={}\n", home.display())),
        "{api}"
    );
    assert_eq!(api.matches("Requires=").count(), 1, "{api}");
    let (ok, out) = verify(units.path(), "vmctl-api.service", false);
    assert!(ok && out.is_empty(), "ok={ok}, output:\n{out}");
}

#[test]
fn generate_needs_a_known_vm() {
    let t = TestHome::bare();
    let err = t.fails(&["systemd", "generate", "ghost"], 3);
    assert!(err.contains("\"ghost\" not found"), "{err}");
}

#[test]
fn bad_after_and_health_are_refused_by_field() {
    let t = TestHome::bare();
    let def = t.user_home.path().join("api.toml");
    std::fs::write(
        &def,
        "ports = [\"15081:8080\"]\nafter = [\"api\", \"db\", \"db\"]\n[health]\nhttp = \"9090/x\"\ninterval = \"0s\"\nretries = 0\n",
    )
    .unwrap();
    t.refused(
        &["create", "api", "--from", def.to_str().unwrap()],
        &[
            "after[0]: \"api\" is this VM",
            "after[2]: \"db\" is listed twice",
            "health.http: guest port 9090 is not forwarded (forwarded TCP guest ports: 8080)",
            "health.interval: must be 1s-1h; got \"0s\"",
            "health.retries: must be 1-100; got 0",
        ],
    );
    std::fs::write(&def, "[health]\ntcp = 22\nprobe = \"x\"\n").unwrap();
    t.refused(
        &["create", "api", "--from", def.to_str().unwrap()],
        &["line 3", "probe"],
    );
    t.refused(
        &["create", "api", "--after", "a/b"],
        &["--after", "\"a/b\""],
    );
}

#[test]
fn create_flags_set_after_and_autostart() {
    let t = TestHome::new();
    t.ok(&["create", "api", "--after", "db", "--autostart"]);
    let def = std::fs::read_to_string(t.home().join("vms/api/vm.toml")).unwrap();
    assert!(def.contains("autostart = true"), "{def}");
    assert!(def.contains("after = [\"db\"]"), "{def}");
}

/// A user-scope config directory, and whether this host runs systemd (then install would really
/// reload and start units: the nspawn tests cover that).
fn user_units(t: &TestHome) -> Option<PathBuf> {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("skipped: systemd runs on this host; see the nspawn tests");
        return None;
    }
    Some(t.user_home.path().join("config"))
}

fn run_with(t: &TestHome, config: &Path, args: &[&str]) -> Output {
    t.cmd(args).env("XDG_CONFIG_HOME", config).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn install_without_systemd_writes_enables_and_says_what_it_could_not_do() {
    let t = TestHome::bare();
    let Some(config) = user_units(&t) else { return };
    define(&t, "db", "ports = [\"15432:5432\"]\n");
    define(&t, "api", "after = [\"db\"]\nautostart = true\n");
    let dir = config.join("systemd/user");

    // Ordered after a VM whose unit is not installed: refused, nothing written.
    let o = run_with(&t, &config, &["systemd", "install", "--user", "api"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(
        text(&o).contains("vmctl-db.service is not installed")
            && text(&o).contains("vmctl systemd install db --user"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("vmctl-api.service").exists());

    // Plain install: the file is written, the missing manager is reported, exit 0.
    let o = run_with(&t, &config, &["systemd", "install", "--user", "db"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let unit = std::fs::read_to_string(dir.join("vmctl-db.service")).unwrap();
    assert_eq!(unit, t.ok(&["systemd", "generate", "--user", "db"]));
    assert!(text(&o).contains("is not running here"), "{}", text(&o));
    assert!(text(&o).contains("loginctl enable-linger"), "{}", text(&o));

    // autostart = true enables (symlinks work without a manager); --now cannot: exit 4, and the
    // message says what was done.
    let o = run_with(
        &t,
        &config,
        &["systemd", "install", "--user", "api", "--now"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("Wrote") && msg.contains("Enabled vmctl-api.service (autostart = true)"),
        "{msg}"
    );
    assert!(msg.contains("could not start vmctl-api.service"), "{msg}");
    assert!(dir.join("default.target.wants/vmctl-api.service").exists());

    // uninstall disables and removes; a second time there is nothing to remove.
    let o = run_with(&t, &config, &["systemd", "uninstall", "--user", "api"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!dir.join("vmctl-api.service").exists());
    assert!(!dir.join("default.target.wants/vmctl-api.service").exists());
    let o = run_with(&t, &config, &["systemd", "uninstall", "--user", "api"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    // rm takes the VM's unit with it.
    let o = run_with(&t, &config, &["rm", "db"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("Disabled vmctl-db.service"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("vmctl-db.service").exists());
}

#[test]
fn install_leaves_another_homes_unit_alone() {
    let a = TestHome::bare();
    let Some(config) = user_units(&a) else { return };
    let b = TestHome::bare();
    define(&a, "web", "");
    define(&b, "web", "");
    let o = run_with(&a, &config, &["systemd", "install", "--user", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // b's rm must not touch a's unit; b's install must not overwrite it.
    let o = b
        .cmd(&["rm", "web"])
        .env("XDG_CONFIG_HOME", &config)
        .env("HOME", a.user_home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let unit = config.join("systemd/user/vmctl-web.service");
    assert!(unit.exists());
    define(&b, "web", "");
    let o = b
        .cmd(&["systemd", "install", "--user", "web"])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("another vmctl home"), "{}", text(&o));
}

/// A stand-in for systemd's notification socket, collecting what `vmctl run` sends.
struct Notifications {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sock: UnixDatagram,
}

impl Notifications {
    fn new() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        Notifications {
            _dir: dir,
            path,
            sock,
        }
    }

    /// Messages until one has a line starting with `line` (that message is returned last),
    /// bounded by `timeout`.
    fn until(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            self.sock
                .set_read_timeout(Some(deadline - Instant::now()))
                .unwrap();
            let Ok(n) = self.sock.recv(&mut buf) else {
                break;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l.starts_with(line));
            seen.push(msg);
            if done {
                return seen;
            }
        }
        panic!("no {line:?} within {timeout:?}; got {seen:?}");
    }
}

fn spawn_run(t: &TestHome, name: &str, notify: &Notifications) -> std::process::Child {
    t.cmd(&["run", name])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM to `vmctl run`, as `systemctl stop` sends it: it says STOPPING=1 and exits 0.
fn stop_run(run: std::process::Child, notify: &Notifications) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    notify.until("STOPPING=1", Duration::from_secs(10));
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Create a tiny VM forwarding a free port to guest port 8080, with `extra` TOML appended to its
/// definition; returns the host port.
fn create_tiny(t: &TestHome, name: &str, extra: &str) -> u16 {
    let port = free_port();
    let def = t.user_home.path().join(format!("{name}.toml"));
    let toml = format!("memory = \"256M\"\ndisk = \"1G\"\nports = [\"{port}:8080\"]\n{extra}");
    std::fs::write(&def, toml).unwrap();
    t.ok(&["create", name, "--from", def.to_str().unwrap()]);
    port
}

#[test]
fn run_notifies_ready_once_the_guest_answers_and_stops_on_sigterm() {
    let t = TestHome::new();
    let port = create_tiny(&t, "web", "");
    let notify = Notifications::new();
    let run = spawn_run(&t, "web", &notify);
    let msgs = notify.until("READY=1", Duration::from_secs(120));
    // READY=1 means the guest answers, not merely that QEMU runs.
    let page = http_get(port).expect("the guest answers once READY=1 is sent");
    assert!(page.contains("vmctl tiny guest: web"), "{page}");
    assert!(
        msgs.iter().any(|m| m.contains("STATUS=QEMU is up")),
        "{msgs:?}"
    );
    let st = t.status("web");
    assert_eq!(st["ready"], true, "{st}");

    stop_run(run, &notify);
    let st = t.status("web");
    assert_eq!(st["last_exit"]["stopped_by"], "acpi", "{st}");
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
}

#[test]
fn an_unhealthy_guest_is_stopped_with_exit_8() {
    let t = TestHome::new();
    // The tiny guest answers 404 for this path: up (in ~3 s), but never healthy; it is given up
    // on after the start period and 2 × 1 s.
    create_tiny(
        &t,
        "sick",
        "[health]\nhttp = \"8080/healthz\"\ninterval = \"1s\"\nretries = 2\nstart_period = \"8s\"\n",
    );
    let notify = Notifications::new();
    let run = spawn_run(&t, "sick", &notify);
    let msgs = notify.until("STOPPING=1", Duration::from_secs(120));
    assert!(
        !msgs.iter().any(|m| m.contains("READY=1")),
        "an unhealthy guest is never ready: {msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("Unhealthy (http 8080/healthz: HTTP status 404")),
        "{msgs:?}"
    );
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");
    let st = t.status("sick");
    assert_eq!(st["last_exit"]["stopped_by"], "health-check", "{st}");
}

#[test]
fn a_paused_guest_is_not_judged_by_its_health_check() {
    let t = TestHome::new();
    // A 1 s interval and 2 retries: were probes of a paused guest counted, it would be stopped
    // as unhealthy within about 4 s of the pause.
    let port = create_tiny(
        &t,
        "nap",
        "[health]\nhttp = \"8080/\"\ninterval = \"1s\"\nretries = 2\n",
    );
    let notify = Notifications::new();
    let mut run = spawn_run(&t, "nap", &notify);
    notify.until("READY=1", Duration::from_secs(120));
    t.ok(&["pause", "nap"]);
    notify.until(
        "STATUS=Paused (its CPUs are stopped); health checks wait until it resumes",
        Duration::from_secs(10),
    );
    let listed = t.json(&["list", "--json"]);
    assert_eq!(listed[0]["state"], "paused", "{listed}");
    // Three times what it takes to be judged unhealthy: the supervisor must still be running.
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the supervisor ended while the guest was paused"
        );
        assert_eq!(http_get(port), None, "a paused guest does not answer");
    }
    t.ok(&["resume", "nap"]);
    notify.until("STATUS=Running again", Duration::from_secs(10));
    let page = http_get(port).expect("the resumed guest answers");
    assert!(page.contains("vmctl tiny guest: nap"), "{page}");
    let st = t.status("nap");
    assert_eq!(st["health"]["status"], "healthy", "{st}");
    assert_eq!(t.json(&["list", "--json"])[0]["state"], "running");

    stop_run(run, &notify);
}

#[test]
fn start_wait_uses_the_health_check_and_status_shows_it() {
    let t = TestHome::new();
    create_tiny(&t, "web", "[health]\nhttp = \"8080/\"\ninterval = \"1s\"\n");
    t.ok(&["start", "web", "--wait"]);
    // The supervisor runs the same check on its own; it may see the pass a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut st = t.status("web");
    while st["ready"] != true && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        st = t.status("web");
    }
    assert_eq!(st["ready"], true, "{st}");
    assert_eq!(st["health"]["status"], "healthy", "{st}");
    assert_eq!(st["health"]["check"], "http 8080/", "{st}");
    let text = t.ok(&["status", "web"]);
    assert!(text.contains("Health:  healthy (http 8080/)"), "{text}");
    t.ok(&["stop", "web"]);
}

/// The units of a stack's VMs, their network's switch and the stack's target, as `systemd
/// install --stack` writes them, read silently by `systemd-analyze verify`; the switch's unit
/// is rated OK by `systemd-analyze security` (it needs only to become vmctl-qemu).
#[test]
fn network_and_stack_units_pass_verify_and_the_switch_unit_rates_ok() {
    let t = TestHome::bare();
    t.ok(&["network", "create", "back"]);
    define(
        &t,
        "db",
        "networks = [{ name = \"back\", address = \"10.89.0.2\" }]\nstack = \"lab\"\n",
    );
    define(
        &t,
        "web",
        "ports = [\"15080:8080\"]\nnetworks = [{ name = \"back\", address = \"10.89.0.3\" }]\nafter = [\"db\"]\nstack = \"lab\"\n",
    );
    for user in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let with_user = |mut a: Vec<&'static str>| {
            if user {
                a.push("--user");
            }
            a
        };
        for name in ["db", "web"] {
            let unit = t.ok(&with_user(vec!["systemd", "generate", name]));
            assert!(
                unit.contains("After=vmctl-net-back.service\nRequires=vmctl-net-back.service\n")
                    || unit.contains("Requires=vmctl-db.service vmctl-net-back.service\n"),
                "{unit}"
            );
            assert!(unit.contains("PartOf=vmctl-stack-lab.target\n"), "{unit}");
            std::fs::write(dir.path().join(format!("vmctl-{name}.service")), unit).unwrap();
        }
        let net = t.ok(&with_user(vec!["systemd", "generate", "--network", "back"]));
        assert!(
            net.contains(&format!(
                "ExecStart={} network switch back --persist\n",
                vmctl_bin()
            )),
            "{net}"
        );
        std::fs::write(dir.path().join("vmctl-net-back.service"), &net).unwrap();
        std::fs::write(
            dir.path().join("vmctl-stack-lab.target"),
            "[Unit]\nDescription=vmctl stack lab\nWants=vmctl-db.service vmctl-web.service\nAfter=vmctl-db.service vmctl-web.service\n",
        )
        .unwrap();
        for unit in [
            "vmctl-net-back.service",
            "vmctl-db.service",
            "vmctl-web.service",
        ] {
            let (ok, out) = verify(dir.path(), unit, user);
            assert!(
                ok && out.is_empty(),
                "systemd-analyze{} verify {unit}: ok={ok}, output:\n{out}",
                if user { " --user" } else { "" }
            );
        }
        let (score, report) = security(dir.path(), "vmctl-net-back.service", user);
        eprintln!(
            "systemd-analyze{} security vmctl-net-back.service: {score}",
            if user { " --user" } else { "" }
        );
        assert!(score <= 3.5, "exposure {score}:\n{report}");
    }
}
