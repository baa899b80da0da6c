//! Your provisioning scripts as the host follows them. The guest's runner (`vmctl-scripts`, see
//! `image::payload::SCRIPTS_RUNNER`) prints each line a script writes as `vmctl-script N: LINE`
//! and ends with `vmctl-scripts: done` or `vmctl-scripts: script N (MODE) failed with exit code
//! X`, on the serial console (whatever prefix the guest's console adds). [`Follower`] reads
//! those lines from the VM's serial log as QEMU writes it, keeps the scripts' output in the VM's
//! `provision.log` (which outlives the serial log's rotation at each start: `vmctl logs NAME
//! --provision`) and says how the run ended; the supervisor waits for that before it calls the
//! guest up, and records a failure in `state.json`, which `start --wait` reports.

use std::collections::VecDeque;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::paths::VmPaths;
use crate::sys::fsutil;

/// How often the serial log is read for new lines.
const POLL: Duration = Duration::from_millis(250);

/// The output lines kept for a failure's report.
pub const TAIL_LINES: usize = 15;

/// One line of the runner's, as found in a console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A script's output line (or the runner's note on it: "running (system)", "already run").
    Output { n: u32, text: &'a str },
    /// Every script ran to exit 0 (now or at an earlier boot).
    Done,
    /// Script `n` exited with `code`; the rest did not run.
    Failed { n: u32, mode: &'a str, code: i32 },
}

/// What the runner said in one console line; `None` for every other line.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(at) = line.find("vmctl-scripts: ") {
        let rest = &line[at + "vmctl-scripts: ".len()..];
        if rest.trim_end() == "done" {
            return Some(Line::Done);
        }
        // "script N (MODE) failed with exit code X"
        let rest = rest.strip_prefix("script ")?;
        let (n, rest) = rest.split_once(" (")?;
        let (mode, rest) = rest.split_once(") failed with exit code ")?;
        return Some(Line::Failed {
            n: n.parse().ok()?,
            mode,
            code: rest.trim_end().parse().ok()?,
        });
    }
    let at = line.find("vmctl-script ")?;
    let rest = &line[at + "vmctl-script ".len()..];
    let (n, text) = rest.split_once(": ").or_else(|| rest.split_once(':'))?;
    Some(Line::Output {
        n: n.parse().ok()?,
        text,
    })
}

/// How the scripts' run stands, as `state.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum ScriptsState {
    /// Not done yet.
    Running,
    Done,
    /// Script `script` (1-based) failed; `tail` is the end of its output.
    Failed {
        script: u32,
        mode: String,
        code: i32,
        tail: Vec<String>,
    },
}

impl ScriptsState {
    /// One line for `vmctl status` and the service manager's status.
    pub fn describe(&self) -> String {
        match self {
            ScriptsState::Running => "running".into(),
            ScriptsState::Done => "done".into(),
            ScriptsState::Failed {
                script, mode, code, ..
            } => format!("script {script} ({mode}) failed with exit code {code}"),
        }
    }
}

/// Reads the runner's lines from the serial log as they come.
pub struct Follower {
    serial: PathBuf,
    log: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

impl Follower {
    /// Follow `paths`' serial log from its start (the supervisor rotated it before QEMU).
    pub fn new(paths: &VmPaths) -> Follower {
        Follower {
            serial: paths.serial_log(),
            log: paths.provision_log(),
            offset: 0,
            partial: Vec::new(),
            tail: VecDeque::new(),
        }
    }

    /// Wait until the runner says how its run ended.
    pub async fn outcome(&mut self) -> ScriptsState {
        loop {
            if let Some(end) = self.read_new() {
                return end;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Read what the console wrote since the last call; the outcome once it is there.
    fn read_new(&mut self) -> Option<ScriptsState> {
        let mut f = fsutil::open_read(&self.serial).ok()?;
        let len = f.metadata().ok()?.len();
        if len < self.offset {
            self.offset = 0; // rotated
            self.partial.clear();
        }
        f.seek(std::io::SeekFrom::Start(self.offset)).ok()?;
        let mut buf = Vec::new();
        f.take(1 << 20).read_to_end(&mut buf).ok()?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut kept = Vec::new();
        let mut end = None;
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&raw);
            match parse(&text) {
                Some(Line::Output { n, text }) if text != "already run" => {
                    let line = format!("script {n}: {text}");
                    self.tail.push_back(line.clone());
                    if self.tail.len() > TAIL_LINES {
                        self.tail.pop_front();
                    }
                    kept.push(line);
                }
                Some(Line::Done) if end.is_none() => end = Some(ScriptsState::Done),
                Some(Line::Failed { n, mode, code }) if end.is_none() => {
                    kept.push(format!("script {n} ({mode}) failed with exit code {code}"));
                    end = Some(ScriptsState::Failed {
                        script: n,
                        mode: mode.to_string(),
                        code,
                        tail: self.tail.iter().cloned().collect(),
                    });
                }
                _ => {}
            }
        }
        // A console line without its end yet is kept; one that never ends is not kept forever.
        if self.partial.len() > 64 * 1024 {
            self.partial.clear();
        }
        if !kept.is_empty() {
            self.keep(&kept);
        }
        end
    }

    /// Append lines to `provision.log` (a log: lost lines are logged, not fatal).
    fn keep(&self, lines: &[String]) {
        let r = fsutil::open_append(&self.log).and_then(|mut f| {
            let at = fsutil::unix_now();
            let text: String = lines.iter().map(|l| format!("{at} {l}\n")).collect();
            f.write_all(text.as_bytes())
                .map_err(|e| crate::error::Error::Io {
                    context: format!("Cannot write {}", self.log.display()),
                    source: e,
                })
        });
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_lines_are_found_behind_any_console_prefix() {
        assert_eq!(
            parse("[   12.5] scripts[312]: vmctl-script 2: hello world\r\n"),
            Some(Line::Output {
                n: 2,
                text: "hello world"
            })
        );
        assert_eq!(
            parse("vmctl-script 1: "),
            Some(Line::Output { n: 1, text: "" })
        );
        assert_eq!(
            parse("[ 3.1] x[1]: vmctl-scripts: done\r"),
            Some(Line::Done)
        );
        assert_eq!(
            parse("vmctl-scripts: script 3 (user) failed with exit code 42"),
            Some(Line::Failed {
                n: 3,
                mode: "user",
                code: 42
            })
        );
        for other in [
            "Debian GNU/Linux 12 web ttyS0",
            "vmctl-provision: done",
            "vmctl-scripts: script x (user) failed with exit code 1",
            "vmctl-scripts: script 1 (user) failed with exit code",
            "vmctl-script two: hi",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_follower_keeps_output_and_reports_a_failure_with_its_tail() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            dir: d.path().to_path_buf(),
        };
        std::fs::write(
            paths.serial_log(),
            "boot\nvmctl-script 1: running (system)\nvmctl-script 1: ok\nvmctl-script 2: runn",
        )
        .unwrap();
        let mut f = Follower::new(&paths);
        assert_eq!(f.read_new(), None);
        let mut more = fsutil::open_append(&paths.serial_log()).unwrap();
        more.write_all(b"ing (user)\nvmctl-script 2: E: no such package\nvmctl-scripts: script 2 (user) failed with exit code 100\nlogin: ").unwrap();
        let Some(ScriptsState::Failed {
            script, code, tail, ..
        }) = f.read_new()
        else {
            panic!("no failure");
        };
        assert_eq!((script, code), (2, 100));
        assert_eq!(tail.last().unwrap(), "script 2: E: no such package");
        assert_eq!(tail.len(), 4);
        let kept = std::fs::read_to_string(paths.provision_log()).unwrap();
        assert!(kept.contains(" script 1: ok\n"), "{kept}");
        assert!(
            kept.contains(" script 2 (user) failed with exit code 100\n"),
            "{kept}"
        );
    }

    #[test]
    fn a_later_boot_only_says_done() {
        let d = tempfile::tempdir().unwrap();
        let paths = VmPaths {
            dir: d.path().to_path_buf(),
        };
        std::fs::write(
            paths.serial_log(),
            "vmctl-script 1: already run\nvmctl-scripts: done\n",
        )
        .unwrap();
        assert_eq!(Follower::new(&paths).read_new(), Some(ScriptsState::Done));
        assert!(!paths.provision_log().exists());
    }
}
