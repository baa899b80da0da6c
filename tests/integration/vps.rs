//! The seed's VPS on a real Debian guest (TCG): built from Debian packages, provisioned on first
//! boot without cloud-init, SSH with a key only, gunicorn through a forwarded port, and Ansible
//! through `vmctl inventory`. Each step is a named assertion so a failure says what broke.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

fn vps_home() -> TestHome {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    t
}

fn create_web(t: &TestHome, name: &str, extra: &[&str]) -> (u16, u16) {
    create_web_with(t, name, extra, "", &[])
}

/// `vm-configs/web.toml` with `more` TOML after it, and `files` beside it.
fn create_web_with(
    t: &TestHome,
    name: &str,
    extra: &[&str],
    more: &str,
    files: &[(&str, &str)],
) -> (u16, u16) {
    let (ssh, http) = (free_port(), free_port());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/web.toml");
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("web.toml");
    let text = std::fs::read_to_string(example).unwrap();
    std::fs::write(&def, format!("{more}\n{text}")).unwrap();
    for (f, text) in files {
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let mut args = vec![
        "create".to_string(),
        name.into(),
        "--from".into(),
        def.display().to_string(),
        "--port".into(),
        format!("{ssh}:22"),
        "--port".into(),
        format!("{http}:8080"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    t.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (ssh, http)
}

fn ssh_ok(t: &TestHome, name: &str, cmd: &str) -> String {
    let out = t.ssh(name, cmd);
    assert!(
        out.status.success(),
        "vmctl ssh {name} -- {cmd}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Plain OpenSSH with the VM's pinned host key, but a chosen user and auth options.
fn raw_ssh(t: &TestHome, name: &str, port: u16, user: &str, opts: &[&str]) -> Output {
    let ssh_dir = t.home().join("vms").join(name).join("ssh");
    Command::new("ssh")
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh_dir.join("known_hosts").display()
        ))
        .args([
            "-o",
            &format!("HostKeyAlias=vmctl-{name}"),
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(opts)
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .output()
        .unwrap()
}

fn hello(port: u16) -> String {
    http_get(port).unwrap_or_default()
}

/// Poll (bounded) until `f` holds.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn vps_ssh_key_only_gunicorn_restart_persistence_and_ansible() {
    let t = vps_home();
    // A shared folder of a user's (nobody's here), mounted by the image's provisioning.
    let share = tempfile::tempdir().unwrap();
    let folder = share.path().join("code");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("app.txt"), "host code\n").unwrap();
    for p in [share.path(), folder.as_path(), &folder.join("app.txt")] {
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(p, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    }
    std::fs::set_permissions(
        share.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mount = format!("{}:/srv/code", folder.display());
    // Provisioning scripts: one as root (is the app still waiting?), one as the login user, from
    // a file beside the definition.
    let provision = r#"provision = [
  { mode = "system", script = "echo ran >> /var/tmp/system-runs; systemctl is-active vmctl-app-gunicorn-hello > /var/tmp/app-then || true" },
  { mode = "user", file = "setup.sh" },
]"#;
    let setup = "echo \"user $(id -un) in $HOME\"\ntouch ~/from-setup\n";
    let (ssh_port, http_port) = create_web_with(
        &t,
        "web",
        &["--user", "alice", "--mount", &mount],
        provision,
        &[("setup.sh", setup)],
    );

    // start --wait returns once SSH and the app answer and the scripts are done.
    let started = t.json(&["start", "web", "--wait", "--timeout", "400", "--json"]);
    assert!(started["ready_seconds"].as_f64().is_some(), "{started}");
    let status = t.json(&["status", "web", "--json"]);
    assert_eq!(status["provision"]["status"], "done", "{status}");
    let out = t.ok(&["logs", "web", "--provision"]);
    assert!(
        out.contains(" script 2: user alice in /home/alice\n"),
        "{out}"
    );
    assert_eq!(
        ssh_ok(&t, "web", "cat /var/tmp/app-then; ls ~/from-setup"),
        "inactive\n/home/alice/from-setup",
        "the scripts ran before the app, the user's as the login user"
    );
    let page = hello(http_port);
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "gunicorn answers 200: {page}"
    );
    assert!(page.contains("Hello, World!"), "{page}");

    // SSH with the VM's key as the provisioned user; the guest has vmctl's host key (pinned).
    let id = ssh_ok(&t, "web", "id -un; hostname");
    assert_eq!(id, "alice\nweb", "login user and hostname");

    // The serial console has debian-12's getty: its login prompt answers a newline.
    let mut c = crate::console::console(&t, "web");
    c.exp_string("Connected to the serial console of VM web")
        .expect("vmctl console attaches");
    c.send_line("").unwrap();
    c.exp_string("web login:")
        .expect("the login prompt of the getty on ttyS0");
    c.send_control(']').unwrap();
    c.exp_eof().expect("Ctrl-] detaches");

    // The shared folder: the host's file in the guest, and what the login user writes there is
    // the folder owner's on the host (seen in the guest as the login user's).
    assert_eq!(ssh_ok(&t, "web", "cat /srv/code/app.txt"), "host code");
    ssh_ok(&t, "web", "echo guest code > /srv/code/from-guest.txt");
    let made = folder.join("from-guest.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "guest code\n");
    let m = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&made).unwrap());
    assert_eq!(m, 65534, "the guest's file belongs to the folder's owner");
    assert_eq!(ssh_ok(&t, "web", "stat -c %U /srv/code/app.txt"), "alice");

    // vmctl cp, both ways, recursive, names with spaces.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("my files");
    std::fs::create_dir_all(tree.join("sub dir")).unwrap();
    std::fs::write(tree.join("sub dir/a b.txt"), "from the host\n").unwrap();
    let src = tree.display().to_string();
    t.ok(&["cp", "-r", &src, "web:/tmp/copied here"]);
    assert_eq!(
        ssh_ok(&t, "web", "cat '/tmp/copied here/sub dir/a b.txt'"),
        "from the host"
    );
    ssh_ok(
        &t,
        "web",
        "echo from the guest > '/tmp/copied here/back it comes.txt'",
    );
    let back = dir.path().join("back");
    t.ok(&["cp", "-r", "web:/tmp/copied here", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back.join("back it comes.txt")).unwrap(),
        "from the guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("sub dir/a b.txt")).unwrap(),
        "from the host\n"
    );
    let one = dir.path().join("one.txt");
    t.ok(&[
        "cp",
        "web:/tmp/copied here/back it comes.txt",
        one.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "from the guest\n");
    // A missing remote file: scp's failure, not a silent success.
    let err = t.fails(&["cp", "web:/nonexistent", one.to_str().unwrap()], 1);
    assert!(err.contains("scp failed"), "{err}");

    // Root and passwords are refused.
    let root = raw_ssh(&t, "web", ssh_port, "root", &["-i", &identity(&t, "web")]);
    assert_eq!(root.status.code(), Some(255), "root login must fail");
    assert!(
        String::from_utf8_lossy(&root.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    let pw = raw_ssh(
        &t,
        "web",
        ssh_port,
        "alice",
        &[
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ],
    );
    assert_eq!(pw.status.code(), Some(255), "password login must fail");
    assert!(
        String::from_utf8_lossy(&pw.stderr).contains("Permission denied (publickey)"),
        "{}",
        String::from_utf8_lossy(&pw.stderr)
    );

    // The app's unit is enabled and comes back when its process is killed.
    assert_eq!(
        ssh_ok(&t, "web", "systemctl is-enabled vmctl-app-gunicorn-hello"),
        "enabled"
    );
    let unit_pid = || {
        ssh_ok(
            &t,
            "web",
            "systemctl show -p MainPID --value vmctl-app-gunicorn-hello",
        )
    };
    let before = unit_pid();
    assert_ne!(before, "0");
    ssh_ok(&t, "web", &format!("sudo kill -9 {before}"));
    eventually(
        "gunicorn restarted by systemd",
        Duration::from_secs(60),
        || {
            let now = unit_pid();
            now != "0" && now != before && hello(http_port).contains("Hello, World!")
        },
    );

    // A file written in the guest survives stop/start.
    let marker = format!("persist-{}", std::process::id());
    ssh_ok(&t, "web", &format!("echo {marker} > ~/marker && sync"));
    let stopped = t.json(&["stop", "web", "--json"]);
    assert_eq!(
        stopped["step"], "acpi",
        "guest powers off by ACPI: {stopped}"
    );
    assert_eq!(stopped["exit"]["code"], 0);
    t.ok(&["start", "web", "--wait", "--timeout", "400"]);
    assert_eq!(ssh_ok(&t, "web", "cat ~/marker"), marker);
    assert_eq!(
        ssh_ok(&t, "web", "cat /var/tmp/system-runs"),
        "ran",
        "provisioning scripts run once, not at each boot"
    );

    // Ansible through the generated inventory.
    let inv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(inv.path(), t.ok(&["inventory"])).unwrap();
    let ansible = ansible_bin();
    let out = Command::new(&ansible)
        .args(["all", "-m", "ping", "-i"])
        .arg(inv.path())
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("\"ping\": \"pong\""),
        "ansible ping: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.ok(&["stop", "web"]);
}

#[test]
fn two_vps_side_by_side_one_behind_nginx_with_an_explicit_key() {
    let t = vps_home();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let pubkey = key.with_extension("pub");
    let (_, http_a) = create_web(
        &t,
        "a",
        &["--mem", "1G", "--ssh-key", pubkey.to_str().unwrap()],
    );
    // b's provisioning script fails: start --wait says so with its output, exit 9; the guest
    // runs on (and its app, which only waits for the scripts, is served).
    let failing = r#"provision = [{ mode = "system", script = "echo about to fail; echo no such thing >&2; exit 3" }]"#;
    let (_, http_b) = create_web_with(
        &t,
        "b",
        &["--mem", "1G", "--app", "nginx-gunicorn"],
        failing,
        &[],
    );
    t.ok(&["start", "a", "--wait", "--timeout", "500"]);
    let err = t.fails(&["start", "b", "--wait", "--timeout", "500"], 9);
    for needle in [
        "provisioning script 1 (system) failed with exit code 3",
        "script 1: about to fail",
        "script 1: no such thing",
        "vmctl logs b --provision",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let status = t.json(&["status", "b", "--json"]);
    assert_eq!(status["provision"]["code"], 3, "{status}");
    eventually("b's app", Duration::from_secs(120), || {
        hello(http_b).contains("Hello, World!")
    });
    let a = hello(http_a);
    let b = hello(http_b);
    assert!(
        a.contains("Hello, World!") && a.contains("gunicorn"),
        "a: {a}"
    );
    assert!(
        b.contains("Hello, World!") && b.contains("nginx"),
        "b is served through nginx: {b}"
    );
    let who = ssh_ok(&t, "a", "hostname");
    assert_eq!(who, "a");
    assert_eq!(
        ssh_ok(
            &t,
            "b",
            "systemctl is-active nginx vmctl-app-nginx-gunicorn"
        ),
        "active\nactive"
    );
    t.ok(&["stop", "a"]);
    t.ok(&["stop", "b"]);
}

fn identity(t: &TestHome, name: &str) -> String {
    std::fs::read_to_string(t.home().join("vms").join(name).join("ssh/identity"))
        .unwrap()
        .trim()
        .to_string()
}

fn ansible_bin() -> PathBuf {
    let p = work_dir().join("venv/bin/ansible");
    assert!(
        p.exists(),
        "{} missing: scripts/test.sh installs ansible-core there",
        p.display()
    );
    p
}

#[test]
fn web_toml_and_the_equivalent_flags_define_the_same_vm() {
    let t = vps_home();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/web.toml");
    t.ok(&["create", "from-file", "--from", example, "--user", "alice"]);
    let file_def = std::fs::read_to_string(t.home().join("vms/from-file/vm.toml")).unwrap();
    t.ok(&["rm", "from-file"]);
    t.ok(&[
        "create",
        "from-flags",
        "--cpus",
        "1",
        "--mem",
        "2G",
        "--disk",
        "10G",
        "--image",
        "debian-12",
        "--port",
        "5022:22",
        "--port",
        "5080:8080",
        "--app",
        "gunicorn-hello",
        "--user",
        "alice",
    ]);
    let flags_def = std::fs::read_to_string(t.home().join("vms/from-flags/vm.toml")).unwrap();
    let body = |d: &str| {
        d.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&file_def), body(&flags_def));
    assert!(
        flags_def.contains("app = \"gunicorn-hello\"") && flags_def.contains("memory = \"2G\""),
        "{flags_def}"
    );
}
