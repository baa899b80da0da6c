//! Bad input: each case exits 2 with a message naming the field and the value, and leaves the
//! home exactly as it was.

use crate::harness::*;

#[test]
fn bad_names() {
    let t = TestHome::new();
    let long = "x".repeat(65);
    t.refused(&["create", "a/b"], &["\"a/b\"", "'/'"]);
    t.refused(&["create", ".."], &["\"..\""]);
    t.refused(&["create", "has space"], &["\"has space\"", "' '"]);
    t.refused(&["create", &long], &["65 characters", "at most 64"]);
}

#[test]
fn bad_sizes_and_counts() {
    let t = TestHome::new();
    t.refused(&["create", "v", "--cpus", "0"], &["--cpus", "got 0"]);
    t.refused(
        &["create", "v", "--mem", "2X"],
        &["--mem", "\"2X\"", "unknown unit"],
    );
    t.refused(&["create", "v", "--mem", "0"], &["--mem", "got 0"]);
    t.refused(
        &["create", "v", "--mem", "100T"],
        &["memory", "100T", "more than this host has"],
    );
    t.refused(
        &["create", "v", "--disk", "100M"],
        &["disk", "100M", "smaller than image tiny (256M)"],
    );
}

#[test]
fn bad_ports() {
    let t = TestHome::new();
    t.refused(&["create", "v", "--port", "0:80"], &["--port", "got 0"]);
    t.refused(
        &["create", "v", "--port", "70000:80"],
        &["--port", "got 70000"],
    );
    t.refused(
        &["create", "v", "--port", "18080:80", "--port", "18080:81"],
        &[
            "ports[1]",
            "host port 18080 is already forwarded by 18080:80",
        ],
    );
}

#[test]
fn unknown_image_and_existing_name() {
    let t = TestHome::new();
    t.refused(
        &["create", "v", "--image", "nope"],
        &["image", "\"nope\"", "not found"],
    );
    t.ok(&["create", "v"]);
    t.refused(&["create", "v"], &["VM v already exists"]);
}

#[test]
fn bad_toml_files() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "cpus = = 2\n").unwrap();
    t.refused(
        &["create", "v", "--from", bad.to_str().unwrap()],
        &["bad.toml", "line 1"],
    );
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "cpus = 1\nmemroy = \"1G\"\n").unwrap();
    t.refused(
        &["create", "v", "--from", unknown.to_str().unwrap()],
        &["unknown.toml", "memroy", "line 2"],
    );
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(
        &invalid,
        "cpus = 0\nmemory = \"lots\"\nports = [\"1:2:3:4\"]\n",
    )
    .unwrap();
    t.refused(
        &["create", "v", "--from", invalid.to_str().unwrap()],
        &[
            "invalid.toml",
            "cpus: must be 1-255; got 0",
            "memory: \"lots\"",
            "ports[0]",
        ],
    );
}

#[test]
fn examples_create_and_flags_override_them() {
    let t = TestHome::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/tiny.toml");
    let port = free_port().to_string();
    t.ok(&[
        "create",
        "demo",
        "--from",
        example,
        "--mem",
        "128M",
        "--port",
        &format!("{port}:8080"),
    ]);
    let def = std::fs::read_to_string(t.home().join("vms/demo/vm.toml")).unwrap();
    assert!(def.contains("memory = \"128M\""), "{def}");
    assert!(def.contains(&format!("\"{port}:8080\"")), "{def}");
    assert!(def.contains("disk = \"1G\""), "{def}");
}

#[test]
fn unknown_vm_is_not_found() {
    let t = TestHome::new();
    for cmd in [
        &["start", "ghost"][..],
        &["stop", "ghost"],
        &["status", "ghost"],
        &["rm", "ghost"],
        &["logs", "ghost"],
    ] {
        let err = t.fails(cmd, 3);
        assert!(err.contains("\"ghost\" not found"), "{err}");
    }
}

/// The supervisor reports a missing image as "not found" (exit 3), like `show-cmd` does, and
/// `vmctl start` passes that code on with the image's name.
#[test]
fn start_of_a_vm_whose_image_was_removed_exits_3_naming_the_image() {
    let t = TestHome::new();
    t.ok(&["create", "v", "--mem", "128M", "--disk", "1G"]);
    // The test home links the shared build: remove the link, not the image.
    std::fs::remove_file(t.home().join("images/tiny/x86_64")).unwrap();
    let shown = t.fails(&["show-cmd", "v"], 3);
    let started = t.fails(&["start", "v"], 3);
    for err in [&shown, &started] {
        assert!(
            err.contains("image \"tiny\" not found") && err.contains("vmctl image build tiny"),
            "{err}"
        );
    }
    assert_eq!(t.status("v")["state"], "stopped");
}

const NOT_HERE: &str = "1.2.3.4 is not an address of this host; forward from 127.0.0.1 (the default), 0.0.0.0 or one of its addresses";

/// A forward from an address no interface of this host has failed only at start, as "already in
/// use"; `create`, `create --update` and `port add` now refuse it, naming the field and address.
#[test]
fn a_forward_from_an_address_this_host_lacks_is_refused_before_start() {
    let t = TestHome::new();
    t.refused(
        &["create", "v", "--port", "1.2.3.4:8080:80"],
        &["ports[0]", NOT_HERE],
    );
    t.ok(&["create", "v", "--mem", "128M", "--disk", "1G"]);
    t.refused(
        &["port", "add", "v", "1.2.3.4:9000:80"],
        &["1.2.3.4:9000:80: ", NOT_HERE],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.toml");
    std::fs::write(&file, "memory = \"128M\"\nports = [\"1.2.3.4:9001:80\"]\n").unwrap();
    t.refused(
        &["create", "w", "--from", file.to_str().unwrap(), "--update"],
        &["ports[0]", NOT_HERE],
    );
    // The loopback network and the wildcard are this host's.
    t.ok(&["port", "add", "v", "127.0.0.2:9002:80"]);
    t.ok(&["port", "add", "v", "0.0.0.0:9003:80"]);
}

/// `--from` a file that is not there, a directory, one that cannot be read or is not UTF-8:
/// exit 2 naming the file (it was exit 1, an I/O error).
#[test]
fn a_from_file_that_cannot_be_read_is_a_usage_error_naming_it() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    t.refused(
        &["create", "x", "--from", "/nonexistent.toml"],
        &["--from: cannot read /nonexistent.toml: no such file"],
    );
    let d = dir.path().to_str().unwrap();
    t.refused(
        &["create", "x", "--from", d],
        &[&format!("--from: {d} is a directory, not a file")],
    );
    std::fs::write(p("latin1.toml"), b"cpus = 1\nuser = \"j\xf6rg\"\n").unwrap();
    t.refused(
        &["create", "x", "--from", &p("latin1.toml")],
        &[&format!(
            "--from: {} is not UTF-8 text (line 2)",
            p("latin1.toml")
        )],
    );
    // Unreadable: root reads every file, so read it as nobody.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(p("secret.toml"), "cpus = 1\n").unwrap();
    std::fs::set_permissions(p("secret.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = t.snapshot();
    // (In a home nobody can own: vmctl refuses to act in another user's home.)
    let nobodys_home = dir.path().join("no-home-yet");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(vmctl_bin())
        .arg("--home")
        .arg(&nobodys_home)
        .args(["create", "x", "--from", &p("secret.toml")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--from: cannot read {}: permission denied",
            p("secret.toml")
        )),
        "{err}"
    );
    assert_eq!(t.snapshot(), before);
}

/// Errors about a `--from` file never show its content: not a line of a file it points to that
/// is no definition (/etc/shadow), nor the value of a key that is not a definition's.
#[test]
fn a_definition_file_never_leaks_what_it_points_to() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow.toml");
    std::os::unix::fs::symlink("/etc/shadow", &shadow).unwrap();
    let content = std::fs::read_to_string("/etc/shadow").unwrap();
    let before = t.snapshot();
    let err = t.fails(&["create", "v", "--from", shadow.to_str().unwrap()], 2);
    assert!(
        err.contains("shadow.toml: invalid VM definition") && err.contains("line 1"),
        "{err}"
    );
    for field in content
        .lines()
        .flat_map(|l| l.split(':'))
        .filter(|f| f.len() > 3)
    {
        assert!(!err.contains(field), "{field:?} of /etc/shadow in:\n{err}");
    }
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "api_token = \"tok-5ecret\"\n[db]\npassword = \"pw-5ecret\"\n",
    )
    .unwrap();
    let link = dir.path().join("web.toml");
    std::os::unix::fs::symlink(&secrets, &link).unwrap();
    let err = t.fails(&["create", "v", "--from", link.to_str().unwrap()], 2);
    assert!(err.contains("api_token: unknown key (line 1)"), "{err}");
    assert!(err.contains("db: unknown key (line 2)"), "{err}");
    assert!(!err.contains("5ecret"), "{err}");
    assert_eq!(t.snapshot(), before);
}

/// A newline in `--from`'s path went into vm.toml's header comment, and what followed it became
/// keys of the definition (`after = ["web"]`, then in the unit). Such a path is refused.
#[test]
fn a_from_path_with_a_control_character_is_refused() {
    let t = TestHome::new();
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("x\nafter = [\"web\"]\n#");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("v.toml");
    std::fs::write(&file, "memory = \"128M\"\ndisk = \"1G\"\n").unwrap();
    let f = file.to_str().unwrap();
    let shown = format!("{f:?}");
    for update in [true, false] {
        let mut args = vec!["create", "v", "--from", f];
        if update {
            args.push("--update");
        }
        t.refused(
            &args,
            &["--from: the path has a control character; got ", &shown],
        );
    }
}

/// `--after` a VM this home does not have is allowed (it may come later), with a note.
#[test]
fn after_a_vm_that_does_not_exist_is_noted() {
    let t = TestHome::new();
    let out = t.run(&[
        "create", "x", "--mem", "128M", "--disk", "1G", "--after", "nosuch",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("Note: after: VM nosuch does not exist in this home; the unit of VM x will fail to start until it does"),
        "{err}"
    );
    // No note for one that exists.
    let out = t.run(&[
        "create", "y", "--mem", "128M", "--disk", "1G", "--after", "x",
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Note"));
}

/// `port add` to a VM of a home that has no VM yet (no vms/, no lock file): not found (exit 3),
/// not a failure to open the home's lock, and the home stays as it was.
#[test]
fn port_add_in_a_brand_new_home_says_the_vm_does_not_exist() {
    let t = TestHome::bare();
    let fresh = t.home().join("fresh");
    for home in [t.home(), fresh.as_path()] {
        let before = t.snapshot();
        let mut c = t.cmd(&["port", "add", "nosuch", "9000:80"]);
        let out = c.arg("--home").arg(home).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("VM \"nosuch\" not found"), "{err}");
        assert!(!err.contains("lock"), "{err}");
        assert_eq!(t.snapshot(), before);
    }
    assert!(!fresh.exists());
}

/// `port add` and `port rm` refused (exit 2, exit 3) on a VM that never ran left the VM's lock
/// file behind: what they refuse is now checked before the locks are taken.
#[test]
fn a_refused_port_change_leaves_the_home_as_it_was() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "v", port);
    let before = t.snapshot();
    t.refused(
        &["port", "add", "v", &format!("{port}:81")],
        &[&format!("VM v already forwards host port {port}")],
    );
    let err = t.fails(&["port", "rm", "v", "9999:80"], 3);
    assert!(
        err.contains("port forward \"9999:80\" not found on VM v"),
        "{err}"
    );
    assert_eq!(t.snapshot(), before);
    assert!(!t.home().join("vms/v/lock").exists());
}

/// `snapshot revert` and `snapshot delete` of an unknown tag on a VM that never ran (exit 3)
/// left the VM's lock file behind.
#[test]
fn a_refused_snapshot_change_leaves_the_home_as_it_was() {
    let t = TestHome::new();
    t.ok(&["create", "v", "--mem", "128M", "--disk", "1G"]);
    let before = t.snapshot();
    for verb in ["revert", "delete"] {
        let err = t.fails(&["snapshot", verb, "v", "nosuch"], 3);
        assert!(
            err.contains("snapshot \"nosuch\" not found on VM v"),
            "{err}"
        );
        assert_eq!(t.snapshot(), before, "snapshot {verb}");
    }
    assert!(!t.home().join("vms/v/lock").exists());
}
