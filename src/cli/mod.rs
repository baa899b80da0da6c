//! The command line: clap's arguments (`args`), the dispatch table that sends each subcommand to
//! its handler (`dispatch`), one room of handlers per group of commands, and how their results
//! are shown (`output`: text for people or JSON for scripts, decided once).

pub mod app;
pub mod archive;
pub mod args;
pub mod args_guest;
pub mod args_net;
pub mod args_observe;
pub mod args_shell;
pub mod args_state;
pub mod complete;
pub mod connect;
pub mod disk;
pub mod dispatch;
pub mod doctor;
pub mod image;
pub mod inspect;
pub mod lifecycle;
pub mod network;
pub mod observe;
pub mod output;
pub mod port;
pub mod snapshot;
pub mod stack;
pub mod systemd;
