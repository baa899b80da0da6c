//! The provisioning credential: what a guest is told at each boot about who it is and who may
//! log in — its hostname, the login user and the keys authorized for it, the SSH host key vmctl
//! made for it, and its app. vmctl's own images read it as the systemd credential
//! `vmctl.provision` (JSON, through fw_cfg); the cloud-init seed of an imported image is rendered
//! from it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::def::network::Peer;
use crate::def::spec::VmSpec;
use crate::error::{IoContext, Result};
use crate::paths::VmPaths;
use crate::qemu::argv::{Lan, Share};
use crate::types::{App, LoginName};

/// The credential's JSON (`images/debian-12/provision.py` reads it). Fields are in the order
/// of their names: the JSON is written with its keys sorted, as it always was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    pub app: Option<App>,
    /// The app's environment (absent when empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub app_env: BTreeMap<String, String>,
    pub authorized_keys: Vec<String>,
    /// The other VMs of the guest's private networks, for /etc/hosts (absent without any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Peer>,
    pub hostname: String,
    /// Shared folders to mount: `{"tag": "vmctl0", "path": "/srv/code", "ro": false}` (absent
    /// without).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Share>,
    /// The NICs on private networks: each by MAC, with its static address (absent without).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NicAddress>,
    /// Your provisioning scripts, in order (absent without).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<crate::def::scripts::Script>,
    pub ssh_host_key: HostKey,
    pub user: String,
    /// Your own app's proxy ("none" or "nginx"), when the VM has one (absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsgi_app: Option<&'static str>,
    /// Your cloud-config, checked (cloud images only: merged into the seed's user-data).
    #[serde(skip)]
    pub cloud_config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What the guest learns of its private networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestNet {
    pub lans: Vec<Lan>,
    pub peers: Vec<Peer>,
    /// Its shared folders: what to mount where.
    pub shares: Vec<Share>,
}

/// One private NIC in the credential: `{"address": "10.89.0.2/24", "mac": "52:54:00:…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicAddress {
    pub address: String,
    pub mac: String,
}

/// The VM's own ed25519 host key, pinned by `vmctl ssh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostKey {
    pub private: String,
    /// `ssh-ed25519 AAAA... comment`.
    pub public: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl Credential {
    /// The credential of a created VM, from its SSH files (written at create).
    pub fn read(paths: &VmPaths, spec: &VmSpec, net: &GuestNet) -> Result<Credential> {
        let ssh = paths.ssh();
        let keys = std::fs::read_to_string(ssh.authorized_keys())
            .path_ctx("read", &ssh.authorized_keys())?;
        let private = std::fs::read_to_string(ssh.host_key()).path_ctx("read", &ssh.host_key())?;
        let public =
            std::fs::read_to_string(ssh.host_key_pub()).path_ctx("read", &ssh.host_key())?;
        let user = spec.user.clone().unwrap_or_else(default_user);
        let cloud_config = match &spec.cloud_init {
            None => None,
            Some(text) => {
                // Checked at create; checked again, as the definition may have been edited.
                let mut p = crate::error::Problems::default();
                let doc = crate::guest::cloudmerge::parse(text, "cloud_init", &mut p);
                if let Some(d) = &doc {
                    crate::guest::cloudmerge::check(d, &user.to_string(), "cloud_init", &mut p);
                }
                p.into_result(&paths.definition().display().to_string())?;
                doc
            }
        };
        Ok(Credential {
            app: spec.app,
            app_env: spec.app_env.clone(),
            authorized_keys: keys
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            hosts: net.peers.clone(),
            hostname: spec.name.to_string(),
            mounts: net.shares.clone(),
            networks: net
                .lans
                .iter()
                .map(|l| NicAddress {
                    address: format!("{}/{}", l.address, l.prefix),
                    mac: l.mac.to_string(),
                })
                .collect(),
            scripts: spec.scripts.clone(),
            wsgi_app: spec.wsgi_app.as_ref().map(|a| match a.proxy {
                crate::def::app::Proxy::None => "none",
                crate::def::app::Proxy::Nginx => "nginx",
            }),
            ssh_host_key: HostKey {
                private,
                public: public.trim().to_string(),
                kind: "ed25519",
            },
            user: user.to_string(),
            cloud_config,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a credential serializes")
    }
}

/// The invoking user's name, or "debian" for root (root cannot log in over SSH).
pub fn default_user() -> LoginName {
    let uid = nix::unistd::getuid();
    let name = if uid.is_root() {
        std::env::var("SUDO_USER").ok().filter(|u| u != "root")
    } else {
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
    };
    name.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| "debian".parse().expect("a valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_the_keys_provision_py_reads_in_sorted_order() {
        let c = Credential {
            app: Some(App::NginxGunicorn),
            app_env: BTreeMap::new(),
            authorized_keys: vec!["ssh-ed25519 AAAA me".into()],
            hosts: vec![],
            hostname: "web".into(),
            mounts: vec![],
            networks: vec![],
            scripts: vec![],
            wsgi_app: None,
            ssh_host_key: HostKey {
                private: "-----BEGIN OPENSSH PRIVATE KEY-----\n".into(),
                public: "ssh-ed25519 BBBB web".into(),
                kind: "ed25519",
            },
            user: "alice".into(),
            cloud_config: None,
        };
        // What serde_json made of the json! literal this replaced: keys sorted at every level.
        let expected = serde_json::json!({
            "hostname": "web",
            "user": "alice",
            "authorized_keys": ["ssh-ed25519 AAAA me"],
            "ssh_host_key": {"type": "ed25519", "private": "-----BEGIN OPENSSH PRIVATE KEY-----\n", "public": "ssh-ed25519 BBBB web"},
            "app": "nginx-gunicorn",
        });
        assert_eq!(
            c.to_json(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
        let none = Credential { app: None, ..c };
        assert!(
            none.to_json().contains("\"app\": null"),
            "{}",
            none.to_json()
        );
    }
}
