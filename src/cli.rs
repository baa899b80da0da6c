//! The command line: clap definitions, and printing each command's result as text for people or
//! JSON for scripts (`--json`). Results go to stdout, logs and errors to stderr.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::def::config::VmConfig;
use crate::error::{Error, Result};
use crate::paths::Home;
use crate::types::{AccelChoice, App, Arch, ByteSize, LoginName, PortForward, VmName, human_bytes};
use crate::vm::stop::StopMode;

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
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define a VM and create its disk (a thin qcow2 overlay on the image).
    Create(CreateArgs),
    /// Boot a VM in the background.
    Start {
        name: VmName,
        /// Return only when the guest answers on its forwarded TCP ports.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Power the guest off (ACPI button, re-sent until it reacts; then quit; then kill).
    Stop {
        name: VmName,
        /// Seconds to wait for the guest before `quit` (default: the VM's stop_timeout, 60).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Skip the ACPI power-off: QMP quit, then SIGKILL.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop (gracefully) and start again.
    Restart {
        name: VmName,
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        #[arg(long)]
        wait: bool,
    },
    /// Kill QEMU at once (SIGKILL); the guest gets no chance to shut down.
    Kill { name: VmName },
    /// Freeze a running guest's CPUs (QMP stop); it keeps its memory, its ports stop answering.
    Pause { name: VmName },
    /// Let a paused guest run on (QMP cont).
    Resume { name: VmName },
    /// Reset a running guest at once, like its reset button (no shutdown).
    Reset { name: VmName },
    /// Take, list, revert and delete snapshots (in the VM's qcow2 disk; RAM too while it runs).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Add, remove or list port forwards; a running VM gets them at once, without a restart.
    #[command(subcommand)]
    Port(PortCmd),
    /// A QMP shell on a running VM: completion from its schema, history, events; or, with
    /// --exec or commands on stdin, one JSON reply per line (exit 5 on a QMP error).
    Qmp {
        name: VmName,
        /// Run this command (`query-status`, `cmd key=value ...`, raw JSON, `hmp LINE`) and
        /// print its JSON reply; repeatable, run in order.
        #[arg(short = 'e', long = "exec", value_name = "COMMAND")]
        exec: Vec<String>,
    },
    /// Delete a VM's definition and disk.
    Rm {
        name: VmName,
        /// Kill the VM first if it runs.
        #[arg(long)]
        force: bool,
    },
    /// List VMs.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a VM's state (from QMP), accelerator, pid, ports and uptime.
    Status {
        name: VmName,
        #[arg(long)]
        json: bool,
    },
    /// Print the guest's serial console log.
    Logs {
        name: VmName,
        /// Keep printing as the guest writes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the exact QEMU command line `start` runs.
    ShowCmd { name: VmName },
    /// Show host facts: QEMU binaries, KVM and the accelerator decision with its reason.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Log in to the guest with OpenSSH (the VM's user, forwarded port and key; host key pinned).
    Ssh {
        name: VmName,
        /// Print the ssh command instead of running it.
        #[arg(long)]
        print: bool,
        /// Extra OpenSSH option (e.g. -o BatchMode=yes); repeatable.
        #[arg(short = 'o', value_name = "OPTION")]
        option: Vec<String>,
        /// Command to run in the guest.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print OpenSSH `Host` blocks for VMs (all with SSH when no name is given).
    SshConfig { name: Option<VmName> },
    /// Print an Ansible inventory of the VMs reachable over SSH.
    Inventory {
        #[arg(long, value_enum, default_value = "ini")]
        format: InventoryFormat,
    },
    /// Build, import and list base images.
    #[command(subcommand)]
    Image(ImageCmd),
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
    Run {
        name: VmName,
        /// Report readiness on stdout to a parent `vmctl start` (internal).
        #[arg(long, hide = true)]
        notify_stdout: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Forward a host port to the guest ([ADDR:]HOST:GUEST[/tcp|/udp]) now and at every start.
    Add { name: VmName, spec: PortForward },
    /// Stop forwarding a port and drop it from the definition.
    #[command(alias = "remove")]
    Rm { name: VmName, spec: PortForward },
    /// The VM's forwards, and whether the running QEMU has each.
    #[command(alias = "ls")]
    List {
        name: VmName,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot the VM: disk and RAM while it runs (QEMU's snapshot-save), the disk when stopped.
    Create {
        name: VmName,
        /// Name of the snapshot (default: the UTC time, e.g. 2026-11-22T06-10-00).
        tag: Option<String>,
    },
    /// List the VM's snapshots: tag, saved VM state size, date and guest clock.
    #[command(alias = "ls")]
    List {
        name: VmName,
        #[arg(long)]
        json: bool,
    },
    /// Bring the VM back to a snapshot; its current state is lost.
    Revert {
        name: VmName,
        tag: String,
        /// Revert a running VM without asking.
        #[arg(long)]
        force: bool,
    },
    /// Delete a snapshot.
    #[command(alias = "rm")]
    Delete { name: VmName, tag: String },
}

#[derive(Debug, Subcommand)]
pub enum SystemdCmd {
    /// Print the VM's unit.
    Generate {
        name: VmName,
        /// A unit for your user's service manager (systemctl --user) instead of the system's.
        #[arg(long)]
        user: bool,
    },
    /// Write the VM's unit to /etc/systemd/system (or ~/.config/systemd/user with --user) and
    /// reload systemd; enable and start it as asked.
    Install {
        name: VmName,
        /// Install for your user's service manager (systemctl --user).
        #[arg(long)]
        user: bool,
        /// Start the VM at boot (or login): `systemctl enable`. Implied by `autostart = true`.
        #[arg(long)]
        enable: bool,
        /// Start the unit now (returns once the guest is up).
        #[arg(long)]
        now: bool,
        /// With --user: `loginctl enable-linger` so your VMs start at boot without a login.
        #[arg(long, requires = "user")]
        linger: bool,
    },
    /// Stop and disable the VM's unit, then remove it and reload systemd.
    Uninstall {
        name: VmName,
        #[arg(long)]
        user: bool,
    },
    /// Link vmctl-generator into /etc/systemd/system-generators so that VMs defined in
    /// /etc/vmctl/vms/NAME.toml, and VMs of the home with autostart = true, get units at boot and
    /// daemon-reload; reload systemd.
    InstallGenerator {
        /// Into /etc/systemd/user-generators instead: every user's manager then makes units for
        /// ~/.config/vmctl/vms/NAME.toml and the user's own VMs.
        #[arg(long)]
        user: bool,
    },
    /// Stop the VMs that generated units run, remove the vmctl-generator link and reload
    /// systemd: the units it made go away.
    UninstallGenerator {
        #[arg(long)]
        user: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build a built-in image (`tiny`) from Debian packages.
    Build {
        name: String,
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        /// Rebuild even if the image exists.
        #[arg(long)]
        force: bool,
    },
    /// Import a disk image you downloaded (e.g. a Debian cloud image); VMs on it are set up by
    /// cloud-init from a NoCloud seed vmctl generates.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// Format of FILE (default: detected by qemu-img).
        #[arg(long, value_enum)]
        format: Option<crate::image::import::ImportFormat>,
        #[arg(long, value_enum)]
        arch: Option<Arch>,
    },
    /// List built images.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InventoryFormat {
    Ini,
    Yaml,
}

fn parse_cpus(s: &str) -> std::result::Result<u64, String> {
    let n: u64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    crate::def::bounds::cpus(n).map(u64::from)
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
    #[arg(long, value_parser = parse_cpus, value_name = "N")]
    pub cpus: Option<u64>,
    /// Guest RAM, e.g. 512M, 2G (default 512M).
    #[arg(long, value_parser = parse_mem, value_name = "SIZE")]
    pub mem: Option<ByteSize>,
    /// Virtual disk size, e.g. 10G, 1T (default 10G); thin, so only what the guest writes is used.
    #[arg(long, value_parser = parse_disk, value_name = "SIZE")]
    pub disk: Option<ByteSize>,
    /// Base image (default tiny); see `vmctl image list`.
    #[arg(long, value_name = "IMG")]
    pub image: Option<String>,
    /// Forward a host port to the guest: [ADDR:]HOST:GUEST[/tcp|/udp]; ADDR defaults to 127.0.0.1.
    #[arg(long = "port", short = 'p', value_name = "SPEC")]
    pub ports: Vec<PortForward>,
    #[arg(long, value_enum)]
    pub accel: Option<AccelChoice>,
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Seconds `stop` waits for the guest to power off (default 60).
    #[arg(long, value_name = "SECS")]
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
    /// With --from: if the VM exists, bring its definition in line with FILE instead of
    /// refusing (the VM must be stopped; image, arch, disk, user and ssh_key cannot change).
    /// What the units vmctl-generator makes from drop-ins run before each start.
    #[arg(long, requires = "from")]
    pub update: bool,
}

impl CreateArgs {
    fn as_config(&self) -> VmConfig {
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
            app: self.app.map(|a| a.to_string()),
            autostart: self.autostart.then_some(true),
            after: self.after.iter().map(|n| n.to_string()).collect(),
            health: None,
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

pub fn dispatch(cli: Cli) -> Result<u8> {
    let home = Home::resolve(cli.home)?;
    match cli.command {
        Cmd::Create(args) => {
            let (base, source) = match &args.from {
                Some(f) => (VmConfig::load(f)?, f.display().to_string()),
                None => (VmConfig::default(), "command line".to_string()),
            };
            let cfg = base.overlay(args.as_config());
            if let (true, Some(file)) = (args.update, &args.from) {
                let (spec, applied) =
                    crate::vm::create::create_or_update(&home, &args.name, &cfg, file)?;
                match applied {
                    crate::vm::create::Applied::Created => print_created(&spec),
                    crate::vm::create::Applied::Unchanged => {
                        println!("VM {} is up to date with {}", spec.name, file.display())
                    }
                    crate::vm::create::Applied::Updated(changes) => println!(
                        "Updated VM {} from {}: {}",
                        spec.name,
                        file.display(),
                        changes.join("; ")
                    ),
                }
                return Ok(0);
            }
            print_created(&crate::vm::create::create(
                &home, &args.name, &cfg, &source,
            )?);
        }
        Cmd::Start {
            name,
            wait,
            timeout,
            json,
        } => {
            let s =
                crate::vm::start::start(&home, &name, wait.then(|| Duration::from_secs(timeout)))?;
            if json {
                print_json(&s);
            } else {
                println!(
                    "Started VM {} (QEMU pid {}, {}: {}){}",
                    s.name,
                    s.pid,
                    s.accel,
                    s.accel_reason,
                    s.ready_seconds
                        .map(|t| format!("; ready after {t:.1} s"))
                        .unwrap_or_default()
                );
                for p in &s.ports {
                    println!("  {}:{} -> guest {}/{}", p.addr, p.host, p.guest, p.proto);
                }
            }
        }
        Cmd::Stop {
            name,
            timeout,
            force,
            json,
        } => {
            let mode = if force {
                StopMode::Force
            } else {
                let t = match timeout {
                    Some(t) => Duration::from_secs(t),
                    None => crate::def::store::load(&home, &name)?.stop_timeout,
                };
                StopMode::Graceful(t)
            };
            let s = crate::vm::stop::stop(&home, &name, mode)?;
            if json {
                print_json(&s);
            } else {
                print_stopped(&s);
            }
        }
        Cmd::Restart {
            name,
            timeout,
            wait,
        } => {
            let t = match timeout {
                Some(t) => Duration::from_secs(t),
                None => crate::def::store::load(&home, &name)?.stop_timeout,
            };
            print_stopped(&crate::vm::stop::stop(&home, &name, StopMode::Graceful(t))?);
            let s = crate::vm::start::start(&home, &name, wait.then(|| Duration::from_secs(300)))?;
            println!("Started VM {} (QEMU pid {}, {})", s.name, s.pid, s.accel);
        }
        Cmd::Kill { name } => print_stopped(&crate::vm::stop::stop(&home, &name, StopMode::Kill)?),
        Cmd::Pause { name } => {
            crate::vm::control::control(&home, &name, crate::vm::control::Control::Pause)?;
            println!("Paused VM {name}");
        }
        Cmd::Resume { name } => {
            crate::vm::control::control(&home, &name, crate::vm::control::Control::Resume)?;
            println!("Resumed VM {name}");
        }
        Cmd::Reset { name } => {
            crate::vm::control::control(&home, &name, crate::vm::control::Control::Reset)?;
            println!("Reset VM {name}");
        }
        Cmd::Snapshot(cmd) => snapshot_cmd(&home, cmd)?,
        Cmd::Qmp { name, exec } => crate::qmp_shell::session::run(&home, &name, exec)?,
        Cmd::Port(PortCmd::Add { name, spec }) => {
            let c = crate::vm::ports::add(&home, &name, spec)?;
            println!("VM {} forwards {}{}", c.name, c.spec, port_when(&c));
            if let Some(f) = &c.defined_by {
                eprintln!(
                    "Note: {} defines VM {} and is applied at each start: add \"{}\" to `ports` there to keep this forward",
                    f.display(),
                    c.name,
                    c.spec
                );
            }
        }
        Cmd::Port(PortCmd::Rm { name, spec }) => {
            let c = crate::vm::ports::rm(&home, &name, spec)?;
            println!(
                "VM {} no longer forwards {}{}",
                c.name,
                c.spec,
                port_when(&c)
            );
            if let Some(f) = &c.defined_by {
                eprintln!(
                    "Note: {} defines VM {} and is applied at each start: remove \"{}\" from `ports` there, or the forward comes back",
                    f.display(),
                    c.name,
                    c.spec
                );
            }
        }
        Cmd::Port(PortCmd::List { name, json }) => {
            let l = crate::vm::ports::list(&home, &name)?;
            if json {
                print_json(&l);
            } else {
                println!("{:<28} {:<5} ACTIVE", "FORWARD", "PROTO");
                for p in l {
                    println!(
                        "{:<28} {:<5} {}",
                        format!("{}:{} -> {}", p.addr, p.host, p.guest),
                        p.proto,
                        match p.active {
                            Some(true) => "yes",
                            Some(false) => "no",
                            None => "-",
                        }
                    );
                }
            }
        }
        Cmd::Rm { name, force } => {
            for line in crate::vm::rm::rm(&home, &name, force)? {
                println!("{line}");
            }
            println!("Removed VM {name}");
        }
        Cmd::List { json } => {
            let l = crate::vm::inspect::list(&home);
            if json {
                print_json(&l);
            } else {
                println!(
                    "{:<20} {:<8} {:>4} {:>6} {:>6} {:<8} {:<6} {:>5} PORTS",
                    "NAME", "STATE", "CPUS", "MEM", "DISK", "IMAGE", "ACCEL", "SNAPS"
                );
                for s in l {
                    println!(
                        "{:<20} {:<8} {:>4} {:>6} {:>6} {:<8} {:<6} {:>5} {}",
                        s.name,
                        s.state,
                        s.cpus.map(|c| c.to_string()).unwrap_or_default(),
                        s.memory.unwrap_or_default(),
                        s.disk.unwrap_or_default(),
                        s.image.unwrap_or_default(),
                        s.accel.unwrap_or_else(|| "-".into()),
                        s.snapshots
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        s.error.unwrap_or_else(|| s.ports.join(" ")),
                    );
                }
            }
        }
        Cmd::Status { name, json } => {
            let s = crate::vm::inspect::status(&home, &name)?;
            if json {
                print_json(&s);
            } else {
                println!("VM:      {}", s.name);
                println!("State:   {}", s.state);
                if let Some(pid) = s.pid {
                    println!("PID:     {pid}");
                }
                if let (Some(a), Some(r)) = (&s.accel, &s.accel_reason) {
                    println!("Accel:   {a} ({r})");
                }
                if let Some(u) = s.uptime_secs {
                    println!("Uptime:  {u} s");
                }
                println!(
                    "Shape:   {} CPU, {} RAM, {} disk, image {} ({})",
                    s.cpus, s.memory, s.disk, s.image, s.arch
                );
                println!(
                    "Ports:   {}",
                    if s.ports.is_empty() {
                        "none".into()
                    } else {
                        s.ports.join(" ")
                    }
                );
                if let Some(h) = &s.health {
                    println!(
                        "Health:  {} ({}{})",
                        h.status.as_str(),
                        h.check,
                        match (&h.last_failure, h.failing_streak) {
                            (Some(why), n) if n > 0 =>
                                format!("; {n} failed in a row, last: {why}"),
                            _ => String::new(),
                        }
                    );
                }
                if let Some(u) = &s.unit {
                    println!("Unit:    {u}");
                }
                println!("Console: {}", s.serial_log);
                if s.pid.is_none() {
                    if let Some(e) = &s.last_exit {
                        println!("Last exit: {}", describe_exit(e));
                    }
                }
            }
        }
        Cmd::Logs { name, follow } => crate::vm::inspect::logs(&home, &name, follow)?,
        Cmd::ShowCmd { name } => {
            println!(
                "{}",
                crate::qemu::argv::shell_quote(&crate::vm::inspect::show_cmd(&home, &name)?)
            )
        }
        Cmd::Doctor { json } => {
            let d = crate::host::doctor::run(&home, &|arch| {
                crate::image::store::probe_kernel(&home, arch)
            });
            if json {
                print_json(&d);
            } else {
                crate::host::doctor::print(&d);
            }
        }
        Cmd::Image(ImageCmd::Build { name, arch, force }) => {
            let arch = arch.or_else(Arch::host).unwrap_or(Arch::X86_64);
            let (img, built) = crate::image::build::build(&home, &name, arch, force)?;
            if built {
                println!(
                    "Built image {} for {} in {}",
                    img.manifest.name,
                    arch,
                    img.dir.display()
                );
            } else {
                println!(
                    "Image {} for {} is already built ({}); --force rebuilds it",
                    img.manifest.name,
                    arch,
                    img.dir.display()
                );
            }
        }
        Cmd::Ssh {
            name,
            print,
            option,
            command,
        } => {
            let t = crate::guest::ssh::target(&home, &name)?;
            let argv = crate::guest::ssh::argv(&t, &option, &command);
            if print {
                println!("{}", crate::qemu::argv::shell_quote(&argv));
                return Ok(0);
            }
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            return Err(Error::Io {
                context: "Cannot run ssh (apt-get install openssh-client)".into(),
                source: err,
            });
        }
        Cmd::SshConfig { name } => {
            let targets = match name {
                Some(n) => vec![crate::guest::ssh::target(&home, &n)?],
                None => ssh_targets(&home),
            };
            let blocks: Vec<String> = targets
                .iter()
                .map(crate::guest::ssh::config_block)
                .collect();
            print!("{}", blocks.join("\n"));
        }
        Cmd::Inventory { format } => {
            let targets = ssh_targets(&home);
            print!(
                "{}",
                match format {
                    InventoryFormat::Ini => crate::guest::ssh::inventory_ini(&targets),
                    InventoryFormat::Yaml => crate::guest::ssh::inventory_yaml(&targets),
                }
            );
        }
        Cmd::Image(ImageCmd::Import {
            file,
            name,
            format,
            arch,
        }) => {
            let arch = arch.or_else(Arch::host).unwrap_or(Arch::X86_64);
            let img = crate::image::import::import(&home, &file, &name, format, arch)?;
            println!(
                "Imported {} as image {} for {} ({}, provisioned by cloud-init)",
                file.display(),
                img.manifest.name,
                arch,
                ByteSize(img.manifest.virtual_size)
            );
        }
        Cmd::Image(ImageCmd::List { json }) => {
            let l = crate::image::store::list(&home);
            if json {
                print_json(&l);
            } else {
                println!("{:<16} {:<8} {:>9}  DESCRIPTION", "NAME", "ARCH", "SIZE");
                for i in l {
                    println!(
                        "{:<16} {:<8} {:>9}  {}",
                        i.manifest.name,
                        i.manifest.arch,
                        ByteSize(i.manifest.virtual_size).to_string(),
                        i.manifest.description
                    );
                }
            }
        }
        Cmd::Systemd(SystemdCmd::Generate { name, user }) => {
            let spec = crate::def::store::load(&home, &name)?;
            print!(
                "{}",
                crate::systemd::install::generate(&home, &spec, crate::types::Scope::user(user))?
            );
        }
        Cmd::Systemd(SystemdCmd::Install {
            name,
            user,
            enable,
            now,
            linger,
        }) => {
            let spec = crate::def::store::load(&home, &name)?;
            let opts = crate::systemd::install::InstallOptions {
                enable,
                now,
                linger,
            };
            let scope = crate::types::Scope::user(user);
            for line in crate::systemd::install::install(&home, &spec, scope, opts)? {
                println!("{line}");
            }
        }
        Cmd::Systemd(SystemdCmd::Uninstall { name, user }) => {
            let scope = crate::types::Scope::user(user);
            for line in crate::systemd::install::uninstall(&home, &name, scope)? {
                println!("{line}");
            }
        }
        Cmd::Systemd(SystemdCmd::InstallGenerator { user }) => {
            for line in crate::systemd::generator::link::install(crate::types::Scope::user(user))? {
                println!("{line}");
            }
        }
        Cmd::Systemd(SystemdCmd::UninstallGenerator { user }) => {
            for line in crate::systemd::generator::link::uninstall(crate::types::Scope::user(user))?
            {
                println!("{line}");
            }
        }
        Cmd::Run {
            name,
            notify_stdout,
        } => {
            let mode = if notify_stdout {
                crate::supervisor::run::Mode::Notify
            } else {
                crate::supervisor::run::Mode::Foreground
            };
            let spec = match crate::def::store::load(&home, &name) {
                Ok(s) => s,
                Err(e) => {
                    if notify_stdout {
                        let line = crate::supervisor::handshake::error(&e);
                        crate::supervisor::handshake::send(&line);
                    }
                    return Err(e);
                }
            };
            return crate::supervisor::run::run(&home, &spec, mode);
        }
    }
    Ok(0)
}

/// When a port change takes effect.
fn port_when(c: &crate::vm::ports::Changed) -> &'static str {
    match (c.live, &c.defined_by) {
        (true, Some(_)) => " (now, until the VM stops)",
        (true, None) => " (now, and at every start)",
        (false, _) => " (from the next start)",
    }
}

fn snapshot_cmd(home: &Home, cmd: SnapshotCmd) -> Result<()> {
    use crate::vm::snapshot;
    let how = |d: &snapshot::Done| {
        format!(
            "{:.1} s, {}",
            d.seconds,
            if d.live {
                "live: disk and RAM"
            } else {
                "stopped VM: disk only"
            }
        )
    };
    match cmd {
        SnapshotCmd::Create { name, tag } => {
            let d = snapshot::create(home, &name, tag)?;
            println!("Created snapshot {} of VM {} ({})", d.tag, d.name, how(&d));
        }
        SnapshotCmd::List { name, json } => {
            let l = snapshot::list(home, &name)?;
            if json {
                print_json(&l);
            } else {
                println!(
                    "{:<24} {:>9}  {:<20}  VM CLOCK",
                    "TAG", "VM STATE", "DATE (UTC)"
                );
                for s in l {
                    println!(
                        "{:<24} {:>9}  {:<20}  {}",
                        s.tag,
                        human_bytes(s.vm_state_size),
                        s.date,
                        s.vm_clock
                    );
                }
            }
        }
        SnapshotCmd::Revert { name, tag, force } => {
            let d = snapshot::revert(home, &name, &tag, force)?;
            println!("Reverted VM {} to snapshot {} ({})", d.name, d.tag, how(&d));
        }
        SnapshotCmd::Delete { name, tag } => {
            let d = snapshot::delete(home, &name, &tag)?;
            println!("Deleted snapshot {} of VM {} ({})", d.tag, d.name, how(&d));
        }
    }
    Ok(())
}

/// Every VM that can be reached over SSH (provisioned image, a forward to guest port 22).
fn ssh_targets(home: &Home) -> Vec<crate::guest::ssh::Target> {
    crate::def::store::names(home)
        .iter()
        .filter_map(|n| crate::guest::ssh::target(home, n).ok())
        .collect()
}

fn print_created(spec: &crate::def::spec::VmSpec) {
    println!(
        "Created VM {}: {} CPU, {} RAM, {} disk on image {} ({}){}",
        spec.name,
        spec.cpus,
        spec.memory,
        spec.disk,
        spec.image,
        spec.arch,
        if spec.ports.is_empty() {
            String::new()
        } else {
            format!(
                ", ports {}",
                spec.ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
}

fn describe_exit(e: &crate::runstate::LastExit) -> String {
    let how = match (e.code, e.signal) {
        (Some(c), _) => format!("QEMU exited with status {c}"),
        (None, Some(s)) => format!("QEMU was killed by signal {s}"),
        _ => "QEMU ended".into(),
    };
    match &e.stopped_by {
        Some(by) => format!("{how} (stopped by {by})"),
        None => how,
    }
}

fn print_stopped(s: &crate::vm::stop::Stopped) {
    match &s.outcome {
        None => println!("VM {} is not running", s.name),
        Some(o) => {
            println!(
                "Stopped VM {} in {:.1} s: {}{}",
                s.name,
                o.seconds,
                o.step.describe(),
                s.exit
                    .as_ref()
                    .map(|e| format!("; {}", describe_exit(e)))
                    .unwrap_or_default()
            );
        }
    }
}

impl From<clap::Error> for Error {
    fn from(e: clap::Error) -> Self {
        Error::Usage(e.to_string())
    }
}
