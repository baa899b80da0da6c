//! A VM as KubeVirt objects (`vmctl export NAME --format kubevirt`), rendered purely and
//! golden-tested: a `VirtualMachine` (`kubevirt.io/v1`) — `runStrategy` from `autostart`, CPU and
//! memory, the root disk as a DataVolume named `NAME-rootdisk` (how to make it is the header's
//! note), cloud-init NoCloud with the login user and key, a masquerade interface on the pod
//! network with the forwarded guest ports, a `readinessProbe` from `[health]`, the stop timeout
//! as the termination grace period — and a `Service` that gives the forwarded ports their host
//! numbers. A test validates the VirtualMachine against KubeVirt's OpenAPI schema with unknown
//! keys refused.

use serde_json::{Value, json};

use crate::def::spec::{HealthCheck, VmSpec};
use crate::types::Protocol;

/// What the objects are made of besides the definition.
#[derive(Debug, Clone)]
pub struct Kube {
    /// The login user and the public keys authorized for it.
    pub user: String,
    pub keys: Vec<String>,
    /// The image provisions through vmctl's credential (debian-12), not cloud-init.
    pub vmctl_provisioned: bool,
}

/// The VirtualMachine alone (what the schema test validates).
pub fn virtual_machine(spec: &VmSpec, k: &Kube) -> Value {
    let name = spec.name.as_str();
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|f| {
            json!({
                "name": port_name(f.guest, f.proto),
                "port": f.guest,
                "protocol": proto(f.proto),
            })
        })
        .collect();
    let mut interface = json!({ "name": "default", "masquerade": {} });
    if !ports.is_empty() {
        interface["ports"] = Value::Array(ports);
    }
    let user_data = format!(
        "#cloud-config\nusers:\n  - name: {}\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    shell: /bin/bash\n    lock_passwd: true\n    ssh_authorized_keys:\n{}ssh_pwauth: false\ndisable_root: true\n",
        k.user,
        k.keys
            .iter()
            .map(|key| format!(
                "      - {}\n",
                serde_json::to_string(key).expect("a string")
            ))
            .collect::<String>()
    );
    let mut vmi_spec = json!({
        "domain": {
            "cpu": { "cores": spec.cpus },
            "memory": { "guest": format!("{}Mi", spec.memory.mib()) },
            "devices": {
                "disks": [
                    { "name": "rootdisk", "disk": { "bus": "virtio" } },
                    { "name": "cloudinitdisk", "disk": { "bus": "virtio" } }
                ],
                "interfaces": [interface]
            }
        },
        "networks": [{ "name": "default", "pod": {} }],
        "terminationGracePeriodSeconds": spec.stop_timeout.as_secs(),
        "volumes": [
            { "name": "rootdisk", "dataVolume": { "name": format!("{name}-rootdisk") } },
            { "name": "cloudinitdisk", "cloudInitNoCloud": { "userData": user_data } }
        ]
    });
    if let Some(h) = &spec.health {
        let mut probe = json!({
            "periodSeconds": h.interval.as_secs(),
            "failureThreshold": h.retries,
        });
        match &h.check {
            HealthCheck::Http { port, path } => {
                probe["httpGet"] = json!({ "port": port, "path": path })
            }
            HealthCheck::Tcp { port } => probe["tcpSocket"] = json!({ "port": port }),
        }
        vmi_spec["readinessProbe"] = probe;
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name, "labels": labels(name) },
        "spec": {
            "runStrategy": if spec.autostart { "Always" } else { "Halted" },
            "template": {
                "metadata": { "labels": labels(name) },
                "spec": vmi_spec
            }
        }
    })
}

fn labels(name: &str) -> Value {
    json!({ "app.kubernetes.io/managed-by": "vmctl", "vmctl.io/vm": name })
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// A port's name: lowercase letters, digits and '-', at most 15 characters (IANA_SVC_NAME).
fn port_name(guest: u16, p: Protocol) -> String {
    format!("{}-{guest}", proto(p).to_ascii_lowercase())
}

/// The Service that forwards the host ports of the definition to the guest's ports.
pub fn service(spec: &VmSpec) -> Option<Value> {
    if spec.ports.is_empty() {
        return None;
    }
    let name = spec.name.as_str();
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|f| {
            json!({
                "name": port_name(f.guest, f.proto),
                "port": f.host,
                "targetPort": f.guest,
                "protocol": proto(f.proto),
            })
        })
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "labels": labels(name) },
        "spec": { "selector": { "vmctl.io/vm": name }, "ports": ports }
    }))
}

/// The YAML stream: a note on the root disk, the VirtualMachine, the Service.
pub fn render(spec: &VmSpec, k: &Kube) -> String {
    let name = spec.name.as_str();
    let mut out = format!(
        "# VM {name}, exported by vmctl for KubeVirt. Its root disk is the DataVolume {name}-rootdisk:\n\
         # upload the VM's disk flattened (`qemu-img convert -O qcow2 disk.qcow2 {name}.qcow2`) with\n\
         # `virtctl image-upload dv {name}-rootdisk --size={} --image-path={name}.qcow2`, or build a\n\
         # containerDisk from it and put `containerDisk: {{image: ...}}` in the rootdisk volume instead.\n",
        spec.disk
    );
    let docs = [Some(virtual_machine(spec, k)), service(spec)];
    for doc in docs.into_iter().flatten() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&doc).expect("JSON values serialize"));
    }
    out
}

/// What the objects do not carry, one line each.
pub fn gaps(spec: &VmSpec, k: &Kube) -> Vec<String> {
    let mut out = super::common_gaps(spec, "KubeVirt");
    if k.vmctl_provisioned {
        out.push("provisioning: vmctl's credential (fw_cfg) has no KubeVirt form and debian-12 runs no cloud-init: the disk keeps what its earlier boots set up (user, keys, host key, app)".into());
    }
    if let Some(h) = &spec.health {
        out.push(format!(
            "[health] start_period ({} s): a readinessProbe has no such grace; failureThreshold and periodSeconds carry the rest",
            h.start_period.as_secs()
        ));
    }
    if spec.ports.iter().any(|f| !f.addr.is_loopback()) {
        out.push("ports bound to other addresses than 127.0.0.1: a ClusterIP Service is reachable in the cluster only".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::config::VmConfig;
    use crate::golden::check as golden;

    fn seed_vm() -> VmSpec {
        let cfg: VmConfig = toml::from_str(
            "cpus = 1\nmemory = \"2G\"\ndisk = \"10G\"\nimage = \"debian-12\"\nports = [\"5022:22\", \"5080:8080\"]\nautostart = true\n[health]\nhttp = \"8080/\"\ninterval = \"10s\"\nretries = 3\n",
        )
        .unwrap();
        crate::def::spec::validate(
            &"web".parse().unwrap(),
            &cfg,
            crate::def::spec::Limits {
                host_memory: 8 << 30,
            },
            "t",
        )
        .unwrap()
    }

    fn kube() -> Kube {
        Kube {
            user: "alice".into(),
            keys: vec!["ssh-ed25519 AAAAC3Nza alice@host".into()],
            vmctl_provisioned: true,
        }
    }

    #[test]
    fn the_seed_vm_as_kubevirt_objects() {
        golden("web-kubevirt.yaml", &render(&seed_vm(), &kube()));
    }

    #[test]
    fn what_does_not_translate_is_named() {
        let g = gaps(&seed_vm(), &kube());
        assert!(g.iter().any(|l| l.starts_with("provisioning:")), "{g:?}");
        assert!(g.iter().any(|l| l.contains("start_period")), "{g:?}");
        let vm = virtual_machine(&seed_vm(), &kube());
        assert_eq!(vm["spec"]["runStrategy"], "Always");
        assert_eq!(
            vm["spec"]["template"]["spec"]["readinessProbe"]["httpGet"]["port"],
            8080
        );
    }
}
