//! Shared folders: a host directory in the guest over virtio-fs. `virtiofsd` renders the
//! command line of the daemon that serves one share (a pure function) and runs it beside QEMU,
//! as the directory's owner, in user and mount namespaces of its own with the directory as its
//! root.

pub mod virtiofsd;
