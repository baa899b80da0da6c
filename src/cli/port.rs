//! `vmctl port add|rm|list`'s handlers: a forward changed now (a running VM) and at every
//! start, with a note when a drop-in file defines the VM and so has the last word.

use crate::cli::args::{NameJsonArgs, PortArgs};
use crate::cli::output::{Show, done, show};
use crate::error::Result;
use crate::paths::Home;
use crate::vm::ports::{self as vm_ports, Changed, PortState};
use serde_json::json;

pub fn add(home: &Home, a: PortArgs) -> Result<u8> {
    let c = vm_ports::add(home, &a.name, a.spec)?;
    let line = format!("VM {} forwards {}{}", c.name, c.spec, when(&c));
    let subject = json!({"vm": c.name.as_str(), "port": c.spec.to_string()});
    done("port added", subject, &[line]);
    if let Some(f) = &c.defined_by {
        eprintln!(
            "Note: {} defines VM {} and is applied at each start: add \"{}\" to `ports` there to keep this forward",
            f.display(),
            c.name,
            c.spec
        );
    }
    Ok(0)
}

pub fn rm(home: &Home, a: PortArgs) -> Result<u8> {
    let c = vm_ports::rm(home, &a.name, a.spec)?;
    let line = format!("VM {} no longer forwards {}{}", c.name, c.spec, when(&c));
    let subject = json!({"vm": c.name.as_str(), "port": c.spec.to_string()});
    done("port removed", subject, &[line]);
    if let Some(f) = &c.defined_by {
        eprintln!(
            "Note: {} defines VM {} and is applied at each start: remove \"{}\" from `ports` there, or the forward comes back",
            f.display(),
            c.name,
            c.spec
        );
    }
    Ok(0)
}

/// When a port change takes effect.
fn when(c: &Changed) -> &'static str {
    match (c.live, &c.defined_by) {
        (true, Some(_)) => " (now, until the VM stops)",
        (true, None) => " (now, and at every start)",
        (false, _) => " (from the next start)",
    }
}

pub fn list(home: &Home, a: NameJsonArgs) -> Result<u8> {
    show(&vm_ports::list(home, &a.name)?, a.json);
    Ok(0)
}

impl Show for Vec<PortState> {
    fn text(&self) -> String {
        let mut out = format!("{:<28} {:<5} ACTIVE\n", "FORWARD", "PROTO");
        for p in self {
            out.push_str(&format!(
                "{:<28} {:<5} {}\n",
                format!("{}:{} -> {}", p.addr, p.host, p.guest),
                p.proto,
                match p.active {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
            ));
        }
        out
    }
}
