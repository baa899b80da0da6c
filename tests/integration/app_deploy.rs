//! Your own WSGI app on a real Debian guest (TCG): an `[app]` directory with a wheel, served by
//! gunicorn behind nginx through a forwarded port; `vmctl app deploy` of v2 while a client
//! sends requests in a loop: not one fails, and v2 answers once deploy returns.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;

/// A WSGI app whose page says `version` and the word from the `greet` wheel.
fn write_app(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("app.py"),
        format!(
            "import greet\n\n\ndef app(environ, start_response):\n    start_response(\"200 OK\", [(\"Content-Type\", \"text/plain\")])\n    return [b\"{version} \" + greet.WORD.encode() + b\"\\n\"]\n"
        ),
    )
    .unwrap();
}

/// A pure-Python wheel with module `greet` (built with the host's python3: a wheel is a zip).
fn write_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("greet/__init__.py", "WORD = 'from-a-wheel'\n")
    z.writestr("greet-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n")
    z.writestr("greet-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("greet-1.0.dist-info/RECORD", "")
"#;
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("greet-1.0-py3-none-any.whl"))
        .status()
        .unwrap();
    assert!(st.success());
}

fn body(port: u16) -> Option<String> {
    let r = http_get(port)?;
    r.contains(" 200 ")
        .then(|| r.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string())
}

/// `vmctl app deploy web --dir DIR --json`.
fn deploy(t: &TestHome, dir: &Path) -> serde_json::Value {
    t.json(&[
        "app",
        "deploy",
        "web",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
    ])
}

#[test]
fn own_app_is_served_and_deployed_without_a_failed_request() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let defs = tempfile::tempdir().unwrap();
    write_app(&defs.path().join("myapp"), "v1");
    write_wheel(&defs.path().join("wheels"));
    let (ssh, http) = (free_port(), free_port());
    let def = defs.path().join("web.toml");
    std::fs::write(
        &def,
        format!(
            "image = \"debian-12\"\nmemory = \"1G\"\ndisk = \"4G\"\nports = [\"{ssh}:22\", \"{http}:8080\"]\n\n[app]\ndir = \"./myapp\"\nwsgi = \"app:app\"\nworkers = 2\nproxy = \"nginx\"\nport = 8080\nrequirements = \"./wheels\"\n"
        ),
    )
    .unwrap();
    t.ok(&["create", "web", "--from", def.to_str().unwrap()]);
    let stored = std::fs::read_to_string(t.home().join("vms/web/vm.toml")).unwrap();
    assert!(
        stored.contains(&format!("dir = \"{}/myapp\"", defs.path().display())),
        "the app's dir is kept absolute: {stored}"
    );
    t.ok(&["start", "web", "--wait", "--timeout", "500"]);
    assert_eq!(
        body(http).as_deref(),
        Some("v1 from-a-wheel"),
        "the app, with its wheel, through nginx"
    );
    let out = t.ssh("web", "systemctl show -p User -p Group --value vmctl-app; systemctl is-active nginx; stat -c %U /srv/vmctl-app/current/app/app.py");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "vmctl-app\nwww-data\nactive\nroot",
        "gunicorn runs as its own user; nginx in front; the code is root's"
    );

    // v2, deployed while a client asks in a loop.
    let v2 = defs.path().join("v2");
    write_app(&v2, "v2");
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                match body(http) {
                    Some(b) => answers.push(b),
                    None => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            answers
        })
    };
    let d = deploy(&t, &v2);
    assert_eq!(d["live"], true, "{d}");
    assert!(
        d["outcome"].as_str().unwrap().starts_with("reloaded "),
        "{d}"
    );
    assert_eq!(
        body(http).as_deref(),
        Some("v2 from-a-wheel"),
        "v2 answers once deploy returns"
    );
    // A few more requests after the switch, then stop the client.
    let after = sent.load(Ordering::SeqCst);
    while sent.load(Ordering::SeqCst) < after + 5 {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let answers = client.join().unwrap();
    let (n, bad) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(bad, 0, "{bad} of {n} requests failed during the deploy");
    assert!(n >= 10, "only {n} requests were sent");
    assert!(
        answers.iter().any(|a| a == "v1 from-a-wheel"),
        "v1 served during the deploy"
    );
    assert_eq!(answers.last().map(String::as_str), Some("v2 from-a-wheel"));
    assert!(
        answers
            .iter()
            .all(|a| a == "v1 from-a-wheel" || a == "v2 from-a-wheel"),
        "{answers:?}"
    );

    // The same release again: nothing to do. A stopped VM keeps the release for its next start.
    let again = deploy(&t, &v2);
    assert!(
        again["outcome"].as_str().unwrap().starts_with("unchanged "),
        "{again}"
    );
    t.ok(&["stop", "web"]);
    let kept = t.ok(&["app", "deploy", "web"]);
    assert!(kept.contains("installed at its next start"), "{kept}");
}

#[test]
fn app_definitions_and_deploys_that_cannot_work_are_refused() {
    let t = TestHome::new();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("myapp")).unwrap();
    let def = d.path().join("v.toml");
    // On the tiny image, which has no gunicorn.
    std::fs::write(&def, "[app]\ndir = \"./myapp\"\n").unwrap();
    t.refused(
        &["create", "v", "--from", def.to_str().unwrap()],
        &["app: image tiny cannot install your own app"],
    );
    std::fs::write(
        &def,
        "image = \"tiny\"\n[app]\ndir = \"./nope\"\nworkers = 0\n",
    )
    .unwrap();
    t.refused(
        &["create", "v", "--from", def.to_str().unwrap()],
        &[
            "app.dir: cannot read",
            "nope",
            "app.workers: must be 1-64; got 0",
        ],
    );
    std::fs::write(&def, "app = { dir = 3 }\n").unwrap();
    t.refused(
        &["create", "v", "--from", def.to_str().unwrap()],
        &["app.dir: must be a string such as \"./myapp\"; got the integer 3"],
    );
    std::fs::write(&def, "app = 3\n").unwrap();
    t.refused(
        &["create", "v", "--from", def.to_str().unwrap()],
        &["app: must be a built-in app such as \"gunicorn-hello\" or an [app] table"],
    );
    // Deploy to a VM without an app of its own, or from a directory that is not there.
    t.ok(&["create", "plain"]);
    let err = t.fails(&["app", "deploy", "plain"], 2);
    assert!(
        err.contains("VM plain has no app of its own to deploy"),
        "{err}"
    );
    let err = t.fails(&["app", "deploy", "nope"], 3);
    assert!(err.contains("\"nope\" not found"), "{err}");
}
