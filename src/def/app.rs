//! Your own WSGI app: the `[app]` table (`app = "gunicorn-hello"` names a built-in one
//! instead). `dir` is a directory with the app's module, shipped into the guest (see `app::`);
//! `wsgi` the module and callable gunicorn serves, `workers` its worker processes, `proxy`
//! nginx in front or none, `port` the guest port it answers on, `requirements` Debian packages
//! (names for the image's apt) or a directory of wheels. A relative `dir` (or wheel directory)
//! is taken from the definition file's folder at create, and kept absolute.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Problems;

/// `app` as a definition has it: a built-in app's name, or your app's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AppValue {
    Builtin(String),
    Wsgi(AppTable),
}

/// The `[app]` table, as the TOML has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppTable {
    pub dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wsgi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
}

/// `requirements`: Debian package names, or a directory of wheels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Requirements {
    Packages(Vec<String>),
    Wheels(String),
}

/// What stands in front of gunicorn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    /// gunicorn itself listens on the port.
    None,
    /// nginx listens on the port and passes requests to gunicorn's unix socket.
    Nginx,
}

/// Your app, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsgiApp {
    /// The app's directory on the host (absolute).
    pub dir: PathBuf,
    /// `module:callable` (`app:app`, `myproject.wsgi:application`).
    pub wsgi: String,
    pub workers: u32,
    pub proxy: Proxy,
    pub port: u16,
    /// Debian packages the app needs (installed with the guest's apt).
    pub packages: Vec<String>,
    /// A directory of wheels (`.whl`) to put on the app's path (absolute).
    pub wheels: Option<PathBuf>,
}

pub const DEFAULT_WSGI: &str = "app:app";
pub const DEFAULT_WORKERS: u32 = 2;
pub const MAX_WORKERS: u32 = 64;
pub const DEFAULT_PORT: u16 = 8080;

impl WsgiApp {
    /// Back to the table, as `vm.toml` keeps it.
    pub fn to_table(&self) -> AppTable {
        AppTable {
            dir: Some(self.dir.display().to_string()),
            wsgi: Some(self.wsgi.clone()),
            workers: Some(self.workers),
            proxy: Some(
                match self.proxy {
                    Proxy::None => "none",
                    Proxy::Nginx => "nginx",
                }
                .into(),
            ),
            port: Some(self.port),
            requirements: match (&self.wheels, self.packages.is_empty()) {
                (Some(w), _) => Some(Requirements::Wheels(w.display().to_string())),
                (None, false) => Some(Requirements::Packages(self.packages.clone())),
                (None, true) => None,
            },
        }
    }
}

/// Make `dir` and a wheel directory absolute, relative to `base` (the definition file's
/// folder); what the flags or a stored definition give is absolute already.
pub fn resolve(t: &mut AppTable, base: &Path) {
    // `components` drops the `.` of "./myapp", so the stored path reads plainly.
    let abs = |s: &str| {
        let p: PathBuf = base.join(s).components().collect();
        p.display().to_string()
    };
    if let Some(d) = t.dir.as_deref().filter(|d| !Path::new(d).is_absolute()) {
        t.dir = Some(abs(d));
    }
    if let Some(Requirements::Wheels(w)) = &t.requirements {
        if !Path::new(w).is_absolute() {
            t.requirements = Some(Requirements::Wheels(abs(w)));
        }
    }
}

/// Validate the `[app]` table, each problem by field (`app.dir`, `app.wsgi`, ...). The host
/// directories must exist now (they are read at create and at each deploy).
pub fn validate(t: &AppTable, p: &mut Problems) -> Option<WsgiApp> {
    let dir = match t.dir.as_deref() {
        None | Some("") => {
            p.add(
                "app.dir",
                "is required: the directory with your app's module",
            );
            None
        }
        Some(d) => directory("app.dir", d, p),
    };
    let wsgi = t.wsgi.clone().unwrap_or_else(|| DEFAULT_WSGI.into());
    if let Err(why) = check_wsgi(&wsgi) {
        p.add("app.wsgi", format!("{why}; got {wsgi:?}"));
    }
    let workers = t.workers.unwrap_or(DEFAULT_WORKERS);
    if !(1..=MAX_WORKERS).contains(&workers) {
        p.add(
            "app.workers",
            format!("must be 1-{MAX_WORKERS}; got {workers}"),
        );
    }
    let proxy = match t.proxy.as_deref() {
        None | Some("none") => Proxy::None,
        Some("nginx") => Proxy::Nginx,
        Some(other) => {
            p.add(
                "app.proxy",
                format!("must be \"nginx\" or \"none\"; got {other:?}"),
            );
            Proxy::None
        }
    };
    let port = t.port.unwrap_or(DEFAULT_PORT);
    if port == 0 || port == 22 {
        p.add(
            "app.port",
            format!("must be a guest port 1-65535 other than sshd's 22; got {port}"),
        );
    }
    let (mut packages, mut wheels) = (Vec::new(), None);
    match &t.requirements {
        None => {}
        Some(Requirements::Packages(list)) => {
            for (i, name) in list.iter().enumerate() {
                if check_package(name) {
                    packages.push(name.clone());
                } else {
                    p.add(
                        format!("app.requirements[{i}]"),
                        format!("{name:?} is not a Debian package name (lower-case letters, digits, + - .)"),
                    );
                }
            }
        }
        Some(Requirements::Wheels(w)) => wheels = directory("app.requirements", w, p),
    }
    Some(WsgiApp {
        dir: dir?,
        wsgi,
        workers,
        proxy,
        port,
        packages,
        wheels,
    })
}

/// An existing host directory, by absolute path.
fn directory(field: &str, d: &str, p: &mut Problems) -> Option<PathBuf> {
    let path = PathBuf::from(d);
    if d.chars().any(char::is_control) {
        p.add(
            field,
            format!("the path has a control character; got {d:?}"),
        );
        return None;
    }
    if !path.is_absolute() {
        p.add(
            field,
            format!(
                "{d:?} is relative; give the definition's file (create --from) or an absolute path"
            ),
        );
        return None;
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Some(path),
        Ok(_) => {
            p.add(field, format!("{d} is not a directory"));
            None
        }
        Err(e) => {
            p.add(field, format!("cannot read {d}: {e}"));
            None
        }
    }
}

/// `module:callable`: dotted Python identifiers, a callable name (gunicorn also takes a call
/// such as `app:create_app()`, with no arguments here).
fn check_wsgi(s: &str) -> Result<(), &'static str> {
    let ident = |x: &str| {
        let mut c = x.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    };
    let (module, callable) = s
        .split_once(':')
        .ok_or("must be MODULE:CALLABLE such as \"app:app\"")?;
    if !module.split('.').all(ident) {
        return Err("the module must be a dotted Python name such as \"myproject.wsgi\"");
    }
    let callable = callable.strip_suffix("()").unwrap_or(callable);
    if !ident(callable) {
        return Err("the callable must be a Python name such as \"app\" or \"create_app()\"");
    }
    Ok(())
}

/// A Debian package name (policy 5.6.1), with an optional `=VERSION` left out.
fn check_package(s: &str) -> bool {
    let mut c = s.chars();
    s.len() >= 2
        && s.len() <= 100
        && c.next()
            .is_some_and(|f| f.is_ascii_lowercase() || f.is_ascii_digit())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "+-.".contains(ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &str) -> AppTable {
        AppTable {
            dir: Some(dir.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_app_app_two_workers_no_proxy_port_8080() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Problems::default();
        let app = validate(&table(d.path().to_str().unwrap()), &mut p).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            (app.wsgi.as_str(), app.workers, app.proxy, app.port),
            ("app:app", 2, Proxy::None, 8080)
        );
        assert_eq!(validate(&app.to_table(), &mut p), Some(app));
    }

    #[test]
    fn relative_directories_are_taken_from_the_definitions_folder() {
        let mut t = table("./myapp");
        t.requirements = Some(Requirements::Wheels("wheels".into()));
        resolve(&mut t, Path::new("/srv/defs"));
        assert_eq!(t.dir.as_deref(), Some("/srv/defs/myapp"));
        assert_eq!(
            t.requirements,
            Some(Requirements::Wheels("/srv/defs/wheels".into()))
        );
    }

    #[test]
    fn each_bad_value_is_named_by_field() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let t = AppTable {
            dir: Some(file.display().to_string()),
            wsgi: Some("app".into()),
            workers: Some(0),
            proxy: Some("apache".into()),
            port: Some(22),
            requirements: Some(Requirements::Packages(vec![
                "python3-flask".into(),
                "Flask".into(),
            ])),
        };
        let mut p = Problems::default();
        assert_eq!(validate(&t, &mut p), None);
        let e = p.into_result("t").unwrap_err().to_string();
        for needle in [
            "app.dir: ",
            "is not a directory",
            "app.wsgi: must be MODULE:CALLABLE such as \"app:app\"; got \"app\"",
            "app.workers: must be 1-64; got 0",
            "app.proxy: must be \"nginx\" or \"none\"; got \"apache\"",
            "app.port: must be a guest port 1-65535 other than sshd's 22; got 22",
            "app.requirements[1]: \"Flask\" is not a Debian package name",
        ] {
            assert!(e.contains(needle), "{needle}\n{e}");
        }
        assert!(!e.contains("requirements[0]"), "{e}");
        for ok in ["app:app", "my_project.wsgi:application", "app:create_app()"] {
            assert_eq!(check_wsgi(ok), Ok(()), "{ok}");
        }
        for bad in ["app:", ":app", "my-app:app", "app:app(1)", "a..b:app"] {
            assert!(check_wsgi(bad).is_err(), "{bad}");
        }
    }
}
