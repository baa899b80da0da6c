//! The bad-input suite: command-line flags and values, VM names, port specs, TOML definitions,
//! snapshot tags and the QMP shell's script input, class by class and table-driven. Each case
//! asserts the documented exit code and a message naming the field (or flag) and the offending
//! value; a refused command leaves the home byte-identical (`refused`, or `fails` and
//! `snapshot`). QMP cases run on a running tiny VM, which must still run after each.
//!
//! Each class's test asserts how many cases it ran, so the count stays honest.

use std::path::Path;
use std::process::Stdio;

use crate::harness::*;

/// A refused command (exit 2): its arguments and what its message must hold.
type Case = (Vec<String>, Vec<String>);

fn case(args: &[&str], needles: &[&str]) -> Case {
    (
        args.iter().map(|s| s.to_string()).collect(),
        needles.iter().map(|s| s.to_string()).collect(),
    )
}

/// Run every case through `refused`; how many ran.
fn refuse_all(t: &TestHome, cases: &[Case]) -> usize {
    for (args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        t.refused(&args, &needles);
    }
    cases.len()
}

/// Exit `code` (not 2) with every needle in stderr and the home unchanged.
fn fails_unchanged(t: &TestHome, args: &[&str], code: i32, needles: &[&str]) {
    let before = t.snapshot();
    let err = t.fails(args, code);
    for n in needles {
        assert!(
            err.contains(n),
            "vmctl {args:?}: {n:?} missing from:\n{err}"
        );
    }
    assert_eq!(t.snapshot(), before, "vmctl {args:?} changed the home");
}

/// A home with the tiny image and an imported image `cloud` (provisioned by cloud-init, so
/// `--user` and `--ssh-key` are checked against it; it never boots here).
fn home_with_cloud_image() -> TestHome {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("cloud.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success());
    t.ok(&["image", "import", disk.to_str().unwrap(), "--name", "cloud"]);
    t
}

// ---- CLI flags and values ------------------------------------------------------------------

#[test]
fn cli_flags_and_values() {
    let t = home_with_cloud_image();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let key = key.to_str().unwrap();
    let empty = keys.path().join("empty.pub");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let kdir = keys.path().to_str().unwrap();
    let long_user = "u".repeat(33);
    let yaml = |name: &str, text: &str| {
        let f = keys.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let pwauth = yaml(
        "pw.yaml",
        "#cloud-config\nssh_pwauth: true\npackages: [jq]\n",
    );
    let script = yaml("run.sh", "#!/bin/sh\necho hi\n");
    let good = yaml("good.yaml", "#cloud-config\npackages: [jq]\n");
    let cloud = |flag: &str, value: &str| {
        vec![
            "create".to_string(),
            "v".into(),
            "--image".into(),
            "cloud".into(),
            "--disk".into(),
            "1G".into(),
            flag.into(),
            value.into(),
        ]
    };
    let mut cases = vec![
        case(
            &["create", "v", "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        case(&["create", "v", "-Z"], &["unexpected argument '-Z'"]),
        case(
            &["create", "v", "--cpus"],
            &["a value is required for '--cpus <N>'"],
        ),
        case(
            &["create", "v", "--mem"],
            &["a value is required for '--mem <SIZE>'"],
        ),
        case(
            &["create", "v", "--from"],
            &["a value is required for '--from <FILE>'"],
        ),
        case(
            &["create", "v", "--port"],
            &["a value is required for '--port <SPEC>'"],
        ),
        case(&["create", "v", "--update"], &["--from <FILE>"]),
        case(&["create"], &["<NAME>"]),
        case(
            &["create", "v", "--cpus", "0"],
            &["'--cpus <N>'", "must be 1-255; got 0"],
        ),
        case(
            &["create", "v", "--cpus", "256"],
            &["'--cpus <N>'", "got 256"],
        ),
        case(
            &["create", "v", "--cpus", "-1"],
            &["'--cpus <N>'", "got -1"],
        ),
        case(
            &["create", "v", "--cpus", "abc"],
            &["'--cpus <N>'", "\"abc\" is not a number"],
        ),
        case(
            &["create", "v", "--cpus", "1e3"],
            &["'--cpus <N>'", "\"1e3\" is not a number"],
        ),
        case(
            &["create", "v", "--cpus", "2.5"],
            &["'--cpus <N>'", "\"2.5\" is not a number"],
        ),
        case(
            &["create", "v", "--mem", "0"],
            &["'--mem <SIZE>'", "must be at least 16M; got 0"],
        ),
        case(
            &["create", "v", "--mem", "15M"],
            &["'--mem <SIZE>'", "got 15M"],
        ),
        case(
            &["create", "v", "--mem", "2X"],
            &["'--mem <SIZE>'", "\"2X\" has an unknown unit"],
        ),
        case(
            &["create", "v", "--mem", "huge"],
            &["'--mem <SIZE>'", "\"huge\" is not a size"],
        ),
        case(
            &["create", "v", "--mem", "-1G"],
            &["'--mem <SIZE>'", "\"-1G\" is not a size"],
        ),
        case(
            &["create", "v", "--mem", "99999999999T"],
            &[
                "'--mem <SIZE>'",
                "\"99999999999T\" is too large to be a size",
            ],
        ),
        case(
            &["create", "v", "--mem", "100T"],
            &["memory: 100T is more than this host has"],
        ),
        case(
            &["create", "v", "--disk", "0"],
            &["'--disk <SIZE>'", "must be larger than 0"],
        ),
        case(
            &["create", "v", "--disk", "100M"],
            &["disk: 100M is smaller than image tiny (256M)"],
        ),
        case(
            &["create", "v", "--disk", "garbage"],
            &["'--disk <SIZE>'", "\"garbage\""],
        ),
        case(
            &["create", "v", "--disk", "-5G"],
            &["'--disk <SIZE>'", "\"-5G\""],
        ),
        case(
            &["create", "v", "--stop-timeout", "0"],
            &["'--stop-timeout <SECS>'", "must be 1-3600 seconds; got 0"],
        ),
        case(
            &["create", "v", "--stop-timeout", "3601"],
            &["'--stop-timeout <SECS>'", "got 3601"],
        ),
        case(
            &["create", "v", "--stop-timeout", "-1"],
            &["'--stop-timeout <SECS>'", "got -1"],
        ),
        case(
            &["create", "v", "--stop-timeout", "x"],
            &["'--stop-timeout <SECS>'", "\"x\" is not a number"],
        ),
        case(
            &["create", "v", "--accel", "fast"],
            &["'fast' for '--accel <ACCEL>'", "auto, kvm, tcg"],
        ),
        case(
            &["create", "v", "--arch", "sparc"],
            &["'sparc' for '--arch <ARCH>'", "x86_64, aarch64"],
        ),
        case(
            &["create", "v", "--app", "wordpress"],
            &["'wordpress' for '--app <APP>'", "gunicorn-hello"],
        ),
        case(
            &["create", "v", "--user", "root"],
            &["'--user <NAME>'", "\"root\" cannot be the login user"],
        ),
        case(
            &["create", "v", "--user", "UPPER"],
            &["'--user <NAME>'", "\"UPPER\" is not a valid user name"],
        ),
        case(
            &["create", "v", "--user", &long_user],
            &["'--user <NAME>'", &format!("{long_user:?} is not")],
        ),
        case(
            &["create", "v", "--user", "a b"],
            &["'--user <NAME>'", "\"a b\" is not a valid user name"],
        ),
        case(
            &["create", "v", "--user", "alice"],
            &["user: image tiny has no login users"],
        ),
        case(&["create", "v", "--ssh-key", ""], &["'--ssh-key <FILE>'"]),
        (
            cloud("--ssh-key", "/nonexistent.pub"),
            vec!["ssh_key: cannot read public key /nonexistent.pub".into()],
        ),
        (
            cloud("--ssh-key", key),
            vec![format!(
                "ssh_key: {key} is a private key; pass the public key ({key}.pub)"
            )],
        ),
        (
            cloud("--ssh-key", kdir),
            vec![format!("ssh_key: cannot read public key {kdir}")],
        ),
        (
            cloud("--ssh-key", empty),
            vec![format!("ssh_key: {empty} is not an OpenSSH public key")],
        ),
        (
            cloud("--ssh-key", "/tmp/k\n.pub"),
            vec!["ssh_key: the path has a control character; got \"/tmp/k\\n.pub\"".into()],
        ),
        (
            cloud("--user", "Bob"),
            vec!["'--user <NAME>'".into(), "\"Bob\"".into()],
        ),
        (
            cloud("--cloud-init", "/nonexistent.yaml"),
            vec!["--cloud-init: cannot read /nonexistent.yaml: no such file".into()],
        ),
        (
            cloud("--cloud-init", kdir),
            vec![format!("--cloud-init: {kdir} is a directory, not a file")],
        ),
        (
            cloud("--cloud-init", &pwauth),
            vec![
                "cloud_init.ssh_pwauth: would let sshd take passwords; vmctl guests take keys only"
                    .into(),
            ],
        ),
        (
            cloud("--cloud-init", &script),
            vec!["cloud_init: starts with \"#!/bin/sh\": only #cloud-config YAML is merged".into()],
        ),
        case(
            &["create", "v", "--cloud-init", &good],
            &["cloud_init: image tiny does not run cloud-init"],
        ),
        case(
            &["create", "v", "--image", "../x"],
            &["image: \"../x\" is not an image name"],
        ),
        case(
            &["create", "v", "--image", "/abs"],
            &["image: \"/abs\" is not an image name"],
        ),
        case(
            &["create", "v", "--image", ".hidden"],
            &["image: \".hidden\" is not an image name"],
        ),
        case(
            &["create", "v", "--image", ""],
            &["image: \"\" is not an image name"],
        ),
        case(
            &["create", "v", "--image", "nope"],
            &["image", "\"nope\"", "not found"],
        ),
        case(
            &["create", "v", "--after", "v"],
            &["after[0]: \"v\" is this VM"],
        ),
        case(
            &["create", "v", "--after", "db", "--after", "db"],
            &["after[1]: \"db\" is listed twice"],
        ),
        case(
            &["create", "v", "--after", "a/b"],
            &["'a/b' for '--after <NAME>'"],
        ),
        case(
            &["start", "v", "--timeout", "x"],
            &["'x' for '--timeout <SECS>'"],
        ),
        case(
            &["stop", "v", "--timeout", "-1"],
            &["unexpected argument '-1'"],
        ),
        case(&["logs", "v", "--follow=yes"], &["--follow"]),
        case(
            &["inventory", "--format", "json"],
            &["'json' for '--format <FORMAT>'"],
        ),
        case(
            &["image", "build", "tiny", "--arch", "mips"],
            &["'mips' for '--arch <ARCH>'"],
        ),
        case(
            &["no-such-command"],
            &["unrecognized subcommand 'no-such-command'"],
        ),
    ];
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    let n = refuse_all(&t, &cases);
    assert_eq!(n, 63);
}

// ---- VM names ------------------------------------------------------------------------------

#[test]
fn vm_names() {
    let t = TestHome::new();
    let long = "n".repeat(65);
    // `name` refused at create because of its character `c`.
    let contains = |name: &str, c: char| {
        case(
            &["create", name],
            &[&format!("VM name {name:?} contains {c:?}")],
        )
    };
    let cases = vec![
        case(&["create", ""], &["VM name must not be empty"]),
        case(
            &["create", &long],
            &[&format!("VM name {long:?} is 65 characters; at most 64")],
        ),
        case(
            &["create", "a/b"],
            &["VM name \"a/b\" must not contain '/' or '..'"],
        ),
        case(&["create", "/"], &["VM name \"/\" must not contain '/'"]),
        case(&["create", ".."], &["VM name \"..\" must not contain"]),
        case(&["create", "a..b"], &["VM name \"a..b\" must not contain"]),
        case(
            &["create", "--", "-lead"],
            &["VM name \"-lead\" must start with a letter or digit"],
        ),
        case(
            &["create", ".lead"],
            &["VM name \".lead\" must start with a letter or digit"],
        ),
        case(
            &["create", "_lead"],
            &["VM name \"_lead\" must start with a letter or digit"],
        ),
        contains("has space", ' '),
        contains("héllo", 'é'),
        contains("日本", '日'),
        contains("a\u{a0}b", '\u{a0}'),
        contains("a\nb", '\n'),
        contains("a\tb", '\t'),
        contains("a\u{7f}b", '\u{7f}'),
        contains("a,b", ','),
        contains("a:b", ':'),
        contains("a$b", '$'),
        case(&["start", "a/b"], &["'a/b' for '<NAME>'"]),
        case(&["rm", ".."], &["'..' for '<NAME>'"]),
        case(&["port", "add", "a b", "9000:80"], &["'a b' for '<NAME>'"]),
        case(&["snapshot", "create", "a;b"], &["'a;b' for '<NAME>'"]),
        case(&["qmp", "a\nb"], &["VM name \"a\\nb\" contains '\\n'"]),
    ];
    let mut n = refuse_all(&t, &cases);
    // A NUL cannot be on argv (exec refuses it), but it can reach a name through a definition:
    // TOML writes it as \u0000.
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "after = [\"a\\u0000b\"]\n",
            "after[0]: VM name \"a\\0b\" contains '\\0'",
        ),
        ("after = [\"\"]\n", "after[0]: VM name must not be empty"),
        (
            "after = [\"x y\"]\n",
            "after[0]: VM name \"x y\" contains ' '",
        ),
    ] {
        let f = dir.path().join("v.toml");
        std::fs::write(&f, text).unwrap();
        t.refused(&["create", "v", "--from", f.to_str().unwrap()], &[needle]);
        n += 1;
    }
    assert!(
        std::process::Command::new(vmctl_bin())
            .arg("a\0b")
            .output()
            .is_err()
    );
    assert_eq!(n, 27);
}

// ---- Port specs ----------------------------------------------------------------------------

#[test]
fn port_specs() {
    let t = TestHome::new();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    t.ok(&[
        "create",
        "o",
        "--mem",
        "128M",
        "--disk",
        "1G",
        "--port",
        &format!("0.0.0.0:{p1}:80"),
    ]);
    t.ok(&[
        "create",
        "v",
        "--mem",
        "128M",
        "--disk",
        "1G",
        "--port",
        &format!("{p2}:80"),
    ]);
    let spec = |s: &str| format!("'{s}' for '--port <SPEC>'");
    let bad = |s: &str, needle: &str| {
        let (s, needle) = (s.to_string(), needle.to_string());
        (
            vec!["create".into(), "w".into(), "--port".into(), s.clone()],
            vec![spec(&s), needle],
        )
    };
    let not_here = "1.2.3.4 is not an address of this host; forward from 127.0.0.1 (the default), 0.0.0.0 or one of its addresses";
    let cases = vec![
        bad("0:80", "host port must be 1-65535; got 0 in \"0:80\""),
        bad("65536:80", "host port must be 1-65535; got 65536"),
        bad("70000:80", "got 70000"),
        bad("80:0", "guest port must be 1-65535; got 0"),
        bad("80:65536", "guest port must be 1-65535; got 65536"),
        bad(
            "99999999999999999999:80",
            "host port \"99999999999999999999\" in",
        ),
        bad(
            "80",
            "\"80\" is not a port forward; expected [ADDR:]HOST:GUEST[/tcp|/udp]",
        ),
        bad(":80", "host port \"\" in \":80\" is not a number"),
        bad("8080:", "guest port \"\" in \"8080:\" is not a number"),
        bad("", "\"\" is not a port forward"),
        bad("1:2:3:4", "\"1:2:3:4\" is not a port forward"),
        bad("1.2.3.4:1:2:3:4", "is not a port forward"),
        bad("-1:80", "host port \"-1\" in \"-1:80\" is not a number"),
        bad(
            "8080:80/sctp",
            "unknown protocol \"sctp\" in \"8080:80/sctp\"; use /tcp or /udp",
        ),
        bad("8080:80/", "unknown protocol \"\""),
        bad("8080:80/TCP", "unknown protocol \"TCP\""),
        bad(
            "999.1.1.1:8080:80",
            "\"999.1.1.1\" in \"999.1.1.1:8080:80\" is not an IPv4 address",
        ),
        bad("localhost:8080:80", "\"localhost\" in"),
        bad("[::1]:8080:80", "is not a port forward"),
        case(
            &["create", "w", "--port", "1.2.3.4:8080:80"],
            &["ports[0]", not_here],
        ),
        case(
            &[
                "create",
                "w",
                "--port",
                &format!("{p3}:80"),
                "--port",
                &format!("{p3}:81"),
            ],
            &[&format!(
                "ports[1]: host port {p3} is already forwarded by {p3}:80"
            )],
        ),
        case(
            &[
                "create",
                "w",
                "--port",
                &format!("0.0.0.0:{p3}:80"),
                "--port",
                &format!("{p3}:81"),
            ],
            &[&format!(
                "ports[1]: host port {p3} is already forwarded by 0.0.0.0:{p3}:80"
            )],
        ),
        case(
            &["create", "w", "--port", &format!("{p1}:81")],
            &[&format!(
                "ports[0]: host port {p1} is already forwarded by VM o (0.0.0.0:{p1}:80)"
            )],
        ),
        case(
            &["create", "w", "--port", &format!("0.0.0.0:{p2}:81")],
            &[&format!(
                "ports[0]: host port {p2} is already forwarded by VM v ({p2}:80)"
            )],
        ),
        case(
            &["port", "add", "v", &format!("{p1}:90")],
            &[&format!(
                "host port {p1} is already forwarded by VM o (0.0.0.0:{p1}:80)"
            )],
        ),
        case(
            &["port", "add", "v", &format!("127.0.0.5:{p1}:90")],
            &[&format!("host port {p1} is already forwarded by VM o")],
        ),
        case(
            &["port", "add", "v", &format!("{p2}:81")],
            &[&format!("VM v already forwards host port {p2} ({p2}:80)")],
        ),
        case(
            &["port", "add", "v", &format!("0.0.0.0:{p2}:81")],
            &[&format!("VM v already forwards host port {p2} ({p2}:80)")],
        ),
        case(
            &["port", "add", "v", "1.2.3.4:9000:80"],
            &["1.2.3.4:9000:80: ", not_here],
        ),
        case(
            &["port", "add", "v", "0:80"],
            &["'0:80' for '<SPEC>'", "got 0"],
        ),
        case(
            &["port", "add", "v", "80"],
            &["'80' for '<SPEC>'", "is not a port forward"],
        ),
        case(
            &["port", "add", "v", "8080:80/icmp"],
            &["unknown protocol \"icmp\""],
        ),
        case(
            &["port", "rm", "v", "8080:80/sctp"],
            &["unknown protocol \"sctp\""],
        ),
    ];
    let mut n = refuse_all(&t, &cases);
    // Forwards in a definition file are named by their place in `ports`.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.toml");
    std::fs::write(
        &f,
        "ports = [\"8080:80\", \"x\", \"8080:81/udp\", \"0.0.0.0:8080:82\"]\n",
    )
    .unwrap();
    t.refused(
        &["create", "w", "--from", f.to_str().unwrap()],
        &[
            "ports[1]: \"x\" is not a port forward",
            "ports[3]: host port 8080 is already forwarded by 8080:80",
        ],
    );
    n += 1;
    // An unknown forward is not found (exit 3), with the VM's forwards.
    fails_unchanged(
        &t,
        &["port", "rm", "v", "9999:80"],
        3,
        &[
            "port forward \"9999:80\" not found on VM v",
            &format!("it forwards {p2}:80"),
        ],
    );
    fails_unchanged(
        &t,
        &["port", "add", "ghost", "9000:80"],
        3,
        &["VM \"ghost\" not found"],
    );
    n += 2;
    assert_eq!(n, 36);
}

// ---- TOML definitions (--from) -------------------------------------------------------------

/// `create v --from FILE` with FILE holding `text`, refused with each needle (and the file's
/// name).
fn refused_toml(t: &TestHome, dir: &Path, text: impl AsRef<[u8]>, needles: &[&str]) {
    let f = dir.join("def.toml");
    std::fs::write(&f, text).unwrap();
    let f = f.to_str().unwrap();
    let mut all = needles.to_vec();
    all.push(f);
    t.refused(&["create", "v", "--from", f], &all);
}

#[test]
fn toml_wrong_types_for_every_field() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "cpus = \"two\"",
            "cpus: must be 1-255; got the string \"two\" (line 1)",
        ),
        (
            "cpus = -1",
            "cpus: must be 1-255; got the integer -1 (line 1)",
        ),
        ("cpus = 1.5", "cpus: must be 1-255; got the float 1.5"),
        (
            "cpus = 99999999999999999999",
            "cpus: must be 1-255; got the integer 99999999999999999999",
        ),
        (
            "memory = 512",
            "memory: must be a string such as \"512M\"; got the integer 512",
        ),
        (
            "disk = true",
            "disk: must be a string such as \"10G\"; got true",
        ),
        (
            "image = [\"tiny\"]",
            "image: must be a string such as \"tiny\"; got an array",
        ),
        (
            "arch = 64",
            "arch: must be a string such as \"x86_64\"; got the integer 64",
        ),
        (
            "accel = {}",
            "accel: must be a string such as \"auto\"; got a table",
        ),
        (
            "ports = \"8080:80\"",
            "ports: must be an array of strings such as [\"8080:80\"]; got the string \"8080:80\"",
        ),
        (
            "ports = [8080]",
            "ports[0]: must be a string such as \"8080:80\"; got the integer 8080",
        ),
        (
            "ports = [[\"8080:80\"]]",
            "ports[0]: must be a string such as \"8080:80\"; got an array",
        ),
        (
            "stop_timeout = \"60s\"",
            "stop_timeout: must be 1-3600 seconds; got the string \"60s\"",
        ),
        (
            "user = 1000",
            "user: must be a string such as \"alice\"; got the integer 1000",
        ),
        ("ssh_key = false", "ssh_key: must be a string such as"),
        (
            "app = 1",
            "app: must be a built-in app such as \"gunicorn-hello\" or an [app] table with your app's dir; got the integer 1",
        ),
        (
            "autostart = \"yes\"",
            "autostart: must be true or false; got the string \"yes\"",
        ),
        (
            "autostart = 1979-05-27",
            "autostart: must be true or false; got the date-time 1979-05-27",
        ),
        (
            "after = \"db\"",
            "after: must be an array of strings such as [\"db\"]; got the string \"db\"",
        ),
        (
            "after = [1]",
            "after[0]: must be a string such as \"db\"; got the integer 1",
        ),
        (
            "health = \"8080/\"",
            "health: must be a table ([health] with http or tcp); got the string \"8080/\"",
        ),
        (
            "[health]\nhttp = 8080",
            "health.http: must be a string such as \"8080/healthz\"; got the integer 8080 (line 2)",
        ),
        (
            "[health]\ntcp = \"22\"",
            "health.tcp: must be a port 1-65535; got the string \"22\" (line 2)",
        ),
        (
            "[health]\ninterval = 10",
            "health.interval: must be a string such as \"10s\"; got the integer 10",
        ),
        (
            "[health]\nretries = -3",
            "health.retries: must be 1-100; got the integer -3",
        ),
        (
            "[health]\nstart_period = 300",
            "health.start_period: must be a string such as \"5m\"; got the integer 300",
        ),
        (
            "provision = \"apt-get install -y jq\"",
            "provision: must be an array of tables such as [{ mode = \"system\", script = \"...\" }]; got the string",
        ),
        (
            "provision = [\"apt-get install -y jq\"]",
            "provision[0]: must be a table { mode, script }; got the string \"apt-get install -y jq\" (line 1)",
        ),
        (
            "provision = [{ mode = \"user\", script = [\"echo\"] }]",
            "provision[0].script: must be a string such as \"apt-get install -y jq\"; got an array",
        ),
    ];
    for (text, needle) in cases {
        refused_toml(&t, dir.path(), format!("{text}\n"), &[needle]);
    }
    // Every wrong type at once, in the file's order.
    refused_toml(
        &t,
        dir.path(),
        "memory = 1\ncpus = \"x\"\n",
        &[
            "memory: must be a string such as \"512M\"; got the integer 1 (line 1)\n  cpus: must be 1-255; got the string \"x\" (line 2)",
        ],
    );
    assert_eq!(cases.len() + 1, 30);
}

#[test]
fn toml_keys_syntax_and_bytes() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut n = 0;
    let text_cases: &[(&str, &[&str])] = &[
        (
            "cpus = 1\nmemroy = \"1G\"\n",
            &["memroy: unknown key (line 2); a definition's keys are cpus, memory"],
        ),
        (
            "[health]\nhttp = \"8080/\"\nretry = 3\n",
            &["health.retry: unknown key (line 3); [health]'s keys are http, tcp"],
        ),
        (
            "[network]\nmode = \"bridge\"\n",
            &["network: unknown key (line 1)"],
        ),
        ("\"a b\" = 1\n", &["\"a b\": unknown key (line 1)"]),
        ("cpus = = 2\n", &["line 1: "]),
        ("cpus =\n", &["line 1: "]),
        (
            "cpus = 1\nmemory = \"512M\n",
            &["line 2: invalid basic string"],
        ),
        ("cpus = 1\ncpus = 2\n", &["line 2: duplicate key"]),
        ("cpus = 1\n[health\ntcp = 22\n", &["line 2: "]),
        ("ports = [\"8080:80\",,]\n", &["line 1: "]),
        ("\n\n[health]\n[health]\n", &["line 4: "]),
        ("cpus = 1\r\nmemory = \"1G\"\r", &["line 2: "]),
    ];
    for (text, needles) in text_cases {
        refused_toml(&t, d, text, needles);
        n += 1;
    }
    // 10 MB: refused before it is parsed.
    let huge = "# a comment line of a definition that goes on and on\n".repeat(200_000);
    assert!(huge.len() > 10_000_000);
    let f = d.join("huge.toml");
    std::fs::write(&f, &huge).unwrap();
    let fs = f.to_str().unwrap();
    t.refused(
        &["create", "v", "--from", fs],
        &[&format!(
            "--from: {fs} is larger than 1 MiB; a VM definition is a few lines of TOML"
        )],
    );
    // Arrays 10,000 deep: the parser's recursion limit, not a stack overflow.
    let deep = format!("ports = {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    refused_toml(&t, d, deep, &["invalid VM definition:\n  line 1: "]);
    let deep_tables = format!("x = {}{}\n", "{a = ".repeat(5_000), "}".repeat(5_000));
    refused_toml(&t, d, deep_tables, &["invalid VM definition:\n  line 1: "]);
    // Bytes that are not text.
    let f = d.join("def.toml");
    let fs = f.to_str().unwrap().to_string();
    for (bytes, needle) in [
        (
            &b"cpus = 1\n\xff\xfe\n"[..],
            format!("--from: {fs} is not UTF-8 text (line 2)"),
        ),
        (
            &b"cpus = 1\nuser = \"j\xf6rg\"\n"[..],
            format!("--from: {fs} is not UTF-8 text (line 2)"),
        ),
        (
            &b"cpus = 1\n\0\0\0\n"[..],
            "line 2: has the control character U+0000; a VM definition is plain text".into(),
        ),
        (
            &b"cpus = 1 \x1b[31m\n"[..],
            "line 1: has the control character U+001B".into(),
        ),
        (
            &b"# \x07 bell\n"[..],
            "line 1: has the control character U+0007".into(),
        ),
    ] {
        std::fs::write(&f, bytes).unwrap();
        t.refused(&["create", "v", "--from", &fs], &[&needle]);
    }
    n += 3 + 5;
    // An empty file (or comments only) is a valid definition: every default.
    for (name, text) in [("e1", ""), ("e2", "# nothing here\n\n")] {
        std::fs::write(&f, text).unwrap();
        let out = t.ok(&[
            "create", name, "--from", &fs, "--mem", "128M", "--disk", "1G",
        ]);
        assert!(
            out.contains(&format!("Created VM {name}: 1 CPU, 128M RAM")),
            "{out}"
        );
        n += 1;
    }
    assert_eq!(n, 22);
}

#[test]
fn toml_values_and_health_contradictions() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = "ports = [\"18090:8080\", \"18022:22\", \"15353:53/udp\"]\n";
    // (with those forwards, the definition, what the message holds)
    let cases: &[(bool, &str, &[&str])] = &[
        (
            false,
            "cpus = 0\nmemory = \"lots\"\naccel = \"fast\"\n",
            &[
                "cpus: must be 1-255; got 0",
                "memory: \"lots\" is not a size",
                "accel: unknown accelerator \"fast\"; use auto, kvm or tcg",
            ],
        ),
        (
            false,
            "arch = \"sparc\"\napp = \"wordpress\"\n",
            &[
                "arch: unknown architecture \"sparc\"",
                "app: unknown app \"wordpress\"",
            ],
        ),
        (
            false,
            "user = \"root\"\nssh_key = \"\"\n",
            &[
                "user: \"root\" cannot be the login user",
                "ssh_key: must be a path",
            ],
        ),
        (
            false,
            "memory = \"1536K\"\n",
            &["memory: must be at least 16M; got 1536K"],
        ),
        (
            false,
            "memory = \"16777217\"\n",
            &["memory: must be a whole number of MiB; got 16777217"],
        ),
        (
            false,
            "stop_timeout = 0\n",
            &["stop_timeout: must be 1-3600 seconds; got 0"],
        ),
        (
            false,
            "[health]\n",
            &["health: set exactly one of http = \"PORT/PATH\" or tcp = PORT"],
        ),
        (
            true,
            "[health]\nhttp = \"8080/\"\ntcp = 22\n",
            &["health: set exactly one"],
        ),
        (
            false,
            "[health]\ntcp = 22\n",
            &[
                "health.tcp: guest port 22 is not forwarded (this VM forwards no TCP ports); add it to ports",
            ],
        ),
        (
            true,
            "[health]\ntcp = 53\n",
            &["health.tcp: guest port 53 is not forwarded (forwarded TCP guest ports: 8080, 22)"],
        ),
        (
            true,
            "[health]\nhttp = \"/healthz\"\n",
            &["health.http: \"/healthz\" is not PORT/PATH"],
        ),
        (
            true,
            "[health]\nhttp = \"70000/\"\n",
            &[
                "health.http: \"70000/\" is not PORT/PATH (e.g. \"8080/healthz\"): port must be 1-65535; got 70000",
            ],
        ),
        (
            true,
            "[health]\nhttp = \"8080/a b\"\n",
            &["health.http:", "the path contains ' '"],
        ),
        (
            true,
            "[health]\ntcp = 70000\n",
            &["health.tcp: must be a port 1-65535; got 70000"],
        ),
        (
            true,
            "[health]\ntcp = 0\n",
            &["health.tcp: must be a port 1-65535; got 0"],
        ),
        (
            true,
            "[health]\ntcp = 22\ninterval = \"500ms\"\nretries = 0\n",
            &[
                "health.interval: must be 1s-1h; got \"500ms\"",
                "health.retries: must be 1-100; got 0",
            ],
        ),
        (
            true,
            "[health]\ntcp = 22\nretries = 101\nstart_period = \"2h\"\n",
            &[
                "health.retries: must be 1-100; got 101",
                "health.start_period: must be 0s-1h; got \"2h\"",
            ],
        ),
        (
            true,
            "[health]\ntcp = 22\ninterval = \"soon\"\n",
            &["health.interval: \"soon\" is not a duration"],
        ),
        (
            false,
            "provision = [{ mode = \"root\", script = \"id\" }, { mode = \"user\" }]\n",
            &[
                "provision[0].mode: must be \"system\" (as root) or \"user\" (as the login user); got \"root\"",
                "provision[1]: give exactly one of script = \"...\" or file = \"setup.sh\"",
            ],
        ),
        (
            false,
            "provision = [{ mode = \"user\", script = \"id\", file = \"setup.sh\" }, { mode = \"user\", script = \" \" }]\n",
            &[
                "provision[0]: give exactly one of",
                "provision[1].script: is empty",
            ],
        ),
        (
            false,
            "provision = [{ mode = \"system\", file = \"no-such-setup.sh\" }]\n",
            &["provision[0].file: cannot read", "no-such-setup.sh"],
        ),
        (
            false,
            "provision = [{ mode = \"system\", file = \".\" }]\n",
            &["provision[0].file:", "is a directory"],
        ),
        (
            false,
            "provision = [{ mode = \"system\", script = \"id\" }]\n",
            &["provision: image tiny has no provisioning to run scripts with"],
        ),
    ];
    for (with_ports, text, needles) in cases {
        let text = if *with_ports {
            format!("{ports}{text}")
        } else {
            text.to_string()
        };
        refused_toml(&t, d, text, needles);
    }
    assert_eq!(cases.len(), 23);
}

#[test]
fn toml_files_that_are_not_definitions() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let link = |name: &str, to: &str| {
        std::os::unix::fs::symlink(to, d.join(name)).unwrap();
        p(name)
    };
    let dangling = link("dangling.toml", "/nonexistent/x.toml");
    let shadow = link("shadow.toml", "/etc/shadow");
    let dev = link("zero.toml", "/dev/zero");
    let dirlink = link("dir.toml", "/etc");
    let nl = d.join("a\nb.toml");
    std::fs::write(&nl, "cpus = 1\n").unwrap();
    let nl = nl.to_str().unwrap().to_string();
    let cases = vec![
        case(
            &["create", "v", "--from", "/nonexistent.toml"],
            &["--from: cannot read /nonexistent.toml: no such file"],
        ),
        case(
            &["create", "v", "--from", &dangling],
            &[&format!("--from: cannot read {dangling}: no such file")],
        ),
        case(
            &["create", "v", "--from", "/etc"],
            &["--from: /etc is a directory, not a file"],
        ),
        case(
            &["create", "v", "--from", &dirlink],
            &[&format!("--from: {dirlink} is a directory, not a file")],
        ),
        case(
            &["create", "v", "--from", "/dev/zero"],
            &["--from: /dev/zero is a device, not a file"],
        ),
        case(
            &["create", "v", "--from", &dev],
            &[&format!("--from: {dev} is a device, not a file")],
        ),
        case(
            &["create", "v", "--from", &nl],
            &[&format!(
                "--from: the path has a control character; got {nl:?}"
            )],
        ),
        case(
            &["create", "v", "--from", &nl, "--update"],
            &[&format!("got {nl:?}")],
        ),
        case(
            &["create", "v", "--from", &shadow],
            &[&format!("{shadow}: invalid VM definition:\n  line 1: ")],
        ),
        case(
            &["create", "v", "--from", "/etc/passwd"],
            &["/etc/passwd: invalid VM definition:\n  line 1: "],
        ),
    ];
    let n = refuse_all(&t, &cases);
    // Neither shows a line of what it read.
    for f in ["/etc/passwd", shadow.as_str()] {
        let err = t.fails(&["create", "v", "--from", f], 2);
        assert!(
            !err.contains("root:") && !err.contains("/bin/") && !err.contains("$"),
            "{err}"
        );
    }
    // A socket.
    let sock = d.join("s.toml");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let sock = sock.to_str().unwrap();
    t.refused(
        &["create", "v", "--from", sock],
        &[&format!("--from: {sock} is a socket, not a file")],
    );
    // A pipe is read (process substitution gives one).
    let out = t
        .cmd(&[
            "create",
            "v",
            "--from",
            "/dev/stdin",
            "--mem",
            "128M",
            "--disk",
            "1G",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"cpus = 2\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 CPU"));
    // 10 in the table, the two that show nothing of what they read, the socket, the pipe.
    assert_eq!(n + 2 + 2, 14);
}

// ---- Snapshot tags (stopped VM) ------------------------------------------------------------

#[test]
fn snapshot_tags_on_a_stopped_vm() {
    let t = TestHome::new();
    t.ok(&["create", "s", "--mem", "128M", "--disk", "1G"]);
    let long = "t".repeat(1000);
    let chars = "may hold only letters, digits and . _ : - and must start with a letter or digit";
    let create = |tag: &str, needle: &str| {
        case(
            &["snapshot", "create", "s", "--", tag],
            &[&format!("snapshot tag {needle}; got {tag:?}")],
        )
    };
    let cases = vec![
        create("a b", chars),
        create("..", chars),
        create("a/b", chars),
        create("../../etc", chars),
        create("-lead", chars),
        create(".hidden", chars),
        create("a\nb", chars),
        create("a;b", chars),
        create("héllo", chars),
        create("$(id)", chars),
        create(
            "12345",
            "must not be all digits (QEMU reads that as a snapshot id)",
        ),
        create(
            "0",
            "must not be all digits (QEMU reads that as a snapshot id)",
        ),
        create(&long, "must be 1-64 characters"),
        create(&"t".repeat(65), "must be 1-64 characters"),
        create("", "must be 1-64 characters"),
        case(
            &["snapshot", "create", "s", "-lead"],
            &["unexpected argument '-l'"],
        ),
        case(&["snapshot", "revert", "s"], &["<TAG>"]),
        case(
            &["snapshot", "create", "s", "a", "b"],
            &["unexpected argument 'b'"],
        ),
    ];
    let mut n = refuse_all(&t, &cases);
    // A VM without snapshots: any tag is unknown (exit 3), and no lock file is left behind.
    for verb in ["revert", "delete"] {
        fails_unchanged(
            &t,
            &["snapshot", verb, "s", "nosuch"],
            3,
            &["snapshot \"nosuch\" not found on VM s: it has no snapshots"],
        );
    }
    // A tag that exists is refused (exit 2); unknown ones are not found (exit 3) with the
    // tags there are.
    t.ok(&["snapshot", "create", "s", "t1"]);
    t.refused(
        &["snapshot", "create", "s", "t1"],
        &["VM s already has a snapshot tagged \"t1\""],
    );
    for (verb, tag) in [
        ("revert", "a b"),
        ("revert", "nosuch"),
        ("delete", ".."),
        ("delete", "12345"),
    ] {
        fails_unchanged(
            &t,
            &["snapshot", verb, "s", tag],
            3,
            &[&format!("snapshot {tag:?} not found on VM s"), "t1"],
        );
    }
    fails_unchanged(
        &t,
        &["snapshot", "create", "ghost", "t"],
        3,
        &["VM \"ghost\" not found"],
    );
    n += 8;
    assert_eq!(n, 26);
}

// ---- The QMP shell's script input (running tiny VM) ----------------------------------------

/// `vmctl qmp v` with `stdin`; exit code and stderr.
fn qmp_stdin(t: &TestHome, stdin: &[u8]) -> (Option<i32>, String, String) {
    let mut c = t
        .cmd(&["qmp", "v"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&data);
    });
    let out = c.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// QEMU's pid while VM v runs.
fn qemu_pid(t: &TestHome) -> i64 {
    let s = t.status("v");
    assert_eq!(s["state"], "running", "{s}");
    s["pid"].as_i64().unwrap()
}

#[test]
fn qmp_shell_script_input_on_a_running_vm() {
    let t = TestHome::new();
    create_tiny(&t, "v", free_port());
    t.ok(&["start", "v"]);
    let pid = qemu_pid(&t);
    let quit = "quit kills VM v's QEMU at once; use `vmctl stop v` (or `vmctl kill v`)";
    let big = format!("{{\"execute\": \"{}\"}}", "x".repeat(100_000));
    let exec_cases: &[(&str, i32, &[&str])] = &[
        (
            r#"{"execute": "query-status""#,
            2,
            &[
                "Not valid JSON: EOF while parsing",
                "{\"execute\": \"query-status\"",
            ],
        ),
        (
            r#"{"execute": "query-status"}}"#,
            2,
            &["Not valid JSON: trailing characters"],
        ),
        (
            "query-status x=\"unbalanced",
            2,
            &["Unterminated quote in: x=\"unbalanced"],
        ),
        (
            "query-status x='unbalanced",
            2,
            &["Unterminated quote in: x='unbalanced"],
        ),
        (
            "query-status o={\"a\": [1",
            2,
            &["Unclosed bracket in: o={\"a\": [1"],
        ),
        (
            "query-status novalue",
            2,
            &["Arguments are key=value; got \"novalue\""],
        ),
        (
            r#"{"execute": 5}"#,
            2,
            &["JSON input needs \"execute\": {\"execute\": 5}"],
        ),
        (r#"{"arguments": {}}"#, 2, &["JSON input needs \"execute\""]),
        ("hmp", 2, &["Usage: hmp LINE"]),
        (
            "snapshot bogus",
            2,
            &["Usage: snapshot create [TAG] | list"],
        ),
        (
            "snapshot create a/b",
            2,
            &["snapshot tag may hold only", "got \"a/b\""],
        ),
        (
            "no-such-command",
            5,
            &[
                "QMP: CommandNotFound: The command no-such-command has not been found (in: no-such-command)",
            ],
        ),
        ("}{", 5, &["CommandNotFound", "(in: }{)"]),
        (
            r#"{"execute": "query-status", "arguments": 3}"#,
            5,
            &["QMP: GenericError", "'arguments' must be an object"],
        ),
        (
            r#"{"execute": "quit"}"#,
            2,
            &["{\"execute\": \"quit\"}: ", quit],
        ),
        ("quit now=true", 2, &["quit now=true: ", quit]),
        ("hmp quit", 2, &["hmp quit: ", quit]),
        ("hmp q", 2, &["hmp q: ", quit]),
        ("human-monitor-command command-line=quit", 2, &[quit]),
        (
            "query-status\u{1}\u{1b}[31m",
            2,
            &[
                "--exec: has the control character U+0001",
                "got \"query-status\\u{1}\\u{1b}[31m\"",
            ],
        ),
        (
            "hmp info status\nquit",
            2,
            &[
                "--exec: has the control character U+000A",
                "got \"hmp info status\\nquit\"",
            ],
        ),
        (&big, 5, &["CommandNotFound", "… (100015 bytes))"]),
    ];
    for (line, code, needles) in exec_cases {
        let shown: String = line.chars().take(60).collect();
        let out = t.run(&["qmp", "v", "--exec", line]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "--exec {shown:?}: {err}");
        for n in *needles {
            assert!(
                err.contains(n),
                "--exec {shown:?}: {n:?} missing from:\n{err}"
            );
        }
        assert!(
            err.len() < 1000,
            "--exec {shown:?}: {} bytes of stderr",
            err.len()
        );
        assert_eq!(qemu_pid(&t), pid, "--exec {shown:?} ended the VM");
    }
    let mut n = exec_cases.len();
    // Invalid UTF-8 cannot be a String argument: clap refuses it.
    {
        use std::os::unix::ffi::OsStrExt;
        let out = t
            .cmd(&["qmp", "v", "--exec"])
            .arg(std::ffi::OsStr::from_bytes(b"query-\xffstatus"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid UTF-8"));
        n += 1;
    }
    // stdin: a line of 1 MB, bytes that are not text, unbalanced input, quit.
    let mb = format!("{}\n", "x".repeat(1 << 20));
    // (stdin, exit code, what stderr holds); a line that is not text stops the run before any
    // command is sent, so nothing is on stdout.
    let stdin_cases: Vec<(Vec<u8>, i32, Vec<&str>)> = vec![
        (
            mb.into_bytes(),
            5,
            vec!["QMP: CommandNotFound", "… (1048576 bytes))"],
        ),
        (
            b"query-status\n\xff\xfe\xfd\n".to_vec(),
            2,
            vec!["stdin line 2: is not UTF-8 text"],
        ),
        (
            b"query-status\nquery-\0status\n".to_vec(),
            2,
            vec!["stdin line 2: has the control character U+0000"],
        ),
        (
            b"\x1b]0;pwned\x07\n".to_vec(),
            2,
            vec!["stdin line 1: has the control character U+001B"],
        ),
        (
            b"query-status\n{\"execute\": \n".to_vec(),
            2,
            vec!["Not valid JSON"],
        ),
        (
            b"query-status x='a\n".to_vec(),
            2,
            vec!["Unterminated quote"],
        ),
        (b"{\"execute\": \"quit\"}\n".to_vec(), 2, vec![quit]),
        (b"hmp quit\n".to_vec(), 2, vec![quit]),
        (
            b"query-status\nno-such-command\nquery-status\n".to_vec(),
            5,
            vec!["CommandNotFound"],
        ),
    ];
    for (input, code, needles) in &stdin_cases {
        let (got, stdout, err) = qmp_stdin(&t, input);
        let shown = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
        assert_eq!(got, Some(*code), "stdin {shown:?}: {err}");
        for n in needles {
            assert!(
                err.contains(n),
                "stdin {shown:?}: {n:?} missing from:\n{err}"
            );
        }
        assert!(
            err.len() < 1000,
            "stdin {shown:?}: {} bytes of stderr",
            err.len()
        );
        if err.contains("stdin line") {
            assert_eq!(stdout, "", "stdin {shown:?}");
        }
        assert_eq!(qemu_pid(&t), pid, "stdin {shown:?} ended the VM");
    }
    n += stdin_cases.len();
    // Not running, not there.
    t.ok(&["kill", "v"]);
    fails_unchanged(
        &t,
        &["qmp", "v", "--exec", "query-status"],
        7,
        &["VM v is not running"],
    );
    fails_unchanged(
        &t,
        &["qmp", "ghost", "--exec", "query-status"],
        3,
        &["VM \"ghost\" not found"],
    );
    n += 2;
    assert_eq!(n, 34);
}
