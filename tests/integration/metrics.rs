//! `vmctl stats` and `vmctl metrics` against a running tiny VM: the endpoint's text passes
//! Prometheus's own `promtool check metrics`, a real Prometheus (Debian's 2.42) scrapes it and
//! answers `vmctl_vm_up == 1` for the VM, and every metric the shipped Grafana dashboard
//! queries is in it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TestHome, create_tiny, free_port, http_get_path, vmctl_bin};

/// A process this test started, killed by its handle when the test ends (pass or fail).
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `probe` until it gives a value, or fail naming `what` after `limit`.
fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of an HTTP response.
fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn start_metrics(t: &TestHome) -> (Owned, u16) {
    let port = free_port();
    let child = Command::new(vmctl_bin())
        .args(["--home", t.home().to_str().unwrap(), "metrics", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("HOME", t.user_home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let owned = Owned(child);
    until("the metrics endpoint", Duration::from_secs(20), || {
        http_get_path(port, "/metrics")
    });
    (owned, port)
}

#[test]
fn stats_and_the_metrics_endpoint_describe_a_running_vm_and_prometheus_scrapes_it() {
    let t = TestHome::new();
    create_tiny(&t, "m", free_port());
    create_tiny(&t, "idle", free_port());
    t.ok(&["start", "m", "--wait"]);

    let stats = t.json(&["stats", "--json", "--interval", "0.5"]);
    let m = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "m")
        .unwrap();
    assert_eq!(m["state"], "running", "{m}");
    assert!(m["rss_bytes"].as_u64().unwrap() > 1 << 20, "{m}");
    assert!(m["cpu_seconds"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["cpu_percent"].as_f64().is_some(), "{m}");
    assert!(
        m["disk_read_bytes"].as_u64().unwrap() > 0,
        "the guest read its disk: {m}"
    );
    assert_eq!(m["starts"], 1, "{m}");
    let text = t.ok(&["stats", "m", "--interval", "0.2"]);
    assert!(text.starts_with("NAME") && text.contains("\nm "), "{text}");

    let (_metrics, port) = start_metrics(&t);
    let resp = http_get_path(port, "/metrics").unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("Content-Type: text/plain; version=0.0.4"),
        "{resp}"
    );
    let text = body(&resp).to_string();
    for line in [
        "vmctl_vm_up{vm=\"m\"} 1",
        "vmctl_vm_up{vm=\"idle\"} 0",
        "vmctl_vm_state{vm=\"m\",state=\"running\"} 1",
        "vmctl_vm_state{vm=\"idle\",state=\"stopped\"} 1",
        "vmctl_vm_starts_total{vm=\"m\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(
        http_get_path(port, "/nothing")
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );

    // Prometheus's own checker of the exposition format (and its naming rules).
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh --test installs prometheus)");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {out:?}\n{text}"
    );

    // A real Prometheus scrapes the endpoint and answers a query about the VM.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vmctl\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Owned(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/install-deps.sh --test installs it)"),
    );
    let result = until(
        "Prometheus answering vmctl_vm_up == 1",
        Duration::from_secs(90),
        || {
            let resp = http_get_path(web, "/api/v1/query?query=vmctl_vm_up%20%3D%3D%201")?;
            let v: Value = serde_json::from_str(body(&resp)).ok()?;
            let r = v["data"]["result"].as_array()?.clone();
            (!r.is_empty()).then_some(r)
        },
    );
    let vms: Vec<&str> = result
        .iter()
        .filter_map(|s| s["metric"]["vm"].as_str())
        .collect();
    assert_eq!(vms, ["m"], "{result:?}");
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let t = TestHome::new();
    let (_metrics, port) = start_metrics(&t);
    // An empty home: the metric families are announced (# TYPE) with no VM at all.
    let text = body(&http_get_path(port, "/metrics").unwrap()).to_string();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("contrib/grafana/vmctl-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = Vec::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("vmctl_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            queried.push(name);
        }
    }
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which the endpoint does not serve:\n{text}"
        );
    }
}

/// Every PromQL expression (`expr`) and variable query in a dashboard.
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
