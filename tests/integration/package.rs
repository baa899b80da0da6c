//! The Debian package (`scripts/package.sh`) in a Debian bookworm container: `apt-get install`
//! of the .deb takes its dependencies from what is installed, the installed binary runs a VM,
//! the completions, manual pages and generator links are where Debian looks, and `apt-get
//! purge` removes the package's files and keeps the VMs (README.md: "Install").

use std::process::Command;

use crate::harness::{free_port, http_get, vmctl_bin};
use crate::nspawn::Container;

#[test]
fn the_debian_package_installs_runs_a_vm_and_purges_leaving_the_vms() {
    let out = tempfile::tempdir().unwrap();
    let built = Command::new("scripts/package.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--binary", vmctl_bin(), "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(deb.ends_with("_amd64.deb"), "{deb}");

    // What the package holds (the container's dpkg leaves out /usr/share/man and doc, as
    // minimal Debian systems do).
    let listed = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for f in [
        "./usr/bin/vmctl",
        "./usr/share/man/man1/vmctl.1.gz",
        "./usr/share/man/man1/vmctl-start.1.gz",
        "./usr/share/man/man1/vmctl-snapshot-create.1.gz",
        "./usr/share/doc/vmctl/copyright",
        "./usr/share/doc/vmctl/examples/web.toml",
        "./usr/share/vmctl/systemd/vmctl-system.service.in",
    ] {
        assert!(listed.contains(f), "{f} is not in the package:\n{listed}");
    }
    assert!(
        listed.lines().filter(|l| l.contains("/man1/")).count() > 50,
        "{listed}"
    );

    let c = Container::boot("deb");
    // The container's root, through its PID 1 (this test runs as root).
    std::fs::copy(&deb, format!("/proc/{}/root/root/vmctl.deb", c.pid1())).unwrap();
    let apt = |args: &[&str]| {
        let mut a = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-y",
            "-q",
        ];
        a.extend(args);
        c.ok(&a)
    };
    apt(&["install", "/root/vmctl.deb"]);
    assert!(c.ok(&["/usr/bin/vmctl", "--version"]).starts_with("vmctl "));
    for f in [
        "/usr/share/bash-completion/completions/vmctl",
        "/usr/share/zsh/vendor-completions/_vmctl",
        "/usr/share/fish/vendor_completions.d/vmctl.fish",
        "/usr/share/vmctl/grafana/vmctl-dashboard.json",
    ] {
        c.ok(&["test", "-s", f]);
    }
    let link = c.ok(&[
        "readlink",
        "-f",
        "/usr/lib/systemd/system-generators/vmctl-generator",
    ]);
    assert_eq!(link.trim(), "/usr/bin/vmctl");
    let completion = c.read("/usr/share/bash-completion/completions/vmctl");
    assert!(
        completion.contains("\"vmctl\" -- "),
        "completes with the vmctl on PATH: {completion}"
    );

    // A VM from the installed binary.
    let port = free_port();
    let vmctl = |args: &[&str]| {
        let mut a = vec!["/usr/bin/vmctl"];
        a.extend(args);
        c.ok(&a)
    };
    vmctl(&[
        "create",
        "pk",
        "--mem",
        "256M",
        "--disk",
        "1G",
        "--port",
        &format!("{port}:8080"),
    ]);
    vmctl(&["start", "pk", "--wait"]);
    let page = http_get(port).unwrap_or_default();
    assert!(page.contains("vmctl tiny guest: pk"), "{page}");
    // The metrics endpoint as a service of the installed binary: it verifies and serves.
    let mport = free_port();
    let listen = format!("127.0.0.1:{mport}");
    vmctl(&[
        "systemd",
        "install-metrics",
        "--listen",
        &listen,
        "--enable",
        "--now",
    ]);
    c.ok(&[
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/vmctl-metrics.service",
    ]);
    let (scraped, _) = crate::systemd_e2e::wait_for(
        &c,
        "vmctl-metrics.service serving",
        std::time::Duration::from_secs(30),
        || {
            crate::harness::http_get_path(mport, "/metrics")
                .filter(|m| m.contains("vmctl_vm_up{vm=\"pk\"} 1"))
        },
    );
    // Its sandbox (no capability) still reads QEMU's /proc and asks QEMU for the disk's I/O.
    for series in [
        "vmctl_vm_state{vm=\"pk\",state=\"running\"} 1",
        "vmctl_vm_memory_rss_bytes{vm=\"pk\"}",
        "vmctl_vm_disk_read_bytes_total{vm=\"pk\"}",
    ] {
        assert!(scraped.contains(series), "{series} missing:\n{scraped}");
    }
    vmctl(&["systemd", "uninstall-metrics"]);
    c.ok(&[
        "test",
        "!",
        "-e",
        "/etc/systemd/system/vmctl-metrics.service",
    ]);
    vmctl(&["stop", "pk"]);

    apt(&["purge", "vmctl"]);
    for gone in [
        "/usr/bin/vmctl",
        "/usr/lib/systemd/system-generators/vmctl-generator",
        "/usr/share/man/man1/vmctl-start.1.gz",
    ] {
        assert!(
            !c.exec(&["test", "-e", gone]).status.success(),
            "{gone} is still there"
        );
    }
    // Purged: dpkg knows the package no more (or as not-installed, config gone).
    let q = c.exec(&["dpkg-query", "-W", "-f=${db:Status-Status}", "vmctl"]);
    let status = String::from_utf8_lossy(&q.stdout);
    assert!(!q.status.success() || status == "not-installed", "{q:?}");
    // The VMs are data the package did not make: kept.
    c.ok(&["test", "-f", "/var/lib/vmctl/vms/pk/vm.toml"]);
}
