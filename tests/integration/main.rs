//! The one integration-test binary: drives the built `vmctl` against real QEMU (TCG), real
//! qemu-img and the tiny guest built from Debian packages.

mod accel;
mod app_deploy;
mod bad_input;
mod bad_input_suite;
mod console;
mod crash;
mod disk;
mod engines;
mod events;
mod generator;
mod harness;
mod image_import;
mod json_output;
mod lifecycle;
mod metrics;
mod network;
mod nspawn;
mod package;
mod ports;
mod provision;
mod qmp_shell;
mod security;
mod shares;
mod shell;
mod snapshot;
mod stacks;
mod suspend;
mod systemd_e2e;
mod systemd_hardened;
mod systemd_units;
mod vm_networks;
mod vps;
