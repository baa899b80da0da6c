//! Accelerator choice: KVM only where a guest really runs under it, TCG otherwise, with the reason.
//!
//! The cheap checks (device exists, opens, `KVM_CREATE_VM`) pass on hosts whose KVM cannot run a
//! Linux guest (a crippled CPUID makes the guest hang after "Probing EDD"). So before choosing KVM
//! vmctl boots the tiny test image's kernel under KVM with `vmctl.probe` on its command line; the
//! guest prints a marker from userspace and powers off. No marker within the bound means KVM does
//! not work. The verdict is cached per host kernel, QEMU version and CPU so only the first start
//! on a host pays for it. [`decide`] is pure and unit-tested; [`boot_probe`] runs QEMU.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::facts::KvmFacts;
use crate::sys::child::{Child, Identity};
use crate::types::{Accel, AccelChoice, Arch};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub accel: Accel,
    pub reason: String,
}

/// What happened when a real guest kernel was booted under KVM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum BootVerdict {
    /// The guest reached userspace.
    Works { seconds: f64 },
    /// No marker within the bound: the guest hangs under this KVM.
    Hangs { seconds: f64, last_line: String },
    /// QEMU refused or died (e.g. "failed to set MSR").
    Fails { error: String },
}

/// Marker the tiny image's init prints on the console in probe mode.
pub const PROBE_MARKER: &str = "vmctl-probe: ok";
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Choose the accelerator. `Err` carries why KVM cannot be used when the user insisted on it.
/// `boot` is the KVM boot-probe verdict, `None` when no probe could be run (no test kernel).
pub fn decide(
    choice: AccelChoice,
    guest: Arch,
    host: Option<Arch>,
    kvm: &KvmFacts,
    boot: Option<&BootVerdict>,
) -> Result<Decision, String> {
    if choice == AccelChoice::Tcg {
        return Ok(tcg("TCG requested"));
    }
    let why_not = kvm_unusable(guest, host, kvm, boot);
    match (why_not, choice) {
        (None, _) => {
            let how = match boot {
                Some(BootVerdict::Works { seconds }) => {
                    format!("a test guest booted under KVM in {seconds:.1} s")
                }
                _ => "KVM works".to_string(),
            };
            Ok(Decision {
                accel: Accel::Kvm,
                reason: how,
            })
        }
        (Some(why), AccelChoice::Kvm) => Err(format!("KVM cannot be used: {why}")),
        (Some(why), _) => Ok(tcg(&format!("KVM not used: {why}"))),
    }
}

fn tcg(reason: &str) -> Decision {
    Decision {
        accel: Accel::Tcg,
        reason: reason.to_string(),
    }
}

fn kvm_unusable(
    guest: Arch,
    host: Option<Arch>,
    kvm: &KvmFacts,
    boot: Option<&BootVerdict>,
) -> Option<String> {
    if host != Some(guest) {
        return Some(format!(
            "the guest is {guest} but the host is {}",
            host.map(|h| h.to_string())
                .unwrap_or_else(|| std::env::consts::ARCH.to_string())
        ));
    }
    if !kvm.device {
        return Some(
            "/dev/kvm does not exist (no KVM module loaded, or nested virtualization is off)"
                .into(),
        );
    }
    if let Some(e) = &kvm.open_error {
        return Some(format!(
            "cannot open /dev/kvm: {e} (is your user in the kvm group?)"
        ));
    }
    if kvm.api_version != Some(12) {
        return Some(format!("unexpected KVM API version {:?}", kvm.api_version));
    }
    if let Some(e) = &kvm.create_vm_error {
        return Some(format!("KVM_CREATE_VM failed: {e}"));
    }
    match boot {
        None => Some("not verified: no test kernel to boot (run `vmctl image build tiny`)".into()),
        Some(BootVerdict::Works { .. }) => None,
        Some(BootVerdict::Hangs { seconds, last_line }) => Some(format!(
            "/dev/kvm opens and creates VMs, but a test guest hung under KVM (no userspace after {seconds:.0} s; last console line: {last_line:?})"
        )),
        Some(BootVerdict::Fails { error }) => {
            Some(format!("a test guest failed to start under KVM: {error}"))
        }
    }
}

/// Boot `kernel`/`initrd` under KVM with `vmctl.probe` and wait for [`PROBE_MARKER`], at most
/// `timeout`. QEMU is killed when the bound passes. Never hangs.
pub fn boot_probe(
    qemu: &Path,
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    user: Option<&Identity>,
    timeout: Duration,
) -> BootVerdict {
    let started = Instant::now();
    let mut cmd = probe_command(qemu, arch, kernel, initrd);
    // As a VM's QEMU runs: as its user, sandboxed, dying with us.
    Child::new(user.cloned()).apply(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return BootVerdict::Fails {
                error: format!("cannot run {}: {e}", qemu.display()),
            };
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let console = Console::watch(stdout);
    let seen = console.marker_before(started + timeout);
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let status = child.wait();
    let last_line = console.last_line();
    let mut err = String::new();
    use std::io::Read;
    let _ = BufReader::new(stderr).take(4096).read_to_string(&mut err);
    if seen {
        return BootVerdict::Works { seconds };
    }
    if seconds + 0.05 < timeout.as_secs_f64() {
        let err = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(tidy_qemu_error)
            .unwrap_or_default();
        return BootVerdict::Fails {
            error: if err.is_empty() {
                format!("QEMU exited ({status:?}) before the guest reached userspace")
            } else {
                err
            },
        };
    }
    BootVerdict::Hangs { seconds, last_line }
}

/// The test guest's QEMU: KVM, the host CPU, 128 MiB, its console on stdout, in a process group
/// of its own.
fn probe_command(qemu: &Path, arch: Arch, kernel: &Path, initrd: &Path) -> Command {
    let machine = match arch {
        Arch::X86_64 => "pc",
        Arch::Aarch64 => "virt",
    };
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "kvm",
        "-machine",
        machine,
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-sandbox",
        crate::host::qemu_user::SANDBOX,
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
    ])
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        &format!("console={} panic=-1 vmctl.probe", arch.console()),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    cmd
}

/// The test guest's console, read on a thread: whether the marker came, and the last line
/// before it.
struct Console {
    lines: std::sync::mpsc::Receiver<Option<String>>,
    reader: std::thread::JoinHandle<String>,
}

impl Console {
    fn watch(stdout: std::process::ChildStdout) -> Console {
        let (tx, lines) = std::sync::mpsc::channel::<Option<String>>();
        let reader = std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(PROBE_MARKER) {
                    let _ = tx.send(None);
                    return last;
                }
                if !line.trim().is_empty() {
                    last = line.trim().to_string();
                    let _ = tx.send(Some(last.clone()));
                }
            }
            last
        });
        Console { lines, reader }
    }

    /// True when the marker arrives before `deadline`; false on the deadline or when the
    /// console closes (QEMU exited).
    fn marker_before(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// The last non-empty console line before the marker (QEMU must have been killed: this
    /// waits for the console to close).
    fn last_line(self) -> String {
        self.reader.join().unwrap_or_default()
    }
}

/// "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion ..." →
/// "kvm_buf_set_msrs: Assertion ...": the program name and source location say nothing to users.
fn tidy_qemu_error(line: &str) -> String {
    let mut rest = line.trim();
    if let Some((prog, tail)) = rest.split_once(": ") {
        if prog.starts_with("qemu-system-") {
            rest = tail;
        }
    }
    if let Some((loc, tail)) = rest.split_once(": ") {
        if loc.contains(".c:") || loc.contains(".h:") {
            rest = tail;
        }
    }
    rest.to_string()
}

/// The cached verdict and what it is valid for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedVerdict {
    pub fingerprint: String,
    pub verdict: BootVerdict,
    pub checked_at: u64,
}

/// What makes a verdict stale: the host kernel, the QEMU binary, the CPU, and who QEMU runs as
/// (whether /dev/kvm opens is theirs to say).
pub fn fingerprint(qemu: &Path, qemu_version: &str, user: Option<&Identity>) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("CPU part"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let who = match user {
        Some(u) => format!(" uid={} groups={:?}", u.uid, u.groups),
        None => String::new(),
    };
    format!(
        "kernel={} qemu={} {} cpu={}{who}",
        crate::host::facts::kernel_release(),
        qemu.display(),
        qemu_version,
        cpu
    )
}

pub fn cache_file(cache_dir: &Path, arch: Arch) -> PathBuf {
    cache_dir.join(format!("kvm-verdict-{arch}.json"))
}

pub fn load_cached(path: &Path, fingerprint: &str) -> Option<BootVerdict> {
    let text = std::fs::read_to_string(path).ok()?;
    let c: CachedVerdict = serde_json::from_str(&text).ok()?;
    (c.fingerprint == fingerprint).then_some(c.verdict)
}

/// Where the kernel and initrd of the test guest for an architecture are (the tiny image's),
/// asked only when a probe must run; `None` when it is not built.
pub type ProbeKernel<'a> = &'a dyn Fn(Arch) -> Option<(PathBuf, PathBuf)>;

/// Decide for a VM about to start: probe the host (cheap), boot-test KVM once per host and QEMU
/// (cached), then [`decide`]. An explicit `kvm` that cannot work is a host error.
pub fn choose(
    choice: AccelChoice,
    arch: Arch,
    user: Option<&Identity>,
    probe_kernel: ProbeKernel,
) -> crate::error::Result<Decision> {
    if choice == AccelChoice::Tcg {
        return Ok(tcg("TCG requested"));
    }
    let kvm = KvmFacts::probe();
    let host = Arch::host();
    let boot = if host == Some(arch) && kvm.basic_ok() {
        verdict_cached(arch, user, probe_kernel)
    } else {
        None
    };
    decide(choice, arch, host, &kvm, boot.as_ref()).map_err(crate::error::Error::Host)
}

/// The KVM boot verdict for `arch`, from the cache or by booting the test guest's kernel.
/// `None` when there is nothing to boot (tiny image not built) or no QEMU.
pub fn verdict_cached(
    arch: Arch,
    user: Option<&Identity>,
    probe_kernel: ProbeKernel,
) -> Option<BootVerdict> {
    let qemu = crate::host::facts::find_in_path(arch.qemu_binary())?;
    let version = crate::host::facts::qemu_version(&qemu).unwrap_or_default();
    let fp = fingerprint(&qemu, &version, user);
    let dir = crate::paths::cache_dir();
    let file = cache_file(&dir, arch);
    if let Some(v) = load_cached(&file, &fp) {
        return Some(v);
    }
    // One probe at a time per host; whoever waited finds the verdict cached. A cache that cannot
    // be written (a unit whose cache directory was deleted: /var is read-only to it) costs a
    // probe per start, not the probe: without one, KVM would go unverified (TCG, and a hint to
    // build the tiny image that is already built).
    let lock = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::sys::fsutil::lock_exclusive(&dir.join("kvm-probe.lock"))
                .map_err(|e| e.to_string())
        });
    match &lock {
        Ok(_) => {
            if let Some(v) = load_cached(&file, &fp) {
                return Some(v);
            }
        }
        Err(e) => tracing::warn!(
            "cannot keep the KVM verdict in {} ({e}): testing KVM again at each start",
            dir.display()
        ),
    }
    let (kernel, initrd) = probe_kernel(arch)?;
    tracing::warn!(
        "checking {}whether KVM really runs guests on this host (a test boot, at most {} s)",
        if lock.is_ok() { "once " } else { "" },
        PROBE_TIMEOUT.as_secs()
    );
    let verdict = boot_probe(&qemu, arch, &kernel, &initrd, user, PROBE_TIMEOUT);
    tracing::info!(?verdict, "KVM boot probe");
    let cached = CachedVerdict {
        fingerprint: fp,
        verdict: verdict.clone(),
        checked_at: crate::sys::fsutil::unix_now(),
    };
    if lock.is_ok() {
        let _ = crate::sys::fsutil::write_atomic(
            &file,
            serde_json::to_string_pretty(&cached)
                .expect("serializes")
                .as_bytes(),
        );
    }
    Some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm_ok() -> KvmFacts {
        KvmFacts {
            device: true,
            open_error: None,
            api_version: Some(12),
            create_vm_error: None,
        }
    }
    const X86: Arch = Arch::X86_64;

    #[test]
    fn qemu_errors_lose_their_source_location() {
        assert_eq!(
            tidy_qemu_error(
                "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `x' failed."
            ),
            "kvm_buf_set_msrs: Assertion `x' failed."
        );
        assert_eq!(
            tidy_qemu_error("qemu-system-x86_64: failed to initialize kvm: Permission denied"),
            "failed to initialize kvm: Permission denied"
        );
    }

    #[test]
    fn tcg_when_asked() {
        let d = decide(AccelChoice::Tcg, X86, Some(X86), &kvm_ok(), None).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn kvm_only_when_a_guest_really_booted() {
        let works = BootVerdict::Works { seconds: 0.7 };
        let d = decide(AccelChoice::Auto, X86, Some(X86), &kvm_ok(), Some(&works)).unwrap();
        assert_eq!(d.accel, Accel::Kvm);
        assert!(d.reason.contains("booted under KVM"), "{}", d.reason);
    }

    #[test]
    fn a_hanging_kvm_means_tcg_for_auto_and_an_error_for_kvm() {
        let hangs = BootVerdict::Hangs {
            seconds: 15.0,
            last_line: "Probing EDD (edd=off to disable)... ok".into(),
        };
        let d = decide(AccelChoice::Auto, X86, Some(X86), &kvm_ok(), Some(&hangs)).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("hung under KVM"), "{}", d.reason);
        let e = decide(AccelChoice::Kvm, X86, Some(X86), &kvm_ok(), Some(&hangs)).unwrap_err();
        assert!(
            e.contains("KVM cannot be used") && e.contains("Probing EDD"),
            "{e}"
        );
    }

    #[test]
    fn foreign_guests_use_tcg() {
        let works = BootVerdict::Works { seconds: 0.7 };
        let d = decide(
            AccelChoice::Auto,
            Arch::Aarch64,
            Some(X86),
            &kvm_ok(),
            Some(&works),
        )
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("aarch64"), "{}", d.reason);
        assert!(decide(AccelChoice::Kvm, Arch::Aarch64, Some(X86), &kvm_ok(), None).is_err());
    }

    #[test]
    fn missing_or_closed_dev_kvm() {
        let none = KvmFacts {
            device: false,
            ..kvm_ok()
        };
        let d = decide(AccelChoice::Auto, X86, Some(X86), &none, None).unwrap();
        assert!(d.reason.contains("/dev/kvm does not exist"));
        let denied = KvmFacts {
            open_error: Some("Permission denied (os error 13)".into()),
            ..kvm_ok()
        };
        let e = decide(AccelChoice::Kvm, X86, Some(X86), &denied, None).unwrap_err();
        assert!(
            e.contains("Permission denied") && e.contains("kvm group"),
            "{e}"
        );
    }

    #[test]
    fn unverified_kvm_is_not_trusted() {
        let d = decide(AccelChoice::Auto, X86, Some(X86), &kvm_ok(), None).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("vmctl image build tiny"), "{}", d.reason);
    }
}
