//! Operating-system primitives with no knowledge of VMs: files that stay whole (atomic writes,
//! locks, temporary directories), processes vmctl does not necessarily own, descriptors handed
//! to another process (`fdpass`), what /proc says of a process (`procfs`), the async runtime
//! vmctl's short commands run on, and POSIX quoting of the command lines it prints.

pub mod child;
pub mod fdpass;
pub mod fsutil;
pub mod process;
pub mod procfs;
pub mod quote;
pub mod rt;
