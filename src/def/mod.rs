//! VM definitions: the TOML wire format a user writes (`config`), the validated spec the rest of
//! vmctl accepts (`spec`), the bounds of its numbers that the command line shares (`bounds`),
//! the store of definitions in the home (`store`: which VMs exist, loading them, who forwards a
//! host port, who uses an image), and the home's private networks (`network`: which exist, their
//! subnets, who joins one at what address).

pub mod bounds;
pub mod config;
pub mod network;
pub mod spec;
pub mod store;
