//! `vmctl export NAME --format libvirt|kubevirt|nomad`: the VM in another engine's form (`engines`), gathered
//! from its definition, the launch plan vmctl would start it with (accelerator, image, kernel
//! command line, guest agent) and the boot files a start writes (the provisioning credential,
//! the cloud-init seed, the app release), which the document names by path. What the form
//! cannot carry comes back as gaps, for stderr, or as a refusal with `strict`.

use serde::Serialize;

use crate::def::store::load;
use crate::engines::kubevirt::{self, Kube};
use crate::engines::libvirt::{self, Domain};
use crate::engines::nomad::{self, Job};
use crate::error::{Error, Result};
use crate::image::recipe::Provision;
use crate::paths::Home;
use crate::types::VmName;

#[derive(Debug, Serialize)]
pub struct Translated {
    pub name: String,
    pub format: &'static str,
    pub document: String,
    /// What the document does not carry, one line each.
    pub gaps: Vec<String>,
}

/// The VM `name` as KubeVirt objects (a VirtualMachine and a Service, YAML).
pub fn kubevirt(home: &Home, name: &VmName, strict: bool) -> Result<Translated> {
    let spec = load(home, name)?;
    let paths = home.vm(name);
    let image = crate::image::store::find(home, &spec.image, spec.arch)?;
    let keys = std::fs::read_to_string(paths.ssh().authorized_keys())
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let k = Kube {
        user: spec
            .user
            .clone()
            .unwrap_or_else(crate::guest::credential::default_user)
            .to_string(),
        keys,
        vmctl_provisioned: image.manifest.provision == Provision::Vmctl,
    };
    let gaps = kubevirt::gaps(&spec, &k);
    refuse_gaps(strict, name, "KubeVirt objects", &gaps)?;
    Ok(Translated {
        name: name.to_string(),
        format: "kubevirt",
        document: kubevirt::render(&spec, &k),
        gaps,
    })
}

/// With `strict`, what a format cannot carry is a refusal.
fn refuse_gaps(strict: bool, name: &VmName, what: &str, gaps: &[String]) -> Result<()> {
    if strict && !gaps.is_empty() {
        return Err(Error::Usage(format!(
            "--strict: VM {name} has what {what} do not carry:\n  {}",
            gaps.join("\n  ")
        )));
    }
    Ok(())
}

/// The VM `name` as a Nomad job on the qemu driver (HCL).
pub fn nomad(home: &Home, name: &VmName, strict: bool) -> Result<Translated> {
    let spec = load(home, name)?;
    let gaps = nomad::gaps(&spec);
    refuse_gaps(strict, name, "Nomad jobs", &gaps)?;
    let paths = home.vm(name);
    let plan = crate::supervisor::plan::plan(home, &spec)?;
    let boot = crate::guest::provision::boot_files(&paths, &spec, &plan.image, &plan.guest_net)?;
    let job = Job {
        name: name.to_string(),
        accel: plan.decision.accel,
        cpus: spec.cpus,
        memory_mib: spec.memory.mib(),
        disk: paths.disk(),
        kernel: plan.image.kernel(),
        initrd: plan.image.initrd(),
        cmdline: plan.cmdline.clone(),
        credential: boot.credential,
        forwards: spec.ports.clone(),
        stop_timeout_secs: spec.stop_timeout.as_secs(),
    };
    Ok(Translated {
        name: name.to_string(),
        format: "nomad",
        document: nomad::render(&job),
        gaps,
    })
}

/// The VM `name` as a libvirt domain.
pub fn libvirt(home: &Home, name: &VmName, strict: bool) -> Result<Translated> {
    let spec = load(home, name)?;
    let gaps = libvirt::gaps(&spec);
    refuse_gaps(strict, name, "libvirt domains", &gaps)?;
    let paths = home.vm(name);
    let plan = crate::supervisor::plan::plan(home, &spec)?;
    let boot = crate::guest::provision::boot_files(&paths, &spec, &plan.image, &plan.guest_net)?;
    let domain = Domain {
        name: name.to_string(),
        accel: plan.decision.accel,
        arch: spec.arch,
        cpus: spec.cpus,
        memory_mib: spec.memory.mib(),
        disk: paths.disk(),
        base: Some(plan.image.disk()),
        kernel: plan.image.kernel(),
        initrd: plan.image.initrd(),
        cmdline: plan.cmdline.clone(),
        credential: boot.credential,
        seed: boot.seed,
        app: boot.app,
        agent: plan.agent,
        forwards: spec.ports.clone(),
    };
    Ok(Translated {
        name: name.to_string(),
        format: "libvirt",
        document: libvirt::render(&domain),
        gaps,
    })
}
