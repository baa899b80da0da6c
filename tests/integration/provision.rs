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
    // With provisioning scripts (one read from a file beside the definition), which the seed
    // carries.
    let defs = tempfile::tempdir().unwrap();
    std::fs::write(defs.path().join("setup.sh"), "echo from a file\n").unwrap();
    // And a cloud-config of the user's, merged into vmctl's.
    let yours = defs.path().join("user-data.yaml");
    std::fs::write(
        &yours,
        "#cloud-config\npackages: [jq]\nusers:\n  - name: bob\n    shell: /bin/sh\nwrite_files:\n  - path: /etc/motd\n    content: hello from the user's cloud-config\nruncmd:\n  - [touch, /var/tmp/yours]\ntimezone: Europe/Oslo\n",
    )
    .unwrap();
    let def = defs.path().join("c1.toml");
    std::fs::write(
        &def,
        "provision = [{ mode = \"system\", script = \"apt-get install -y jq\" }, { mode = \"user\", file = \"setup.sh\" }]\n",
    )
    .unwrap();
    t.ok(&[
        "create",
        "c1",
        "--from",
        def.to_str().unwrap(),
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
        "--cloud-init",
        yours.to_str().unwrap(),
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
        user_data.contains("/usr/local/lib/vmctl/scripts")
            && user_data.contains("echo from a file"),
        "{user_data}"
    );
    // The user's cloud-config is in, after vmctl's own (which cloud-init schema checks below).
    let doc: serde_json::Value =
        serde_json::from_str(user_data.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    assert_eq!(doc["packages"], serde_json::json!(["gunicorn", "jq"]));
    assert_eq!(doc["users"][0]["name"], "alice");
    assert_eq!(
        doc["users"].as_array().unwrap().last().unwrap()["name"],
        "bob"
    );
    assert_eq!(doc["timezone"], "Europe/Oslo");
    assert_eq!(doc["ssh_pwauth"], false);
    let runcmd = doc["runcmd"].as_array().unwrap();
    assert_eq!(
        runcmd.last().unwrap(),
        &serde_json::json!(["touch", "/var/tmp/yours"])
    );
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
    assert!(String::from_utf8_lossy(&meta.stdout).contains("\"local-hostname\": \"c1\""));
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

/// `ansible-core` in the suite's venv (scripts/test.sh installs it).
fn ansible(tool: &str) -> Command {
    let p = work_dir().join("venv/bin").join(tool);
    assert!(
        p.exists(),
        "{} missing: scripts/test.sh installs ansible-core there",
        p.display()
    );
    let mut c = Command::new(p);
    c.env("ANSIBLE_NOCOLOR", "1");
    c
}

/// A host's variables as `ansible-inventory --list` reads them (`!unsafe` strings unwrapped).
fn ansible_hostvars(inventory: &str, host: &str) -> Option<serde_json::Value> {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), inventory).unwrap();
    let out = ansible("ansible-inventory")
        .arg("-i")
        .arg(f.path())
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{inventory}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = all["_meta"]["hostvars"].get_mut(host)?.as_object_mut()?;
    for v in vars.values_mut() {
        if let Some(s) = v.get("__ansible_unsafe").cloned() {
            *v = s;
        }
    }
    Some(serde_json::Value::Object(vars.clone()))
}

/// `ssh -G -F FILE ALIAS`: OpenSSH's own reading of a config block, as `key value` lines.
fn ssh_g(config: &str, alias: &str) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), config).unwrap();
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(f.path())
        .arg(alias)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn key_paths_are_refused_or_printed_as_data_for_ssh_and_ansible() {
    let t = TestHome::new();
    import_cloudy(&t);
    let keys = tempfile::tempdir().unwrap();
    let evil = keys.path().join("k\n  ProxyCommand touch /tmp/pwned\n#");
    std::fs::create_dir_all(&evil).unwrap();
    let key = evil.join("id");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    t.refused(
        &[
            "create",
            "h",
            "--image",
            "cloudy",
            "--ssh-key",
            key.with_extension("pub").to_str().unwrap(),
            "--port",
            &format!("{}:22", free_port()),
        ],
        // Validation refuses the control character before provisioning's own check would.
        &[
            "ssh_key: the path has a control character",
            "/k\\n  ProxyCommand touch /tmp/pwned\\n#/id.pub\"",
        ],
    );

    // A VM an older vmctl made with such a key, its identity recorded as given.
    t.ok(&[
        "create",
        "h",
        "--image",
        "cloudy",
        "--port",
        &format!("{}:22", free_port()),
    ]);
    let record = t.home().join("vms/h/ssh/identity");
    let marker = keys.path().join("templated");
    let tmpl = format!(
        "{}/it's #1/{{{{ lookup('pipe', 'touch {}') }}}}/id",
        keys.path().display(),
        marker.display()
    );
    std::fs::write(&record, &tmpl).unwrap();
    let g = ssh_g(&t.ok(&["ssh-config", "h"]), "vmctl-h");
    assert!(g.contains(&format!("\nidentityfile {tmpl}\n")), "{g}");
    assert!(
        g.contains("\nstricthostkeychecking true\n") && !g.contains("proxycommand"),
        "{g}"
    );
    // YAML: the template is data (`!unsafe`), even where Ansible templates variables.
    let yaml = t.ok(&["inventory", "--format", "yaml"]);
    let vars = ansible_hostvars(&yaml, "h").expect("host h in the YAML inventory");
    assert_eq!(vars["ansible_ssh_private_key_file"], tmpl.as_str());
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &yaml).unwrap();
    let out = ansible("ansible")
        .arg("-i")
        .arg(f.path())
        .args(["h", "-m", "debug", "-a", "var=ansible_ssh_private_key_file"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!marker.exists(), "Ansible ran the template in the key path");
    // INI has no way to mark data: the host is left out, saying why.
    let ini = t.ok(&["inventory"]);
    assert!(
        ini.contains("# VM \"h\" left out: ansible_ssh_private_key_file"),
        "{ini}"
    );
    assert_eq!(ansible_hostvars(&ini, "h"), None);

    // Quotes and `#` stay inside the INI value; the host-key pinning stays.
    let quoted = format!("{}/it's #1/id", keys.path().display());
    std::fs::write(&record, &quoted).unwrap();
    let vars = ansible_hostvars(&t.ok(&["inventory"]), "h").expect("host h in the INI inventory");
    assert_eq!(vars["ansible_ssh_private_key_file"], quoted.as_str());
    let args = vars["ansible_ssh_common_args"].as_str().unwrap();
    assert!(
        args.ends_with("-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"),
        "{args}"
    );

    // PyYAML (Ansible's reader) reads every recorded path back from the YAML form exactly.
    let mut pairs = Vec::new();
    for tail in [
        "a\"b\\c",
        "it's: #1",
        " lead",
        "u2028\u{2028}x",
        "é😀",
        "!unsafe x",
        "{{ x }}",
        "a\tb",
        "%d ${HOME}",
    ] {
        let path = format!("{}/{tail}/id", keys.path().display());
        std::fs::write(&record, &path).unwrap();
        pairs.push((path, t.ok(&["inventory", "--format", "yaml"])));
    }
    let script = r#"
import json, sys, yaml
yaml.SafeLoader.add_constructor("!unsafe", lambda l, n: l.construct_scalar(n))
for want, text in json.load(sys.stdin):
    hosts = yaml.safe_load(text)["vmctl"]["hosts"] or {}
    got = hosts.get("h", {}).get("ansible_ssh_private_key_file")
    print(json.dumps([want, got]))
"#;
    let mut py = Command::new(work_dir().join("venv/bin/python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&pairs).unwrap())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let (want, got): (String, Option<String>) = serde_json::from_str(l).unwrap();
        // Left out: a control character (ssh_config cannot carry it), and `"`, `\` or `%`
        // (Ansible's IdentityFile="..." cannot).
        if want.contains(['"', '\\', '%']) || want.contains(char::is_control) {
            assert_eq!(got, None, "{want:?}");
        } else {
            assert_eq!(got.as_deref(), Some(want.as_str()));
        }
    }

    // A newline in a recorded path: `ssh-config h` refuses it, the lists leave the VM out.
    std::fs::write(&record, key.display().to_string()).unwrap();
    let err = t.fails(&["ssh-config", "h"], 2);
    assert!(
        err.contains("VM h: the identity file \"") && err.contains("contains '\\n'"),
        "{err}"
    );
    for out in [
        t.ok(&["ssh-config"]),
        t.ok(&["inventory"]),
        t.ok(&["inventory", "--format", "yaml"]),
    ] {
        assert!(!out.contains("ProxyCommand"), "{out}");
    }
}
