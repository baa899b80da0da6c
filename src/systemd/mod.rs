//! VMs as systemd services: rendering and installing their units (and their networks' and
//! stacks', `netunit`; the metrics endpoint's, `metricsunit`), the generator that makes units from dropped definitions at boot, and the
//! service side of the notify protocol.

pub mod dirs;
pub mod generator;
pub mod install;
pub mod manager;
pub mod metricsunit;
pub mod netunit;
pub mod notify;
pub mod unit;
