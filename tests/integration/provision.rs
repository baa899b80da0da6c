//! Provisioning without booting a Linux guest: bad SSH/app input, and a cloud image import whose
//! generated NoCloud seed passes `cloud-init schema`, with `ssh --print`, `ssh-config` and
//! `inventory` for it. (The booted Debian VPS is tested in `vps`.)

use std::process::Command;

use crate::harness::*;

/// Import the tiny image's blank disk as a "cloud image" named `cloudy`.
fn import_cloudy(t: &TestHome) {
    let disk = shared_images("x86_64").join("tiny/x86_64/disk.qcow2");
    t.ok(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--name",
        "cloudy",
        "--format",
        "qcow2",
    ]);
}

#[test]
fn bad_keys_apps_and_missing_images_change_nothing() {
    let t = TestHome::new();
    import_cloudy(&t);
    t.refused(
        &["create", "v", "--image", "debian-12"],
        &["image", "\"debian-12\"", "vmctl image build debian-12"],
    );
    t.refused(
        &[
            "create",
            "v",
            "--image",
            "cloudy",
            "--ssh-key",
            "/nonexistent/key.pub",
        ],
        &["ssh_key", "/nonexistent/key.pub", "No such file"],
    );
    let dir = tempfile::tempdir().unwrap();
    t.refused(
        &[
            "create",
            "v",
            "--image",
            "cloudy",
            "--ssh-key",
            dir.path().to_str().unwrap(),
        ],
        &["ssh_key", "cannot read public key"],
    );
    let private = dir.path().join("id_test");
    std::fs::write(
        &private,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    t.refused(
        &[
            "create",
            "v",
            "--image",
            "cloudy",
            "--ssh-key",
            private.to_str().unwrap(),
        ],
        &["ssh_key", "is a private key"],
    );
    t.refused(
        &["create", "v", "--image", "cloudy", "--app", "wordpress"],
        &["--app", "wordpress"],
    );
    t.refused(
        &["create", "v", "--app", "gunicorn-hello"],
        &["app", "image tiny has no login users or apps"],
    );
    t.refused(
        &["create", "v", "--image", "cloudy", "--user", "root"],
        &["--user", "root login"],
    );
}

#[test]
fn cloud_image_seed_is_valid_cloud_config_and_ssh_outputs_pin_the_key() {
    let t = TestHome::new();
    import_cloudy(&t);
    let list = t.ok(&["image", "list"]);
    assert!(list.contains("cloudy"), "{list}");
    let port = free_port();
    t.ok(&[
        "create",
        "c1",
        "--image",
        "cloudy",
        "--mem",
        "256M",
        "--port",
        &format!("{port}:22"),
        "--port",
        &format!("{}:8080", free_port()),
        "--app",
        "gunicorn-hello",
        "--user",
        "alice",
    ]);
    // No key given and none in ~/.ssh: vmctl made a key pair for the VM.
    let ssh_dir = t.home().join("vms/c1/ssh");
    assert!(ssh_dir.join("id_ed25519").exists());
    let known = std::fs::read_to_string(ssh_dir.join("known_hosts")).unwrap();
    let host_pub = std::fs::read_to_string(ssh_dir.join("ssh_host_ed25519_key.pub")).unwrap();
    assert!(known.starts_with("vmctl-c1 ssh-ed25519 "), "{known}");
    assert!(known.contains(host_pub.split_whitespace().nth(1).unwrap()));

    let cmd = t.ok(&["ssh", "c1", "--print", "--", "id"]);
    for needle in [
        &format!("-p {port}"),
        "/vms/c1/ssh/id_ed25519",
        "HostKeyAlias=vmctl-c1",
        "StrictHostKeyChecking=yes",
        "alice@127.0.0.1 id",
    ] {
        assert!(cmd.contains(needle), "{needle} missing from {cmd}");
    }
    let cfg = t.ok(&["ssh-config"]);
    assert!(
        cfg.contains("Host vmctl-c1\n") && cfg.contains(&format!("  Port {port}\n")),
        "{cfg}"
    );
    let ini = t.ok(&["inventory"]);
    assert!(
        ini.contains(&format!(
            "c1 ansible_host=127.0.0.1 ansible_port={port} ansible_user=alice"
        )),
        "{ini}"
    );
    let yaml = t.ok(&["inventory", "--format", "yaml"]);
    assert!(yaml.contains("    \"c1\":\n"), "{yaml}");

    // Start (the blank disk just sits in the BIOS): the seed is built and attached.
    t.ok(&["start", "c1"]);
    let show = t.ok(&["show-cmd", "c1"]);
    assert!(show.contains("id=seed,format=raw,readonly=on"), "{show}");
    let seed = t.home().join("vms/c1/seed.img");
    let out = Command::new("mcopy")
        .arg("-i")
        .arg(&seed)
        .args(["::user-data", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user_data = String::from_utf8(out.stdout).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    assert!(
        user_data.contains("PermitRootLogin no") && user_data.contains("\"ssh_pwauth\": false")
    );
    let ud = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ud.path(), &user_data).unwrap();
    let schema = Command::new("cloud-init")
        .args(["schema", "-c"])
        .arg(ud.path())
        .output()
        .unwrap();
    assert!(
        schema.status.success(),
        "cloud-init schema rejected the user-data:\n{}{}\n{user_data}",
        String::from_utf8_lossy(&schema.stdout),
        String::from_utf8_lossy(&schema.stderr)
    );
    let meta = Command::new("mcopy")
        .arg("-i")
        .arg(&seed)
        .args(["::meta-data", "-"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&meta.stdout).contains("local-hostname: c1"));
    t.ok(&["kill", "c1"]);
}

#[test]
fn an_explicit_key_is_authorized_and_used() {
    let t = TestHome::new();
    import_cloudy(&t);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = key.with_extension("pub");
    t.ok(&[
        "create",
        "k",
        "--image",
        "cloudy",
        "--ssh-key",
        pubkey.to_str().unwrap(),
        "--port",
        "127.0.0.1:18622:22",
    ]);
    let auth = std::fs::read_to_string(t.home().join("vms/k/ssh/authorized_keys")).unwrap();
    assert_eq!(
        auth.trim(),
        std::fs::read_to_string(&pubkey).unwrap().trim()
    );
    let cmd = t.ok(&["ssh", "k", "--print"]);
    assert!(cmd.contains(&format!("-i {}", key.display())), "{cmd}");
    assert!(
        cmd.contains("debian@127.0.0.1"),
        "root's default login user is debian: {cmd}"
    );
    assert!(
        !t.home().join("vms/k/ssh/id_ed25519").exists(),
        "no key pair made when one is given"
    );
}
