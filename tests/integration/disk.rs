//! `vmctl disk info|resize|compact` on real qcow2 disks: the tiny guest's (info, the refusals,
//! a compaction that gives back what the guest wrote as zeros) and the seed's debian-12 VM,
//! whose root file system takes a grown disk at its next boot.

use crate::harness::*;

const GIB: u64 = 1 << 30;

fn ddw(port: u16, path: &str, mib: u32) {
    let r = http_get_path(port, &format!("/cgi-bin/ddw?{path}:{mib}")).unwrap();
    assert!(r.contains("secs "), "{r}");
}

#[test]
fn disks_grow_only_compact_without_snapshots_and_never_under_a_running_or_saved_vm() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "d", port);
    let info = t.json(&["disk", "info", "d", "--json"]);
    assert_eq!(info["virtual_size"], GIB, "{info}");
    assert_eq!(
        info["chain"].as_array().unwrap().len(),
        2,
        "overlay on the image: {info}"
    );
    assert!(info["snapshots"].as_array().unwrap().is_empty());

    t.refused(
        &["disk", "resize", "d", "512M"],
        &["size: VM d's disk is 1G already; it can only grow (got 512M)"],
    );
    t.refused(&["disk", "resize", "d", "1G"], &["it can only grow"]);
    t.refused(&["disk", "resize", "d", "2X"], &["2X"]);
    let grown = t.json(&["disk", "resize", "d", "2G", "--json"]);
    assert_eq!(
        (grown["from"].as_u64(), grown["to"].as_u64()),
        (Some(GIB), Some(2 * GIB))
    );
    assert_eq!(
        t.json(&["disk", "info", "d", "--json"])["virtual_size"],
        2 * GIB
    );
    assert_eq!(
        t.status("d")["disk"],
        "2G",
        "the definition says the new size"
    );

    // The guest writes 64 MiB of zeros to its disk: the overlay takes them on the host.
    t.ok(&["start", "d", "--wait"]);
    ddw(port, "/dev/vda", 64);
    let err = t.fails(&["disk", "resize", "d", "3G"], 7);
    assert!(
        err.contains("VM d is running; stop it before resizing its disk"),
        "{err}"
    );
    let err = t.fails(&["disk", "compact", "d"], 7);
    assert!(err.contains("stop it before compacting"), "{err}");
    t.ok(&["suspend", "d"]);
    let err = t.fails(&["disk", "compact", "d"], 7);
    assert!(err.contains("VM d has a saved state"), "{err}");
    t.ok(&["start", "d", "--wait"]);
    t.ok(&["stop", "d"]);

    t.ok(&["snapshot", "create", "d", "keep"]);
    let err = t.fails(&["disk", "compact", "d"], 7);
    assert!(
        err.contains("holds 1 snapshot(s), which a rewrite would drop"),
        "{err}"
    );
    t.ok(&["snapshot", "delete", "d", "keep"]);
    let c = t.json(&["disk", "compact", "d", "--json"]);
    let (before, after) = (c["before"].as_u64().unwrap(), c["after"].as_u64().unwrap());
    assert!(before >= 64 << 20, "{c}");
    assert!(
        after < 8 << 20,
        "zeros the image also reads as zeros are dropped: {c}"
    );
    // Still the same disk: it boots, on its image, at its size.
    let info = t.json(&["disk", "info", "d", "--json"]);
    assert_eq!(info["virtual_size"], 2 * GIB);
    assert_eq!(info["chain"].as_array().unwrap().len(), 2, "{info}");
    t.ok(&["start", "d", "--wait"]);
    t.ok(&["stop", "d"]);
}

#[test]
fn a_grown_disk_is_the_debian_guests_root_file_system_at_its_next_boot() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let ssh = free_port();
    t.ok(&[
        "create",
        "g",
        "--image",
        "debian-12",
        "--mem",
        "1G",
        "--disk",
        "4G",
        "--port",
        &format!("{ssh}:22"),
    ]);
    let root_size = || {
        t.ok(&["start", "g", "--wait", "--timeout", "500"]);
        // vmctl-growroot runs at idle priority once the guest is up: wait for it (a oneshot's
        // start returns when it is done, also when it already runs).
        let out = t.ssh(
            "g",
            "sudo -n systemctl start vmctl-growroot && df -B1 --output=size / | tail -1",
        );
        assert!(out.status.success(), "{out:?}");
        t.ok(&["stop", "g"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = root_size();
    assert!(before < 4 * GIB, "{before}");
    t.ok(&["disk", "resize", "g", "6G"]);
    let after = root_size();
    assert!(
        after > before + GIB + GIB / 2,
        "df says {after} bytes after growing from {before}"
    );
}
