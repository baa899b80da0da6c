//! Host facts, probed once and explicitly: architecture, kernel, CPUs and RAM (from sysinfo), the
//! QEMU binaries and their versions, what `/dev/kvm` answers to, and whether an address is one of
//! this host's.
//!
//! Nothing here decides anything; `accel` turns these facts into a choice. The KVM ioctls are the
//! crate's only `unsafe` code besides process setup, each with its SAFETY note.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::types::Arch;

#[derive(Debug, Clone, Serialize)]
pub struct KvmFacts {
    /// `/dev/kvm` exists.
    pub device: bool,
    /// Opening it read-write worked, or why not.
    pub open_error: Option<String>,
    pub api_version: Option<i32>,
    /// `KVM_CREATE_VM` succeeded, or why not.
    pub create_vm_error: Option<String>,
}

impl KvmFacts {
    /// The cheap checks the peers stop at: device present, opens, API 12, a VM can be created.
    pub fn basic_ok(&self) -> bool {
        self.device
            && self.open_error.is_none()
            && self.api_version == Some(12)
            && self.create_vm_error.is_none()
    }

    pub fn probe() -> KvmFacts {
        let path = Path::new("/dev/kvm");
        let mut facts = KvmFacts {
            device: path.exists(),
            open_error: None,
            api_version: None,
            create_vm_error: None,
        };
        if !facts.device {
            return facts;
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                facts.open_error = Some(e.to_string());
                return facts;
            }
        };
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
        const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
        // SAFETY: `fd` is an open /dev/kvm descriptor owned by `file`, alive for this call;
        // KVM_GET_API_VERSION takes no argument and touches no memory of ours.
        #[allow(unsafe_code)]
        let v = unsafe { libc::ioctl(fd, KVM_GET_API_VERSION as _, 0) };
        if v < 0 {
            facts.open_error = Some(format!(
                "KVM_GET_API_VERSION failed: {}",
                std::io::Error::last_os_error()
            ));
            return facts;
        }
        facts.api_version = Some(v);
        // SAFETY: as above; KVM_CREATE_VM takes the machine type (0) by value and returns a new
        // descriptor, which we close at once.
        #[allow(unsafe_code)]
        let vm = unsafe { libc::ioctl(fd, KVM_CREATE_VM as _, 0) };
        if vm < 0 {
            facts.create_vm_error = Some(std::io::Error::last_os_error().to_string());
        } else {
            // SAFETY: `vm` is a descriptor the kernel just gave us and nothing else owns.
            #[allow(unsafe_code)]
            unsafe {
                libc::close(vm);
            }
        }
        facts
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QemuBinary {
    pub arch: Arch,
    pub name: &'static str,
    pub path: Option<PathBuf>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    pub arch: Option<Arch>,
    pub kernel: String,
    pub cpus: usize,
    pub memory_total: u64,
    pub memory_available: u64,
    pub qemu: Vec<QemuBinary>,
    pub qemu_img: Option<String>,
    pub kvm: KvmFacts,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        let (memory_total, memory_available) = memory();
        HostFacts {
            arch: Arch::host(),
            kernel: kernel_release(),
            cpus: cpu_count(),
            memory_total,
            memory_available,
            qemu: [Arch::X86_64, Arch::Aarch64]
                .into_iter()
                .map(|a| {
                    let path = find_in_path(a.qemu_binary());
                    let version = path.as_deref().and_then(qemu_version);
                    QemuBinary {
                        arch: a,
                        name: a.qemu_binary(),
                        path,
                        version,
                    }
                })
                .collect(),
            qemu_img: find_in_path("qemu-img").as_deref().and_then(qemu_version),
            kvm: KvmFacts::probe(),
        }
    }
}

/// (total, available) RAM in bytes.
pub fn memory() -> (u64, u64) {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            (sys.total_memory(), sys.available_memory())
        }
        Err(_) => (0, 0),
    }
}

/// Logical CPUs, from sysinfo.
pub fn cpu_count() -> usize {
    match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            sys.cpus().len().max(1)
        }
        Err(_) => 1,
    }
}

/// Whether `addr` is an address of this host that a socket can bind (0.0.0.0 and loopback always
/// are): binding it with port 0 fails with EADDRNOTAVAIL when no interface has it. Any other
/// failure (no permission, no sockets at all) does not say no; QEMU is then the judge.
pub fn has_address(addr: Ipv4Addr) -> bool {
    match std::net::UdpSocket::bind((addr, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// "7.2.22" from `qemu-system-x86_64 --version` / `qemu-img --version`.
pub fn qemu_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_qemu_version(&text)
}

fn parse_qemu_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let idx = first.find("version ")?;
    first[idx + 8..]
        .split_whitespace()
        .next()
        .map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_parse() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some("7.2.22".into())
        );
        assert_eq!(
            parse_qemu_version("qemu-img version 10.0.2 (Debian)"),
            Some("10.0.2".into())
        );
        assert_eq!(parse_qemu_version("nonsense"), None);
    }

    #[test]
    fn the_hosts_own_addresses_are_told_from_others() {
        assert!(has_address(Ipv4Addr::UNSPECIFIED));
        assert!(has_address(Ipv4Addr::LOCALHOST));
        assert!(has_address(Ipv4Addr::new(127, 0, 0, 2)));
        // TEST-NET-1 (RFC 5737): documentation only, never a host's address.
        assert!(!has_address(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
