//! `vmctl run NAME`: the process that owns a running QEMU, from the launch plan to the exit
//! record.

pub mod run;
