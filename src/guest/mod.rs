//! What vmctl does inside the guest and asks of it: provisioning (the login user, keys, the
//! app) through a typed credential, passed as a systemd credential or rendered into a
//! cloud-init seed; your provisioning scripts' run, followed on the console; SSH access with a
//! pinned host key; the readiness and health probes that ask the guest itself whether it is
//! up; and the guest agent, which sets a resumed guest's clock.

pub mod agent;
pub mod cloudinit;
pub mod cloudmerge;
pub mod credential;
pub mod health;
pub mod provision;
pub mod scripts;
pub mod ssh;
