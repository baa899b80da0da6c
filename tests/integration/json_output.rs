//! `--json` on every subcommand: walked from clap's own tree, each subcommand run with `--json`
//! in an empty home prints one JSON document on stdout — its result, or its error as
//! `{"error": {"code", "kind", "message"}}` with the exit code unchanged.

use clap::CommandFactory;
use serde_json::{Value, json};

thread_local! {
    static NOT_JSON: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

use crate::harness::TestHome;

/// Every leaf subcommand's path (`["snapshot", "create"]`), hidden ones included.
fn leaves(cmd: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, clap::Command)>) {
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        out.push((path.to_vec(), cmd.clone()));
    }
    for s in subs {
        let mut p = path.to_vec();
        p.push(s.get_name().to_string());
        leaves(s, &p, out);
    }
}

/// The subcommand with each required positional given a name nothing in the home has.
fn invocation(path: &[String], cmd: &clap::Command, home: &std::path::Path) -> Vec<String> {
    let mut args = path.to_vec();
    match path {
        // It would serve until stopped: an address it refuses instead.
        [p] if p == "metrics" => args.extend(["--listen".into(), "nosuch".into()]),
        // It follows the log until stopped: the recorded events only.
        [p] if p == "events" => args.extend(["--all".into(), "--no-follow".into()]),
        // It writes where it is told: into the test's home.
        [p] if p == "man" => args.push(home.join("man").display().to_string()),
        _ => {}
    }
    for a in cmd
        .get_positionals()
        .filter(|a| a.is_required_set() && path != ["man"])
    {
        let n = a.get_num_args().map_or(1, |r| r.min_values().max(1));
        // `cp` takes host and guest paths; anything else a name, a file or a spec.
        let value = if path == ["cp"] {
            "nosuch:/tmp/x"
        } else {
            "nosuch"
        };
        args.extend(std::iter::repeat_n(value.to_string(), n));
    }
    args.push("--json".into());
    args
}

/// The one JSON document on stdout; for a failure, an error object with the exit code.
fn check(args: &[String], out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = match serde_json::from_str(&stdout) {
        Ok(v) => v,
        Err(e) => {
            // Collected, so that one run names every subcommand that falls short.
            NOT_JSON.with(|n| {
                n.borrow_mut()
                    .push(format!("vmctl {} ({e}): {stdout:.80}", args.join(" ")))
            });
            return json!({ "error": { "code": out.status.code(), "kind": "-", "message": "(not JSON)" } });
        }
    };
    let code = out.status.code().expect("an exit code");
    if code != 0 {
        let e = &v["error"];
        assert_eq!(e["code"], code, "vmctl {}: {v}", args.join(" "));
        assert!(
            e["kind"].as_str().is_some_and(|k| !k.is_empty()),
            "vmctl {}: {v}",
            args.join(" ")
        );
        assert!(
            e["message"].as_str().is_some_and(|m| m.len() > 5),
            "vmctl {}: {v}",
            args.join(" ")
        );
    }
    v
}

#[test]
fn every_subcommand_answers_json_and_its_errors_are_json_with_their_exit_code() {
    let t = TestHome::bare();
    let mut all = Vec::new();
    leaves(&vmctl::cli::args::Cli::command(), &[], &mut all);
    assert!(all.len() > 40, "{} subcommands", all.len());
    let (mut failed, mut answered) = (0, 0);
    for (path, cmd) in &all {
        // These write or remove vmctl's generator link or the metrics unit in the host's systemd
        // directories, whatever the home; their reports are `print_lines`, as `systemd
        // install`'s (walked here).
        if path
            .last()
            .is_some_and(|p| p.ends_with("install-generator") || p.ends_with("install-metrics"))
        {
            continue;
        }
        let args = invocation(path, cmd, t.home());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = t.run(&refs);
        let v = check(&args, &out);
        if out.status.success() {
            answered += 1;
        } else {
            failed += 1;
            // A name nothing has is "not found" wherever a name is looked up.
            if v["error"]["code"] != 3 {
                eprintln!("vmctl {}: {}", args.join(" "), v["error"]["message"]);
            }
        }
        // The same subcommand with a flag it does not have: a usage error, as JSON.
        let mut bad = args.clone();
        bad.push("--no-such-flag".into());
        let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
        let out = t.run(&refs);
        let v = check(&bad, &out);
        assert_eq!(out.status.code(), Some(2), "vmctl {}: {v}", bad.join(" "));
        assert_eq!(v["error"]["kind"], "usage");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(!m.contains("Usage:"), "the message alone: {v}");
        if out_ok(&args, &t) {
            assert!(m.contains("--no-such-flag"), "{v}");
        }
    }
    let not_json = NOT_JSON.with(|n| n.take());
    assert!(
        not_json.is_empty(),
        "{} subcommands printed something else than one JSON document:\n{}",
        not_json.len(),
        not_json.join("\n")
    );
    eprintln!("{answered} answered, {failed} refused, each as JSON");
}

/// Whether clap takes the arguments as they are (so that a flag added is what it refuses).
fn out_ok(args: &[String], t: &TestHome) -> bool {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = t.run(&refs);
    serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["error"]["kind"] != "usage")
}

#[test]
fn an_invalid_definition_lists_each_field_in_its_json_error() {
    let t = TestHome::bare();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "memory = \"1K\"\ncpus = 0\n").unwrap();
    let out = t.run(&["create", "web", "--from", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields: Vec<&str> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"memory") && fields.contains(&"cpus"),
        "{v}"
    );
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("vmctl: "));
}

/// The actions' own reports with `--json`: one object naming what was done to which VM.
#[test]
fn actions_on_a_running_vm_report_what_they_did_as_json() {
    use crate::harness::free_port;
    let t = TestHome::new();
    let port = free_port();
    let created = t.json(&[
        "create",
        "j",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--port",
        &format!("{port}:8080"),
        "--json",
    ]);
    assert_eq!(
        (created["done"].as_str(), created["vm"].as_str()),
        (Some("created"), Some("j")),
        "{created}"
    );
    let started = t.json(&["start", "j", "--wait", "--json"]);
    assert!(started["pid"].as_i64().is_some(), "{started}");
    for (args, done) in [
        (vec!["pause", "j"], "paused"),
        (vec!["resume", "j"], "resumed"),
        (vec!["snapshot", "create", "j", "one"], "snapshot created"),
        (vec!["snapshot", "delete", "j", "one"], "snapshot deleted"),
    ] {
        let mut a = args.clone();
        a.push("--json");
        let v = t.json(&a);
        assert_eq!(v["done"], done, "{v}");
        assert_eq!(v["vm"], "j", "{v}");
        assert!(
            v["messages"][0].as_str().is_some_and(|m| m.contains('j')),
            "{v}"
        );
    }
    let extra = free_port();
    let v = t.json(&["port", "add", "j", &format!("{extra}:8080"), "--json"]);
    assert_eq!(
        (v["done"].as_str(), v["port"].as_str()),
        (Some("port added"), Some(format!("{extra}:8080").as_str())),
        "{v}"
    );
    let cmd = t.json(&["show-cmd", "j", "--json"]);
    assert!(
        cmd[0][0]
            .as_str()
            .is_some_and(|b| b.contains("qemu-system")),
        "{cmd}"
    );
    let killed = t.json(&["kill", "j", "--json"]);
    assert!(killed.is_object(), "{killed}");
    let removed = t.json(&["rm", "j", "--json"]);
    assert_eq!(removed["done"], "removed", "{removed}");
}
