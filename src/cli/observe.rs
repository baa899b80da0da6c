//! `vmctl stats` (what each VM uses, once or redrawn), `vmctl events` (what happens to them, as
//! it happens) and `vmctl metrics` (their use for Prometheus, served over HTTP).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::cli::args_observe::{EventsArgs, MetricsArgs, StatsArgs};
use crate::cli::output::{Show, json_mode, show};
use crate::error::Result;
use crate::paths::Home;
use crate::types::human_bytes;
use crate::vm::stats::{self as vm_stats, VmStats};

pub fn stats(home: &Home, a: StatsArgs) -> Result<u8> {
    let every = Duration::from_secs_f64(a.interval);
    let mut before = vm_stats::sample(home, &a.names)?;
    let mut at = Instant::now();
    let redraw = a.watch && std::io::stdout().is_terminal() && !json_mode();
    loop {
        // The interval CPU % is measured over (a sampling period, not a wait for something).
        std::thread::sleep(every);
        let mut now = vm_stats::sample(home, &a.names)?;
        vm_stats::fill_cpu_percent(&before, &mut now, at.elapsed().as_secs_f64());
        at = Instant::now();
        if redraw {
            // Home and clear, as `top` does.
            print!("\x1b[H\x1b[2J");
        }
        if a.watch && json_mode() {
            // One document per line, so that a reader can take each sample as it comes.
            println!("{}", serde_json::to_string(&now).expect("JSON"));
        } else {
            show(&now, false);
        }
        if !a.watch {
            return Ok(0);
        }
        before = now;
    }
}

impl Show for Vec<VmStats> {
    fn text(&self) -> String {
        let opt = |b: Option<u64>| b.map_or("-".into(), human_bytes);
        let mut out = format!(
            "{:<16} {:<8} {:>6} {:>6} {:>10} {:>10} {:>21} {:>10} {:>10} {:>8} {:>4} {}\n",
            "NAME",
            "STATE",
            "CPU%",
            "VCPU%",
            "RSS",
            "MEMORY",
            "DISK (USED/SIZE)",
            "READ",
            "WRITTEN",
            "UPTIME",
            "RST",
            "HEALTH"
        );
        for s in self {
            let disk = format!(
                "{}/{}",
                human_bytes(s.disk_allocated_bytes),
                human_bytes(s.disk_virtual_bytes)
            );
            out.push_str(&format!(
                "{:<16} {:<8} {:>6} {:>6} {:>10} {:>10} {:>21} {:>10} {:>10} {:>8} {:>4} {}\n",
                s.name,
                s.state,
                s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                s.vcpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                opt(s.rss_bytes),
                human_bytes(s.memory_bytes),
                disk,
                opt(s.disk_read_bytes),
                opt(s.disk_written_bytes),
                s.uptime_secs.map_or("-".into(), uptime),
                s.restarts,
                s.health.as_deref().unwrap_or("-"),
            ));
        }
        out
    }
}

/// `3d4h`, `2h05m`, `4m07s`, `12s`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

pub fn events(home: &Home, a: EventsArgs) -> Result<u8> {
    let wanted =
        |e: &crate::events::Event| a.names.is_empty() || a.names.iter().any(|n| n.as_str() == e.vm);
    let mut out = std::io::stdout().lock();
    let mut follow = crate::events::Follower::open(&home.events_log(), a.all);
    if a.no_follow && json_mode() {
        // A listing, not a stream: one document.
        let recorded: Vec<_> = follow
            .next_events()
            .into_iter()
            .filter(|e| wanted(e))
            .collect();
        crate::cli::output::print_json(&recorded);
        return Ok(0);
    }
    loop {
        for e in follow.next_events().into_iter().filter(|e| wanted(e)) {
            let line = if json_mode() {
                serde_json::to_string(&e).expect("JSON")
            } else {
                e.line()
            };
            // A reader that went away (`| head`) ends the command.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(0);
            }
        }
        if a.no_follow {
            return Ok(0);
        }
        follow.wait();
    }
}

pub fn metrics(home: &Home, a: MetricsArgs) -> Result<u8> {
    let addr = crate::metrics::serve::parse_listen(&a.listen)?;
    crate::metrics::serve::serve(home, addr, |local| {
        eprintln!("vmctl: serving the VMs' metrics on http://{local}/metrics");
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_like_top() {
        assert_eq!(uptime(12), "12s");
        assert_eq!(uptime(247), "4m07s");
        assert_eq!(uptime(7500), "2h05m");
        assert_eq!(uptime(3 * 86400 + 4 * 3600), "3d4h");
    }
}
