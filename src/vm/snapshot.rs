//! Internal qcow2 snapshots of a VM's disk: create, list, revert and delete, live or offline.
//!
//! Snapshots live inside the VM's `disk.qcow2`, so they survive vmctl and QEMU restarts and need
//! no bookkeeping of ours. A running VM is snapshotted through the control QMP socket with QEMU's
//! asynchronous `snapshot-save`/`snapshot-load`/`snapshot-delete` jobs (disk and RAM, the vmstate
//! stored on the disk's node), polled with `query-jobs` (progress on stderr) and dismissed at the
//! end; a QEMU without the job API gets HMP `savevm`/`loadvm`/`delvm`, whose plain-text failures
//! become errors. A stopped VM's disk goes through `qemu-img snapshot` (disk only) under the VM's
//! lock, so a `start` cannot race it. Requests that would lose data are refused: a duplicate tag,
//! an unknown tag (the error lists the known ones), and reverting a running VM without `--force`
//! (asked on a terminal, refused otherwise).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::qemu::control::ctl_connect;
use crate::qemu::qmp::{Qmp, QmpError};
use crate::runstate;
use crate::sys::fsutil;
use crate::sys::rt::block_on;
use crate::types::{VmName, format_utc};

/// The `-drive id=` of the VM's disk (see `qemu::argv`).
const DISK_DEVICE: &str = "disk0";
/// Longest tag we accept (QEMU's limit is 255 bytes; ours keeps tables readable).
const MAX_TAG: usize = 64;
/// Bound for one snapshot job (a live save writes all of the guest's RAM).
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// One internal snapshot, as `snapshot list` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub tag: String,
    /// QEMU's numeric id of the snapshot.
    pub id: String,
    /// Bytes of saved RAM and device state; 0 for a disk-only (offline) snapshot.
    pub vm_state_size: u64,
    /// When it was taken, UTC, RFC 3339.
    pub date: String,
    pub date_unix: i64,
    /// The guest's clock when it was taken (time the guest had run), HH:MM:SS.mmm.
    pub vm_clock: String,
    pub vm_clock_secs: f64,
}

/// Parse QEMU's `SnapshotInfo` list (from `qemu-img info --output=json` or `query-block`).
pub fn parse_list(v: &Value) -> Vec<Snapshot> {
    let n = |s: &Value, k: &str| s.get(k).and_then(Value::as_i64).unwrap_or(0);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let date_unix = n(s, "date-sec");
            let clock_ns = n(s, "vm-clock-sec") * 1_000_000_000 + n(s, "vm-clock-nsec");
            Snapshot {
                tag: s["name"].as_str().unwrap_or_default().to_string(),
                id: s["id"].as_str().unwrap_or_default().to_string(),
                vm_state_size: s["vm-state-size"].as_u64().unwrap_or(0),
                date: format_utc(date_unix, ':') + "Z",
                date_unix,
                vm_clock: format_clock(clock_ns),
                vm_clock_secs: clock_ns as f64 / 1e9,
            }
        })
        .collect()
}

fn format_clock(ns: i64) -> String {
    let ms = ns / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The tag `snapshot create` uses when none is given: the UTC time, e.g. 2026-11-22T06-10-00.
pub fn default_tag(unix: u64) -> String {
    format_utc(unix as i64, '-')
}

/// A tag is 1-64 of `A-Z a-z 0-9 . _ : -`, starts with a letter or digit, and is not all digits
/// (QEMU would take that for a snapshot id).
pub fn check_tag(tag: &str) -> Result<()> {
    let ok_chars = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    let problem = if tag.is_empty() || tag.len() > MAX_TAG {
        Some(format!("must be 1-{MAX_TAG} characters"))
    } else if !ok_chars || !tag.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some(
            "may hold only letters, digits and . _ : - and must start with a letter or digit"
                .into(),
        )
    } else if tag.chars().all(|c| c.is_ascii_digit()) {
        Some("must not be all digits (QEMU reads that as a snapshot id)".into())
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::Usage(format!("snapshot tag {p}; got {tag:?}"))),
        None => Ok(()),
    }
}

/// The VM's paths, if it is defined.
fn vm_paths(home: &Home, name: &VmName) -> Result<VmPaths> {
    home.defined(name)
}

/// Error unless `tag` is among `snaps`; the error lists the tags there are.
fn require_tag(name: &VmName, snaps: &[Snapshot], tag: &str) -> Result<()> {
    if snaps.iter().any(|s| s.tag == tag) {
        return Ok(());
    }
    Err(Error::NotFound {
        what: "snapshot",
        name: tag.to_string(),
        hint: if snaps.is_empty() {
            format!(" on VM {name}: it has no snapshots")
        } else {
            format!(
                " on VM {name}; its snapshots: {}",
                snaps
                    .iter()
                    .map(|s| s.tag.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    })
}

/// Every snapshot of the VM's disk, oldest first.
pub fn list(home: &Home, name: &VmName) -> Result<Vec<Snapshot>> {
    let paths = vm_paths(home, name)?;
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    if runstate::liveness(&paths).is_running() {
        return block_on(async {
            let (mut q, _ctl) = ctl_connect(&paths).await?;
            Ok(disk_node(&mut q).await?.1)
        });
    }
    offline_list(&paths, false)
}

/// The stopped VM's snapshots. `share` reads the disk even while another vmctl writes it
/// (`qemu-img -U`): for the early check before the lock, which is made again under it.
fn offline_list(paths: &VmPaths, share: bool) -> Result<Vec<Snapshot>> {
    let info = crate::qemu::img::info(&paths.disk(), share)?;
    Ok(parse_list(&info["snapshots"]))
}

/// What a snapshot command did, for the CLI to print.
#[derive(Debug, Serialize)]
pub struct Done {
    pub name: String,
    pub tag: String,
    /// Whether QEMU did it on the running VM (RAM included) or qemu-img on the stopped disk.
    pub live: bool,
    pub seconds: f64,
}

/// What a snapshot command does to the disk: its QMP job, HMP fallback and qemu-img flag.
#[derive(Debug, Clone, Copy)]
enum Action {
    Save,
    Load,
    Delete,
}

impl Action {
    /// (QMP job command, HMP command, `qemu-img snapshot` flag)
    fn commands(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Action::Save => ("snapshot-save", "savevm", "-c"),
            Action::Load => ("snapshot-load", "loadvm", "-a"),
            Action::Delete => ("snapshot-delete", "delvm", "-d"),
        }
    }
}

/// Under the VM's lock: `check` the VM's snapshots (told whether the VM runs), then do `action`
/// on `tag`, live through a QMP job if the VM runs, else with qemu-img. Returns what was done.
/// A stopped VM's snapshots are checked before the lock is taken too, so that a refused request
/// leaves no lock file behind.
fn apply(
    paths: &VmPaths,
    name: &VmName,
    action: Action,
    tag: &str,
    check: impl Fn(&[Snapshot], bool) -> Result<()>,
) -> Result<Done> {
    let t0 = std::time::Instant::now();
    let (command, hmp, flag) = action.commands();
    if !runstate::liveness(paths).is_running() {
        check(&offline_list(paths, true)?, false)?;
    }
    let _lock = fsutil::lock_exclusive(&paths.lock())?;
    let live = runstate::liveness(paths).is_running();
    if live {
        block_on(async {
            let (mut q, _ctl) = ctl_connect(paths).await?;
            let (node, snaps) = disk_node(&mut q).await?;
            check(&snaps, true)?;
            let mut args = json!({"tag": tag, "devices": [node]});
            if !matches!(action, Action::Delete) {
                args["vmstate"] = json!(node);
            }
            run_job(&mut q, command, args, &format!("{hmp} {tag}")).await
        })?;
    } else {
        if crate::saved::read(paths).is_some() {
            return Err(Error::State(format!(
                "VM {name} has a saved state, which a changed disk would make unusable: `vmctl start {name}` resumes it first (or `vmctl start {name} --fresh` discards it)"
            )));
        }
        check(&offline_list(paths, false)?, false)?;
        let disk = paths.disk();
        crate::qemu::img::qemu_img(
            &[
                "snapshot".as_ref(),
                flag.as_ref(),
                tag.as_ref(),
                disk.as_os_str(),
            ],
            &format!("qemu-img snapshot {flag} {tag} {}", disk.display()),
        )?;
    }
    Ok(Done {
        name: name.to_string(),
        tag: tag.to_string(),
        live,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Take a snapshot named `tag` (default: the current UTC time).
pub fn create(home: &Home, name: &VmName, tag: Option<String>) -> Result<Done> {
    let tag = tag.unwrap_or_else(|| default_tag(fsutil::unix_now()));
    check_tag(&tag)?;
    let paths = vm_paths(home, name)?;
    let done = apply(&paths, name, Action::Save, &tag, |snaps, _| {
        if snaps.iter().any(|s| s.tag == tag) {
            return Err(Error::Usage(format!(
                "VM {name} already has a snapshot tagged {tag:?}; pick another tag or `vmctl snapshot delete {name} {tag}` first"
            )));
        }
        Ok(())
    });
    crate::events::after(home, name.as_str(), "snapshot", tag_of, done)
}

fn tag_of(d: &Done) -> serde_json::Value {
    serde_json::json!({ "tag": d.tag.to_string() })
}

/// Bring the VM back to snapshot `tag`. A running VM loses its current state, so that needs
/// `force` (or a "y" on a terminal).
pub fn revert(home: &Home, name: &VmName, tag: &str, force: bool) -> Result<Done> {
    let paths = vm_paths(home, name)?;
    // Ask before taking the lock: a pending question must not block a `stop`.
    let confirmed = force || (runstate::liveness(&paths).is_running() && confirm(name, tag)?);
    let done = apply(&paths, name, Action::Load, tag, |snaps, live| {
        require_tag(name, snaps, tag)?;
        if live && !confirmed {
            return Err(Error::State(format!(
                "VM {name} is running: reverting it to {tag} discards its current memory and disk; use `vmctl snapshot revert --force {name} {tag}` to do it anyway"
            )));
        }
        Ok(())
    });
    crate::events::after(home, name.as_str(), "reverted", tag_of, done)
}

/// Delete snapshot `tag` (the disk space is only partly given back by qcow2).
pub fn delete(home: &Home, name: &VmName, tag: &str) -> Result<Done> {
    let paths = vm_paths(home, name)?;
    let done = apply(&paths, name, Action::Delete, tag, |snaps, _| {
        require_tag(name, snaps, tag)
    });
    crate::events::after(home, name.as_str(), "snapshot-deleted", tag_of, done)
}

/// Ask on the terminal whether to revert a running VM; false without a terminal.
fn confirm(name: &VmName, tag: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    eprint!("VM {name} is running; revert it to {tag} and lose its current state? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Other(format!("Cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        return Ok(true);
    }
    Err(Error::State(format!("Not reverting VM {name}")))
}

/// The node name of the VM's disk and its snapshots, from `query-block`.
async fn disk_node(q: &mut Qmp) -> Result<(String, Vec<Snapshot>)> {
    let blocks = q.execute_raw("query-block", None).await?;
    let disk = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["device"] == DISK_DEVICE)
        .and_then(|b| b.get("inserted"))
        .ok_or_else(|| Error::Qemu(format!("QEMU has no block device {DISK_DEVICE}")))?;
    let node = disk["node-name"]
        .as_str()
        .ok_or_else(|| Error::Qemu(format!("block device {DISK_DEVICE} has no node name")))?;
    Ok((node.to_string(), parse_list(&disk["image"]["snapshots"])))
}

/// Run one snapshot job to its end: start it, poll `query-jobs` (progress on stderr), dismiss
/// it, and turn its error into ours. Without the job API (QEMU < 6.0) run `hmp` instead.
async fn run_job(q: &mut Qmp, command: &str, mut args: Value, hmp: &str) -> Result<()> {
    let job_id = format!("vmctl-{command}-{}", std::process::id());
    args["job-id"] = json!(job_id);
    match q.execute_raw(command, Some(args)).await {
        Ok(_) => {}
        Err(QmpError::Command { class, .. }) if class == "CommandNotFound" => {
            return hmp_checked(q, hmp).await;
        }
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + JOB_TIMEOUT;
    let progress = crate::term::progress::Progress::percent(command);
    loop {
        let jobs = q.execute_raw("query-jobs", None).await?;
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["id"] == job_id.as_str())
            .cloned()
            .ok_or_else(|| Error::Qemu(format!("{command} job {job_id} vanished")))?;
        let (cur, total) = (
            job["current-progress"].as_u64().unwrap_or(0),
            job["total-progress"].as_u64().unwrap_or(0),
        );
        if let Some(pct) = (cur * 100).checked_div(total) {
            progress.set(pct);
        }
        if job["status"] == "concluded" || job["status"] == "null" {
            if job["error"].is_null() {
                progress.finish();
            }
            if let Err(e) = q
                .execute_raw("job-dismiss", Some(json!({"id": job_id})))
                .await
            {
                tracing::warn!("job-dismiss {job_id}: {e}");
            }
            return match job["error"].as_str() {
                Some(err) => Err(Error::Qemu(format!("{command} failed: {err}"))),
                None => Ok(()),
            };
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "{command} did not finish within {JOB_TIMEOUT:?} (job {job_id} is {})",
                job["status"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HMP command whose any output means failure (savevm, loadvm and delvm print only errors).
async fn hmp_checked(q: &mut Qmp, line: &str) -> Result<()> {
    let out = q.hmp(line).await?;
    let out = out.trim();
    if out.is_empty() {
        return Ok(());
    }
    Err(Error::Qemu(format!("{line} failed: {out}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_snapshot_info_parses() {
        let v: Value = serde_json::from_str(
            r#"[{"icount": 0, "vm-clock-nsec": 250000000, "name": "before", "date-sec": 1795328400,
                 "date-nsec": 1, "vm-clock-sec": 3725, "id": "1", "vm-state-size": 4096},
                {"vm-clock-nsec": 0, "name": "disk-only", "date-sec": 0, "date-nsec": 0,
                 "vm-clock-sec": 0, "id": "2", "vm-state-size": 0}]"#,
        )
        .unwrap();
        let l = parse_list(&v);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].tag, "before");
        assert_eq!(l[0].id, "1");
        assert_eq!(l[0].vm_state_size, 4096);
        assert_eq!(l[0].date, "2026-11-22T06:20:00Z");
        assert_eq!(l[0].vm_clock, "01:02:05.250");
        assert_eq!(l[0].vm_clock_secs, 3725.25);
        assert_eq!(l[1].date, "1970-01-01T00:00:00Z");
        assert!(parse_list(&Value::Null).is_empty());
    }

    #[test]
    fn default_tags_are_utc_timestamps_qemu_accepts() {
        assert_eq!(default_tag(1_795_328_400), "2026-11-22T06-20-00");
        assert_eq!(default_tag(951_782_400), "2000-02-29T00-00-00");
        check_tag(&default_tag(1_795_328_400)).unwrap();
    }

    #[test]
    fn tags_are_checked() {
        for ok in ["before-upgrade", "v1.2", "a", "x_y:z"] {
            check_tag(ok).unwrap();
        }
        for (bad, why) in [
            ("", "1-64"),
            ("12", "all digits"),
            ("has space", "letters"),
            ("-x", "start"),
            (&"a".repeat(65), "1-64"),
        ] {
            let e = check_tag(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert_eq!(e.code(), crate::error::exit::USAGE);
        }
    }

    /// A stand-in QEMU on a unix socket: greets, then answers each command with `reply(name,
    /// arguments)` (a JSON object with `return` or `error`); returns the commands it saw.
    async fn fake_qemu(
        reply: impl Fn(&str, &Value) -> Value + Send + 'static,
    ) -> (Qmp, tokio::task::JoinHandle<Vec<String>>, tempfile::TempDir) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let greeting = r#"{"QMP": {"version": {"qemu": {"major": 5, "minor": 2, "micro": 0}}, "capabilities": []}}"#;
            w.write_all(format!("{greeting}\n").as_bytes())
                .await
                .unwrap();
            let mut seen = Vec::new();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let msg: Value = serde_json::from_str(&line).unwrap();
                let name = msg["execute"].as_str().unwrap().to_string();
                let mut answer = match name.as_str() {
                    "qmp_capabilities" => json!({"return": {}}),
                    _ => reply(&name, &msg["arguments"]),
                };
                answer["id"] = msg["id"].clone();
                seen.push(match name.as_str() {
                    "human-monitor-command" => format!("hmp {}", msg["arguments"]["command-line"]),
                    _ => name,
                });
                w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
            }
            seen
        });
        let q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        (q, server, dir)
    }

    /// Hang up on the stand-in QEMU and collect what it was asked.
    async fn commands_seen(q: Qmp, server: tokio::task::JoinHandle<Vec<String>>) -> Vec<String> {
        drop(q);
        server.await.unwrap()
    }

    #[tokio::test]
    async fn without_the_job_api_hmp_is_used_and_its_text_is_an_error() {
        let (mut q, server, _dir) = fake_qemu(|name, args| match name {
            "snapshot-save" => {
                json!({"error": {"class": "CommandNotFound", "desc": "The command snapshot-save has not been found"}})
            }
            "human-monitor-command" if args["command-line"] == "savevm bad" => {
                json!({"return": "Error: Device 'disk0' is writable but does not support snapshots\r\n"})
            }
            _ => json!({"return": ""}),
        })
        .await;
        run_job(&mut q, "snapshot-save", json!({"tag": "ok"}), "savevm ok")
            .await
            .unwrap();
        let e = run_job(&mut q, "snapshot-save", json!({"tag": "bad"}), "savevm bad")
            .await
            .unwrap_err();
        assert_eq!(e.code(), crate::error::exit::QEMU);
        assert!(e.to_string().contains("does not support snapshots"), "{e}");
        assert_eq!(
            commands_seen(q, server).await,
            vec![
                "qmp_capabilities",
                "snapshot-save",
                "hmp \"savevm ok\"",
                "snapshot-save",
                "hmp \"savevm bad\""
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_job_is_dismissed_and_its_error_reported() {
        let polls = std::sync::atomic::AtomicU32::new(0);
        let (mut q, server, _dir) = fake_qemu(move |name, _| match name {
            "query-jobs" => {
                let n = polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let job = if n == 0 {
                    json!({"id": format!("vmctl-snapshot-load-{}", std::process::id()), "type": "snapshot-load",
                           "status": "running", "current-progress": 1, "total-progress": 2})
                } else {
                    json!({"id": format!("vmctl-snapshot-load-{}", std::process::id()), "type": "snapshot-load",
                           "status": "concluded", "current-progress": 2, "total-progress": 2,
                           "error": "Snapshot 'x' does not exist in one or more devices"})
                };
                json!({"return": [job]})
            }
            _ => json!({"return": {}}),
        })
        .await;
        let e = run_job(&mut q, "snapshot-load", json!({"tag": "x"}), "loadvm x")
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("snapshot-load failed: Snapshot 'x' does not exist"),
            "{e}"
        );
        assert_eq!(
            commands_seen(q, server).await,
            vec![
                "qmp_capabilities",
                "snapshot-load",
                "query-jobs",
                "query-jobs",
                "job-dismiss"
            ]
        );
    }

    #[test]
    fn unknown_tags_name_the_known_ones() {
        let name: VmName = "web".parse().unwrap();
        let snaps = parse_list(&json!([{"name": "a", "id": "1"}, {"name": "b", "id": "2"}]));
        require_tag(&name, &snaps, "a").unwrap();
        let e = require_tag(&name, &snaps, "c").unwrap_err();
        assert_eq!(e.code(), crate::error::exit::NOT_FOUND);
        assert!(e.to_string().contains("its snapshots: a, b"), "{e}");
        let e = require_tag(&name, &[], "c").unwrap_err();
        assert!(e.to_string().contains("has no snapshots"), "{e}");
    }

    mod proptests {
        use super::*;
        use crate::types::tests::proptests::{config, or_any, text};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(5000))]

            /// A tag is accepted exactly when the documented rule holds; a refusal is a usage
            /// error (exit 2) naming the tag.
            #[test]
            fn tags(tag in or_any(prop_oneof![
                text("a0._:-", 10),
                text("aZ09._:- /é", 70),
                text("0123456789", 5),
                (0u64..4_000_000_000).prop_map(default_tag),
            ].boxed())) {
                let rule = !tag.is_empty()
                    && tag.len() <= MAX_TAG
                    && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
                    && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && !tag.chars().all(|c| c.is_ascii_digit());
                match check_tag(&tag) {
                    Ok(()) => prop_assert!(rule, "{:?} accepted", tag),
                    Err(e) => {
                        prop_assert!(!rule, "{:?} refused: {}", tag, e);
                        prop_assert_eq!(e.code(), crate::error::exit::USAGE);
                        prop_assert!(e.to_string().ends_with(&format!("; got {tag:?}")), "{}", e);
                    }
                }
            }
        }
    }
}
