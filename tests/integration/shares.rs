//! Shared folders (`--mount HOST[:GUEST][:ro]`) with real QEMU and virtiofsd, on tiny guests:
//! what the host writes the guest reads; what the guest's root and its unprivileged user write
//! belongs on the host to the folder's owner; a read-only share refuses writes even from the
//! guest's root; the daemons end with the VM; and the folders that cannot be shared are refused
//! by field, with nothing made.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// GET `path` through `port` (the tiny guest's CGIs), the body.
fn get(port: u16, path: &str) -> String {
    let r = http_get_path(port, path).unwrap_or_default();
    r.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(r)
}

/// A directory owned by `nobody`, as a user's folder would be (vmctl runs no helper as root).
fn users_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for p in [parent, d.as_path()] {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    d
}

#[test]
fn a_share_carries_files_both_ways_as_the_owners_and_ro_is_the_hosts() {
    let t = TestHome::new();
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rw = users_dir(base.path(), "rw");
    let ro = users_dir(base.path(), "ro");
    std::fs::write(ro.join("from-host.txt"), "written on the host\n").unwrap();
    let port = free_port();
    t.ok(&[
        "create",
        "s",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--port",
        &format!("{port}:8080"),
        "--mount",
        &format!("{}:/mnt/rw", rw.display()),
        "--mount",
        &format!("{}:/mnt/ro:ro", ro.display()),
    ]);
    t.ok(&["start", "s", "--wait"]);
    // The host's file, in the guest.
    assert_eq!(
        get(port, "/cgi-bin/cat?/mnt/ro/from-host.txt"),
        "written on the host\n"
    );
    // The guest's root and its user write; both files are the folder owner's on the host.
    assert_eq!(get(port, "/cgi-bin/put?/mnt/rw/by-root.txt").trim(), "ok");
    assert_eq!(get(port, "/cgi-bin/putas?/mnt/rw/by-user.txt").trim(), "ok");
    for (f, text) in [
        ("by-root.txt", "written by the guest\n"),
        ("by-user.txt", "written by the guest user\n"),
    ] {
        let p = rw.join(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (65534, 65534),
            "{f} is not the folder owner's"
        );
    }
    // Written on the host now, read by the guest now.
    std::fs::write(rw.join("later.txt"), "later\n").unwrap();
    assert_eq!(get(port, "/cgi-bin/cat?/mnt/rw/later.txt"), "later\n");
    // Read-only from the host's side: even the guest's root cannot write.
    let r = get(port, "/cgi-bin/put?/mnt/ro/x.txt");
    assert!(r.contains("Read-only file system"), "{r}");
    assert!(!ro.join("x.txt").exists());
    // show-cmd names the daemons; they run as the owner, and end with the VM.
    let cmds = t.ok(&["show-cmd", "s"]);
    assert!(
        cmds.contains("virtiofsd --fd=3") && cmds.contains("--readonly"),
        "{cmds}"
    );
    let pid = t.status("s")["pid"].as_i64().unwrap();
    let daemons: Vec<i64> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("virtiofsd") && c.contains(&*rw.to_string_lossy()))
        })
        .collect();
    assert!(!daemons.is_empty(), "no virtiofsd for the share");
    for d in &daemons {
        let status = std::fs::read_to_string(format!("/proc/{d}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        assert!(
            uid.split_whitespace().nth(1) == Some("65534"),
            "virtiofsd {d} runs as {uid}"
        );
    }
    t.ok(&["stop", "s"]);
    assert!(!pid_alive(pid));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while daemons.iter().any(|d| pid_alive(*d)) {
        assert!(
            std::time::Instant::now() < deadline,
            "virtiofsd outlived its VM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn folders_that_cannot_be_shared_are_refused_by_field() {
    let t = TestHome::new();
    let base = tempfile::tempdir().unwrap();
    let owned = users_dir(base.path(), "mine");
    let file = owned.join("f");
    std::fs::write(&file, "x").unwrap();
    let roots = base.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    let home = t.home().display().to_string();
    let o = owned.display().to_string();
    for (mount, needle) in [
        (
            format!("{}/nope", base.path().display()),
            "No such file or directory".to_string(),
        ),
        (file.display().to_string(), "is not a directory".into()),
        (home.clone(), "is vmctl's home".into()),
        (format!("{home}/images"), "is vmctl's home".into()),
        (roots.display().to_string(), "belongs to root".into()),
        (
            format!("{o}:srv"),
            "guest path \"srv\" must be absolute".into(),
        ),
        (
            format!("{o}:/etc"),
            "is a system directory of the guest".into(),
        ),
        (
            format!("{o}:/"),
            "is a system directory of the guest".into(),
        ),
        (format!("{o}/../x"), "without '.' or '..'".into()),
        (format!("{o}:/a:/b"), "is not HOST[:GUEST][:ro]".into()),
        (format!("{o},x"), "contains ','".into()),
    ] {
        t.refused(&["create", "v", "--mount", &mount], &["mounts[0]", &needle]);
    }
    t.refused(
        &[
            "create",
            "v",
            "--mount",
            &format!("{o}:/srv"),
            "--mount",
            &format!("{o}:/srv/sub"),
        ],
        &["mounts[1]: guest path /srv/sub overlaps"],
    );
    // A folder gone by the time the VM starts: its start is refused, naming the share.
    t.ok(&[
        "create",
        "v",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--mount",
        &format!("{o}:/srv/x"),
    ]);
    std::fs::remove_dir_all(&owned).unwrap();
    let err = t.fails(&["start", "v"], 2);
    assert!(
        err.contains("mounts[0]") && err.contains("No such file"),
        "{err}"
    );
}
