//! `vmctl app deploy`: the release, where it went and what the guest did with it.

use crate::app::deploy;
use crate::cli::args_guest::AppDeployArgs;
use crate::cli::output::print_json;
use crate::error::Result;
use crate::paths::Home;

pub fn deploy(home: &Home, a: AppDeployArgs) -> Result<u8> {
    let d = deploy::deploy(home, &a.name, a.dir.as_deref())?;
    if a.json || crate::cli::output::json_mode() {
        print_json(&d);
    } else if d.live {
        println!(
            "Deployed release {} of VM {}'s app ({} KiB): {} in {:.1} s",
            d.release,
            d.name,
            d.bytes.div_ceil(1024),
            d.outcome.as_deref().unwrap_or("done"),
            d.seconds
        );
    } else {
        println!(
            "VM {} is not running: release {} is kept and installed at its next start",
            d.name, d.release
        );
    }
    Ok(0)
}
