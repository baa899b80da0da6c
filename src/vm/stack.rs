//! `vmctl up|down|ps`: a stack file's networks and VMs brought up, down and shown.
//!
//! `up` checks the whole stack first (the file, and that no VM outside it forwards one of its
//! host ports), creates the networks and VMs that are missing, brings the definitions of stopped
//! VMs in line with the file (and says which running VMs differ from it), then starts the VMs in
//! `after` order, independent ones at once, each until it is ready. A VM that fails is named
//! with why; those that start after it are not started, the others are left as they are.
//! `down` stops the VMs in the reverse order, gracefully, independent ones at once; with `--rm`
//! it removes the VMs and the networks the stack made.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::addr::{NetName, Subnet};
use crate::def::stack::{Stack, StackVm};
use crate::error::{Error, Problems, Result};
use crate::paths::Home;
use crate::runstate::{self, Liveness};
use crate::types::VmName;
use crate::vm::create::{Applied, define_from_stack};
use crate::vm::order::{self, Outcome};
use crate::vm::stop::StopMode;

/// What `up` did, VM by VM.
#[derive(Debug, Serialize)]
pub struct Up {
    pub stack: String,
    /// Networks created now.
    pub networks_created: Vec<String>,
    pub vms: Vec<VmUp>,
}

#[derive(Debug, Serialize)]
pub struct VmUp {
    pub name: String,
    pub service: String,
    /// "created", "unchanged", "updated: …", or "running; differs from the file: …".
    pub definition: String,
    /// "started", "running" (it was), "failed: …" or "not started: … did not start".
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_seconds: Option<f64>,
}

/// The VMs `only` names (by their names in the file), with those they start after; all when
/// `only` is empty. Unknown names are refused.
fn selected<'a>(stack: &'a Stack, only: &[String]) -> Result<Vec<&'a StackVm>> {
    if only.is_empty() {
        return Ok(stack.vms.iter().collect());
    }
    let mut want: Vec<VmName> = Vec::new();
    for o in only {
        let vm = stack
            .vms
            .iter()
            .find(|v| &v.short == o || v.name.as_str() == o)
            .ok_or_else(|| Error::NotFound {
                what: "VM",
                name: o.clone(),
                hint: format!(
                    " in stack {} (its VMs: {})",
                    stack.name,
                    stack
                        .vms
                        .iter()
                        .map(|v| v.short.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        want.push(vm.name.clone());
    }
    // Close over `after`.
    let mut i = 0;
    while i < want.len() {
        if let Some(vm) = stack.vms.iter().find(|v| v.name == want[i]) {
            for a in vm.after() {
                if !want.contains(&a) {
                    want.push(a);
                }
            }
        }
        i += 1;
    }
    Ok(stack
        .vms
        .iter()
        .filter(|v| want.contains(&v.name))
        .collect())
}

/// Before anything is made: no VM outside the stack forwards a host port of one in it, the
/// image of each VM still to be created is there, and each address the file gives is a host
/// address of its network's (planned) subnet that no VM outside the stack has.
fn precheck(
    home: &Home,
    stack: &Stack,
    vms: &[&StackVm],
    plan: &[(NetName, Subnet, bool)],
) -> Result<()> {
    let mut p = Problems::default();
    for vm in vms {
        for (i, r) in vm.config.networks.iter().enumerate() {
            let (Some((name, subnet, _)), Some(Ok(ip))) = (
                plan.iter().find(|(n, _, _)| n.as_str() == r.name()),
                r.address().map(|a| a.parse::<std::net::Ipv4Addr>()),
            ) else {
                continue;
            };
            let field = format!("vms.{}.networks[{i}].address", vm.short);
            if let Err(why) = subnet.check_host(ip) {
                p.add(&field, format!("network {name}: {why}"));
            } else if let Some(m) = crate::def::network::members(home, name)
                .into_iter()
                .find(|m| m.address == Some(ip) && !stack.vms.iter().any(|v| v.name == m.vm))
            {
                p.add(
                    &field,
                    format!("{ip} is VM {}'s address on network {name}", m.vm),
                );
            }
        }
        if !home.vm(&vm.name).definition().exists() {
            let limits = crate::def::store::limits();
            if let Ok(spec) = crate::def::spec::validate(&vm.name, &vm.config, limits, "") {
                if let Err(e) = crate::image::store::find(home, &spec.image, spec.arch) {
                    p.add(format!("vms.{}.image", vm.short), e.to_string());
                }
            }
        }
        for (i, text) in vm.config.ports.iter().enumerate() {
            let Ok(f) = text.parse() else { continue };
            if let Some((owner, pf)) = crate::def::store::port_owner(home, &vm.name, &f) {
                let ours = stack.vms.iter().any(|v| v.name == owner);
                if !ours {
                    p.add(
                        format!("vms.{}.ports[{i}]", vm.short),
                        format!(
                            "host port {} is already forwarded by VM {owner} ({pf})",
                            f.host
                        ),
                    );
                }
            }
        }
    }
    p.into_result(&stack.file.display().to_string())
        .map_err(|e| {
            Error::Usage(
                e.to_string()
                    .replace("invalid VM definition", "invalid stack file"),
            )
        })
}

/// The subnet each of the stack's networks has or will have (an existing network's own, else
/// the file's, else the free one `network create` would pick), and whether it exists; one
/// that exists with another subnet than the file's is refused.
fn plan_networks(home: &Home, stack: &Stack) -> Result<Vec<(NetName, Subnet, bool)>> {
    let mut all = crate::def::network::all(home);
    let mut out = Vec::new();
    for n in &stack.networks {
        match crate::def::network::load(home, &n.name) {
            Ok(existing) => {
                if let Some(s) = n.subnet.filter(|s| *s != existing.subnet) {
                    return Err(Error::Usage(format!(
                        "{}: networks.{}.subnet: network {} exists with subnet {}, not {s}; remove it (`vmctl down --rm`) to change it",
                        stack.file.display(),
                        n.short,
                        n.name,
                        existing.subnet
                    )));
                }
                out.push((n.name.clone(), existing.subnet, true));
            }
            Err(Error::NotFound { .. }) => {
                let subnet = match n.subnet {
                    Some(s) => s,
                    None => crate::def::network::free_subnet(&all)?,
                };
                all.push(crate::def::network::Network {
                    name: n.name.clone(),
                    subnet,
                    stack: None,
                });
                out.push((n.name.clone(), subnet, false));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Create the stack's networks that are missing, with the planned subnets.
fn networks(home: &Home, stack: &Stack, plan: &[(NetName, Subnet, bool)]) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for (name, subnet, exists) in plan {
        if !exists {
            crate::vm::network::create(home, name, Some(*subnet), Some(stack.name.as_str()))?;
            created.push(name.to_string());
        }
    }
    Ok(created)
}

/// Bring the stack's networks and the definitions of `vms` in line with the file: the
/// networks created now, and what was done to each VM's definition, by name.
fn define_all(
    home: &Home,
    stack: &Stack,
    vms: &[&StackVm],
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let plan = plan_networks(home, stack)?;
    precheck(home, stack, vms, &plan)?;
    let networks_created = networks(home, stack, &plan)?;
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for vm in vms {
        let (_, applied) = define_from_stack(home, &vm.name, &vm.config, &stack.file)?;
        defined.insert(
            vm.name.to_string(),
            match applied {
                Applied::Created => "created".into(),
                Applied::Unchanged => "unchanged".into(),
                Applied::Updated(c) => format!("updated: {}", c.join("; ")),
                Applied::Differs(c) => {
                    format!(
                        "running; differs from the file (stop it, then up): {}",
                        c.join("; ")
                    )
                }
            },
        );
    }
    Ok((networks_created, defined))
}

fn deps_of(vms: &[&StackVm]) -> BTreeMap<String, Vec<String>> {
    vms.iter()
        .map(|v| (v.name.to_string(), v.config.after.clone()))
        .collect()
}

/// `vmctl up`: see the module's paragraph. Fails (with the first failure's exit code) when a
/// VM did not come up; the report says what happened to each.
pub fn up(home: &Home, stack: &Stack, only: &[String], timeout: Duration) -> Result<Up> {
    let vms = selected(stack, only)?;
    let (networks_created, mut defined) = define_all(home, stack, &vms)?;
    let deps = deps_of(&vms);
    let outcomes = order::run(&deps, |name| {
        let name: VmName = name.parse().map_err(Error::Usage)?;
        if runstate::liveness(&home.vm(&name)).is_running() {
            return Ok(None);
        }
        crate::vm::start::start(home, &name, Some(timeout)).map(Some)
    });
    let mut report = Up {
        stack: stack.name.to_string(),
        networks_created,
        vms: Vec::new(),
    };
    let mut first_error: Option<Error> = None;
    for vm in &vms {
        let (state, ready_seconds) = match outcomes.get(vm.name.as_str()) {
            Some(Outcome::Done(Some(s))) => ("started".to_string(), s.ready_seconds),
            Some(Outcome::Done(None)) => ("running".to_string(), None),
            Some(Outcome::Failed(e)) => {
                let s = format!("failed: {e}");
                first_error.get_or_insert_with(|| Error::Relayed {
                    code: e.code(),
                    message: format!(
                        "VM {} of stack {} did not come up: {e}",
                        vm.name, stack.name
                    ),
                });
                (s, None)
            }
            Some(Outcome::Skipped(dep)) => (format!("not started: {dep} did not come up"), None),
            None => ("not started".to_string(), None),
        };
        report.vms.push(VmUp {
            name: vm.name.to_string(),
            service: vm.short.clone(),
            definition: defined.remove(vm.name.as_str()).unwrap_or_default(),
            state,
            ready_seconds,
        });
    }
    match first_error {
        Some(e) => {
            // The report goes to stderr with the error: what did come up, what did not.
            for v in &report.vms {
                eprintln!("  {}: {}", v.name, v.state);
            }
            Err(e)
        }
        None => Ok(report),
    }
}

/// What `down` did, VM by VM.
#[derive(Debug, Serialize)]
pub struct Down {
    pub stack: String,
    pub vms: Vec<VmDown>,
    /// With `--rm`: the networks removed.
    pub networks_removed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct VmDown {
    pub name: String,
    /// "stopped (acpi, 1.2 s)", "was not running", "failed: …", "removed".
    pub state: String,
}

/// `vmctl down`: stop the stack's VMs that exist, last-started first, gracefully; with `rm`,
/// remove them and the networks the stack made.
pub fn down(home: &Home, stack: &Stack, rm: bool) -> Result<Down> {
    let existing: Vec<&StackVm> = stack
        .vms
        .iter()
        .filter(|v| home.vm(&v.name).definition().exists())
        .collect();
    let deps: BTreeMap<String, Vec<String>> = existing
        .iter()
        .map(|v| (v.name.to_string(), v.config.after.clone()))
        .collect();
    let outcomes = order::run(&order::reversed(&deps), |name| {
        let name: VmName = name.parse().map_err(Error::Usage)?;
        let spec = crate::def::store::load(home, &name)?;
        let s = crate::vm::stop::stop(home, &name, StopMode::Graceful(spec.stop_timeout))?;
        Ok::<_, Error>(match (s.was_running, s.outcome) {
            (false, _) => "was not running".to_string(),
            (true, Some(o)) => format!("stopped ({}, {:.1} s)", o.step.as_str(), o.seconds),
            (true, None) => "stopped".to_string(),
        })
    });
    let mut out = Down {
        stack: stack.name.to_string(),
        vms: Vec::new(),
        networks_removed: Vec::new(),
    };
    let mut first_error = None;
    for vm in &existing {
        let state = match outcomes.get(vm.name.as_str()) {
            Some(Outcome::Done(s)) => s.clone(),
            Some(Outcome::Failed(e)) => {
                let s = format!("failed: {e}");
                first_error.get_or_insert_with(|| Error::Relayed {
                    code: e.code(),
                    message: format!("VM {} of stack {} did not stop: {e}", vm.name, stack.name),
                });
                s
            }
            Some(Outcome::Skipped(d)) => format!("left running: {d} did not stop"),
            None => "left as it is".to_string(),
        };
        out.vms.push(VmDown {
            name: vm.name.to_string(),
            state,
        });
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if rm {
        remove(home, stack, &existing, &mut out)?;
    }
    Ok(out)
}

/// `down --rm`: the stack's VMs (those it made: `stack` in their definition) and then its
/// networks that no other VM joins.
fn remove(home: &Home, stack: &Stack, existing: &[&StackVm], out: &mut Down) -> Result<()> {
    for vm in existing {
        let made_here = crate::def::store::load(home, &vm.name)
            .map(|s| s.stack.as_ref() == Some(&stack.name))
            .unwrap_or(false);
        if made_here {
            crate::vm::rm::rm(home, &vm.name, false)?;
            if let Some(v) = out.vms.iter_mut().find(|v| v.name == vm.name.as_str()) {
                v.state = format!("{}; removed", v.state);
            }
        }
    }
    for n in &stack.networks {
        let Ok(net) = crate::def::network::load(home, &n.name) else {
            continue;
        };
        let ours = net.stack.as_ref() == Some(&stack.name.to_string());
        if ours && crate::def::network::members(home, &n.name).is_empty() {
            crate::vm::network::remove(home, &n.name)?;
            out.networks_removed.push(n.name.to_string());
        }
    }
    Ok(())
}

/// A VM of the stack as `ps` shows it.
#[derive(Debug, Serialize)]
pub struct PsRow {
    pub name: String,
    pub service: String,
    /// "running", "paused", "stopped", or "not created".
    pub state: String,
    pub pid: Option<i32>,
    pub ports: Vec<String>,
    /// "NETWORK ADDRESS" for each network.
    pub networks: Vec<String>,
}

/// `vmctl ps`: the stack's VMs and their state.
pub fn ps(home: &Home, stack: &Stack) -> Vec<PsRow> {
    stack
        .vms
        .iter()
        .map(|vm| {
            let paths = home.vm(&vm.name);
            let spec = crate::def::store::load(home, &vm.name).ok();
            let (state, pid) = match (&spec, runstate::liveness(&paths)) {
                (None, _) => ("not created".to_string(), None),
                (Some(_), Liveness::Running { pid, state }) => (
                    if state.is_some_and(|s| s.paused) {
                        "paused"
                    } else {
                        "running"
                    }
                    .to_string(),
                    Some(pid),
                ),
                (Some(_), _) => ("stopped".to_string(), None),
            };
            PsRow {
                name: vm.name.to_string(),
                service: vm.short.clone(),
                state,
                pid,
                ports: spec
                    .as_ref()
                    .map(|s| s.ports.iter().map(|p| p.to_string()).collect())
                    .unwrap_or_default(),
                networks: spec
                    .as_ref()
                    .map(|s| {
                        s.networks
                            .iter()
                            .map(|a| {
                                format!(
                                    "{} {}",
                                    a.network,
                                    a.address.map(|x| x.to_string()).unwrap_or_default()
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// `vmctl systemd install --stack FILE`: the stack's networks and VMs defined as `up` would
/// (nothing started), the units of its networks and VMs written (each VM's after those it
/// starts after), and its target, enabled as asked and started with `now` (which returns once
/// every VM is up). What was done, one line each.
pub fn install_units(
    home: &Home,
    stack: &Stack,
    scope: crate::types::Scope,
    opts: crate::systemd::install::InstallOptions,
) -> Result<Vec<String>> {
    use crate::systemd::{install, manager, netunit};
    let vms: Vec<&StackVm> = stack.vms.iter().collect();
    let (created, _) = define_all(home, stack, &vms)?;
    let mut done: Vec<String> = created
        .iter()
        .map(|n| format!("Created network {n}"))
        .collect();
    let unit_opts = install::InstallOptions {
        enable: false,
        now: false,
        linger: opts.linger,
    };
    for name in order::sequence(&deps_of(&vms)) {
        let name: VmName = name.parse().map_err(Error::Usage)?;
        let spec = crate::def::store::load(home, &name)?;
        done.extend(install::install(home, &spec, scope, unit_opts)?);
    }
    let units: Vec<String> = order::sequence(&deps_of(&vms))
        .iter()
        .filter_map(|n| n.parse::<VmName>().ok())
        .map(|n| crate::systemd::unit::unit_name(&n))
        .collect();
    let target = crate::systemd::unit::stack_target_name(&stack.name);
    let file = std::path::absolute(&stack.file).unwrap_or_else(|_| stack.file.clone());
    let text = netunit::render_stack_target(&stack.name, scope, &units, &file);
    done.extend(install::write_unit_file(scope, &target, &text)?);
    let running = manager::manager_running(scope);
    if running {
        manager::systemctl(scope, &["daemon-reload"])?;
    }
    if opts.enable {
        let path = crate::systemd::dirs::unit_dir_here(scope).join(&target);
        install::enable(scope, &path, running)?;
        done.push(format!("Enabled {target}: the stack starts at boot"));
    }
    if opts.now {
        if !running {
            return Err(Error::Host(format!(
                "{}; but could not start {target}: {} is not running here ({})",
                done.join("; "),
                manager::scope_manager(scope),
                manager::why_not_running(scope)
            )));
        }
        manager::systemctl(scope, &["start", &target])?;
        done.push(format!("Started {target}: stack {} is up", stack.name));
    }
    Ok(done)
}
