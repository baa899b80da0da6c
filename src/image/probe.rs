//! What a disk image handed to `vmctl image import` is, decided from its own bytes before any
//! tool opens it: a self-contained qcow2 (version 2 or 3: no backing file, no external data
//! file, no encryption, no incompatible feature vmctl does not know) or a raw disk with a
//! recognisable start (MBR, GPT, ext2/3/4, ISO 9660, FAT). Every other format qemu-img knows is
//! refused by name, because qemu-img would open what such a file points to as the user running
//! vmctl (root's /etc/shadow as a backing file). Only then does qemu-img look at it, with the
//! format given and under limits, and what it says must agree. Messages are phrases about the
//! file, for the caller to prefix with its name.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::types::ByteSize;

/// The formats vmctl imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    /// qemu-img's name for it (`-f`, and `format` in `qemu-img info`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

/// A file that passed every check of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    /// The size of the disk the guest sees, in bytes.
    pub virtual_size: u64,
    /// What it was recognised by, for messages: `qcow2 image (version 3)`, `raw disk image (MBR)`.
    pub kind: String,
}

pub const SECTOR: u64 = 512;
/// Larger than any disk a VM of vmctl boots from, far below what qemu-img allows (a crafted
/// size only makes the conversion walk an address space nobody uses).
pub const MAX_VIRTUAL_SIZE: u64 = 64 * ByteSize::TIB;
/// How much of a file's start is read: a qcow2's first cluster (its header and extensions, at
/// most 2 MiB) and ISO 9660's volume descriptor at 32 KiB.
pub const HEAD_LEN: u64 = 2 * ByteSize::MIB;

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
const QCOW2_V2_HEADER_LEN: usize = 72;
const QCOW2_V3_HEADER_LEN: usize = 104;

/// Bits of the qcow2 header's `incompatible_features`.
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// The bits that change only how qemu reads the image's own clusters.
const INCOMPAT_ALLOWED: u64 = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;
const INCOMPAT_KNOWN: u64 = INCOMPAT_ALLOWED | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE;

/// Types of qcow2 header extensions vmctl looks for.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

const SELF_CONTAINED: &str =
    "vmctl imports only self-contained images (qemu-img convert -O qcow2 it yourself first)";
const ONLY_QCOW2_RAW: &str = "vmctl imports only qcow2 and raw disk images (qemu-img convert -O \
                              qcow2 it yourself first, knowing what it refers to)";

/// Read what [`detect`] needs of `file` (its first [`HEAD_LEN`] bytes and its last sector) and
/// decide. The outer error is the file not being readable.
pub fn probe_bytes(file: &File, len: u64) -> Result<std::result::Result<Probe, String>> {
    let mut head = vec![0u8; HEAD_LEN.min(len) as usize];
    file.read_exact_at(&mut head, 0)
        .ctx(|| "Cannot read the image".into())?;
    let tail_len = SECTOR.min(len);
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, len - tail_len)
        .ctx(|| "Cannot read the image".into())?;
    Ok(detect(&head, &tail, len))
}

/// Decide from a file's first bytes (`head`: up to [`HEAD_LEN`]), its last sector (`tail`) and
/// its length what it is, or why vmctl does not import it.
pub fn detect(head: &[u8], tail: &[u8], len: u64) -> std::result::Result<Probe, String> {
    if head.starts_with(QCOW_MAGIC) {
        let h = parse_qcow2(head)?;
        check_qcow2(&h, head)?;
        return Ok(Probe {
            format: Format::Qcow2,
            virtual_size: h.size,
            kind: format!("qcow2 image (version {})", h.version),
        });
    }
    if let Some(name) = foreign_format(head, tail) {
        return Err(format!("is a {name} image; {ONLY_QCOW2_RAW}"));
    }
    if let Some(name) = archive(head) {
        return Err(format!(
            "is a {name} file, not a disk image; unpack it first (vmctl imports qcow2 and raw \
             disk images)"
        ));
    }
    raw(head, len)
}

/// The fields of a qcow2 header vmctl checks (big-endian on disk; version 2 has no feature
/// fields, which read as 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub incompatible: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    /// The header extensions in the first cluster: type and data.
    pub extensions: Vec<(u32, Vec<u8>)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode a qcow2 header and its extensions from the file's first bytes (which start with the
/// magic), refusing what qemu itself would not read as a qcow2 of version 2 or 3.
pub fn parse_qcow2(head: &[u8]) -> std::result::Result<Qcow2Header, String> {
    let truncated = |need: usize| {
        format!(
            "is a truncated qcow2 image: {} bytes where its header needs {need}",
            head.len()
        )
    };
    if head.len() < QCOW2_V2_HEADER_LEN {
        return Err(truncated(QCOW2_V2_HEADER_LEN));
    }
    let version = be32(head, 4);
    match version {
        1 => return Err(format!("is a qcow (version 1) image; {ONLY_QCOW2_RAW}")),
        2 | 3 => {}
        v => {
            return Err(format!(
                "is a qcow2 image of version {v}; vmctl imports versions 2 and 3"
            ));
        }
    }
    let cluster_bits = be32(head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!(
            "has a malformed qcow2 header: cluster_bits {cluster_bits} (qemu allows 9-21)"
        ));
    }
    let mut h = Qcow2Header {
        version,
        backing_file_offset: be64(head, 8),
        backing_file_size: be32(head, 16),
        cluster_bits,
        size: be64(head, 24),
        crypt_method: be32(head, 32),
        incompatible: 0,
        refcount_order: 4,
        header_length: QCOW2_V2_HEADER_LEN as u32,
        compression_type: 0,
        extensions: vec![],
    };
    if version == 3 {
        if head.len() < QCOW2_V3_HEADER_LEN {
            return Err(truncated(QCOW2_V3_HEADER_LEN));
        }
        h.incompatible = be64(head, 72);
        h.refcount_order = be32(head, 96);
        h.header_length = be32(head, 100);
        let len = h.header_length as usize;
        if len < QCOW2_V3_HEADER_LEN || len as u64 > 1 << cluster_bits {
            return Err(format!(
                "has a malformed qcow2 header: header_length {len} (must be {QCOW2_V3_HEADER_LEN} \
                 to the cluster size)"
            ));
        }
        if head.len() < len {
            return Err(truncated(len));
        }
        if len > QCOW2_V3_HEADER_LEN {
            h.compression_type = head[QCOW2_V3_HEADER_LEN];
        }
        if h.refcount_order > 6 {
            return Err(format!(
                "has a malformed qcow2 header: refcount_order {} (qemu allows 0-6)",
                h.refcount_order
            ));
        }
    }
    // The extensions end where the backing file's name starts, or with the first cluster.
    let cluster: u64 = 1 << cluster_bits;
    let end = match h.backing_file_offset {
        0 => cluster,
        at => at.min(cluster),
    };
    h.extensions = extensions(head, h.header_length as usize, end as usize)?;
    Ok(h)
}

/// The header extensions from `start` to the end marker or to `end` (the backing file's name or
/// the end of the first cluster), as qemu reads them: each a type, a length and data padded to
/// 8 bytes.
fn extensions(
    head: &[u8],
    start: usize,
    end: usize,
) -> std::result::Result<Vec<(u32, Vec<u8>)>, String> {
    let mut out = vec![];
    let mut at = start;
    while at < end {
        if head.len() < at + 8 {
            return Err(format!(
                "is a truncated qcow2 image: {} bytes where its header extensions need {}",
                head.len(),
                at + 8
            ));
        }
        let (kind, len) = (be32(head, at), be32(head, at + 4) as usize);
        if kind == EXT_END {
            break;
        }
        let data = at + 8;
        if data > end || len > end - data {
            return Err(format!(
                "has a malformed qcow2 header: extension 0x{kind:08x} at byte {at} ({len} bytes) \
                 runs past the header's end at byte {end}"
            ));
        }
        if head.len() < data + len {
            return Err(format!(
                "is a truncated qcow2 image: {} bytes where header extension 0x{kind:08x} needs {}",
                head.len(),
                data + len
            ));
        }
        out.push((kind, head[data..data + len].to_vec()));
        at = data + len.div_ceil(8) * 8;
    }
    Ok(out)
}

/// A VM's overlay from an archive (`vmctl import`): like [`check_qcow2`], except that its
/// backing file may be named (vmctl replaces it with its own image's before anything reads it).
pub fn check_overlay(head: &[u8]) -> std::result::Result<(), String> {
    if !head.starts_with(QCOW_MAGIC) {
        return Err("is not a qcow2 image".into());
    }
    let mut h = parse_qcow2(head)?;
    h.backing_file_offset = 0;
    h.extensions.retain(|(kind, _)| *kind != EXT_BACKING_FORMAT);
    check_qcow2(&h, head)
}

/// Refuse a qcow2 that points outside itself, is encrypted, is marked corrupt, needs a feature
/// vmctl does not know, or has an unbootable size.
pub fn check_qcow2(h: &Qcow2Header, head: &[u8]) -> std::result::Result<(), String> {
    if h.backing_file_offset != 0 {
        let at = h.backing_file_offset;
        let name = usize::try_from(at)
            .ok()
            .and_then(|at| head.get(at..at.checked_add(h.backing_file_size as usize)?))
            .map(printable)
            .unwrap_or_else(|| format!("at byte {at}"));
        return Err(format!("names a backing file ({name}); {SELF_CONTAINED}"));
    }
    let ext = |kind: u32| h.extensions.iter().find(|(k, _)| *k == kind);
    if h.incompatible & INCOMPAT_DATA_FILE != 0 || ext(EXT_DATA_FILE).is_some() {
        let name = ext(EXT_DATA_FILE)
            .map(|(_, d)| format!(" ({})", printable(d)))
            .unwrap_or_default();
        return Err(format!(
            "uses an external data file{name}; {SELF_CONTAINED}"
        ));
    }
    if ext(EXT_BACKING_FORMAT).is_some() {
        return Err(format!(
            "has a backing file format header extension; {SELF_CONTAINED}"
        ));
    }
    if h.crypt_method != 0 || ext(EXT_CRYPTO).is_some() {
        let how = match h.crypt_method {
            1 => "AES",
            2 => "LUKS",
            _ => "unknown method",
        };
        return Err(format!(
            "is an encrypted qcow2 image ({how}); vmctl imports only unencrypted images"
        ));
    }
    if h.incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(
            "is marked corrupt in its qcow2 header; repair it with qemu-img check -r all first"
                .into(),
        );
    }
    let unknown = h.incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(format!(
            "needs qcow2 incompatible features vmctl does not know (bits 0x{unknown:x}); vmctl \
             imports only images it can check"
        ));
    }
    if h.compression_type > 1 {
        return Err(format!(
            "uses qcow2 compression type {}, which vmctl does not know (0 zlib, 1 zstd)",
            h.compression_type
        ));
    }
    check_size(h.size)
}

fn check_size(size: u64) -> std::result::Result<(), String> {
    if size == 0 || size > MAX_VIRTUAL_SIZE {
        return Err(format!(
            "has a virtual size of {size} bytes; vmctl imports disks of {SECTOR} bytes to {}",
            ByteSize(MAX_VIRTUAL_SIZE)
        ));
    }
    Ok(())
}

/// A name from a hostile header, safe to print: control characters escaped, at most 256.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars().take(256) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn at(b: &[u8], offset: usize, magic: &[u8]) -> bool {
    b.get(offset..offset + magic.len()) == Some(magic)
}

/// The name of any other image format qemu-img would recognise in these bytes (its probes'
/// magics), `tail` being the file's last sector.
pub fn foreign_format(head: &[u8], tail: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let text = &head[..head.len().min(64 * 1024)];
    let contains = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    Some(if starts(b"KDMV") || starts(b"COWD") {
        "vmdk"
    } else if starts(b"# Disk DescriptorFile")
        || (contains(b"createType=") && contains(b"version="))
    {
        "vmdk (descriptor)"
    } else if at(head, 64, &0xbeda_107f_u32.to_le_bytes()) {
        "vdi"
    } else if starts(b"vhdxfile") {
        "vhdx"
    } else if starts(b"conectix") {
        "vpc (VHD)"
    } else if tail.starts_with(b"conectix") {
        "vpc (fixed VHD)"
    } else if starts(b"QED\0") {
        "qed"
    } else if starts(b"LUKS\xba\xbe") {
        "luks"
    } else if starts(b"Bochs Virtual HD Image") {
        "bochs"
    } else if starts(b"#!/bin/sh\n#V2.0 Format\n") {
        "cloop"
    } else if tail.starts_with(b"koly") {
        "dmg"
    } else if starts(b"WithoutFreeSpace") || starts(b"WithouFreSpacExt") {
        "parallels"
    } else {
        return None;
    })
}

/// A compressed or archive file (a download not yet unpacked).
fn archive(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    Some(if starts(b"\x1f\x8b") {
        "gzip"
    } else if starts(b"\xfd7zXZ\0") {
        "xz"
    } else if starts(b"\x28\xb5\x2f\xfd") {
        "zstd"
    } else if starts(b"BZh") {
        "bzip2"
    } else if starts(b"PK\x03\x04") {
        "zip"
    } else if at(head, 257, b"ustar") {
        "tar"
    } else {
        return None;
    })
}

/// A raw file is a disk: whole sectors, at least one, starting like one.
fn raw(head: &[u8], len: u64) -> std::result::Result<Probe, String> {
    if len == 0 {
        return Err(format!(
            "is empty; a disk image holds at least one {SECTOR}-byte sector"
        ));
    }
    if len < SECTOR {
        return Err(format!(
            "is {len} bytes, less than one {SECTOR}-byte sector: not a disk image"
        ));
    }
    let Some(what) = raw_signature(head) else {
        return Err(format!(
            "does not look like a disk image{}: no MBR boot signature (0x55AA at byte 510), GPT \
             header, or ext2/3/4, ISO 9660 or FAT file system at its start",
            looks_like(head)
        ));
    };
    if len % SECTOR != 0 {
        return Err(format!(
            "is {len} bytes, not a whole number of {SECTOR}-byte sectors: not a disk image"
        ));
    }
    check_size(len)?;
    Ok(Probe {
        format: Format::Raw,
        virtual_size: len,
        kind: format!("raw disk image ({what})"),
    })
}

/// What a raw disk's start is recognised by.
pub fn raw_signature(head: &[u8]) -> Option<&'static str> {
    let le16 = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    // ext2/3/4: the superblock at 1024, magic at 56, a block size of 1-64 KiB, revision 0 or 1.
    let ext = le16(1080) == Some(0xef53)
        && le32(1024 + 24).is_some_and(|b| b <= 6)
        && le32(1024 + 76).is_some_and(|r| r <= 1);
    // FAT: a jump, a power-of-two sector size, and the type named in the boot sector.
    let fat = matches!(head.first(), Some(0xeb | 0xe9))
        && le16(11).is_some_and(|s| matches!(s, 512 | 1024 | 2048 | 4096))
        && (at(head, 54, b"FAT") || at(head, 82, b"FAT32"));
    Some(if at(head, 512, b"EFI PART") {
        "GPT"
    } else if at(head, 32769, b"CD001") {
        "ISO 9660"
    } else if ext {
        "ext2/3/4 file system"
    } else if fat {
        "FAT file system"
    } else if at(head, 510, b"\x55\xaa") {
        "MBR"
    } else {
        return None;
    })
}

/// A hint for a file that is not a disk: text, or nothing but zeros.
fn looks_like(head: &[u8]) -> String {
    let start = &head[..head.len().min(4096)];
    if start.iter().all(|&b| b == 0) {
        return format!(" (its first {} bytes are all zero)", start.len());
    }
    let utf8 = match std::str::from_utf8(start) {
        Ok(s) => Some(s),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&start[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    if utf8.is_some_and(|s| s.chars().all(|c| !c.is_control() || c.is_whitespace())) {
        return " (it is text)".into();
    }
    String::new()
}

/// Does what `qemu-img info --output=json -f FORMAT` says of the file agree with its bytes:
/// the same format and virtual size, and nothing it points to?
pub fn check_info(info: &serde_json::Value, p: &Probe) -> std::result::Result<(), String> {
    let fmt = p.format.as_str();
    if info["format"].as_str() != Some(fmt) {
        return Err(format!(
            "is read by qemu-img info -f {fmt} as {}, not {fmt}",
            info["format"]
        ));
    }
    for key in ["backing-filename", "full-backing-filename"] {
        if let Some(v) = info.get(key) {
            return Err(format!(
                "names a backing file ({}), says qemu-img info; {SELF_CONTAINED}",
                printable(v.as_str().unwrap_or_default().as_bytes())
            ));
        }
    }
    if let Some(v) = info["format-specific"]["data"].get("data-file") {
        return Err(format!(
            "uses an external data file ({}), says qemu-img info; {SELF_CONTAINED}",
            printable(v.as_str().unwrap_or_default().as_bytes())
        ));
    }
    if info["encrypted"] == serde_json::Value::Bool(true) {
        return Err(
            "is encrypted, says qemu-img info; vmctl imports only unencrypted images".into(),
        );
    }
    match info["virtual-size"].as_u64() {
        Some(v) if v == p.virtual_size => Ok(()),
        v => Err(format!(
            "has a virtual size of {} bytes by qemu-img info, {} by its {}",
            v.map_or("no".into(), |v| v.to_string()),
            p.virtual_size,
            if p.format == Format::Qcow2 {
                "header"
            } else {
                "length"
            }
        )),
    }
}

/// Check `file` (opened from `path`, `len` bytes) completely before anything reads it as an
/// image: its bytes ([`detect`]), the format the user declared, then `qemu-img info` with that
/// format under limits ([`check_info`]). Refusals are [`Error::Usage`] naming `path`.
pub fn probe(path: &Path, file: &File, len: u64, declared: Option<Format>) -> Result<Probe> {
    let refuse = |what: String| Error::Usage(format!("FILE: {} {what}", path.display()));
    let found = probe_bytes(file, len)?;
    if let (Some(d), Err(_)) = (declared, &found) {
        if d == Format::Qcow2 && !is_qcow2(file) {
            return Err(refuse(
                "is not a qcow2 image as --format says (it does not start with QFI\\xfb)".into(),
            ));
        }
    }
    let p = found.map_err(refuse)?;
    if let Some(d) = declared.filter(|d| *d != p.format) {
        return Err(refuse(format!(
            "is a {}, not {} as --format says; drop --format or give --format {}",
            p.kind,
            d.as_str(),
            p.format.as_str()
        )));
    }
    let info = crate::qemu::img::info_untrusted(file, p.format.as_str())?.map_err(refuse)?;
    check_info(&info, &p).map_err(refuse)?;
    Ok(p)
}

fn is_qcow2(file: &File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == QCOW_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GIB: u64 = ByteSize::GIB;

    /// A qcow2 version 3 header as qemu-img 7.2 writes it (64 KiB clusters, header_length 112,
    /// an end marker), `size` bytes of virtual disk, padded to 1 KiB.
    fn qcow2(size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[..4].copy_from_slice(QCOW_MAGIC);
        set32(&mut h, 4, 3);
        set32(&mut h, 20, 16);
        set64(&mut h, 24, size);
        set32(&mut h, 96, 4);
        set32(&mut h, 100, 112);
        h
    }

    fn set32(h: &mut [u8], at: usize, v: u32) {
        h[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn set64(h: &mut [u8], at: usize, v: u64) {
        h[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// Append header extension `kind` with `data` at byte `at`, then an end marker.
    fn ext(h: &mut [u8], at: usize, kind: u32, data: &[u8]) -> usize {
        set32(h, at, kind);
        set32(h, at + 4, data.len() as u32);
        h[at + 8..at + 8 + data.len()].copy_from_slice(data);
        let next = at + 8 + data.len().div_ceil(8) * 8;
        set64(h, next, 0);
        next
    }

    fn qcow2_err(h: &[u8]) -> String {
        detect(h, &h[h.len() - 512..], h.len() as u64).unwrap_err()
    }

    fn raw_disk(len: usize, at: usize, magic: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[at..at + magic.len()].copy_from_slice(magic);
        d
    }

    fn raw_probe(d: &[u8]) -> std::result::Result<Probe, String> {
        let tail = &d[d.len().saturating_sub(512)..];
        detect(d, tail, d.len() as u64)
    }

    #[test]
    fn a_blank_qcow2_of_version_3_or_2_is_accepted() {
        let h = qcow2(GIB);
        let p = detect(&h, &h[512..], 1024).unwrap();
        assert_eq!(
            p,
            Probe {
                format: Format::Qcow2,
                virtual_size: GIB,
                kind: "qcow2 image (version 3)".into()
            }
        );
        let mut v2 = qcow2(GIB);
        set32(&mut v2, 4, 2);
        v2[72..112].fill(0);
        assert_eq!(
            detect(&v2, &[], 1024).unwrap().kind,
            "qcow2 image (version 2)"
        );
    }

    #[test]
    fn a_truncated_qcow2_header_is_refused_at_every_length() {
        let mut h = qcow2(GIB);
        ext(&mut h, 112, 0x6803_f857, &[1; 48]);
        for n in 4..176 {
            let e = detect(&h[..n], &[], n as u64).unwrap_err();
            assert!(e.starts_with("is a truncated qcow2 image"), "{n}: {e}");
        }
        assert!(detect(&h[..176], &[], 176).is_ok());
        let mut v2 = qcow2(GIB);
        set32(&mut v2, 4, 2);
        v2[72..].fill(0);
        assert!(
            detect(&v2[..70], &[], 70)
                .unwrap_err()
                .contains("70 bytes where its header needs 72")
        );
    }

    #[test]
    fn other_qcow_versions_are_refused() {
        for (v, needle) in [
            (1, "is a qcow (version 1) image"),
            (0, "version 0; vmctl imports versions 2 and 3"),
            (4, "version 4; vmctl imports versions 2 and 3"),
            (u32::MAX, "version 4294967295"),
        ] {
            let mut h = qcow2(GIB);
            set32(&mut h, 4, v);
            assert!(qcow2_err(&h).contains(needle), "{v}: {}", qcow2_err(&h));
        }
    }

    #[test]
    fn a_backing_file_is_refused_and_named_safely() {
        let mut h = qcow2(GIB);
        h[512..523].copy_from_slice(b"/etc/shadow");
        set64(&mut h, 8, 512);
        set32(&mut h, 16, 11);
        assert_eq!(
            qcow2_err(&h),
            "names a backing file (/etc/shadow); vmctl imports only self-contained images \
             (qemu-img convert -O qcow2 it yourself first)"
        );
        h[512..523].copy_from_slice(b"a\x1b[2Jb\nc\0de");
        assert!(
            qcow2_err(&h).contains(r"(a\u{1b}[2Jb\nc\u{0}de)"),
            "{}",
            qcow2_err(&h)
        );
        // Out of the bytes read, or past any address: named by its offset.
        set64(&mut h, 8, u64::MAX - 3);
        set32(&mut h, 16, 100);
        assert!(qcow2_err(&h).contains("names a backing file (at byte 18446744073709551612)"));
        // Version 2, as qemu-img -o compat=0.10 writes it: the name right after the header.
        let mut v2 = qcow2(GIB);
        set32(&mut v2, 4, 2);
        v2[72..].fill(0);
        v2[72..83].copy_from_slice(b"/etc/shadow");
        set64(&mut v2, 8, 72);
        set32(&mut v2, 16, 11);
        assert!(qcow2_err(&v2).starts_with("names a backing file (/etc/shadow)"));
    }

    #[test]
    fn an_external_data_file_is_refused_by_its_bit_or_its_extension() {
        let mut h = qcow2(GIB);
        set64(&mut h, 72, INCOMPAT_DATA_FILE);
        assert!(qcow2_err(&h).starts_with("uses an external data file; vmctl imports only"));
        ext(&mut h, 112, EXT_DATA_FILE, b"/dev/sda");
        assert!(qcow2_err(&h).starts_with("uses an external data file (/dev/sda); "));
        set64(&mut h, 72, 0);
        assert!(qcow2_err(&h).starts_with("uses an external data file (/dev/sda); "));
        let mut h = qcow2(GIB);
        ext(&mut h, 112, EXT_BACKING_FORMAT, b"raw");
        assert!(qcow2_err(&h).starts_with("has a backing file format header extension"));
    }

    #[test]
    fn only_known_harmless_incompatible_features_pass() {
        for ok in [
            INCOMPAT_DIRTY,
            INCOMPAT_COMPRESSION,
            INCOMPAT_EXTENDED_L2,
            INCOMPAT_ALLOWED,
        ] {
            let mut h = qcow2(GIB);
            set64(&mut h, 72, ok);
            assert!(detect(&h, &[], 1024).is_ok(), "{ok:#x}");
        }
        for (bits, needle) in [
            (INCOMPAT_CORRUPT, "is marked corrupt"),
            (1 << 5, "features vmctl does not know (bits 0x20)"),
            (1 << 63 | INCOMPAT_DIRTY, "(bits 0x8000000000000000)"),
        ] {
            let mut h = qcow2(GIB);
            set64(&mut h, 72, bits);
            assert!(
                qcow2_err(&h).contains(needle),
                "{bits:#x}: {}",
                qcow2_err(&h)
            );
        }
        let mut h = qcow2(GIB);
        h[104] = 1;
        assert!(detect(&h, &[], 1024).is_ok());
        h[104] = 2;
        assert!(qcow2_err(&h).contains("compression type 2"));
    }

    #[test]
    fn encryption_is_refused() {
        for (m, how) in [(1, "(AES)"), (2, "(LUKS)"), (9, "(unknown method)")] {
            let mut h = qcow2(GIB);
            set32(&mut h, 32, m);
            assert!(qcow2_err(&h).contains(how));
        }
        let mut h = qcow2(GIB);
        ext(&mut h, 112, EXT_CRYPTO, &[0; 16]);
        assert!(qcow2_err(&h).starts_with("is an encrypted qcow2 image"));
    }

    #[test]
    fn virtual_sizes_from_one_sector_to_the_bound_pass() {
        for ok in [SECTOR, GIB, MAX_VIRTUAL_SIZE] {
            assert_eq!(detect(&qcow2(ok), &[], 1024).unwrap().virtual_size, ok);
        }
        for bad in [0, MAX_VIRTUAL_SIZE + 1, u64::MAX] {
            assert!(
                qcow2_err(&qcow2(bad)).contains(&format!("virtual size of {bad} bytes")),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_lengths_are_refused_without_panicking() {
        let cases: [(usize, u32, &str); 6] = [
            (20, 8, "cluster_bits 8"),
            (20, 22, "cluster_bits 22"),
            (20, u32::MAX, "cluster_bits 4294967295"),
            (100, 103, "header_length 103"),
            (100, u32::MAX, "header_length 4294967295"),
            (96, 7, "refcount_order 7"),
        ];
        for (at, v, needle) in cases {
            let mut h = qcow2(GIB);
            set32(&mut h, at, v);
            assert!(
                qcow2_err(&h).contains(needle),
                "{needle}: {}",
                qcow2_err(&h)
            );
        }
        // header_length within the cluster but past the bytes read.
        let mut h = qcow2(GIB);
        set32(&mut h, 100, 4096);
        assert!(qcow2_err(&h).contains("1024 bytes where its header needs 4096"));
        // An extension whose length runs past the first cluster.
        let mut h = qcow2(GIB);
        set32(&mut h, 112, 0x1234_5678);
        set32(&mut h, 116, u32::MAX);
        assert!(qcow2_err(&h).contains("extension 0x12345678 at byte 112"));
        // Extensions that go on past the bytes there are (a truncated file).
        let mut h = qcow2(GIB);
        ext(&mut h, 112, 0x1234_5678, &[7; 100]);
        set32(&mut h, 224, 0x1234_5678);
        set32(&mut h, 228, 2000);
        assert!(qcow2_err(&h).contains("truncated qcow2 image: 1024 bytes where header extension"));
    }

    #[test]
    fn no_byte_string_makes_the_probe_panic() {
        let mut h = qcow2(GIB);
        ext(&mut h, 112, EXT_DATA_FILE, b"/x");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = h.clone();
            b[(seed % 160) as usize] = (seed >> 32) as u8;
            let n = (seed >> 40) as usize % b.len();
            let _ = detect(&b[..n], &[], n as u64);
            let _ = detect(&b, &b[512..], 1024);
        }
    }

    #[test]
    fn other_formats_are_named() {
        let cases: [(usize, &[u8], &str); 14] = [
            (0, b"KDMV", "vmdk"),
            (0, b"COWD", "vmdk"),
            (
                0,
                b"# Disk DescriptorFile\nversion=1\n",
                "vmdk (descriptor)",
            ),
            (64, &0xbeda_107f_u32.to_le_bytes(), "vdi"),
            (0, b"vhdxfile", "vhdx"),
            (0, b"conectix", "vpc (VHD)"),
            (4096 - 512, b"conectix", "vpc (fixed VHD)"),
            (0, b"QED\0", "qed"),
            (0, b"LUKS\xba\xbe", "luks"),
            (0, b"Bochs Virtual HD Image", "bochs"),
            (0, b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop", "cloop"),
            (4096 - 512, b"koly", "dmg"),
            (0, b"WithoutFreeSpace", "parallels"),
            (0, b"WithouFreSpacExt", "parallels"),
        ];
        for (at, magic, name) in cases {
            // Even with an MBR signature: what qemu-img would probe it as wins.
            let mut d = raw_disk(4096, at, magic);
            d[510..512].copy_from_slice(b"\x55\xaa");
            assert_eq!(
                raw_probe(&d).unwrap_err(),
                format!("is a {name} image; {ONLY_QCOW2_RAW}")
            );
        }
    }

    #[test]
    fn archives_are_named() {
        for (at, magic, name) in [
            (0, &b"\x1f\x8b\x08"[..], "gzip"),
            (0, b"\xfd7zXZ\0", "xz"),
            (0, b"\x28\xb5\x2f\xfd", "zstd"),
            (0, b"BZh9", "bzip2"),
            (0, b"PK\x03\x04", "zip"),
            (257, b"ustar", "tar"),
        ] {
            let e = raw_probe(&raw_disk(4096, at, magic)).unwrap_err();
            assert!(
                e.starts_with(&format!("is a {name} file, not a disk image")),
                "{e}"
            );
        }
    }

    #[test]
    fn raw_disks_are_recognised_by_their_start() {
        let ext4 = {
            let mut d = raw_disk(8192, 1080, &0xef53_u16.to_le_bytes());
            d[1024 + 24] = 2;
            d[1024 + 76] = 1;
            d
        };
        let mut fat = raw_disk(8192, 0, b"\xeb\x3c\x90mkfs.fat");
        fat[11..13].copy_from_slice(&512u16.to_le_bytes());
        fat[54..59].copy_from_slice(b"FAT16");
        let mut fat32 = fat.clone();
        fat32[54..59].fill(0);
        fat32[82..87].copy_from_slice(b"FAT32");
        for (d, what) in [
            (raw_disk(512, 510, b"\x55\xaa"), "MBR"),
            (raw_disk(4096, 512, b"EFI PART"), "GPT"),
            (ext4, "ext2/3/4 file system"),
            (raw_disk(65536, 32769, b"CD001"), "ISO 9660"),
            (fat, "FAT file system"),
            (fat32, "FAT file system"),
        ] {
            let p = raw_probe(&d).unwrap();
            assert_eq!(p.format, Format::Raw);
            assert_eq!(p.virtual_size, d.len() as u64);
            assert_eq!(p.kind, format!("raw disk image ({what})"));
        }
    }

    #[test]
    fn raw_files_that_are_not_disks_are_refused() {
        assert_eq!(
            raw_probe(&[]).unwrap_err(),
            "is empty; a disk image holds at least one 512-byte sector"
        );
        assert_eq!(
            raw_probe(&[7; 100]).unwrap_err(),
            "is 100 bytes, less than one 512-byte sector: not a disk image"
        );
        assert_eq!(
            raw_probe(&raw_disk(1000, 510, b"\x55\xaa")).unwrap_err(),
            "is 1000 bytes, not a whole number of 512-byte sectors: not a disk image"
        );
        let zeros = raw_probe(&vec![0; 1 << 20]).unwrap_err();
        assert!(
            zeros.starts_with(
                "does not look like a disk image (its first 4096 bytes are all zero): no MBR"
            ),
            "{zeros}"
        );
        let text = b"root:x:0:0:root:/root:/bin/bash\n".repeat(64);
        assert!(raw_probe(&text).unwrap_err().contains("(it is text)"));
        let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8 | 1).collect();
        let e = raw_probe(&noise).unwrap_err();
        assert!(
            e.starts_with("does not look like a disk image: no MBR"),
            "{e}"
        );
        // ext's magic alone, with an impossible block size, is not a file system.
        let mut d = raw_disk(8192, 1080, &0xef53_u16.to_le_bytes());
        d[1024 + 24] = 40;
        assert!(raw_probe(&d).is_err());
    }

    fn info(format: &str, size: u64) -> serde_json::Value {
        json!({
            "virtual-size": size, "filename": "/proc/self/fd/0", "format": format,
            "format-specific": {"type": format, "data": {"compat": "1.1"}},
        })
    }

    #[test]
    fn qemu_img_info_must_agree_with_the_bytes() {
        let q = detect(&qcow2(GIB), &[], 1024).unwrap();
        assert_eq!(check_info(&info("qcow2", GIB), &q), Ok(()));
        assert_eq!(
            check_info(&info("raw", GIB), &q).unwrap_err(),
            "is read by qemu-img info -f qcow2 as \"raw\", not qcow2"
        );
        let mut i = info("qcow2", GIB);
        i["backing-filename"] = json!("/etc/shadow");
        assert!(
            check_info(&i, &q)
                .unwrap_err()
                .starts_with("names a backing file (/etc/shadow), says qemu-img info")
        );
        let mut i = info("qcow2", GIB);
        i["format-specific"]["data"]["data-file"] = json!("/dev/sda");
        assert!(
            check_info(&i, &q)
                .unwrap_err()
                .starts_with("uses an external data file (/dev/sda), says qemu-img info")
        );
        let mut i = info("qcow2", GIB);
        i["encrypted"] = json!(true);
        assert!(check_info(&i, &q).unwrap_err().starts_with("is encrypted"));
        assert_eq!(
            check_info(&info("qcow2", 2 * GIB), &q).unwrap_err(),
            "has a virtual size of 2147483648 bytes by qemu-img info, 1073741824 by its header"
        );
        let r = raw_probe(&raw_disk(512, 510, b"\x55\xaa")).unwrap();
        assert_eq!(check_info(&info("raw", 512), &r), Ok(()));
        assert_eq!(
            check_info(&json!({"format": "raw"}), &r).unwrap_err(),
            "has a virtual size of no bytes by qemu-img info, 512 by its length"
        );
    }
}
