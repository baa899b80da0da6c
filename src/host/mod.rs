//! This machine: facts probed once and explicitly (architecture, kernel, RAM, QEMU binaries,
//! what /dev/kvm answers), the accelerator chosen from them with its reason, and the report
//! `vmctl doctor` prints.

pub mod accel;
pub mod doctor;
pub mod facts;
pub mod qemu_user;
