//! Terminal widgets with no knowledge of VMs or QMP: the line editor the QMP shell uses.

pub mod lineedit;
