//! Your own WSGI app (`[app]`, `def::app`) on its way into the guest: `bundle` packs its
//! directory, its wheels and its settings into one deterministic tar (the VM keeps the last one
//! as `app.tar`, attached at each boot as a read-only disk the guest installs from), and
//! `deploy` ships a new one to a running VM over SSH, where the guest's installer switches
//! releases and reloads gunicorn gracefully (`vmctl app deploy`).

pub mod bundle;
pub mod deploy;
