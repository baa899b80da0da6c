//! `vmctl export --format libvirt`: the document libvirt's own schema accepts
//! (`virt-xml-validate`, from libvirt-clients), what it does not carry listed on stderr or
//! refused with `--strict`, and the refusals of an unknown VM or format.

use std::process::Command;

use crate::harness::*;

#[test]
fn a_vm_exports_as_a_libvirt_domain_that_libvirts_schema_accepts() {
    let t = TestHome::new();
    let port = free_port();
    create_tiny(&t, "lv", port);
    let out = t.run(&["export", "lv", "--format", "libvirt"]);
    assert!(out.status.success(), "{out:?}");
    let xml = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
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
