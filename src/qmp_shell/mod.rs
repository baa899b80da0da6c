//! `vmctl qmp NAME`: the QMP shell, interactive (line editing, completion from the VM's schema,
//! events as they arrive) or for scripts (one JSON reply per line).

pub mod conn;
pub mod parse;
pub mod schema;
pub mod session;
pub mod verbs;
