//! A process's CPU time and memory from /proc: the whole process, and the threads whose names
//! start with a prefix (QEMU, run with `debug-threads=on`, names its vCPU threads `CPU 0/TCG`,
//! `CPU 1/KVM`, ...). Read for `vmctl stats` and the metrics endpoint; no process is touched.

use std::path::Path;

/// CPU time in seconds (user + system) and resident memory of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// The whole process: every thread, QEMU's I/O and main loop included.
    pub cpu_seconds: f64,
    /// The threads named with the prefix asked for (the guest's vCPUs).
    pub thread_seconds: f64,
    pub rss_bytes: u64,
}

/// The clock ticks per second /proc counts CPU time in.
fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// `pid`'s usage, or `None` once it is gone.
pub fn usage(pid: i32, thread_prefix: &str) -> Option<Usage> {
    let dir = Path::new("/proc").join(pid.to_string());
    let tick = ticks_per_second();
    let (utime, stime) = cpu_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let rss_bytes = rss_bytes(&std::fs::read_to_string(dir.join("status")).ok()?).unwrap_or(0);
    let mut thread_ticks = 0;
    if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(thread_prefix) {
                continue;
            }
            if let Some((u, s)) = std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| cpu_ticks(&s))
            {
                thread_ticks += u + s;
            }
        }
    }
    Some(Usage {
        cpu_seconds: (utime + stime) as f64 / tick,
        thread_seconds: thread_ticks as f64 / tick,
        rss_bytes,
    })
}

/// `utime` and `stime` (fields 14 and 15) of a `stat` line. The command name, field 2, is in
/// parentheses and may hold spaces and parentheses itself: the fields are counted after the
/// last `)`.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is the 12th here.
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// `VmRSS` of a `status` file, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_last_parenthesis_of_the_name() {
        let stat =
            "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn resident_memory_is_in_kibibytes() {
        let status = "Name:\tqemu\nVmPeak:\t 9000 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(rss_bytes(status), Some(2 * 1024 * 1024));
        assert_eq!(rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id() as i32;
        let u = usage(me, "no thread is named this").unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
        assert_eq!(u.thread_seconds, 0.0);
        assert!(usage(i32::MAX, "").is_none(), "no such process");
    }
}
