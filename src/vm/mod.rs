//! The VM commands: lifecycle (create, start, stop, pause, rm, inspect), snapshots and port
//! forwards. Each takes the VM's lock for what it changes and returns data for `cli` to print.

pub mod lifecycle;
pub mod ports;
pub mod snapshot;
