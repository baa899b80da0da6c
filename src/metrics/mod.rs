//! `vmctl metrics`: the VMs of a home for Prometheus — their samples (`vm::stats`) in the text
//! exposition format (`exposition`, a pure renderer), served over HTTP (`serve`) on loopback
//! unless an address is named.

pub mod exposition;
pub mod serve;
