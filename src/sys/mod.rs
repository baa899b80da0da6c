//! Operating-system primitives with no knowledge of VMs: files that stay whole (atomic writes,
//! locks, temporary directories), processes vmctl does not necessarily own, and the async
//! runtime vmctl's short commands run on.

pub mod fsutil;
pub mod process;
pub mod quote;
pub mod rt;
