//! VM definitions: the TOML wire format a user writes (`config`, its shape checked before serde
//! reads it by `shape`), the validated spec the rest of
//! vmctl accepts (`spec`), the bounds of its numbers that the command line shares (`bounds`),
//! the store of definitions in the home (`store`: which VMs exist, loading them, who forwards a
//! host port, who uses an image), and the home's private networks (`network`: which exist, their
//! subnets, who joins one at what address), and stack files (`stack`: a stack's networks and VMs,
//! named on the host), shared folders (`mounts`: their text and what the host says of them),
//! and your provisioning scripts (`scripts`).

pub mod app;
pub mod bounds;
pub mod config;
pub mod mounts;
pub mod network;
pub mod scripts;
pub mod shape;
pub mod spec;
pub mod stack;
pub mod store;
