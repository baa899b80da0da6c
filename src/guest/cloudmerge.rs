//! Your cloud-config (`--cloud-init FILE`, `cloud_init` in a definition) for VMs on imported
//! cloud images: parsed, checked, and merged into the user-data vmctl writes. It may add
//! packages, users, files, commands and anything else cloud-init does, but never loosen what
//! vmctl sets up for SSH: password logins, root logins, the pinned host key, sshd's settings,
//! the login user vmctl manages and the VM's hostname. Those are refused, each by its key, at
//! `create` (nothing is silently dropped). The merge: a key vmctl does not set is taken as
//! given; lists (`packages`, `runcmd`, `write_files`, `users`, `mounts`, ...) are vmctl's
//! entries, then yours; tables merge key by key.

use serde_json::{Map, Value};

use crate::error::Problems;

/// The largest cloud-config taken (the seed is a small disk; bigger payloads belong in a shared
/// folder or `vmctl cp`).
pub const MAX_BYTES: usize = 256 * 1024;

/// Keys vmctl sets for SSH and the VM's identity: yours may not set them.
const VMCTL_ONLY: [(&str, &str); 10] = [
    (
        "ssh_pwauth",
        "would let sshd take passwords; vmctl guests take keys only",
    ),
    (
        "disable_root",
        "would change root's SSH login, which vmctl disables",
    ),
    (
        "disable_root_opts",
        "would change root's SSH login, which vmctl disables",
    ),
    (
        "ssh_keys",
        "would replace the SSH host key vmctl pins (vmctl ssh checks it)",
    ),
    (
        "ssh_deletekeys",
        "would change the SSH host keys vmctl pins",
    ),
    (
        "ssh_genkeytypes",
        "would change the SSH host keys vmctl pins",
    ),
    (
        "ssh",
        "would change sshd's key handling, which vmctl sets up",
    ),
    ("hostname", "is the VM's name, which vmctl sets"),
    ("fqdn", "is the VM's name, which vmctl sets"),
    ("preserve_hostname", "is the VM's name, which vmctl sets"),
];

/// Words in a command that change how sshd logs people in.
const SSHD_WORDS: [&str; 4] = [
    "PasswordAuthentication",
    "PermitRootLogin",
    "KbdInteractiveAuthentication",
    "ChallengeResponseAuthentication",
];

/// Parse a cloud-config: YAML whose top is a mapping with string keys (the `#cloud-config`
/// header is optional here; vmctl writes its own). A problem is reported on `field`.
pub fn parse(text: &str, field: &str, p: &mut Problems) -> Option<Map<String, Value>> {
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("#!")
        || first.starts_with("Content-Type:")
        || first.starts_with("#include")
    {
        p.add(
            field,
            format!(
                "starts with {:?}: only #cloud-config YAML is merged (scripts go in provision)",
                first.chars().take(40).collect::<String>()
            ),
        );
        return None;
    }
    if text.len() > MAX_BYTES {
        p.add(
            field,
            format!("is {} bytes; at most {MAX_BYTES}", text.len()),
        );
        return None;
    }
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        Ok(Value::Null) => Some(Map::new()),
        Ok(other) => {
            p.add(
                field,
                format!(
                    "must be a YAML mapping (key: value lines); got {}",
                    kind(&other)
                ),
            );
            None
        }
        Err(e) => {
            p.add(field, format!("is not valid YAML: {e}"));
            None
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// What in `doc` would loosen vmctl's SSH set-up or take over what vmctl manages (`login` is
/// the login user), each as a problem of `field.KEY`.
pub fn check(doc: &Map<String, Value>, login: &str, field: &str, p: &mut Problems) {
    for (key, why) in VMCTL_ONLY {
        if doc.contains_key(key) {
            p.add(format!("{field}.{key}"), why);
        }
    }
    if let Some(Value::Array(users)) = doc.get("users") {
        for (i, u) in users.iter().enumerate() {
            let name = match u {
                Value::String(s) => Some(s.as_str()),
                Value::Object(m) => m.get("name").and_then(Value::as_str),
                _ => None,
            };
            let at = format!("{field}.users[{i}]");
            match name {
                Some("root") => p.add(
                    at,
                    "root is not a user to set up: vmctl disables its logins",
                ),
                Some(n) if n == login => p.add(
                    at,
                    format!("{n:?} is the login user vmctl sets up (its keys: --ssh-key)"),
                ),
                _ => {}
            }
        }
    }
    if let Some(Value::Array(files)) = doc.get("write_files") {
        for (i, f) in files.iter().enumerate() {
            let path = f.get("path").and_then(Value::as_str).unwrap_or("");
            if path.trim_start_matches('/').starts_with("etc/ssh") {
                p.add(
                    format!("{field}.write_files[{i}].path"),
                    format!("{path:?} would change sshd's set-up, which vmctl owns"),
                );
            }
        }
    }
    for key in ["runcmd", "bootcmd"] {
        if let Some(Value::Array(cmds)) = doc.get(key) {
            for (i, c) in cmds.iter().enumerate() {
                let text = c.to_string();
                if let Some(w) = SSHD_WORDS.iter().find(|w| text.contains(*w)) {
                    p.add(
                        format!("{field}.{key}[{i}]"),
                        format!("changes sshd's {w}, which vmctl sets (keys only, no root)"),
                    );
                }
            }
        }
    }
}

/// Merge `yours` into vmctl's user-data `doc`: new keys are added, lists appended after
/// vmctl's, tables merged key by key; where both have a plain value, vmctl's stays (a checked
/// cloud-config has none of those: [`check`]).
pub fn merge(doc: &mut Map<String, Value>, yours: &Map<String, Value>) {
    for (k, v) in yours {
        match (doc.get_mut(k), v) {
            (None, v) => {
                doc.insert(k.clone(), v.clone());
            }
            (Some(Value::Array(ours)), Value::Array(theirs)) => ours.extend(theirs.iter().cloned()),
            (Some(Value::Object(ours)), Value::Object(theirs)) => merge(ours, theirs),
            (Some(_), _) => tracing::warn!("cloud-init: {k} is vmctl's; yours is not used"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Map<String, Value> {
        let mut p = Problems::default();
        let m = parse(text, "cloud_init", &mut p).unwrap();
        assert!(p.is_empty());
        m
    }

    fn problems(text: &str) -> String {
        let mut p = Problems::default();
        if let Some(m) = parse(text, "cloud_init", &mut p) {
            check(&m, "alice", "cloud_init", &mut p);
        }
        match p.into_result("t") {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn packages_users_files_and_commands_are_added_after_vmctls() {
        let yours = parsed(
            "#cloud-config\npackages: [jq, htop]\nusers:\n  - name: bob\n    groups: [adm]\nwrite_files:\n  - path: /etc/motd\n    content: hi\nruncmd:\n  - [touch, /tmp/x]\ntimezone: Europe/Oslo\n",
        );
        assert_eq!(problems("packages: [jq]\nusers: [{name: bob}]\n"), "");
        let mut doc = json!({
            "packages": ["gunicorn"],
            "users": [{"name": "alice"}],
            "write_files": [{"path": "/etc/ssh/sshd_config.d/01-vmctl.conf"}],
            "runcmd": [["systemctl", "restart", "ssh"]],
            "ssh_pwauth": false,
        });
        merge(doc.as_object_mut().unwrap(), &yours);
        assert_eq!(doc["packages"], json!(["gunicorn", "jq", "htop"]));
        assert_eq!(doc["users"][0]["name"], "alice");
        assert_eq!(doc["users"][1]["name"], "bob");
        assert_eq!(doc["write_files"][1]["path"], "/etc/motd");
        assert_eq!(doc["runcmd"][1], json!(["touch", "/tmp/x"]));
        assert_eq!(doc["timezone"], "Europe/Oslo");
        assert_eq!(doc["ssh_pwauth"], false);
    }

    #[test]
    fn what_loosens_ssh_or_takes_over_vmctls_is_refused_by_key() {
        let e = problems(
            "ssh_pwauth: true\ndisable_root: false\nhostname: other\nssh_keys: {}\nusers: [root, {name: alice}, default]\nwrite_files: [{path: /etc/ssh/sshd_config, content: x}]\nruncmd: [\"sed -i s/PermitRootLogin.*/PermitRootLogin yes/ /etc/ssh/sshd_config\"]\n",
        );
        for needle in [
            "cloud_init.ssh_pwauth: would let sshd take passwords",
            "cloud_init.disable_root: would change root's SSH login",
            "cloud_init.hostname: is the VM's name",
            "cloud_init.ssh_keys: would replace the SSH host key",
            "cloud_init.users[0]: root is not a user to set up",
            "cloud_init.users[1]: \"alice\" is the login user vmctl sets up",
            "cloud_init.write_files[0].path: \"/etc/ssh/sshd_config\" would change sshd's set-up",
            "cloud_init.runcmd[0]: changes sshd's PermitRootLogin",
        ] {
            assert!(e.contains(needle), "{needle}\n{e}");
        }
        assert!(!e.contains("users[2]"), "{e}");
    }

    #[test]
    fn only_cloud_config_yaml_mappings_are_taken() {
        for (text, needle) in [
            (
                "#!/bin/sh\necho hi\n",
                "starts with \"#!/bin/sh\": only #cloud-config YAML",
            ),
            ("Content-Type: multipart/mixed\n", "only #cloud-config YAML"),
            (
                "- a\n- b\n",
                "must be a YAML mapping (key: value lines); got a list",
            ),
            ("packages: [jq\n", "is not valid YAML"),
            ("a:\n\tb: 1\n", "is not valid YAML"),
        ] {
            let e = problems(text);
            assert!(e.contains(needle), "{text:?}: {needle}\n{e}");
        }
        assert_eq!(problems("#cloud-config\n"), "");
        assert_eq!(problems(""), "");
    }
}
