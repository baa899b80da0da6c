//! `vmctl export --format libvirt`: the document libvirt's own schema accepts
//! (`virt-xml-validate`, from libvirt-clients), what it does not carry listed on stderr or
//! refused with `--strict`, and the refusals of an unknown VM or format.

use std::process::Command;

use crate::harness::*;

/// `vmctl export NAME --format FORMAT`, which must succeed: the document (stdout) and what it
/// says it does not carry (stderr).
fn export(t: &TestHome, name: &str, format: &str) -> (String, String) {
    let out = t.run(&["export", name, "--format", format]);
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_vm_exports_as_a_libvirt_domain_that_libvirts_schema_accepts() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "lv", port);
    let (xml, stderr) = export(&t, "lv", "libvirt");
    assert!(
        stderr.contains("not carried: host_access = false"),
        "{stderr}"
    );
    assert!(
        xml.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:8080")),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("{}/vms/lv/disk.qcow2", t.home().display())),
        "{xml}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lv.xml");
    t.ok(&[
        "export",
        "lv",
        "--format",
        "libvirt",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), xml);
    let v = Command::new("virt-xml-validate")
        .arg(&file)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (scripts/install-deps.sh --test installs libvirt-clients)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    t.refused(
        &["export", "lv", "--format", "libvirt", "--strict"],
        &["--strict", "host_access = false"],
    );
    t.refused(
        &["export", "lv", "--format", "ova"],
        &["invalid value 'ova'", "archive, libvirt"],
    );
    let err = t.fails(&["export", "nope", "--format", "libvirt"], 3);
    assert!(
        err.contains("\"nope\" not found") || err.contains("nope"),
        "{err}"
    );
}

/// KubeVirt's OpenAPI document (`../shared/schemas/` beside the repository, see its README).
fn kubevirt_schema() -> std::path::PathBuf {
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/schemas/kubevirt-openapi.json");
    [beside, "/work/shared/schemas/kubevirt-openapi.json".into()]
        .into_iter()
        .find(|p| p.is_file())
        .expect("KubeVirt's OpenAPI schema in ../shared/schemas/ (see HOST.md)")
}

fn kubevirt_valid(file: &std::path::Path) -> Result<(), String> {
    let tool = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/kubevirt-validate.py"
    );
    let out = Command::new(work_dir().join("venv/bin/python"))
        .arg(tool)
        .arg(kubevirt_schema())
        .arg(file)
        .output()
        .expect("the suite's venv (scripts/test.sh installs jsonschema there)");
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

#[test]
fn a_vm_exports_as_kubevirt_objects_that_kubevirts_schema_accepts_with_unknown_keys_refused() {
    let t = TestHome::new();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("kv.toml");
    std::fs::write(
        &def,
        format!("memory = \"256M\"\nautostart = true\nports = [\"{port}:8080\"]\n[health]\nhttp = \"8080/\"\n"),
    )
    .unwrap();
    t.ok(&["create", "kv", "--from", def.to_str().unwrap()]);
    let (yaml, stderr) = export(&t, "kv", "kubevirt");
    assert!(
        stderr.contains("not carried: [health] start_period"),
        "{stderr}"
    );
    assert!(
        yaml.contains("runStrategy: Always") && yaml.contains("kind: Service"),
        "{yaml}"
    );
    let file = dir.path().join("kv.yaml");
    std::fs::write(&file, &yaml).unwrap();
    kubevirt_valid(&file).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    // The check refuses what KubeVirt does not know: a misspelled key fails it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml.replacen("runStrategy:", "runStrategyy:", 1)).unwrap();
    let e = kubevirt_valid(&bad).unwrap_err();
    assert!(e.contains("runStrategyy"), "{e}");
    t.refused(
        &["export", "kv", "--format", "kubevirt", "--strict"],
        &["--strict", "start_period"],
    );
}

#[test]
fn a_vm_exports_as_a_nomad_job_that_warns_of_its_open_forwards() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "nj", port);
    let (hcl, stderr) = export(&t, "nj", "nomad");
    assert!(hcl.contains("driver       = \"qemu\""), "{hcl}");
    assert!(
        hcl.contains(&format!("port \"tcp_8080\" {{ static = {port} }}")),
        "{hcl}"
    );
    assert!(hcl.contains("tcp_8080 = 8080"), "{hcl}");
    assert!(hcl.contains("on EVERY interface"), "{hcl}");
    assert!(stderr.contains("binds them on every interface"), "{stderr}");
    // An HCL parser reads it as a job with a qemu task (Nomad itself is not in Debian).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nj.hcl");
    std::fs::write(&file, &hcl).unwrap();
    let check = r#"
import hcl2, sys
job = hcl2.load(open(sys.argv[1]))["job"][0]['"nj"']
task = job["group"][0]['"nj"']["task"][0]['"nj"']
config = task["config"][0]
assert task["driver"] == '"qemu"', task
assert config["port_map"][0]["tcp_8080"] == 8080, config
assert config["graceful_shutdown"] is True, config
print("ok")
"#;
    let out = Command::new(work_dir().join("venv/bin/python"))
        .args(["-c", check])
        .arg(&file)
        .output()
        .expect("the suite's venv (scripts/test.sh installs python-hcl2 there)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.refused(
        &["export", "nj", "--format", "nomad", "--strict"],
        &["--strict"],
    );
}

/// The libvirt export run by a real libvirt 9.0 (libvirtd in a systemd-nspawn container, so no
/// daemon is started on the host): `virsh define` takes it, `virsh start` boots the tiny guest
/// under TCG, its forwarded port answers, `virsh shutdown` powers it off by ACPI.
#[test]
fn the_libvirt_export_runs_under_libvirt_and_powers_off_by_acpi() {
    use crate::nspawn::{Container, create_tiny};
    use crate::systemd_e2e::{GUEST_UP, wait_for};
    let c = Container::boot("libvirt");
    let port = free_port();
    create_tiny(&c, "lv", port);
    c.ok(&[
        "vmctl",
        "export",
        "lv",
        "--format",
        "libvirt",
        "-o",
        "/root/lv.xml",
    ]);
    c.ok(&["virt-xml-validate", "/root/lv.xml", "domain"]);
    // libvirt's QEMU runs as libvirt-qemu: it may pass vmctl's folders to the VM's files
    // (libvirt gives it the files themselves while the domain runs).
    c.ok(&[
        "setfacl",
        "-m",
        "u:libvirt-qemu:x",
        "/var/lib/vmctl",
        "/var/lib/vmctl/vms",
        "/var/lib/vmctl/vms/lv",
        "/var/lib/vmctl/images",
        "/var/lib/vmctl/images/tiny",
        "/var/lib/vmctl/images/tiny/x86_64",
    ]);
    // The container's cgroups are read-only to it: libvirt manages no cgroup of its own here.
    c.ok(&[
        "sh",
        "-c",
        "echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf && systemctl restart libvirtd",
    ]);
    let virsh = |args: &[&str]| {
        let mut a = vec!["timeout", "120", "virsh", "-c", "qemu:///system"];
        a.extend(args);
        c.ok(&a)
    };
    virsh(&["define", "/root/lv.xml"]);
    virsh(&["start", "lv"]);
    let want = "vmctl tiny guest: lv";
    wait_for(&c, "the libvirt domain's forwarded port", GUEST_UP, || {
        http_get(port).filter(|p| p.contains(want))
    });
    virsh(&["shutdown", "lv"]);
    let (reason, _) = wait_for(&c, "the domain shut off", GUEST_UP, || {
        let out = c.ok(&[
            "virsh",
            "-c",
            "qemu:///system",
            "domstate",
            "lv",
            "--reason",
        ]);
        out.trim()
            .starts_with("shut off")
            .then(|| out.trim().to_string())
    });
    assert_eq!(
        reason, "shut off (shutdown)",
        "powered off by the guest (ACPI)"
    );
    virsh(&["undefine", "lv"]);
}

/// The seed's debian-12 VM exported to libvirt keeps what vmctl gives it: its provisioning
/// credential (through `<sysinfo type='fwcfg'>`) makes its user, key and host key, so the guest
/// answers `vmctl ssh` with its key (host key pinned) and serves its app through the forward.
#[test]
fn the_debian_libvirt_export_answers_ssh_with_its_key_and_serves_its_app() {
    use crate::nspawn::Container;
    use crate::systemd_e2e::wait_for;
    let c = Container::boot_with("libvirt-deb", &["debian-12"]);
    let (ssh, http) = (free_port(), free_port());
    c.ok(&[
        "vmctl",
        "create",
        "web",
        "--image",
        "debian-12",
        "--mem",
        "1G",
        "--disk",
        "4G",
        "--app",
        "gunicorn-hello",
        "--port",
        &format!("{ssh}:22"),
        "--port",
        &format!("{http}:8080"),
    ]);
    c.ok(&[
        "vmctl",
        "export",
        "web",
        "--format",
        "libvirt",
        "-o",
        "/root/web.xml",
    ]);
    c.ok(&[
        "sh",
        "-c",
        "echo 'cgroup_controllers = [ ]' >> /etc/libvirt/qemu.conf && systemctl restart libvirtd && \
         setfacl -m u:libvirt-qemu:x /var/lib/vmctl /var/lib/vmctl/vms /var/lib/vmctl/vms/web \
           /var/lib/vmctl/images /var/lib/vmctl/images/debian-12 /var/lib/vmctl/images/debian-12/x86_64 && \
         setfacl -m u:libvirt-qemu:r /var/lib/vmctl/vms/web/provision.json",
    ]);
    c.ok(&[
        "timeout",
        "120",
        "virsh",
        "-c",
        "qemu:///system",
        "define",
        "/root/web.xml",
    ]);
    c.ok(&[
        "timeout",
        "120",
        "virsh",
        "-c",
        "qemu:///system",
        "start",
        "web",
    ]);
    wait_for(
        &c,
        "the app through libvirt's forward",
        std::time::Duration::from_secs(400),
        || http_get(http).filter(|p| p.contains("Hello, World!")),
    );
    let id = c.ok(&[
        "vmctl",
        "ssh",
        "web",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        "--",
        "id -un; hostname",
    ]);
    // vmctl runs as root in the container: the login user is "debian".
    assert_eq!(id.trim(), "debian\nweb", "the login user over its key");
    c.ok(&[
        "timeout",
        "120",
        "virsh",
        "-c",
        "qemu:///system",
        "destroy",
        "web",
    ]);
}
