//! Terminal widgets with no knowledge of VMs or QMP: the line editor the QMP shell uses, and the
//! progress of long work (`progress`).

pub mod lineedit;
pub mod progress;
