//! Terminal widgets with no knowledge of VMs or QMP.

pub mod lineedit;
