//! cloud-init NoCloud seeds for VMs on imported cloud images, rendered from the provisioning
//! credential: user-data with the login user, its keys, vmctl's SSH host key, the sshd
//! hardening and the app (the same files vmctl's own image has, from `image::payload`), your
//! scripts, and your own cloud-config merged in (`cloudmerge`);
//! meta-data with the instance id; both on a small vfat disk labelled CIDATA. (vmctl's own
//! images skip cloud-init: it costs ~17 s to SSH under TCG; see `provision`.)

use std::process::Command;

use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::guest::cloudmerge;
use crate::guest::credential::Credential;
use crate::image::payload::{self, GuestFile};
use crate::paths::VmPaths;
use crate::sys::fsutil;
use crate::types::App;

/// The `#cloud-config` document (JSON, which is YAML) for this credential.
pub fn user_data(cred: &Credential) -> String {
    let mut doc = json!({
        "hostname": cred.hostname,
        "users": [{
            "name": cred.user,
            "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": true,
            "ssh_authorized_keys": cred.authorized_keys,
        }],
        "disable_root": true,
        "ssh_pwauth": false,
        "ssh_deletekeys": true,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": cred.ssh_host_key.private,
            "ed25519_public": cred.ssh_host_key.public,
        },
        "write_files": [write_file(&payload::SSHD_HARDENING, payload::SSHD_HARDENING.path)],
        "runcmd": [["systemctl", "restart", "ssh"]],
    });
    // Your scripts first: runcmd runs in order, and the app comes after them.
    if !cred.scripts.is_empty() {
        add_scripts(&mut doc, cred);
    }
    if let Some(app) = cred.app {
        add_app(&mut doc, app);
    }
    if !cred.app_env.is_empty() {
        doc["write_files"]
            .as_array_mut()
            .expect("array")
            .push(file_entry(
                payload::APP_ENV_PATH,
                &app_env_file(&cred.app_env),
                0o644,
            ));
    }
    if !cred.mounts.is_empty() {
        doc["mounts"] = mounts(cred);
    }
    if !cred.hosts.is_empty() {
        // Every boot: the other VMs of its networks, in a block of /etc/hosts of its own.
        let mut script = format!("sed -i '/{HOSTS_MARK}$/d' /etc/hosts");
        for h in &cred.hosts {
            script.push_str(&format!(
                " && echo '{} {} {HOSTS_MARK}' >> /etc/hosts",
                h.address,
                h.names.join(" ")
            ));
        }
        doc["bootcmd"] = json!([["sh", "-c", script]]);
    }
    if let Some(yours) = &cred.cloud_config {
        cloudmerge::merge(doc.as_object_mut().expect("an object"), yours);
    }
    format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&doc).expect("json")
    )
}

/// The shared folders as cloud-init's `mounts`: fstab lines, mounted at each boot.
fn mounts(cred: &Credential) -> Value {
    let lines: Vec<Value> = cred
        .mounts
        .iter()
        .map(|m| {
            let opts = if m.ro {
                "defaults,nofail,ro"
            } else {
                "defaults,nofail"
            };
            let path = m.path.display().to_string();
            json!([m.tag, path, "virtiofs", opts, "0", "0"])
        })
        .collect();
    json!(lines)
}

fn write_file(f: &GuestFile, path: &str) -> Value {
    file_entry(path, f.text, f.mode)
}

fn file_entry(path: &str, content: &str, mode: u32) -> Value {
    json!({"path": path, "content": content, "permissions": format!("{mode:04o}")})
}

/// The app as vmctl's image has it: its user, launcher, unit and (nginx-gunicorn) site,
/// installed and started at the end of the first boot.
fn add_app(doc: &mut Value, app: App) {
    let unit = payload::app_unit(app);
    let (packages, extra_units) = match app {
        App::GunicornHello => (vec!["gunicorn"], vec![]),
        App::NginxGunicorn => (vec!["gunicorn", "nginx"], vec!["nginx.service"]),
    };
    doc["users"].as_array_mut().expect("array").push(json!({
        "name": "vmctl-app",
        "gecos": "vmctl app",
        "system": true,
        "no_create_home": true,
        "homedir": "/nonexistent",
        "shell": "/usr/sbin/nologin",
        "lock_passwd": true,
    }));
    let files = doc["write_files"].as_array_mut().expect("array");
    for f in [payload::HELLO_APP, payload::GUNICORN, unit] {
        files.push(write_file(&f, f.path));
    }
    if app == App::NginxGunicorn {
        // Before nginx is installed: its package then keeps this site instead of its default.
        files.push(write_file(
            &payload::NGINX_SITE,
            "/etc/nginx/sites-enabled/default",
        ));
    }
    doc["packages"] = json!(packages);
    let run = doc["runcmd"].as_array_mut().expect("array");
    run.push(json!(["systemctl", "daemon-reload"]));
    let mut enable = vec![
        "systemctl".to_string(),
        "enable".into(),
        "--now".into(),
        payload::unit_name(&unit).to_string(),
    ];
    enable.extend(extra_units.into_iter().map(String::from));
    run.push(json!(enable));
}

/// Your provisioning scripts, once, after cloud-init's own setup (its `runcmd`, which runs at
/// the first boot only): each written to /var/lib/vmctl/scripts/N and run by the same runner
/// vmctl's image has (`image::payload::SCRIPTS_RUNNER`), which says on the console how each
/// ended, as vmctl reads it.
fn add_scripts(doc: &mut Value, cred: &Credential) {
    let files = doc["write_files"].as_array_mut().expect("array");
    files.push(file_entry(
        payload::SCRIPTS_RUNNER.path,
        payload::SCRIPTS_RUNNER.text,
        payload::SCRIPTS_RUNNER.mode,
    ));
    let list =
        serde_json::to_string(&json!({"user": cred.user, "scripts": cred.scripts})).expect("json");
    files.push(file_entry("/var/lib/vmctl/scripts.json", &list, 0o600));
    doc["runcmd"].as_array_mut().expect("array").push(json!([
        payload::SCRIPTS_RUNNER.path,
        "/var/lib/vmctl/scripts.json"
    ]));
}

/// What ends each line of /etc/hosts that vmctl writes (the other VMs of the guest's networks).
const HOSTS_MARK: &str = "# vmctl-network";

/// The app's environment as systemd's `EnvironmentFile=` reads it: `NAME="value"`, with `\`
/// and `"` escaped (names and values are checked at validation: no newline, no control
/// character).
pub fn app_env_file(env: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::from("# Written by vmctl: the app's environment (app_env).\n");
    for (k, v) in env {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{k}=\"{v}\"\n"));
    }
    out
}

/// The `network-config` (version 2) of a guest with NICs on private networks: DHCP on the
/// first NIC (QEMU's default MAC, as vmctl gives it none) and each private NIC's static
/// address, matched by MAC, with no route beyond its subnet. `None` without private NICs
/// (cloud-init's own default: DHCP on the first NIC).
pub fn network_config(cred: &Credential) -> Option<String> {
    if cred.networks.is_empty() {
        return None;
    }
    let mut ethernets = serde_json::Map::new();
    ethernets.insert(
        "primary".into(),
        json!({"match": {"macaddress": PRIMARY_MAC}, "dhcp4": true}),
    );
    for (i, n) in cred.networks.iter().enumerate() {
        ethernets.insert(
            format!("lan{}", i + 1),
            json!({"match": {"macaddress": n.mac}, "addresses": [n.address], "dhcp4": false}),
        );
    }
    let doc = json!({"version": 2, "ethernets": ethernets});
    Some(format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).expect("json")
    ))
}

/// The MAC QEMU gives a NIC that is given none: the guest's first NIC.
const PRIMARY_MAC: &str = "52:54:00:12:34:56";

/// `instance-id` changes when the VM is created again (its definition's time), so cloud-init
/// provisions a new VM of the same name afresh. JSON (which is YAML) like the user-data: as a
/// plain YAML value, a VM named `yes`, `null` or `1.10` was a boolean, nothing or a number.
pub fn meta_data(hostname: &str, created: u64) -> String {
    let doc = json!({
        "instance-id": format!("vmctl-{hostname}-{created}"),
        "local-hostname": hostname,
    });
    format!("{}\n", serde_json::to_string_pretty(&doc).expect("json"))
}

/// Write the VM's seed: user-data and meta-data on a 1 MiB vfat disk labelled CIDATA, built
/// beside it and renamed into place.
pub fn write_seed(paths: &VmPaths, cred: &Credential) -> Result<()> {
    let seed = paths.cloud_init_seed();
    let dir = fsutil::TempDir::new(&paths.dir, ".seed-")?;
    let created = std::fs::metadata(paths.definition())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (user, meta) = (dir.path().join("user-data"), dir.path().join("meta-data"));
    std::fs::write(&user, user_data(cred)).path_ctx("write", &user)?;
    std::fs::write(&meta, meta_data(&cred.hostname, created)).path_ctx("write", &meta)?;
    let mut files = vec![user, meta];
    if let Some(net) = network_config(cred) {
        let f = dir.path().join("network-config");
        std::fs::write(&f, net).path_ctx("write", &f)?;
        files.push(f);
    }
    let img = dir.path().join("seed.img");
    run(
        Command::new("mkfs.vfat")
            .args(["-n", "CIDATA", "-C"])
            .arg(&img)
            .arg("1024"),
        "mkfs.vfat (apt-get install dosfstools)",
    )?;
    run(
        Command::new("mcopy")
            .arg("-oi")
            .arg(&img)
            .args(&files)
            .arg("::"),
        "mcopy (apt-get install mtools)",
    )?;
    std::fs::rename(&img, &seed).path_ctx("write", &seed)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().ctx(|| format!("Cannot run {what}"))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::credential::HostKey;

    /// Private NICs: network-config v2 with DHCP on the first NIC and each private NIC's static
    /// address by MAC; the peers in a block of /etc/hosts at every boot; the app's environment.
    #[test]
    fn private_networks_peers_and_app_env_reach_the_seed() {
        let mut c = cred(Some(App::GunicornHello));
        assert_eq!(network_config(&c), None);
        c.networks = vec![crate::guest::credential::NicAddress {
            address: "10.89.0.2/24".into(),
            mac: "52:54:00:ab:cd:ef".into(),
        }];
        c.hosts = vec![crate::def::network::Peer {
            address: "10.89.0.3".parse().unwrap(),
            names: vec!["db".into(), "db.backend".into()],
        }];
        c.app_env = [("UPSTREAM".to_string(), "http://db:8080/\"x\"".to_string())].into();
        let net: Value = serde_json::from_str(&network_config(&c).unwrap()).unwrap();
        assert_eq!(net["version"], 2);
        assert_eq!(
            net["ethernets"]["primary"]["match"]["macaddress"],
            PRIMARY_MAC
        );
        assert_eq!(net["ethernets"]["primary"]["dhcp4"], true);
        let lan = &net["ethernets"]["lan1"];
        assert_eq!(lan["match"]["macaddress"], "52:54:00:ab:cd:ef");
        assert_eq!(lan["addresses"], serde_json::json!(["10.89.0.2/24"]));
        assert!(lan.get("gateway4").is_none() && lan.get("routes").is_none());
        let ud = user_data(&c);
        let doc: Value = serde_json::from_str(ud.trim_start_matches("#cloud-config\n")).unwrap();
        let boot = doc["bootcmd"][0][2].as_str().unwrap();
        assert!(
            boot.contains("echo '10.89.0.3 db db.backend # vmctl-network' >> /etc/hosts"),
            "{boot}"
        );
        let env = doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == payload::APP_ENV_PATH)
            .unwrap();
        assert_eq!(
            env["content"],
            "# Written by vmctl: the app's environment (app_env).\nUPSTREAM=\"http://db:8080/\\\"x\\\"\"\n"
        );
    }

    fn cred(app: Option<App>) -> Credential {
        Credential {
            app,
            app_env: Default::default(),
            authorized_keys: vec!["ssh-ed25519 AAAA me".into()],
            hosts: vec![],
            hostname: "web".into(),
            mounts: vec![],
            networks: vec![],
            scripts: vec![],
            wsgi_app: None,
            ssh_host_key: HostKey {
                private: "PRIVATE".into(),
                public: "ssh-ed25519 BBBB web".into(),
                kind: "ed25519",
            },
            user: "alice".into(),
            cloud_config: None,
        }
    }

    fn doc(app: Option<App>) -> Value {
        let text = user_data(&cred(app));
        let json = text
            .strip_prefix("#cloud-config\n")
            .expect("a cloud-config");
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_seed_carries_the_images_own_payload() {
        let d = doc(Some(App::NginxGunicorn));
        let files: Vec<(&str, &str)> = d["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap(), f["content"].as_str().unwrap()))
            .collect();
        for (f, path) in [
            (payload::SSHD_HARDENING, payload::SSHD_HARDENING.path),
            (payload::HELLO_APP, payload::HELLO_APP.path),
            (payload::GUNICORN, payload::GUNICORN.path),
            (payload::NGINX_SITE, "/etc/nginx/sites-enabled/default"),
        ] {
            assert!(files.contains(&(path, f.text)), "{path} missing: {files:?}");
        }
        assert_eq!(d["users"][1]["name"], "vmctl-app");
        assert_eq!(d["packages"], json!(["gunicorn", "nginx"]));
        assert_eq!(
            d["runcmd"][2],
            json!([
                "systemctl",
                "enable",
                "--now",
                "vmctl-app-nginx-gunicorn.service",
                "nginx.service"
            ])
        );
        assert_eq!(d["ssh_keys"]["ed25519_private"], "PRIVATE");
        let plain = doc(None);
        assert_eq!(plain["users"].as_array().unwrap().len(), 1);
        assert!(plain.get("packages").is_none());
    }

    /// Your scripts reach the guest with the image's runner, which runcmd runs before the app
    /// is enabled.
    #[test]
    fn scripts_run_before_the_app() {
        use crate::def::scripts::{Mode, Script};
        let mut c = cred(Some(App::GunicornHello));
        c.scripts = vec![Script {
            mode: Mode::User,
            script: "echo hi\n".into(),
        }];
        let d: Value =
            serde_json::from_str(user_data(&c).strip_prefix("#cloud-config\n").unwrap()).unwrap();
        let files = d["write_files"].as_array().unwrap();
        let runner = files
            .iter()
            .find(|f| f["path"] == payload::SCRIPTS_RUNNER.path)
            .unwrap();
        assert_eq!(runner["content"], payload::SCRIPTS_RUNNER.text);
        let list = files
            .iter()
            .find(|f| f["path"] == "/var/lib/vmctl/scripts.json")
            .unwrap();
        assert_eq!(list["permissions"], "0600");
        let list: Value = serde_json::from_str(list["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            list,
            json!({"user": "alice", "scripts": [{"mode": "user", "script": "echo hi\n"}]})
        );
        let runcmd = d["runcmd"].as_array().unwrap();
        let at = |needle: &str| {
            runcmd
                .iter()
                .position(|c| c.to_string().contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in {runcmd:?}"))
        };
        assert!(at(payload::SCRIPTS_RUNNER.path) < at("vmctl-app-gunicorn-hello"));
    }

    #[test]
    fn the_meta_data_keeps_every_vm_name_a_string() {
        for name in ["web", "yes", "null", "1.10", "0x1f", "1_0"] {
            let v: Value = serde_json::from_str(&meta_data(name, 7)).unwrap();
            assert_eq!(
                v,
                json!({"instance-id": format!("vmctl-{name}-7"), "local-hostname": name})
            );
        }
    }

    #[test]
    fn key_comments_stay_strings_of_the_user_data() {
        let hostile = "ssh-ed25519 AAAA x\"}], \"runcmd\": [\"touch /pwned\"], \"x\": [{\"a\": \"\\n#cloud-config";
        let mut c = cred(None);
        c.authorized_keys = vec![hostile.into()];
        let text = user_data(&c);
        assert_eq!(
            text.lines().filter(|l| l.starts_with('#')).count(),
            1,
            "{text}"
        );
        let d: Value = serde_json::from_str(text.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        assert_eq!(d["users"][0]["ssh_authorized_keys"], json!([hostile]));
        assert_eq!(d["runcmd"], json!([["systemctl", "restart", "ssh"]]));
    }
}
