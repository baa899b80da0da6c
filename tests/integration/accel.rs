//! The accelerator decision on this host class, where /dev/kvm opens and KVM_CREATE_VM works but
//! guests cannot run (HOST.md): `auto` must pick TCG quickly and say why; `--accel kvm` must fail
//! with the reason, not hang. Also: a foreign-architecture (aarch64) guest boots under TCG.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn doctor_chooses_tcg_with_a_reason_and_caches_the_verdict() {
    let t = TestHome::new();
    let cache = tempfile::tempdir().unwrap();
    let doctor = |t: &TestHome| -> serde_json::Value {
        let out = t
            .cmd(&["doctor", "--json"])
            .env("VMCTL_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let started = Instant::now();
    let d = doctor(&t);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "doctor must not hang"
    );
    let x86 = d["arches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == "x86_64")
        .unwrap()
        .clone();
    assert_eq!(x86["decision"]["accel"], "tcg", "{x86}");
    let reason = x86["decision"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("KVM not used: "), "{reason}");
    if d["host"]["kvm"]["device"] == true && d["host"]["kvm"]["create_vm_error"].is_null() {
        // The cheap checks pass here; only the boot test tells the truth.
        assert_ne!(x86["kvm_boot_test"]["result"], "works", "{x86}");
        assert!(reason.contains("test guest"), "{reason}");
        let cached = cache.path().join("kvm-verdict-x86_64.json");
        let first: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cached).unwrap()).unwrap();
        let again = doctor(&t);
        let second: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cached).unwrap()).unwrap();
        assert_eq!(
            first["checked_at"], second["checked_at"],
            "the verdict is reused"
        );
        assert_eq!(again["arches"], d["arches"]);
    }
    let text = t.ok(&["doctor"]);
    assert!(text.contains("accelerator: tcg"), "{text}");

    // A cache directory that cannot be made (a unit's, deleted, under a read-only /var): the
    // verdict is not kept, but KVM is still tested, not left unverified.
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = t
        .cmd(&["doctor", "--json"])
        .env("VMCTL_CACHE_DIR", file.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["arches"], d["arches"], "the same decision, uncached");
    if reason.contains("test guest") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot keep the KVM verdict"), "{stderr}");
    }
}

#[test]
fn explicit_kvm_that_cannot_work_is_an_error_not_a_hang() {
    let t = TestHome::new();
    t.ok(&["create", "k", "--accel", "kvm", "--mem", "256M"]);
    let before = Instant::now();
    let err = t.fails(&["start", "k"], 4);
    assert!(before.elapsed() < Duration::from_secs(60));
    assert!(err.contains("KVM cannot be used"), "{err}");
    assert_eq!(t.status("k")["state"], "stopped");
}

#[test]
fn aarch64_guest_boots_under_tcg() {
    let t = TestHome::bare();
    t.link_image("tiny", "aarch64");
    let port = free_port();
    t.ok(&[
        "create",
        "arm",
        "--arch",
        "aarch64",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--port",
        &format!("{port}:8080"),
    ]);
    let cmd = t.ok(&["show-cmd", "arm"]);
    assert!(
        cmd.starts_with("/") && cmd.contains("qemu-system-aarch64"),
        "{cmd}"
    );
    let s = t.json(&["start", "arm", "--wait", "--json"]);
    assert_eq!(s["accel"], "tcg");
    assert!(
        s["accel_reason"].as_str().unwrap().contains("aarch64"),
        "{s}"
    );
    assert!(http_get(port).unwrap().contains("vmctl tiny guest: arm"));
    assert_eq!(t.status("arm")["accel"], "tcg");
    let stopped = t.json(&["stop", "arm", "--timeout", "20", "--json"]);
    assert!(
        stopped["step"] == "acpi" || stopped["step"] == "quit",
        "{stopped}"
    );
}
