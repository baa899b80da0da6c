//! Progress of long work on stderr: a bar (indicatif) when stderr is a terminal, otherwise a
//! plain line at each tenth of the way, so that logs and pipes get a few lines, not a stream of
//! carriage returns. Results stay on stdout (`--json` included).

use std::cell::Cell;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress of one piece of work, in bytes or in percent.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    total: u64,
    tenth: Cell<Option<u64>>,
    /// What `advance` has counted so far.
    done: Cell<u64>,
}

impl Progress {
    /// `total` bytes to go through, e.g. "exporting VM web".
    pub fn bytes(what: &str, total: u64) -> Progress {
        Progress::new(
            what,
            total,
            "{msg}: {bar:30} {bytes}/{total_bytes} ({percent}%, {eta} left)",
        )
    }

    /// Work reported in percent (a QEMU job's progress).
    pub fn percent(what: &str) -> Progress {
        Progress::new(what, 100, "{msg}: {bar:30} {percent}%")
    }

    fn new(what: &str, total: u64, template: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            b.set_message(what.to_string());
            b
        });
        Progress {
            bar,
            what: what.to_string(),
            total,
            tenth: Cell::new(None),
            done: Cell::new(0),
        }
    }

    /// `n` more of the total are done.
    pub fn advance(&self, n: u64) {
        self.done.set(self.done.get() + n);
        self.set(self.done.get());
    }

    /// `inner`, counting what is read from it as done.
    pub fn reading<R: std::io::Read>(&self, inner: R) -> Reading<'_, R> {
        Reading {
            inner,
            progress: self,
        }
    }

    /// How far it is: `done` of the total.
    pub fn set(&self, done: u64) {
        let done = done.min(self.total);
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        let tenth = done * 10 / self.total.max(1);
        if self.tenth.get() != Some(tenth) {
            self.tenth.set(Some(tenth));
            eprintln!("vmctl: {}: {}%", self.what, tenth * 10);
        }
    }

    /// Done: the bar is finished (left on the screen), or the last line says 100%.
    pub fn finish(&self) {
        self.set(self.total);
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Work told in steps (a build script's log lines): on a terminal, a spinner showing the step
/// it is at, with what else was printed kept to be shown should the work fail; elsewhere every
/// line as it comes.
pub struct Steps {
    bar: Option<ProgressBar>,
    steps: u64,
    kept: std::collections::VecDeque<String>,
}

/// How many lines of output `Steps` keeps for a failure's report.
const KEPT: usize = 60;

impl Steps {
    pub fn new(what: &str) -> Steps {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{elapsed}] step {pos}: {wide_msg}",
                )
                .expect("a valid template"),
            );
            b.set_prefix(what.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Steps {
            bar,
            steps: 0,
            kept: Default::default(),
        }
    }

    /// A line of output; when it names a step, `step` is how the spinner says it; the rest is
    /// detail (kept).
    pub fn line(&mut self, text: &str, step: Option<&str>) {
        let Some(b) = &self.bar else {
            eprintln!("{text}");
            return;
        };
        if let Some(step) = step {
            self.steps += 1;
            b.set_position(self.steps);
            b.set_message(step.to_string());
        }
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(text.to_string());
    }

    /// The work ended: the spinner is cleared; on failure the kept lines are printed.
    pub fn finish(&self, ok: bool) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if !ok {
                self.kept.iter().for_each(|l| eprintln!("{l}"));
            }
        }
    }
}

/// A reader whose bytes count as progress.
pub struct Reading<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: std::io::Read> std::io::Read for Reading<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_a_line_is_printed_at_each_tenth_only() {
        // The test's stderr is no terminal: the plain form.
        let p = Progress::bytes("copying", 1000);
        assert!(p.bar.is_none());
        p.set(0);
        assert_eq!(p.tenth.get(), Some(0));
        p.set(99);
        assert_eq!(p.tenth.get(), Some(0), "still the first tenth");
        p.set(450);
        assert_eq!(p.tenth.get(), Some(4));
        p.set(5000);
        assert_eq!(p.tenth.get(), Some(10), "never past the total");
        let q = Progress::percent("snapshot-save");
        q.finish();
        assert_eq!(q.tenth.get(), Some(10));
    }

    #[test]
    fn bytes_read_through_it_count() {
        let p = Progress::bytes("reading", 10);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut p.reading(&b"hello"[..]), &mut out).unwrap();
        std::io::Read::read_to_end(&mut p.reading(&b"world"[..]), &mut out).unwrap();
        assert_eq!((out.len(), p.done.get(), p.tenth.get()), (10, 10, Some(10)));
    }
}
