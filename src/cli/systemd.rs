//! `vmctl systemd ...`'s handlers: a VM's unit printed, installed or removed, and the generator
//! linked or unlinked. Each reports what it did, one line a step.

use crate::cli::args::{GenerateArgs, InstallArgs, InstallGeneratorArgs, UninstallArgs, UserArg};
use crate::cli::output::print_lines;
use crate::def::store::load;
use crate::error::Result;
use crate::paths::Home;
use crate::systemd::generator::link;
use crate::systemd::install::{self as unit_install, InstallOptions};
use crate::types::Scope;

pub fn generate(home: &Home, a: GenerateArgs) -> Result<u8> {
    let spec = load(home, &a.name)?;
    print!(
        "{}",
        unit_install::generate(home, &spec, Scope::user(a.user))?
    );
    Ok(0)
}

pub fn install(home: &Home, a: InstallArgs) -> Result<u8> {
    let spec = load(home, &a.name)?;
    let opts = InstallOptions {
        enable: a.enable,
        now: a.now,
        linger: a.linger,
    };
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

pub fn uninstall_generator(_home: &Home, a: UserArg) -> Result<u8> {
    print_lines(&link::uninstall(Scope::user(a.user))?);
    Ok(0)
}
