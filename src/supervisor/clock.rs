//! The watch loop's timers, kept apart from its I/O so their rules are tested: when to give up
//! on a guest that has not passed its health check yet, when the next health probe is due, and
//! what a pause does to both. While the guest's CPUs are stopped (QMP `STOP` until `RESUME`)
//! nothing is due, the paused time does not count toward giving up, and a probe that overlapped
//! a pause says nothing about the guest.

use std::time::Duration;

use tokio::time::Instant;

use crate::def::spec::HealthSpec;
use crate::guest::health;

#[derive(Debug, Clone)]
pub struct Clock {
    /// Time between probes once the guest is up; `None` without a health check.
    interval: Option<Duration>,
    /// When a guest that has not passed yet is given up on; `None` without a health check, or
    /// once given up.
    give_up: Option<Instant>,
    next_probe: Option<Instant>,
    paused_since: Option<Instant>,
    resumed_at: Option<Instant>,
}

impl Clock {
    /// For a VM whose QEMU started at `started`, with its `[health]` check if it has one.
    pub fn new(started: Instant, health: Option<&HealthSpec>) -> Clock {
        Clock {
            interval: health.map(|h| h.interval),
            give_up: health.map(|h| started + health::give_up_after(h)),
            next_probe: None,
            paused_since: None,
            resumed_at: None,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// QMP `STOP` at `now`: true when it begins a pause (another `STOP` changes nothing).
    pub fn pause(&mut self, now: Instant) -> bool {
        if self.paused_since.is_some() {
            return false;
        }
        self.paused_since = Some(now);
        true
    }

    /// QMP `RESUME` at `now`: true when it ends a pause. The paused time moves the give-up
    /// deadline; a guest that is up (`ready`) is probed an interval from now.
    pub fn resume(&mut self, now: Instant, ready: bool) -> bool {
        let Some(since) = self.paused_since.take() else {
            return false;
        };
        if let Some(g) = &mut self.give_up {
            *g += now.saturating_duration_since(since);
        }
        self.resumed_at = Some(now);
        if ready {
            self.schedule_probe(now);
        }
        true
    }

    /// When to give up on a guest that is not up yet: never while paused, once given up, or
    /// without a health check.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.give_up.filter(|_| !self.is_paused())
    }

    pub fn gave_up(&mut self) {
        self.give_up = None;
    }

    /// The guest passed (or a probe was judged): the next probe is due an interval from `now`.
    pub fn schedule_probe(&mut self, now: Instant) {
        self.next_probe = self.interval.map(|i| now + i);
    }

    /// When the next probe is due: none while paused or while one is running.
    pub fn probe_at(&self) -> Option<Instant> {
        self.next_probe.filter(|_| !self.is_paused())
    }

    /// A probe starts: none is due until it is judged.
    pub fn probe_started(&mut self) {
        self.next_probe = None;
    }

    /// Whether a probe started at `started` and done now counts: not while paused, and not if a
    /// pause ended after it started (`RESUME` scheduled the next one).
    pub fn probe_counts(&self, started: Instant) -> bool {
        !self.is_paused() && self.resumed_at.is_none_or(|r| started >= r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::spec::HealthCheck;

    fn health() -> HealthSpec {
        HealthSpec {
            check: HealthCheck::Tcp { port: 22 },
            interval: Duration::from_secs(10),
            retries: 3,
            start_period: Duration::from_secs(60),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn without_a_health_check_nothing_is_ever_due() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, None);
        assert_eq!(c.give_up_at(), None);
        c.schedule_probe(t0);
        assert_eq!(c.probe_at(), None);
        assert!(c.pause(t0) && c.resume(t0 + secs(5), true));
        assert_eq!((c.give_up_at(), c.probe_at()), (None, None));
    }

    #[test]
    fn the_guest_is_given_up_on_after_the_start_period_and_retries_unless_paused() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, Some(&health()));
        // 60 s start period + 3 × 10 s.
        assert_eq!(c.give_up_at(), Some(t0 + secs(90)));
        assert!(c.pause(t0 + secs(20)));
        assert!(!c.pause(t0 + secs(25)), "a second STOP is no new pause");
        assert_eq!(c.give_up_at(), None, "no giving up while paused");
        assert!(c.resume(t0 + secs(50), false));
        assert!(!c.resume(t0 + secs(51), false), "a RESUME without a pause");
        assert_eq!(
            c.give_up_at(),
            Some(t0 + secs(120)),
            "the 30 s paused do not count"
        );
        assert_eq!(c.probe_at(), None, "a guest that is not up is not probed");
        c.gave_up();
        assert_eq!(c.give_up_at(), None);
    }

    #[test]
    fn probes_follow_the_interval_and_a_pause_voids_the_one_it_overlapped() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, Some(&health()));
        c.schedule_probe(t0 + secs(3)); // the guest came up
        assert_eq!(c.probe_at(), Some(t0 + secs(13)));
        c.probe_started();
        assert_eq!(c.probe_at(), None, "one probe at a time");
        let started = t0 + secs(13);
        assert!(c.probe_counts(started));
        assert!(c.pause(t0 + secs(14)));
        assert!(!c.probe_counts(started), "judged while paused");
        assert!(c.resume(t0 + secs(20), true));
        assert!(!c.probe_counts(started), "it overlapped the pause");
        assert!(c.probe_counts(t0 + secs(21)));
        assert_eq!(
            c.probe_at(),
            Some(t0 + secs(30)),
            "RESUME schedules the next"
        );
        assert!(c.pause(t0 + secs(25)));
        assert_eq!(c.probe_at(), None, "nothing is due while paused");
    }
}
