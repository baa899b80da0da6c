//! The command line as clap reads it: every subcommand and flag with its help text, and the
//! value parsers that share their bounds with the definition's validation (`def::bounds`).
//! Each subcommand's arguments are one struct, which its handler takes whole.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::addr::NetName;
use crate::cli::args_guest::{AppCmd, CpArgs, LogsArgs, SshArgs};
use crate::cli::args_net::{DownArgs, NetworkCmd, StackJsonArgs, UpArgs};
use crate::cli::args_state::{CloneArgs, DiskCmd, ExportArgs, ImportArgs as VmImportArgs};
use crate::def::config::{NetworkEntry, NetworkRef, VmConfig};
use crate::types::{AccelChoice, App, Arch, ByteSize, LoginName, PortForward, VmName};

#[derive(Debug, Parser)]
#[command(
    name = "vmctl",
    version,
    about = "Create, run and control QEMU/KVM virtual machines",
    after_help = "State lives in --home (default /var/lib/vmctl for root, else ~/.local/share/vmctl).\nExit codes: 0 ok, 1 failure, 2 usage/config, 3 not found, 4 host cannot, 5 QEMU failed, 6 timeout, 7 wrong state, 8 guest unhealthy (run)."
)]
pub struct Cli {
    /// vmctl's state directory (VMs, images).
    #[arg(long, global = true, env = "VMCTL_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// More logging: -v lifecycle steps, -vv QEMU argv and QMP traffic.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the result, or the error, as one JSON document on stdout (every subcommand).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define a VM and create its disk (a thin qcow2 overlay on the image).
    Create(Box<CreateArgs>),
    /// Boot a VM in the background, or resume it from its saved state.
    Start(StartArgs),
    /// Power the guest off (ACPI button, re-sent until it reacts; then quit; then kill).
    Stop(StopArgs),
    /// Save the guest's RAM and devices and stop QEMU; the next start resumes it (= stop --save).
    Suspend(NameJsonArgs),
    /// Stop (gracefully) and start again.
    Restart(RestartArgs),
    /// Kill QEMU at once (SIGKILL); the guest gets no chance to shut down.
    Kill(NameArg),
    /// Freeze a running guest's CPUs (QMP stop); it keeps its memory, its ports stop answering.
    Pause(NameArg),
    /// Let a paused guest run on (QMP cont).
    Resume(NameArg),
    /// Reset a running guest at once, like its reset button (no shutdown).
    Reset(NameArg),
    /// Take, list, revert and delete snapshots (in the VM's qcow2 disk; RAM too while it runs).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// A new VM from a stopped one: its definition, a copy of its disk, an identity of its own.
    Clone(CloneArgs),
    /// Write a stopped VM, its disk (with its snapshots), keys and image into one archive, or
    /// print it as another engine's document (--format libvirt).
    Export(ExportArgs),
    /// A VM from an archive `vmctl export` wrote (checked whole before anything is installed).
    Import(VmImportArgs),
    /// A VM's disk: info, grow it, compact it.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Add, remove or list port forwards; a running VM gets them at once, without a restart.
    #[command(subcommand)]
    Port(PortCmd),
    /// A QMP shell on a running VM: completion from its schema, history, events; or, with
    /// --exec or commands on stdin, one JSON reply per line (exit 5 on a QMP error).
    Qmp(QmpArgs),
    /// Delete a VM's definition and disk.
    Rm(RmArgs),
    /// List VMs.
    #[command(alias = "ls")]
    List(JsonArg),
    /// Show a VM's state (from QMP), accelerator, pid, ports and uptime.
    Status(NameJsonArgs),
    /// Print the guest's serial console log.
    Logs(LogsArgs),
    /// Attach the terminal to the guest's serial console (Ctrl-] detaches); its output still goes
    /// to the log `vmctl logs` reads.
    Console(NameArg),
    /// Print the exact command lines `start` runs: QEMU's, then passt's (the guest's network),
    /// then each shared folder's virtiofsd
    ShowCmd(NameArg),
    /// Show host facts: QEMU binaries, KVM and the accelerator decision with its reason.
    Doctor(JsonArg),
    /// What each VM uses: state, CPU %, memory, disk and its I/O, uptime, restarts, health.
    Stats(crate::cli::args_observe::StatsArgs),
    /// Print what happens to the VMs as it happens: created, started, ready, health, paused,
    /// resumed, snapshot, port changes, stopped (with the step), saved, crashed, restarted.
    Events(crate::cli::args_observe::EventsArgs),
    /// Serve the VMs' metrics for Prometheus over HTTP (loopback unless --listen names another).
    Metrics(crate::cli::args_observe::MetricsArgs),
    /// Print the shell's completion script: `source <(vmctl completions bash)`.
    Completions(crate::cli::args_shell::CompletionsArgs),
    /// Write the manual pages, one per subcommand, into a folder.
    Man(crate::cli::args_shell::ManArgs),
    /// Log in to the guest with OpenSSH (the VM's user, forwarded port and key; host key pinned).
    Ssh(SshArgs),
    /// Copy files between this host and a VM over its SSH: `vmctl cp [-r] SRC... DST`, the VM's
    /// side written VM:PATH (progress on a terminal).
    Cp(CpArgs),
    /// Print OpenSSH `Host` blocks for VMs (all with SSH when no name is given).
    SshConfig(SshConfigArgs),
    /// Print an Ansible inventory of the VMs reachable over SSH.
    Inventory(InventoryArgs),
    /// Build, import and list base images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Bring a stack up: create its networks and VMs, bring stopped VMs' definitions in line
    /// with the file, start them in `after` order (independent ones at once) until each is ready.
    Up(UpArgs),
    /// Stop a stack's VMs, last-started first (ACPI, independent ones at once); --rm removes
    /// them and the networks the stack made.
    Down(DownArgs),
    /// Show a stack's VMs: state, ports, networks and addresses.
    Ps(StackJsonArgs),
    /// Your own app (the `[app]` table): ship a new release to a VM.
    #[command(subcommand)]
    App(AppCmd),
    /// Private networks between VMs: create, list and remove them (VMs join with --network).
    #[command(subcommand, alias = "net")]
    Network(NetworkCmd),
    /// Run VMs as systemd services: print, install or remove a VM's unit (vmctl-NAME.service).
    #[command(subcommand)]
    Systemd(SystemdCmd),
    /// Run a VM in the foreground, supervising QEMU (what a systemd unit runs).
    ///
    /// Under systemd (Type=notify) it reports READY=1 once the guest answers, STOPPING=1 when the
    /// graceful stop begins, and progress as STATUS=. Exit status: 0 after a stop asked for by
    /// SIGTERM/SIGINT or when the guest powered itself off; 1-7 when the VM could not start (see
    /// Exit codes); 8 when the health check failed and vmctl killed QEMU; otherwise QEMU's own
    /// status, or 128+N when a signal N killed it.
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Forward a host port to the guest ([ADDR:]HOST:GUEST[/tcp|/udp]) now and at every start.
    Add(PortArgs),
    /// Stop forwarding a port and drop it from the definition.
    #[command(alias = "remove")]
    Rm(PortArgs),
    /// The VM's forwards, and whether the running QEMU has each.
    #[command(alias = "ls")]
    List(NameJsonArgs),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot the VM: disk and RAM while it runs (QEMU's snapshot-save), the disk when stopped.
    Create(SnapshotCreateArgs),
    /// List the VM's snapshots: tag, saved VM state size, date and guest clock.
    #[command(alias = "ls")]
    List(NameJsonArgs),
    /// Bring the VM back to a snapshot; its current state is lost.
    Revert(RevertArgs),
    /// Delete a snapshot.
    #[command(alias = "rm")]
    Delete(TagArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemdCmd {
    /// Print the VM's unit.
    Generate(GenerateArgs),
    /// Write the VM's unit to /etc/systemd/system (or ~/.config/systemd/user with --user) and
    /// reload systemd; enable and start it as asked.
    Install(InstallArgs),
    /// Stop and disable the VM's unit, then remove it and reload systemd.
    Uninstall(UninstallArgs),
    /// Link vmctl-generator into /etc/systemd/system-generators so that VMs defined in
    /// /etc/vmctl/vms/NAME.toml, and VMs of the home with autostart = true, get units at boot and
    /// daemon-reload; reload systemd.
    InstallGenerator(InstallGeneratorArgs),
    /// Stop the VMs that generated units run, remove the vmctl-generator link and reload
    /// systemd: the units it made go away.
    UninstallGenerator(UserArg),
    /// Run `vmctl metrics` for this home as a service (vmctl-metrics.service); enable and start
    /// it as asked.
    InstallMetrics(crate::cli::args_observe::InstallMetricsArgs),
    /// Stop, disable and remove vmctl-metrics.service.
    UninstallMetrics(UserArg),
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build a built-in image (`tiny`) from Debian packages.
    Build(BuildArgs),
    /// Import a disk image you downloaded (e.g. a Debian cloud image); VMs on it are set up by
    /// cloud-init from a NoCloud seed vmctl generates.
    Import(ImportArgs),
    /// List built images.
    #[command(alias = "ls")]
    List(JsonArg),
}

// The arguments of each subcommand. (No doc comments on these structs: clap would take them
// for the subcommand's help, which the variants above give.)

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: VmName,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameJsonArgs {
    pub name: VmName,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    pub name: VmName,
    /// Return only when the guest is up: its health check (or else each forwarded TCP port)
    /// answers and its provisioning scripts are done; a failed script exits 9.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    /// Discard the VM's saved state and boot (asks first on a terminal).
    #[arg(long)]
    pub fresh: bool,
    /// With --fresh: do not ask.
    #[arg(long, requires = "fresh")]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub name: VmName,
    /// Seconds to wait for the guest before `quit` (default: the VM's stop_timeout, 60).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Skip the ACPI power-off: QMP quit, then SIGKILL.
    #[arg(long, conflicts_with = "save")]
    pub force: bool,
    /// Save the guest's state instead of powering it off (as `vmctl suspend`).
    #[arg(long, conflicts_with = "timeout")]
    pub save: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    pub name: VmName,
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct QmpArgs {
    pub name: VmName,
    /// Run this command (`query-status`, `cmd key=value ...`, raw JSON, `hmp LINE`) and
    /// print its JSON reply; repeatable, run in order.
    #[arg(short = 'e', long = "exec", value_name = "COMMAND")]
    pub exec: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: VmName,
    /// Kill the VM first if it runs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    pub name: Option<VmName>,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[arg(long, value_enum, default_value = "ini")]
    pub format: InventoryFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InventoryFormat {
    Ini,
    Yaml,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub name: VmName,
    /// Report readiness on stdout to a parent `vmctl start` (internal).
    #[arg(long, hide = true)]
    pub notify_stdout: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub name: VmName,
    pub spec: PortForward,
}

#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    pub name: VmName,
    /// Name of the snapshot (default: the UTC time, e.g. 2026-11-22T06-10-00).
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    pub name: VmName,
    pub tag: String,
    /// Revert a running VM without asking.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub name: VmName,
    pub tag: String,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The VM whose unit to print.
    pub name: Option<VmName>,
    /// Print the unit of this network's switch instead (vmctl-net-NAME.service).
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    pub network: Option<NetName>,
    /// A unit for your user's service manager (systemctl --user) instead of the system's.
    #[arg(long)]
    pub user: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The VM whose unit to install.
    pub name: Option<VmName>,
    /// Install a stack instead: its networks and VMs defined as `vmctl up` would (not started),
    /// a unit per VM and network, and its target (vmctl-stack-NAME.target), which --enable
    /// makes start at boot and --now starts.
    #[arg(long, value_name = "FILE", conflicts_with = "name")]
    pub stack: Option<PathBuf>,
    /// Install for your user's service manager (systemctl --user).
    #[arg(long)]
    pub user: bool,
    /// Start the VM at boot (or login): `systemctl enable`. Implied by `autostart = true`.
    #[arg(long)]
    pub enable: bool,
    /// Start the unit now (returns once the guest is up).
    #[arg(long)]
    pub now: bool,
    /// With --user: `loginctl enable-linger` so your VMs start at boot without a login.
    #[arg(long, requires = "user")]
    pub linger: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    pub name: VmName,
    #[arg(long)]
    pub user: bool,
}

#[derive(Debug, Args)]
pub struct InstallGeneratorArgs {
    /// Into /etc/systemd/user-generators instead: every user's manager then makes units for
    /// ~/.config/vmctl/vms/NAME.toml and the user's own VMs.
    #[arg(long)]
    pub user: bool,
}

#[derive(Debug, Args)]
pub struct UserArg {
    #[arg(long)]
    pub user: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    pub name: String,
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Rebuild even if the image exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub name: String,
    /// Format of FILE (default: detected by qemu-img).
    #[arg(long, value_enum)]
    pub format: Option<crate::image::import::ImportFormat>,
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
}

/// A whole number for a flag whose bound `check` says what is allowed: a negative one is out of
/// that bound (its message with the value given), anything else not a number.
fn parse_count<T>(
    s: &str,
    check: impl Fn(u64) -> std::result::Result<T, String>,
) -> std::result::Result<u64, String> {
    match (s.parse::<u64>(), s.parse::<i128>()) {
        (Ok(n), _) => check(n).map(|_| n),
        (Err(_), Ok(_)) => Err(check(0)
            .err()
            .map(|m| m.replace("got 0", &format!("got {s}")))
            .unwrap_or_else(|| format!("{s:?} is out of range"))),
        (Err(_), Err(_)) => Err(format!("{s:?} is not a number")),
    }
}

fn parse_cpus(s: &str) -> std::result::Result<u64, String> {
    parse_count(s, crate::def::bounds::cpus)
}

fn parse_stop_timeout(s: &str) -> std::result::Result<u64, String> {
    parse_count(s, crate::def::bounds::stop_timeout)
}

fn parse_mem(s: &str) -> std::result::Result<ByteSize, String> {
    crate::def::bounds::min_memory(s.parse()?)
}

fn parse_disk(s: &str) -> std::result::Result<ByteSize, String> {
    crate::def::bounds::disk(s.parse()?)
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: VmName,
    /// Start from a TOML definition; flags given here override its values.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Virtual CPUs (default 1).
    #[arg(long, value_parser = parse_cpus, value_name = "N", allow_negative_numbers = true)]
    pub cpus: Option<u64>,
    /// Guest RAM, e.g. 512M, 2G (default 512M).
    #[arg(long, value_parser = parse_mem, value_name = "SIZE", allow_hyphen_values = true)]
    pub mem: Option<ByteSize>,
    /// Virtual disk size, e.g. 10G, 1T (default 10G); thin, so only what the guest writes is used.
    #[arg(long, value_parser = parse_disk, value_name = "SIZE", allow_hyphen_values = true)]
    pub disk: Option<ByteSize>,
    /// Base image (default tiny); see `vmctl image list`.
    #[arg(long, value_name = "IMG")]
    pub image: Option<String>,
    /// Forward a host port to the guest: [ADDR:]HOST:GUEST[/tcp|/udp]; ADDR defaults to 127.0.0.1.
    #[arg(
        long = "port",
        short = 'p',
        value_name = "SPEC",
        allow_hyphen_values = true
    )]
    pub ports: Vec<PortForward>,
    #[arg(long, value_enum)]
    pub accel: Option<AccelChoice>,
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Seconds `stop` waits for the guest to power off (default 60).
    #[arg(long, value_parser = parse_stop_timeout, value_name = "SECS", allow_negative_numbers = true)]
    pub stop_timeout: Option<u64>,
    /// Login user in the guest (default: your user name; "debian" for root).
    #[arg(long, value_name = "NAME")]
    pub user: Option<LoginName>,
    /// Public key to authorize (default ~/.ssh/id_ed25519.pub or id_rsa.pub, else a new key pair
    /// for this VM).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Web app to run in the guest.
    #[arg(long, value_enum)]
    pub app: Option<App>,
    /// Another VM whose systemd unit this VM's unit starts after (and requires); repeatable.
    #[arg(long, value_name = "NAME")]
    pub after: Vec<VmName>,
    /// Enable the VM's systemd unit when it is installed (start at boot).
    #[arg(long)]
    pub autostart: bool,
    /// Let the guest reach the host's own services on 127.0.0.1 (as 10.0.2.2), through QEMU's
    /// user networking; by default the guest reaches out to the network but not the host's
    /// loopback (passt).
    #[arg(long)]
    pub host_access: bool,
    /// What a host shutdown or `systemctl stop` of its unit does: poweroff (default) or save
    /// (the guest's state, resumed at the next start).
    #[arg(long, value_name = "poweroff|save")]
    pub on_host_shutdown: Option<String>,
    /// Share a host directory into the guest: HOST[:GUEST][:ro] (GUEST defaults to HOST; a
    /// relative HOST is taken from here); repeatable.
    #[arg(long = "mount", value_name = "HOST[:GUEST][:ro]")]
    pub mounts: Vec<String>,
    /// Your cloud-config (YAML) to merge into vmctl's, on imported cloud images: packages,
    /// users, files, commands; nothing that loosens SSH (see README).
    #[arg(long = "cloud-init", value_name = "FILE")]
    pub cloud_init: Option<PathBuf>,
    /// Join a private network (`vmctl network create`): NAME, or NAME=ADDRESS to choose the
    /// VM's address on it (default: the lowest free one); repeatable, one NIC each.
    #[arg(long = "network", value_name = "NAME[=ADDRESS]", value_parser = parse_network)]
    pub networks: Vec<NetworkRef>,
    /// With --from: if the VM exists, bring its definition in line with FILE instead of
    /// refusing (the VM must be stopped; image, arch, disk, user and ssh_key cannot change).
    /// What the units vmctl-generator makes from drop-ins run before each start.
    #[arg(long, requires = "from")]
    pub update: bool,
}

impl CreateArgs {
    /// The flags as a definition, to lay over `--from FILE`.
    pub fn as_config(&self) -> VmConfig {
        VmConfig {
            cpus: self.cpus,
            memory: self.mem.map(|m| m.to_string()),
            disk: self.disk.map(|d| d.to_string()),
            image: self.image.clone(),
            arch: self.arch.map(|a| a.to_string()),
            accel: self.accel.map(|a| a.to_string()),
            ports: self.ports.iter().map(|p| p.to_string()).collect(),
            stop_timeout: self.stop_timeout,
            user: self.user.as_ref().map(|u| u.to_string()),
            ssh_key: self.ssh_key.as_ref().map(|p| p.display().to_string()),
            app: self
                .app
                .map(|a| crate::def::app::AppValue::Builtin(a.to_string())),
            app_env: Default::default(),
            autostart: self.autostart.then_some(true),
            host_access: self.host_access.then_some(true),
            on_host_shutdown: self.on_host_shutdown.clone(),
            after: self.after.iter().map(|n| n.to_string()).collect(),
            networks: self.networks.clone(),
            mounts: self.mounts.iter().map(|m| absolute_host(m)).collect(),
            provision: vec![],
            cloud_init: None,
            stack: None,
            health: None,
        }
    }
}

/// `--mount ./dir:/srv` means the directory here: its host path made absolute (what the
/// definition keeps).
fn absolute_host(text: &str) -> String {
    if text.starts_with('/') || text.is_empty() {
        return text.to_string();
    }
    let (host, rest) = text.split_once(':').map_or((text, ""), |(h, r)| (h, r));
    let abs = std::path::absolute(host)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| host.to_string());
    // HOST:ro keeps the guest path the host's, which is now absolute.
    if rest.is_empty() {
        abs
    } else {
        format!("{abs}:{rest}")
    }
}

/// `--network NAME[=ADDRESS]`, the name and address checked as the definition checks them.
fn parse_network(s: &str) -> std::result::Result<NetworkRef, String> {
    let (name, address) = match s.split_once('=') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    name.parse::<NetName>()?;
    Ok(match address {
        None => NetworkRef::Name(name.to_string()),
        Some(a) => {
            a.parse::<std::net::Ipv4Addr>()
                .map_err(|_| format!("{a:?} is not an IPv4 address such as 10.89.0.10"))?;
            NetworkRef::Entry(NetworkEntry {
                name: name.to_string(),
                address: Some(a.to_string()),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts out of bounds, negative ones too, say the bound and the value given.
    #[test]
    fn counts_name_their_bound_and_value() {
        assert_eq!(parse_cpus("2"), Ok(2));
        assert_eq!(parse_cpus("0").unwrap_err(), "must be 1-255; got 0");
        assert_eq!(parse_cpus("-1").unwrap_err(), "must be 1-255; got -1");
        assert_eq!(parse_cpus("1e3").unwrap_err(), "\"1e3\" is not a number");
        assert_eq!(
            parse_stop_timeout("-5").unwrap_err(),
            "must be 1-3600 seconds; got -5"
        );
        assert_eq!(
            parse_stop_timeout("3601").unwrap_err(),
            "must be 1-3600 seconds; got 3601"
        );
        let e = Cli::try_parse_from(["vmctl", "create", "v", "--cpus", "-1"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'--cpus <N>': must be 1-255; got -1"),
            "{e}"
        );
        let e = Cli::try_parse_from(["vmctl", "create", "v", "--mem", "-1G"]).unwrap_err();
        assert!(e.to_string().contains("'--mem <SIZE>'"), "{e}");
    }
}
