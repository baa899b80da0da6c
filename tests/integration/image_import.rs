//! `vmctl image import` of hostile files, made here with `qemu-img create` or by writing bytes:
//! qcow2 images backed by the host's /etc/shadow or by another image, with an external data
//! file, with headers edited to need what vmctl cannot check, other formats (vmdk, vdi, ...),
//! files that are no disk at all, and a `--format` that contradicts the bytes. Each is refused
//! with exit 2, a message naming the file and what is wrong, and a home that is byte for byte
//! what it was; what a backing or data file names is never opened (a FIFO there would block
//! whoever opened it). Good images (a blank qcow2, raw disks with an MBR, ext4 or FAT) still
//! import, with their contents. Needs qemu-img, mkfs.ext4 and mkfs.vfat; boots nothing.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const SELF_CONTAINED: &str = "vmctl imports only self-contained images (qemu-img convert -O \
                              qcow2 it yourself first)";
const ONLY_QCOW2_RAW: &str = "vmctl imports only qcow2 and raw disk images";

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file below `dir` with its bytes (`TestHome::snapshot` compares sizes only).
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push((p.clone(), vec![]));
            out.extend(contents(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// A home that already holds an imported image (so "unchanged" covers an existing images
/// directory and its lock), and a directory for the files to import.
fn setup() -> (TestHome, tempfile::TempDir) {
    let t = TestHome::bare();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&good), "64M"]);
    t.ok(&["image", "import", s(&good), "--name", "good"]);
    (t, dir)
}

/// `vmctl image import FILE --name evil EXTRA...` exits 2 within 60 s (a FIFO opened for
/// reading would block it), its stderr holds every needle, and the home is unchanged.
fn refused(t: &TestHome, file: &Path, extra: &[&str], needles: &[&str]) {
    let before = contents(t.home());
    let sizes = t.snapshot();
    let mut args = vec!["image", "import", s(file), "--name", "evil"];
    args.extend(extra);
    let mut child = t
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("vmctl {args:?} hung: something opened what the image points to");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "vmctl {args:?}: {err}");
    for n in needles {
        assert!(
            err.contains(n),
            "vmctl {args:?}: {n:?} missing from:\n{err}"
        );
    }
    assert_eq!(t.snapshot(), sizes, "vmctl {args:?} changed the home");
    assert!(
        contents(t.home()) == before,
        "vmctl {args:?} changed a file of the home"
    );
}

fn mkfifo(p: &Path) {
    run("mkfifo", &[s(p)]);
}

/// Overwrite bytes of a file at `at`.
fn patch(p: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn image_import_refuses_backing_files_and_never_opens_them() {
    let (t, dir) = setup();
    let d = dir.path();
    let shadow = d.join("shadow.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        s(&shadow),
        "1G",
    ]);
    refused(
        &t,
        &shadow,
        &[],
        &[
            &format!("FILE: {} names a backing file (/etc/shadow); ", s(&shadow)),
            SELF_CONTAINED,
        ],
    );
    refused(
        &t,
        &shadow,
        &["--format", "qcow2"],
        &["names a backing file (/etc/shadow)"],
    );
    // Backed by another qcow2, by relative name, and in the version 2 format.
    let base = d.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "1G"]);
    let overlay = d.join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&overlay),
    ]);
    refused(&t, &overlay, &[], &["names a backing file (base.qcow2)"]);
    let v2 = d.join("v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        s(&v2),
        "1G",
    ]);
    refused(&t, &v2, &[], &["names a backing file (/etc/shadow)"]);
    // A backing file nobody may open: a FIFO blocks whoever opens it for reading.
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let trap = d.join("trap.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-u",
        "-f",
        "qcow2",
        "-b",
        s(&fifo),
        "-F",
        "raw",
        s(&trap),
        "1G",
    ]);
    refused(
        &t,
        &trap,
        &[],
        &[&format!("names a backing file ({})", s(&fifo))],
    );
}

#[test]
fn image_import_refuses_external_data_files_and_never_opens_them() {
    let (t, dir) = setup();
    let d = dir.path();
    let data = d.join("data.raw");
    let img = d.join("external.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(&data)),
        s(&img),
        "16M",
    ]);
    let message = format!(
        "FILE: {} uses an external data file ({}); {SELF_CONTAINED}",
        s(&img),
        s(&data)
    );
    refused(&t, &img, &[], &[&message]);
    // The data file replaced by a FIFO: nothing opens it.
    std::fs::remove_file(&data).unwrap();
    mkfifo(&data);
    refused(&t, &img, &["--format", "qcow2"], &[&message]);
    // Pointing at a host disk, with data_file_raw: the same.
    let raw = d.join("raw-data.qcow2");
    let target = d.join("target.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={},data_file_raw=on", s(&target)),
        s(&raw),
        "16M",
    ]);
    refused(
        &t,
        &raw,
        &[],
        &["uses an external data file", SELF_CONTAINED],
    );
}

#[test]
fn image_import_refuses_qcow2_headers_it_cannot_check() {
    let (t, dir) = setup();
    let d = dir.path();
    let made = |name: &str| {
        let p = d.join(name);
        qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "1G"]);
        p
    };
    // incompatible_features is a big-endian u64 at byte 72.
    let unknown = made("unknown-feature.qcow2");
    patch(&unknown, 72, &(1u64 << 40).to_be_bytes());
    refused(
        &t,
        &unknown,
        &[],
        &["needs qcow2 incompatible features vmctl does not know (bits 0x10000000000)"],
    );
    let corrupt = made("corrupt.qcow2");
    patch(&corrupt, 72, &2u64.to_be_bytes());
    refused(
        &t,
        &corrupt,
        &[],
        &["is marked corrupt", "qemu-img check -r all"],
    );
    // The data-file bit without the extension naming it.
    let bit = made("data-bit.qcow2");
    patch(&bit, 72, &4u64.to_be_bytes());
    refused(&t, &bit, &[], &["uses an external data file; "]);
    // The virtual size (a u64 at 24) far past any disk.
    let huge = made("huge.qcow2");
    patch(&huge, 24, &(1u64 << 62).to_be_bytes());
    refused(
        &t,
        &huge,
        &[],
        &["has a virtual size of 4611686018427387904 bytes", "64T"],
    );
    // A header vmctl's checks pass but qemu-img refuses: l1_size (a u32 at 36) absurd. The
    // refusal is qemu-img's, under its limits, still exit 2 with the file named.
    let l1 = made("l1.qcow2");
    patch(&l1, 36, &u32::MAX.to_be_bytes());
    refused(
        &t,
        &l1,
        &[],
        &[&format!(
            "FILE: {} is refused by qemu-img info -f qcow2: Active L1 table too large",
            s(&l1)
        )],
    );
    let version = made("version.qcow2");
    patch(&version, 4, &4u32.to_be_bytes());
    refused(&t, &version, &[], &["qcow2 image of version 4"]);
    let truncated = d.join("truncated.qcow2");
    std::fs::write(
        &truncated,
        &std::fs::read(made("whole.qcow2")).unwrap()[..90],
    )
    .unwrap();
    refused(
        &t,
        &truncated,
        &[],
        &["is a truncated qcow2 image: 90 bytes"],
    );
    // crypt_method 2 (LUKS) in the header (bytes 32-35): what `qemu-img create -o
    // encrypt.format=luks` writes, without its key derivation, whose timing fails on a busy host
    // ("Unable to get accurate CPU usage").
    let encrypted = d.join("encrypted.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&encrypted), "16M"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&encrypted)
        .unwrap()
        .write_at(&2u32.to_be_bytes(), 32)
        .unwrap();
    refused(&t, &encrypted, &[], &["is an encrypted qcow2 image (LUKS)"]);
}

#[test]
fn image_import_refuses_other_formats_by_name() {
    let (t, dir) = setup();
    let d = dir.path();
    for (fmt, name, extra) in [
        ("vmdk", "vmdk", ""),
        ("vdi", "vdi", ""),
        ("vhdx", "vhdx", ""),
        ("vpc", "vpc (VHD)", ""),
        ("vpc", "vpc (fixed VHD)", "subformat=fixed"),
        ("qed", "qed", ""),
        ("parallels", "parallels", ""),
        ("qcow", "qcow (version 1)", ""),
    ] {
        let p = d.join(format!("x-{fmt}-{}", extra.len()));
        let mut args = vec!["create", "-q", "-f", fmt];
        if !extra.is_empty() {
            args.extend(["-o", extra]);
        }
        args.extend([s(&p), "16M"]);
        qemu_img(&args);
        let message = format!("FILE: {} is a {name} image; {ONLY_QCOW2_RAW}", s(&p));
        refused(&t, &p, &[], &[&message]);
        refused(&t, &p, &["--format", "raw"], &[&message]);
    }
    let luks = d.join("x.luks");
    // qemu-img times its key derivation in CPU time; on a loaded host it can measure none and
    // give up ("Unable to get accurate CPU usage"): a fixture's hiccup, tried again.
    let create_luks = || {
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "--object",
                "secret,id=s0,data=pw",
                "-f",
                "luks",
            ])
            .args(["-o", "key-secret=s0", s(&luks), "16M"])
            .output()
            .unwrap()
    };
    let made = (0..5).map(|_| create_luks()).find(|o| {
        o.status.success() || !String::from_utf8_lossy(&o.stderr).contains("accurate CPU usage")
    });
    let made = made.expect("qemu-img could not time the LUKS key derivation in 5 tries");
    assert!(made.status.success(), "qemu-img create luks: {made:?}");
    refused(&t, &luks, &[], &["is a luks image"]);
    // The classic: a VMDK descriptor whose extent is a host file.
    let descriptor = d.join("descriptor.vmdk");
    std::fs::write(
        &descriptor,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/shadow\" 0\n",
    )
    .unwrap();
    refused(&t, &descriptor, &[], &["is a vmdk (descriptor) image"]);
    // Formats qemu-img only reads, written as bytes.
    for (name, at, magic) in [
        ("bochs", 0, &b"Bochs Virtual HD Image\0"[..]),
        (
            "cloop",
            0,
            b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0\n",
        ),
        ("dmg", 4096 - 512, b"koly"),
    ] {
        let p = d.join(format!("x.{name}"));
        let mut bytes = vec![0u8; 4096];
        bytes[at..at + magic.len()].copy_from_slice(magic);
        bytes[510..512].copy_from_slice(b"\x55\xaa");
        std::fs::write(&p, bytes).unwrap();
        refused(&t, &p, &[], &[&format!("is a {name} image")]);
    }
}

#[test]
fn image_import_refuses_files_that_are_not_disks() {
    let (t, dir) = setup();
    let d = dir.path();
    let passwd = Path::new("/etc/passwd");
    let mut needles = vec!["FILE: /etc/passwd ", "disk image"];
    if std::fs::metadata(passwd).unwrap().len() >= 512 {
        needles.push("does not look like a disk image (it is text): no MBR boot signature");
    }
    refused(&t, passwd, &[], &needles);
    refused(&t, passwd, &["--format", "raw"], &needles);
    let empty = d.join("empty");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &t,
        &empty,
        &[],
        &[&format!(
            "FILE: {} is empty; a disk image holds at least one 512-byte sector",
            s(&empty)
        )],
    );
    let small = d.join("small");
    std::fs::write(&small, [0x55u8; 100]).unwrap();
    refused(
        &t,
        &small,
        &[],
        &["is 100 bytes, less than one 512-byte sector"],
    );
    let zeros = d.join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    refused(
        &t,
        &zeros,
        &[],
        &["does not look like a disk image (its first 4096 bytes are all zero)"],
    );
    let ragged = d.join("ragged.img");
    let mut bytes = vec![0u8; 1000];
    bytes[510..512].copy_from_slice(b"\x55\xaa");
    std::fs::write(&ragged, bytes).unwrap();
    refused(
        &t,
        &ragged,
        &[],
        &["is 1000 bytes, not a whole number of 512-byte sectors"],
    );
    let gz = d.join("disk.img.gz");
    let mut bytes = vec![0u8; 2048];
    bytes[..3].copy_from_slice(b"\x1f\x8b\x08");
    std::fs::write(&gz, bytes).unwrap();
    refused(
        &t,
        &gz,
        &[],
        &["is a gzip file, not a disk image; unpack it first"],
    );
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    for p in [fifo, d.to_path_buf(), d.join("missing")] {
        refused(
            &t,
            &p,
            &[],
            &[&format!("FILE: {} does not exist or is not a file", s(&p))],
        );
    }
}

#[test]
fn image_import_format_flag_must_agree_with_the_bytes() {
    let (t, dir) = setup();
    let d = dir.path();
    let q = d.join("blank.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&q), "1G"]);
    refused(
        &t,
        &q,
        &["--format", "raw"],
        &[&format!(
            "FILE: {} is a qcow2 image (version 3), not raw as --format says",
            s(&q)
        )],
    );
    let raw = d.join("mbr.raw");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[510..512].copy_from_slice(b"\x55\xaa");
    std::fs::write(&raw, bytes).unwrap();
    refused(
        &t,
        &raw,
        &["--format", "qcow2"],
        &["is a raw disk image (MBR), not qcow2 as --format says"],
    );
    refused(
        &t,
        Path::new("/etc/passwd"),
        &["--format", "qcow2"],
        &[
            "FILE: /etc/passwd is not a qcow2 image as --format says (it does not start with QFI\\xfb)",
        ],
    );
}

/// The image `name` of this home as `vmctl image list --json` shows it.
fn listed(t: &TestHome, name: &str) -> serde_json::Value {
    let list = t.json(&["image", "list", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .clone()
}

#[test]
fn image_import_still_imports_self_contained_qcow2_and_raw_disks() {
    let t = TestHome::bare();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let blank = d.join("blank.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&blank), "1G"]);
    let v2 = d.join("v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&v2),
        "32M",
    ]);
    let zstd = d.join("zstd.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd,extended_l2=on",
        s(&zstd),
        "32M",
    ]);
    let mbr = d.join("mbr.raw");
    let mut bytes = vec![0u8; 4 << 20];
    bytes[..11].copy_from_slice(b"vmctl-test!");
    bytes[510..512].copy_from_slice(b"\x55\xaa");
    bytes[3 << 20..(3 << 20) + 4].copy_from_slice(b"data");
    std::fs::write(&mbr, bytes).unwrap();
    let ext4 = d.join("ext4.raw");
    std::fs::File::create(&ext4)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    run("mkfs.ext4", &["-q", s(&ext4)]);
    let fat = d.join("fat.raw");
    std::fs::File::create(&fat)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run("mkfs.vfat", &[s(&fat)]);
    for (file, name, format, size) in [
        (&blank, "blank", None, 1u64 << 30),
        (&v2, "v2", Some("qcow2"), 32 << 20),
        (&zstd, "zstd", None, 32 << 20),
        (&mbr, "mbr", Some("raw"), 4 << 20),
        (&ext4, "ext4", None, 16 << 20),
        (&fat, "fat", None, 8 << 20),
    ] {
        let mut args = vec!["image", "import", s(file), "--name", name];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        let out = t.ok(&args);
        assert!(out.contains(&format!("as image {name} for")), "{out}");
        assert_eq!(listed(&t, name)["virtual_size"], size, "{name}");
        let disk = t.home().join(format!("images/{name}/x86_64/disk.qcow2"));
        let src_format = if file.extension().unwrap() == "qcow2" {
            "qcow2"
        } else {
            "raw"
        };
        // The imported disk holds what the file held.
        qemu_img(&[
            "compare",
            "-q",
            "-f",
            src_format,
            "-F",
            "qcow2",
            s(file),
            s(&disk),
        ]);
    }
}
