//! `vmctl up|down|ps`'s handlers: the stack file read and checked, then what was done to each
//! VM, as text or JSON.

use std::time::Duration;

use crate::cli::args_net::{DownArgs, StackFileArg, StackJsonArgs, UpArgs};
use crate::cli::output::{Show, show};
use crate::def::stack::{self, Stack};
use crate::error::Result;
use crate::paths::Home;
use crate::vm::stack::{self as vm_stack, Down, PsRow, Up};

fn load(a: &StackFileArg) -> Result<Stack> {
    stack::load(&a.file, crate::def::store::limits())
}

pub fn up(home: &Home, a: UpArgs) -> Result<u8> {
    let s = load(&a.stack)?;
    let done = vm_stack::up(home, &s, &a.vms, Duration::from_secs(a.timeout))?;
    show(&done, a.json);
    Ok(0)
}

pub fn down(home: &Home, a: DownArgs) -> Result<u8> {
    let s = load(&a.stack)?;
    show(&vm_stack::down(home, &s, a.rm)?, a.json);
    Ok(0)
}

pub fn ps(home: &Home, a: StackJsonArgs) -> Result<u8> {
    let s = load(&a.stack)?;
    show(&vm_stack::ps(home, &s), a.json);
    Ok(0)
}

impl Show for Up {
    fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.networks_created {
            out.push_str(&format!("Created network {n}\n"));
        }
        for v in &self.vms {
            let ready = v
                .ready_seconds
                .map(|s| format!(", ready after {s:.1} s"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<24} {}; {}{ready}\n",
                v.name, v.definition, v.state
            ));
        }
        out.push_str(&format!("Stack {} is up\n", self.stack));
        out
    }
}

impl Show for Down {
    fn text(&self) -> String {
        let mut out = String::new();
        for v in &self.vms {
            out.push_str(&format!("{:<24} {}\n", v.name, v.state));
        }
        for n in &self.networks_removed {
            out.push_str(&format!("Removed network {n}\n"));
        }
        out.push_str(&format!("Stack {} is down\n", self.stack));
        out
    }
}

impl Show for Vec<PsRow> {
    fn text(&self) -> String {
        let mut out = format!(
            "{:<24} {:<12} {:<12} {:<8} {:<24} NETWORKS\n",
            "NAME", "SERVICE", "STATE", "PID", "PORTS"
        );
        for r in self {
            out.push_str(&format!(
                "{:<24} {:<12} {:<12} {:<8} {:<24} {}\n",
                r.name,
                r.service,
                r.state,
                r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if r.ports.is_empty() {
                    "-".to_string()
                } else {
                    r.ports.join(",")
                },
                if r.networks.is_empty() {
                    "-".to_string()
                } else {
                    r.networks.join(", ")
                }
            ));
        }
        out
    }
}
