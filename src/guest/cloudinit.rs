//! cloud-init NoCloud seeds for VMs on imported cloud images: user-data with the login user, its
//! key, vmctl's SSH host key, sshd hardening and the app; meta-data with the instance id; both on
//! a small vfat disk labelled CIDATA. (vmctl's own images skip cloud-init: it costs ~17 s to
//! SSH under TCG; see `provision`.)

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::def::spec::VmSpec;
use crate::error::{Error, IoContext, Result};
use crate::paths::VmPaths;
use crate::types::App;

pub const SSHD_HARDENING: &str = "# vmctl: key-only SSH, no root login. Sorts first: sshd keeps the first value it reads.\nPermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n";

const HELLO_APP: &str = "# vmctl's gunicorn Hello, World app\ndef app(environ, start_response):\n    body = b\"Hello, World!\\n\"\n    start_response(\"200 OK\", [(\"Content-Type\", \"text/plain\"), (\"Content-Length\", str(len(body)))])\n    return [body]\n";

fn gunicorn_unit(bind: &str) -> String {
    format!(
        "[Unit]\nDescription=vmctl app: gunicorn Hello, World\nAfter=network.target\n\n[Service]\nDynamicUser=yes\nRuntimeDirectory=vmctl-app\nRuntimeDirectoryMode=0755\nWorkingDirectory=/usr/local/lib/vmctl\nExecStart=/usr/bin/gunicorn --workers 1 --bind {bind} hello:app\nRestart=always\nRestartSec=1\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

const NGINX_SITE: &str = "server {\n    listen 8080 default_server;\n    location / {\n        proxy_pass http://unix:/run/vmctl-app/gunicorn.sock;\n        proxy_set_header Host $host;\n    }\n}\n";

/// The `#cloud-config` document (JSON, which is YAML) for this VM.
pub fn user_data(paths: &VmPaths, spec: &VmSpec) -> Result<String> {
    let cred = crate::guest::provision::credential(paths, spec)?;
    let mut doc = json!({
        "hostname": cred["hostname"],
        "users": [{
            "name": cred["user"],
            "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": true,
            "ssh_authorized_keys": cred["authorized_keys"],
        }],
        "disable_root": true,
        "ssh_pwauth": false,
        "ssh_deletekeys": true,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": cred["ssh_host_key"]["private"],
            "ed25519_public": cred["ssh_host_key"]["public"],
        },
        "write_files": [{
            "path": "/etc/ssh/sshd_config.d/01-vmctl.conf",
            "content": SSHD_HARDENING,
            "permissions": "0644",
        }],
        "runcmd": [["systemctl", "restart", "ssh"]],
    });
    if let Some(app) = spec.app {
        add_app(&mut doc, app);
    }
    Ok(format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&doc).expect("json")
    ))
}

fn add_app(doc: &mut Value, app: App) {
    let (bind, packages, extra_units) = match app {
        App::GunicornHello => ("0.0.0.0:8080", vec!["gunicorn"], vec![]),
        App::NginxGunicorn => (
            "unix:/run/vmctl-app/gunicorn.sock",
            vec!["gunicorn", "nginx"],
            vec!["nginx.service"],
        ),
    };
    let unit = format!("vmctl-app-{}.service", app.as_str());
    let files = doc["write_files"].as_array_mut().expect("array");
    files.push(json!({"path": "/usr/local/lib/vmctl/hello.py", "content": HELLO_APP, "permissions": "0644"}));
    files.push(json!({"path": format!("/etc/systemd/system/{unit}"), "content": gunicorn_unit(bind), "permissions": "0644"}));
    if app == App::NginxGunicorn {
        files.push(json!({"path": "/etc/nginx/sites-enabled/default", "content": NGINX_SITE, "permissions": "0644"}));
    }
    doc["packages"] = json!(packages);
    let run = doc["runcmd"].as_array_mut().expect("array");
    run.push(json!(["systemctl", "daemon-reload"]));
    let mut enable = vec![
        "systemctl".to_string(),
        "enable".into(),
        "--now".into(),
        unit,
    ];
    enable.extend(extra_units.into_iter().map(String::from));
    run.push(json!(enable));
}

pub fn meta_data(spec: &VmSpec, created: u64) -> String {
    format!(
        "instance-id: vmctl-{}-{created}\nlocal-hostname: {}\n",
        spec.name, spec.name
    )
}

/// Write user-data and meta-data onto a 1 MiB vfat disk labelled CIDATA.
pub fn build_seed(path: &Path, user_data: &str, spec: &VmSpec) -> Result<()> {
    let dir = tempfile_dir(path)?;
    let created = std::fs::metadata(path.parent().unwrap_or(Path::new(".")).join("vm.toml"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::fs::write(dir.path().join("user-data"), user_data)
        .path_ctx("write", &dir.path().join("user-data"))?;
    std::fs::write(dir.path().join("meta-data"), meta_data(spec, created))
        .path_ctx("write", &dir.path().join("meta-data"))?;
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
            .arg(dir.path().join("user-data"))
            .arg(dir.path().join("meta-data"))
            .arg("::"),
        "mcopy (apt-get install mtools)",
    )?;
    std::fs::rename(&img, path).path_ctx("write", path)
}

fn tempfile_dir(near: &Path) -> Result<crate::sys::fsutil::TempDir> {
    crate::sys::fsutil::TempDir::new(near.parent().unwrap_or(Path::new(".")), ".seed-")
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
