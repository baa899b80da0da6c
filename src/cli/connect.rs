//! The handlers that reach into a guest or its QEMU: `ssh` (OpenSSH with the VM's user, port,
//! key and pinned host key), `ssh-config`, `inventory` (Ansible) and `qmp` (the QMP shell).

use crate::cli::args::{InventoryArgs, InventoryFormat, NameArg, QmpArgs, SshConfigArgs};
use crate::cli::args_guest::{CpArgs, SshArgs};
use crate::cli::output::{json_mode, print_json};
use crate::def::store::names;
use crate::error::{Error, Result};
use crate::guest::ssh::{self, Target};
use crate::paths::Home;

/// Run (exec) `ssh` to the guest, or print its command line with `--print`.
pub fn ssh(home: &Home, a: SshArgs) -> Result<u8> {
    let t = ssh::target(home, &a.name)?;
    let argv = ssh::argv(&t, &a.option, &a.command);
    if a.print {
        print_argv(&argv);
        return Ok(0);
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(Error::Io {
        context: "Cannot run ssh (apt-get install openssh-client)".into(),
        source: err,
    })
}

pub fn ssh_config(home: &Home, a: SshConfigArgs) -> Result<u8> {
    let targets = match a.name {
        Some(n) => vec![ssh::target(home, &n)?],
        None => ssh_targets(home),
    };
    if json_mode() {
        print_json(&targets);
        return Ok(0);
    }
    let blocks: Vec<String> = targets.iter().map(ssh::config_block).collect();
    print!("{}", blocks.join("\n"));
    Ok(0)
}

pub fn inventory(home: &Home, a: InventoryArgs) -> Result<u8> {
    let targets = ssh_targets(home);
    if json_mode() {
        // Ansible's own JSON inventory (what `ansible-inventory --list` prints).
        print_json(&ssh::inventory_json(&targets));
        return Ok(0);
    }
    print!(
        "{}",
        match a.format {
            InventoryFormat::Ini => ssh::inventory_ini(&targets),
            InventoryFormat::Yaml => ssh::inventory_yaml(&targets),
        }
    );
    Ok(0)
}

/// Every VM that can be reached over SSH (provisioned image, a forward to guest port 22).
fn ssh_targets(home: &Home) -> Vec<Target> {
    names(home)
        .iter()
        .filter_map(|n| ssh::target(home, n).ok())
        .collect()
}

/// A command line to run: quoted for a shell, or with `--json` its words as an array.
fn print_argv(argv: &[String]) {
    if json_mode() {
        print_json(argv);
    } else {
        println!("{}", crate::sys::quote::argv(argv));
    }
}

pub fn qmp(home: &Home, a: QmpArgs) -> Result<u8> {
    crate::qmp_shell::session::run(home, &a.name, a.exec)?;
    Ok(0)
}

pub fn console(home: &Home, a: NameArg) -> Result<u8> {
    crate::vm::console::attach(home, &a.name)?;
    Ok(0)
}

pub fn cp(home: &Home, a: CpArgs) -> Result<u8> {
    let (dest, sources) = a.paths.split_last().expect("clap requires two paths");
    let argv = crate::vm::copy::plan(home, a.recursive, sources, dest)?;
    if a.print {
        print_argv(&argv);
        return Ok(0);
    }
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| Error::Io {
            context: "Cannot run scp (apt-get install openssh-client)".into(),
            source: e,
        })?;
    if !status.success() {
        return Err(Error::Other(format!(
            "scp failed ({status}); what it said is above"
        )));
    }
    Ok(0)
}
