//! `vmctl snapshot create|list|revert|delete`'s handlers.

use crate::cli::args::{NameJsonArgs, RevertArgs, SnapshotCreateArgs, TagArgs};
use crate::cli::output::{Show, done, show};
use crate::error::Result;
use crate::paths::Home;
use crate::types::human_bytes;
use crate::vm::snapshot::{self as vm_snapshot, Done, Snapshot};
use serde_json::json;

pub fn create(home: &Home, a: SnapshotCreateArgs) -> Result<u8> {
    let d = vm_snapshot::create(home, &a.name, a.tag)?;
    let line = format!("Created snapshot {} of VM {} ({})", d.tag, d.name, how(&d));
    done(
        "snapshot created",
        json!({"vm": d.name.to_string(), "tag": d.tag.to_string()}),
        &[line],
    );
    Ok(0)
}

pub fn list(home: &Home, a: NameJsonArgs) -> Result<u8> {
    show(&vm_snapshot::list(home, &a.name)?, a.json);
    Ok(0)
}

impl Show for Vec<Snapshot> {
    fn text(&self) -> String {
        let mut out = format!(
            "{:<24} {:>9}  {:<20}  VM CLOCK\n",
            "TAG", "VM STATE", "DATE (UTC)"
        );
        for s in self {
            out.push_str(&format!(
                "{:<24} {:>9}  {:<20}  {}\n",
                s.tag,
                human_bytes(s.vm_state_size),
                s.date,
                s.vm_clock
            ));
        }
        out
    }
}

pub fn revert(home: &Home, a: RevertArgs) -> Result<u8> {
    let d = vm_snapshot::revert(home, &a.name, &a.tag, a.force)?;
    let line = format!("Reverted VM {} to snapshot {} ({})", d.name, d.tag, how(&d));
    done(
        "snapshot reverted",
        json!({"vm": d.name.to_string(), "tag": d.tag.to_string()}),
        &[line],
    );
    Ok(0)
}

pub fn delete(home: &Home, a: TagArgs) -> Result<u8> {
    let d = vm_snapshot::delete(home, &a.name, &a.tag)?;
    let line = format!("Deleted snapshot {} of VM {} ({})", d.tag, d.name, how(&d));
    done(
        "snapshot deleted",
        json!({"vm": d.name.to_string(), "tag": d.tag.to_string()}),
        &[line],
    );
    Ok(0)
}

/// How long it took, and what was snapshotted.
fn how(d: &Done) -> String {
    format!(
        "{:.1} s, {}",
        d.seconds,
        if d.live {
            "live: disk and RAM"
        } else {
            "stopped VM: disk only"
        }
    )
}
