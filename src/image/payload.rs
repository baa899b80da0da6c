//! What vmctl puts in its guests, one file each in `images/guest/`: the demo app and its
//! launcher, the apps' systemd units, the nginx site and the sshd hardening drop-in. Embedded
//! once, here, and used twice: the debian-12 recipe bakes them into the image at build time,
//! and the cloud-init seed of a VM on an imported image writes them at its first boot.

use crate::types::App;

/// One file of the guest payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFile {
    /// Its name in `images/guest/` (and in an image build's `guest/` directory).
    pub name: &'static str,
    /// Where vmctl's images keep it.
    pub path: &'static str,
    pub mode: u32,
    pub text: &'static str,
}

macro_rules! guest_file {
    ($name:literal, $path:literal, $mode:literal) => {
        GuestFile {
            name: $name,
            path: $path,
            mode: $mode,
            text: include_str!(concat!("../../images/guest/", $name)),
        }
    };
}

/// sshd: key-only logins, no root; sorts first, since sshd keeps the first value it reads.
pub const SSHD_HARDENING: GuestFile = guest_file!(
    "sshd-01-vmctl.conf",
    "/etc/ssh/sshd_config.d/01-vmctl.conf",
    0o644
);
/// The app's environment (`app_env`), which the app units read (`EnvironmentFile=`).
pub const APP_ENV_PATH: &str = "/etc/vmctl/app.env";

/// Your provisioning scripts' runner: each script once, saying on the console how it ended.
pub const SCRIPTS_RUNNER: GuestFile =
    guest_file!("vmctl-scripts", "/usr/local/lib/vmctl/scripts", 0o755);
/// The demo WSGI app ("Hello, World!").
pub const HELLO_APP: GuestFile = guest_file!("hello.py", "/usr/local/lib/vmctl/hello.py", 0o644);
/// gunicorn, with its slow `pkg_resources` import made lazy.
pub const GUNICORN: GuestFile = guest_file!("gunicorn", "/usr/local/lib/vmctl/gunicorn", 0o755);
/// The nginx site of the `nginx-gunicorn` app: port 8080 proxied to gunicorn's socket.
pub const NGINX_SITE: GuestFile = guest_file!(
    "nginx-vmctl-app.conf",
    "/etc/nginx/sites-available/vmctl-app",
    0o644
);
const GUNICORN_HELLO_UNIT: GuestFile = guest_file!(
    "vmctl-app-gunicorn-hello.service",
    "/etc/systemd/system/vmctl-app-gunicorn-hello.service",
    0o644
);
const NGINX_GUNICORN_UNIT: GuestFile = guest_file!(
    "vmctl-app-nginx-gunicorn.service",
    "/etc/systemd/system/vmctl-app-nginx-gunicorn.service",
    0o644
);

/// Your own app's installer (`app::deploy::INSTALLER`), its unit and gunicorn's.
pub const APP_INSTALLER: GuestFile = guest_file!(
    "vmctl-app-install",
    "/usr/local/lib/vmctl/app-install",
    0o755
);
pub const APP_INSTALL_UNIT: GuestFile = guest_file!(
    "vmctl-app-install.service",
    "/etc/systemd/system/vmctl-app-install.service",
    0o644
);
pub const WSGI_APP_UNIT: GuestFile = guest_file!(
    "vmctl-app.service",
    "/etc/systemd/system/vmctl-app.service",
    0o644
);

/// Every file, as the image recipe embeds them.
pub const ALL: [GuestFile; 10] = [
    SSHD_HARDENING,
    SCRIPTS_RUNNER,
    HELLO_APP,
    GUNICORN,
    NGINX_SITE,
    GUNICORN_HELLO_UNIT,
    NGINX_GUNICORN_UNIT,
    APP_INSTALLER,
    APP_INSTALL_UNIT,
    WSGI_APP_UNIT,
];

/// The unit that runs `app` (`vmctl-app-NAME.service`).
pub fn app_unit(app: App) -> GuestFile {
    match app {
        App::GunicornHello => GUNICORN_HELLO_UNIT,
        App::NginxGunicorn => NGINX_GUNICORN_UNIT,
    }
}

/// The unit's name, as systemd and provisioning know it.
pub fn unit_name(f: &GuestFile) -> &'static str {
    f.path.rsplit('/').next().unwrap_or(f.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_images_guest_is_in_the_payload_and_each_app_has_its_unit() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/guest");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ALL.iter().map(|f| f.name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for app in App::ALL {
            let unit = app_unit(app);
            assert_eq!(unit_name(&unit), format!("vmctl-app-{app}.service"));
            assert!(
                unit.text
                    .contains("ExecStart=/usr/local/lib/vmctl/gunicorn ")
            );
        }
    }
}
