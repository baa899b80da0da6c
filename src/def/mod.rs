//! VM definitions: the TOML wire format a user writes (`config`), the validated spec the rest of
//! vmctl accepts (`spec`), and the store of definitions in the home (`store`: which VMs exist,
//! loading them, who forwards a host port).

pub mod bounds;
pub mod config;
pub mod spec;
pub mod store;
