//! Other engines' forms of a VM, for `vmctl export --format`: pure renderers from what the VM
//! is made of to a libvirt domain (`libvirt`) and to KubeVirt objects (`kubevirt`),
//! golden-tested; what a form cannot carry is listed, never dropped silently.

pub mod kubevirt;
pub mod libvirt;
