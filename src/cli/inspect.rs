//! The inspecting commands' handlers: list, status, logs and show-cmd, with the text forms of
//! their results.

use std::fmt::Write;

use crate::cli::args::{JsonArg, NameArg, NameJsonArgs};
use crate::cli::args_guest::LogsArgs;
use crate::cli::output::{Show, show};
use crate::error::Result;
use crate::paths::Home;
use crate::runstate::LastExit;
use crate::vm::inspect::{self as vm_inspect, Status, Summary};

pub fn list(home: &Home, a: JsonArg) -> Result<u8> {
    show(&vm_inspect::list(home), a.json);
    Ok(0)
}

impl Show for Vec<Summary> {
    fn text(&self) -> String {
        let mut out = format!(
            "{:<20} {:<8} {:>4} {:>6} {:>6} {:<8} {:<6} {:>5} PORTS (NETWORKS)\n",
            "NAME", "STATE", "CPUS", "MEM", "DISK", "IMAGE", "ACCEL", "SNAPS"
        );
        for s in self {
            let _ = writeln!(
                out,
                "{:<20} {:<8} {:>4} {:>6} {:>6} {:<8} {:<6} {:>5} {}",
                s.name,
                s.state,
                s.cpus.map(|c| c.to_string()).unwrap_or_default(),
                s.memory.clone().unwrap_or_default(),
                s.disk.clone().unwrap_or_default(),
                s.image.clone().unwrap_or_default(),
                s.accel.clone().unwrap_or_else(|| "-".into()),
                s.snapshots
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.error.clone().unwrap_or_else(|| {
                    let nets: Vec<String> = s.networks.iter().map(|n| n.to_string()).collect();
                    match (s.ports.is_empty(), nets.is_empty()) {
                        (_, true) => s.ports.join(" "),
                        (true, false) => format!("- ({})", nets.join(" ")),
                        (false, false) => format!("{} ({})", s.ports.join(" "), nets.join(" ")),
                    }
                }),
            );
        }
        out
    }
}

pub fn status(home: &Home, a: NameJsonArgs) -> Result<u8> {
    show(&vm_inspect::status(home, &a.name)?, a.json);
    Ok(0)
}

impl Show for Status {
    fn text(&self) -> String {
        let s = self;
        let mut out = format!("VM:      {}\nState:   {}\n", s.name, s.state);
        if let Some(pid) = s.pid {
            let _ = writeln!(out, "PID:     {pid}");
        }
        if let (Some(a), Some(r)) = (&s.accel, &s.accel_reason) {
            let _ = writeln!(out, "Accel:   {a} ({r})");
        }
        if let Some(u) = s.uptime_secs {
            let _ = writeln!(out, "Uptime:  {u} s");
        }
        let _ = writeln!(
            out,
            "Shape:   {} CPU, {} RAM, {} disk, image {} ({})",
            s.cpus, s.memory, s.disk, s.image, s.arch
        );
        let ports = if s.ports.is_empty() {
            "none".into()
        } else {
            s.ports.join(" ")
        };
        let _ = writeln!(out, "Ports:   {ports}");
        if !s.networks.is_empty() {
            let nets: Vec<String> = s
                .networks
                .iter()
                .map(|n| format!("{n} ({})", n.mac))
                .collect();
            let _ = writeln!(out, "Networks: {}", nets.join(", "));
        }
        if let Some(h) = &s.health {
            let streak = match (&h.last_failure, h.failing_streak) {
                (Some(why), n) if n > 0 => format!("; {n} failed in a row, last: {why}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "Health:  {} ({}{streak})", h.status.as_str(), h.check);
        }
        if let Some(p) = &s.provision {
            let _ = writeln!(out, "Provisioning scripts: {}", p.describe());
        }
        if let Some(u) = &s.unit {
            let _ = writeln!(out, "Unit:    {u}");
        }
        if let Some(m) = &s.saved {
            let ago = crate::sys::fsutil::unix_now().saturating_sub(m.saved_at);
            let _ = writeln!(
                out,
                "Saved:   {ago} s ago, {} of state; `vmctl start {}` resumes it",
                crate::types::human_bytes(m.bytes),
                s.name
            );
        }
        let _ = writeln!(out, "Console: {}", s.serial_log);
        if let (None, Some(e)) = (s.pid, &s.last_exit) {
            let _ = writeln!(out, "Last exit: {}", describe_exit(e));
        }
        out
    }
}

/// How QEMU last ended: `QEMU exited with status 0 (stopped by acpi)`.
pub fn describe_exit(e: &LastExit) -> String {
    let how = match (e.code, e.signal) {
        (Some(c), _) => format!("QEMU exited with status {c}"),
        (None, Some(s)) => format!("QEMU was killed by signal {s}"),
        _ => "QEMU ended".into(),
    };
    match &e.stopped_by {
        Some(by) => format!("{how} (stopped by {by})"),
        None => how,
    }
}

pub fn logs(home: &Home, a: LogsArgs) -> Result<u8> {
    vm_inspect::logs(home, &a.name, a.follow, a.provision)?;
    Ok(0)
}

pub fn show_cmd(home: &Home, a: NameArg) -> Result<u8> {
    let argvs = vm_inspect::show_cmd(home, &a.name)?;
    if crate::cli::output::json_mode() {
        crate::cli::output::print_json(&argvs);
        return Ok(0);
    }
    for argv in argvs {
        println!("{}", crate::sys::quote::argv(&argv));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_say_how_and_by_what() {
        let e = |code, signal, by: Option<&str>| LastExit {
            code,
            signal,
            at: 0,
            uptime_secs: 0,
            stopped_by: by.map(str::to_string),
        };
        assert_eq!(
            describe_exit(&e(Some(0), None, Some("acpi"))),
            "QEMU exited with status 0 (stopped by acpi)"
        );
        assert_eq!(
            describe_exit(&e(None, Some(9), None)),
            "QEMU was killed by signal 9"
        );
        assert_eq!(describe_exit(&e(None, None, None)), "QEMU ended");
    }
}
