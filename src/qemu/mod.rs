//! Talking to QEMU: the command line (one pure renderer), qemu-img for disks, the QMP client,
//! the control socket that one-shot commands share, the polite stop, and the guest's state to
//! a file and back.

pub mod argv;
pub mod control;
pub mod img;
pub mod qmp;
pub mod save;
pub mod shutdown;
