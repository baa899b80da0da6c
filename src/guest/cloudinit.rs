//! cloud-init NoCloud seeds for VMs on imported cloud images, rendered from the provisioning
//! credential: user-data with the login user, its keys, vmctl's SSH host key, the sshd
//! hardening and the app (the same files vmctl's own image has, from `image::payload`);
//! meta-data with the instance id; both on a small vfat disk labelled CIDATA. (vmctl's own
//! images skip cloud-init: it costs ~17 s to SSH under TCG; see `provision`.)

use std::process::Command;

use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
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
    if let Some(app) = cred.app {
        add_app(&mut doc, app);
    }
    format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&doc).expect("json")
    )
}

fn write_file(f: &GuestFile, path: &str) -> Value {
    json!({"path": path, "content": f.text, "permissions": format!("{:04o}", f.mode)})
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
            .arg(&user)
            .arg(&meta)
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

    fn cred(app: Option<App>) -> Credential {
        Credential {
            app,
            authorized_keys: vec!["ssh-ed25519 AAAA me".into()],
            hosts: vec![],
            hostname: "web".into(),
            networks: vec![],
            ssh_host_key: HostKey {
                private: "PRIVATE".into(),
                public: "ssh-ed25519 BBBB web".into(),
                kind: "ed25519",
            },
            user: "alice".into(),
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
