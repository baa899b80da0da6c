//! The VM commands, one room each: create (and update from a drop-in), start, stop, suspend
//! (save the guest's state, or discard it), control (pause, resume, reset), rm, inspect (list, status, logs, show-cmd), snapshots and port
//! forwards. Each takes the VM's lock for what it changes and returns data for `cli` to print;
//! only `cli` imports this folder.

pub mod archive;
pub mod clone;
pub mod console;
pub mod control;
pub mod copy;
pub mod create;
pub mod disk;
pub mod export;
pub mod import;
pub mod inspect;
pub mod network;
pub mod order;
pub mod ports;
pub mod rm;
pub mod snapshot;
pub mod stack;
pub mod start;
pub mod stats;
pub mod stop;
pub mod suspend;
pub mod translate;
