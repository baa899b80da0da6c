//! The guest's networks. Its first NIC, when it may not reach the host (the default): passt,
//! which gives the guest the network QEMU's user networking would (10.0.2.15, gateway 10.0.2.2,
//! DNS 10.0.2.3) with the gateway not mapped to the host's loopback, and binds the VM's
//! forwards. `passt` renders its command line, `sockets` reads which forwards are bound, `link`
//! runs it beside QEMU (and replaces it when the forwards change) and `state` is what the
//! running one forwards, as `net.json` tells `vmctl port`. Its other NICs, on private networks
//! between VMs: `switch` is a network's Ethernet switch (a process of its own), `attach` hands
//! it the VM's NICs and gives them to a new switch should it go away.

pub mod attach;
pub mod link;
pub mod passt;
pub mod sockets;
pub mod state;
pub mod switch;
