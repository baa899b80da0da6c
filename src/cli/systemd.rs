//! `vmctl systemd ...`'s handlers: a VM's unit printed, installed or removed, and the generator
//! linked or unlinked. Each reports what it did, one line a step.

use crate::cli::args::{GenerateArgs, InstallArgs, InstallGeneratorArgs, UninstallArgs, UserArg};
use crate::cli::output::print_lines;
use crate::def::store::load;
use crate::error::{Error, Result};
use crate::paths::Home;
use crate::systemd::generator::link;
use crate::systemd::install::{self as unit_install, InstallOptions};
use crate::types::Scope;

pub fn generate(home: &Home, a: GenerateArgs) -> Result<u8> {
    let scope = Scope::user(a.user);
    let text = match (&a.name, &a.network) {
        (Some(name), _) => unit_install::generate(home, &load(home, name)?, scope)?,
        (None, Some(net)) => {
            crate::def::network::load(home, net)?;
            let vmctl = std::env::current_exe()
                .map_err(|e| Error::Other(format!("Cannot find the vmctl binary: {e}")))?;
            crate::systemd::netunit::render_network(net, scope, &vmctl, &home.root)?
        }
        (None, None) => {
            return Err(Error::Usage(
                "name a VM, or a network with --network".into(),
            ));
        }
    };
    if crate::cli::output::json_mode() {
        crate::cli::output::print_json(&serde_json::json!({ "unit": text }));
    } else {
        print!("{text}");
    }
    Ok(0)
}

pub fn install(home: &Home, a: InstallArgs) -> Result<u8> {
    let opts = InstallOptions {
        enable: a.enable,
        now: a.now,
        linger: a.linger,
    };
    let name = match (&a.name, &a.stack) {
        (Some(name), _) => name,
        (None, Some(file)) => {
            let stack = crate::def::stack::load(file, crate::def::store::limits())?;
            print_lines(&crate::vm::stack::install_units(
                home,
                &stack,
                Scope::user(a.user),
                opts,
            )?);
            return Ok(0);
        }
        (None, None) => {
            return Err(Error::Usage(
                "name a VM, or a stack file with --stack".into(),
            ));
        }
    };
    let spec = load(home, name)?;
    print_lines(&unit_install::install(
        home,
        &spec,
        Scope::user(a.user),
        opts,
    )?);
    Ok(0)
}

pub fn uninstall(home: &Home, a: UninstallArgs) -> Result<u8> {
    print_lines(&unit_install::uninstall(
        home,
        &a.name,
        Scope::user(a.user),
    )?);
    Ok(0)
}

pub fn install_generator(_home: &Home, a: InstallGeneratorArgs) -> Result<u8> {
    print_lines(&link::install(Scope::user(a.user))?);
    Ok(0)
}

pub fn install_metrics(home: &Home, a: crate::cli::args_observe::InstallMetricsArgs) -> Result<u8> {
    let listen = crate::metrics::serve::parse_listen(&a.listen)?;
    print_lines(&crate::systemd::metricsunit::install(
        home,
        Scope::user(a.user),
        listen,
        a.enable,
        a.now,
    )?);
    Ok(0)
}

pub fn uninstall_metrics(_home: &Home, a: UserArg) -> Result<u8> {
    print_lines(&crate::systemd::metricsunit::uninstall(Scope::user(
        a.user,
    ))?);
    Ok(0)
}

pub fn uninstall_generator(_home: &Home, a: UserArg) -> Result<u8> {
    print_lines(&link::uninstall(Scope::user(a.user))?);
    Ok(0)
}
