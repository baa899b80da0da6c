//! Other engines' forms of a VM, for `vmctl export --format`: pure renderers from what the VM
//! is made of to a libvirt domain (`libvirt`), KubeVirt objects (`kubevirt`) and a Nomad job
//! (`nomad`), golden-tested; what a form cannot carry is listed, never dropped silently.

pub mod kubevirt;
pub mod libvirt;
pub mod nomad;

use crate::def::spec::{OnHostShutdown, VmSpec};

/// What no other engine's form carries: vmctl's private networks, its shared folders, and
/// saving the guest when the host shuts down. `engine` names the target in the lines.
pub fn common_gaps(spec: &VmSpec, engine: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !spec.networks.is_empty() {
        out.push(format!(
            "networks: vmctl's private networks have no {engine} form here; only the first NIC is exported"
        ));
    }
    if !spec.mounts.is_empty() {
        out.push("mounts: shared folders are left out".into());
    }
    if spec.on_host_shutdown == OnHostShutdown::Save {
        out.push(format!(
            "on_host_shutdown = \"save\": {engine} does not save the guest when its host shuts down"
        ));
    }
    out
}
