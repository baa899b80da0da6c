//! `vmctl-generator`: VMs that start at boot because a definition was dropped in place, in the
//! manner of Podman's Quadlet. The vmctl binary runs as a systemd generator
//! (systemd.generator(7)) when it is invoked as `vmctl-generator`: `vmctl systemd
//! install-generator` links `/etc/systemd/system-generators/vmctl-generator` (or
//! `user-generators/`) to it, and systemd runs it at boot and at every `daemon-reload` with its
//! output directories as arguments.
//!
//! It reads two kinds of definitions ([`find`](find::find)):
//! - drop-ins, `/etc/vmctl/vms/NAME.toml` (`~/.config/vmctl/vms/NAME.toml` for a user manager):
//!   each gets a unit whose `ExecStartPre=vmctl create NAME --from FILE --update` creates the VM
//!   in the home from the file, or brings its definition up to date, before `vmctl run`;
//! - VMs of the home (`/var/lib/vmctl`, or the user's home) whose `vm.toml` says
//!   `autostart = true`, and the home VMs those are ordered after (`after = [...]`).
//!
//! [`plan`](plan::plan) is pure: definitions in, unit texts (rendered by
//! [`render`](crate::systemd::unit::render), the templates of
//! `vmctl systemd generate`) and problems out. Units go to the normal directory
//! (`/run/systemd/generator`), below `/etc/systemd/system` in systemd's search order; a VM with a
//! unit installed there is left to that unit. `autostart = true` adds the `.wants` link of
//! `multi-user.target` (`default.target`). A generator must be quick, talk to no other process
//! and never fail the boot: a bad definition is logged (to `/dev/kmsg` when systemd runs it, else
//! stderr) with its file and problem, and skipped; the exit status is always 0.
//!
//! `find` reads the definitions, `plan` decides, `run` is the generator process and `link` puts
//! it in place (`vmctl systemd install-generator`).

pub mod find;
pub mod link;
pub mod plan;
pub mod run;
