//! Talking to QEMU: the command line (one pure renderer), qemu-img for disks, the QMP client,
//! the control socket that one-shot commands share, and the polite stop.

pub mod argv;
pub mod control;
pub mod img;
pub mod qmp;
pub mod shutdown;
