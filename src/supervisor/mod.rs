//! `vmctl run NAME`: the process that owns a running QEMU, from the launch plan to the exit
//! record. `run` holds the phases of its life, `plan` what QEMU is started with, `launch` what
//! it is handed at exec (descriptors, not paths; the user it runs as), `watch` the loop that
//! follows QEMU until it exits (with `clock`, its timers), `save` the stop that saves the guest
//! instead of powering it off, and `handshake` the line it tells a waiting `vmctl start`.

pub mod clock;
pub mod handshake;
pub mod launch;
pub mod plan;
pub mod run;
pub mod save;
pub mod watch;
