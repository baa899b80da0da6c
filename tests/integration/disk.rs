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

/// The first bytes of a VM's disk as the guest sees them (through its qcow2 chain).
fn disk_head(t: &TestHome, vm: &str) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let disk = t.home().join(format!("vms/{vm}/disk.qcow2"));
    let st = std::process::Command::new("qemu-img")
        .args(["dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=1"])
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", out.path().display()))
        .status()
        .unwrap();
    assert!(st.success());
    String::from_utf8_lossy(&std::fs::read(out.path()).unwrap()[..20]).into_owned()
}

#[test]
fn a_clone_has_the_sources_disk_its_own_ports_and_name_and_no_snapshots() {
    let t = TestHome::new();
    let (port, port2, port3) = (free_port(), free_port(), free_port());
    create_tiny(&t, "src", port);
    t.ok(&["start", "src", "--wait"]);
    let put = http_get_path(port, "/cgi-bin/put?/dev/vda").unwrap();
    assert!(put.ends_with("ok\n"), "{put}");
    let err = t.fails(&["clone", "src", "copy"], 7);
    assert!(
        err.contains("VM src is running; stop it before cloning"),
        "{err}"
    );
    t.ok(&["stop", "src"]);
    t.ok(&["snapshot", "create", "src", "kept-by-src"]);

    // Its forwards are the source's: refused, by field, until the clone has its own.
    t.refused(
        &["clone", "src", "copy"],
        &[
            "ports[0]: host port",
            "already forwarded by VM src",
            "--port",
        ],
    );
    t.refused(&["clone", "src", "src"], &["VM src already exists"]);
    let linked = t.json(&[
        "clone",
        "src",
        "copy",
        "--port",
        &format!("{port2}:8080"),
        "--json",
    ]);
    assert_eq!(linked["full"], false);
    assert!(linked["disk_bytes"].as_u64().unwrap() < 4 << 20, "{linked}");
    let full = t.json(&[
        "clone",
        "src",
        "solo",
        "--full",
        "--port",
        &format!("{port3}:8080"),
        "--json",
    ]);
    assert_eq!(full["full"], true);

    for vm in ["copy", "solo"] {
        assert_eq!(
            disk_head(&t, vm),
            "written by the guest",
            "{vm} has src's data"
        );
        assert!(
            t.json(&["snapshot", "list", vm, "--json"])
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    let chain = |vm: &str| {
        t.json(&["disk", "info", vm, "--json"])["chain"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        (chain("copy"), chain("solo")),
        (2, 1),
        "linked on the image; full standalone"
    );
    assert_eq!(
        t.json(&["snapshot", "list", "src", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "the source keeps its snapshot"
    );
    // Side by side, each on its own port, each by its own name.
    for (vm, p) in [("src", port), ("copy", port2), ("solo", port3)] {
        t.ok(&["start", vm, "--wait"]);
        let page = http_get(p).unwrap_or_default();
        assert!(
            page.contains(&format!("vmctl tiny guest: {vm}\n")),
            "{vm}: {page}"
        );
    }
    for vm in ["src", "copy", "solo"] {
        t.ok(&["stop", vm]);
    }
    let ids: std::collections::BTreeSet<String> = ["src", "copy", "solo"]
        .iter()
        .map(|vm| std::fs::read_to_string(t.home().join(format!("vms/{vm}/machine-id"))).unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "a machine-id each: {ids:?}");
}

/// The seed's debian-12 VM cloned: both run side by side, each with its own hostname,
/// machine-id and SSH host key (`vmctl ssh` pins each VM's own), and the clone serves the app.
#[test]
fn a_debian_clone_is_a_machine_of_its_own() {
    let t = TestHome::bare();
    t.link_image("debian-12", "x86_64");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-configs/web.toml");
    let ports = |ssh: u16, http: u16| {
        vec![
            "--port".to_string(),
            format!("{ssh}:22"),
            "--port".into(),
            format!("{http}:8080"),
        ]
    };
    let (a, b) = ((free_port(), free_port()), (free_port(), free_port()));
    let mut create = vec![
        "create".to_string(),
        "web".into(),
        "--from".into(),
        example.into(),
    ];
    create.extend(ports(a.0, a.1));
    t.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    t.ok(&["start", "web", "--wait", "--timeout", "500"]);
    t.ok(&["stop", "web"]);
    let mut clone = vec!["clone".to_string(), "web".into(), "web2".into()];
    clone.extend(ports(b.0, b.1));
    t.ok(&clone.iter().map(String::as_str).collect::<Vec<_>>());
    let who = |vm: &str| {
        t.ok(&["start", vm, "--wait", "--timeout", "500"]);
        let out = t.ssh(
            vm,
            "hostname; cat /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
        );
        assert!(out.status.success(), "{vm}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (one, two) = (who("web"), who("web2"));
    let (one, two): (Vec<&str>, Vec<&str>) = (one.lines().collect(), two.lines().collect());
    assert_eq!((one[0], two[0]), ("web", "web2"), "hostnames");
    assert_ne!(one[1], two[1], "machine-ids");
    assert_ne!(one[2], two[2], "SSH host keys");
    assert!(http_get(b.1).unwrap_or_default().contains("Hello, World!"));
    t.ok(&["stop", "web"]);
    t.ok(&["stop", "web2"]);
}

/// `vmctl export` of the tiny VM with a snapshot, `vmctl import` into a home that has no image:
/// the VM boots there with its disk and its snapshot; collisions and damaged archives are
/// refused and leave the home as it was.
#[test]
fn an_exported_vm_imports_where_its_image_is_missing_and_damage_is_refused() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "src", port);
    t.ok(&["start", "src", "--wait"]);
    let put = http_get_path(port, "/cgi-bin/put?/dev/vda").unwrap();
    assert!(put.ends_with("ok\n"), "{put}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.vmctl.tar.zst");
    let f = file.to_str().unwrap();
    let err = t.fails(&["export", "src", "-o", f], 7);
    assert!(
        err.contains("VM src is running; stop it before exporting"),
        "{err}"
    );
    t.ok(&["stop", "src"]);
    t.ok(&["snapshot", "create", "src", "before-export"]);
    let e = t.json(&["export", "src", "-o", f, "--json"]);
    assert!(
        e["bytes"].as_u64().unwrap() < e["content_bytes"].as_u64().unwrap(),
        "{e}"
    );
    t.refused(&["export", "src", "-o", f], &["-o:", "exists", "--force"]);
    t.refused(
        &["export", "src", "--format", "ova"],
        &["invalid value 'ova'"],
    );

    let there = TestHome::bare();
    let i = there.json(&["import", f, "--json"]);
    assert_eq!(
        (
            i["name"].as_str(),
            i["image_installed"].as_bool(),
            i["snapshots"].as_u64()
        ),
        (Some("src"), Some(true), Some(1)),
        "{i}"
    );
    assert_eq!(disk_head(&there, "src"), "written by the guest");
    let snaps = there.json(&["snapshot", "list", "src", "--json"]);
    assert_eq!(snaps[0]["tag"], "before-export", "{snaps}");
    there.ok(&["start", "src", "--wait"]);
    let page = http_get(port).unwrap_or_default();
    assert!(page.contains("vmctl tiny guest: src\n"), "{page}");
    there.ok(&["stop", "src"]);

    // Here the name is taken, and another name would forward the same host port.
    t.refused(&["import", f], &["VM src exists already"]);
    t.refused(
        &["import", f, "--name", "copy"],
        &["ports[0]: host port", "already forwarded by VM src"],
    );
    // A truncated archive, and one with a byte changed: refused, nothing installed.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let bare = TestHome::bare();
    bare.refused(
        &["import", cut.to_str().unwrap()],
        &["is not a whole vmctl archive"],
    );
    let mut changed = bytes.clone();
    let at = changed.len() / 3;
    changed[at] ^= 0x55;
    let bad = dir.path().join("changed.tar.zst");
    std::fs::write(&bad, &changed).unwrap();
    bare.refused(
        &["import", bad.to_str().unwrap()],
        &["FILE:", "changed.tar.zst"],
    );
    assert!(bare.snapshot().is_empty(), "{:?}", bare.snapshot());
}
