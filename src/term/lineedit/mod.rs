//! The interactive QMP shell's line editor: one line edited in place, a history file, Tab
//! completion, reverse search, and messages (QMP events) printed above the prompt the moment they
//! arrive, also while a half-typed line waits.
//!
//! The pure parts (bytes to keys, editing, layout of the visible part, history, search) are unit
//! tested in their files; the terminal part (raw mode, poll, printing above the prompt) is driven
//! through a pseudo-terminal by the QMP shell's integration test.

pub mod editor;
pub mod history;
pub mod keys;
pub mod layout;
pub mod line;
pub mod state;
pub mod tty;
