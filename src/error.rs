//! Typed errors for every way a vmctl request can fail, and the exit code each one maps to.
//!
//! Messages are short, sentence-case, and carry the values involved (file, field, number). The
//! cause chain is printed once, at the top, by `lib::main`; nothing below prints errors itself.

/// Exit codes, documented in README.md. Stable: scripts depend on them.
pub mod exit {
    /// Something failed that fits no narrower class (I/O, an unexpected reply).
    pub const FAILURE: u8 = 1;
    /// The request itself is wrong: bad flag, bad config value, name taken.
    pub const USAGE: u8 = 2;
    /// The VM or image named does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The host cannot do what was asked (no QEMU binary, KVM requested but unusable).
    pub const HOST: u8 = 4;
    /// QEMU refused to start, died, or answered QMP with an error.
    pub const QEMU: u8 = 5;
    /// A bounded wait ran out.
    pub const TIMEOUT: u8 = 6;
    /// The VM is in the wrong state for the request (running, busy, port taken).
    pub const STATE: u8 = 7;
    /// `vmctl run` killed QEMU because the guest failed its health check.
    pub const UNHEALTHY: u8 = 8;
    /// One of your provisioning scripts failed in the guest (`start --wait`).
    pub const PROVISION: u8 = 9;
}

/// The name of an exit code (README.md lists them); `failure` for any other.
pub fn kind_of(code: u8) -> &'static str {
    match code {
        exit::USAGE => "usage",
        exit::NOT_FOUND => "not_found",
        exit::HOST => "host",
        exit::QEMU => "qemu",
        exit::TIMEOUT => "timeout",
        exit::STATE => "state",
        exit::UNHEALTHY => "unhealthy",
        exit::PROVISION => "provision",
        _ => "failure",
    }
}

/// One invalid field of a definition or command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field name as the user wrote it (`memory`, `ports[1]`, `--mem`).
    pub field: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of one definition or request, collected as validation goes, each naming its
/// field: reported all at once ([`Error::Invalid`]) rather than one per attempt.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// The value, or `None` once why it is bad is recorded against `field`.
    pub fn check<T>(&mut self, field: &str, value: std::result::Result<T, String>) -> Option<T> {
        value.map_err(|e| self.add(field, e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was found, else every problem as one [`Error::Invalid`] naming
    /// `source_name` (the file, or "command line").
    pub fn into_result(self, source_name: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid {
            source_name: source_name.to_string(),
            problems: self.0,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    /// Every problem of one definition at once, each naming its field.
    #[error("{source_name}: invalid VM definition:\n  {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        source_name: String,
        problems: Vec<FieldError>,
    },

    #[error("{what} {name:?} not found{hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: String,
    },

    #[error("{0}")]
    Host(String),

    #[error("{0}")]
    Qemu(String),

    #[error("{0}")]
    Timeout(String),

    #[error("{0}")]
    State(String),

    /// A provisioning script of the definition's failed in the guest.
    #[error("{0}")]
    Provision(String),

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),

    /// An error another vmctl process reported with its exit code (the supervisor, through the
    /// line it writes for `vmctl start`): shown and exited with as it was.
    #[error("{message}")]
    Relayed { code: u8, message: String },
}

impl Error {
    pub fn code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Invalid { .. } => exit::USAGE,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Host(_) => exit::HOST,
            Error::Qemu(_) => exit::QEMU,
            Error::Timeout(_) => exit::TIMEOUT,
            Error::State(_) => exit::STATE,
            Error::Provision(_) => exit::PROVISION,
            Error::Io { .. } | Error::Other(_) => exit::FAILURE,
            Error::Relayed { code, .. } => *code,
        }
    }

    /// The exit code's name, for scripts reading `--json` errors: `failure`, `usage`,
    /// `not_found`, `host`, `qemu`, `timeout`, `state`, `unhealthy`, `provision`.
    pub fn kind(&self) -> &'static str {
        kind_of(self.code())
    }

    /// The error for a request that needs a running VM.
    pub fn not_running(name: &impl std::fmt::Display) -> Self {
        Error::State(format!(
            "VM {name} is not running; start it with `vmctl start {name}`"
        ))
    }

    pub fn vm_not_found(name: &str) -> Self {
        Error::NotFound {
            what: "VM",
            name: name.to_string(),
            hint: " (see `vmctl list`)".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach "what we were doing, on which path" to an I/O error.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
    fn path_ctx(self, verb: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
    fn path_ctx(self, verb: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: format!("Cannot {verb} {}", path.display()),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit codes README.md documents, by kind of error.
    #[test]
    fn each_kind_of_error_has_its_documented_exit_code() {
        let io = || std::io::Error::other("x");
        for (e, code) in [
            (Error::Other("x".into()), 1),
            (
                Error::Io {
                    context: "x".into(),
                    source: io(),
                },
                1,
            ),
            (Error::Usage("x".into()), 2),
            (
                Error::Invalid {
                    source_name: "x".into(),
                    problems: vec![],
                },
                2,
            ),
            (Error::vm_not_found("web"), 3),
            (Error::Host("x".into()), 4),
            (Error::Qemu("x".into()), 5),
            (Error::Timeout("x".into()), 6),
            (Error::State("x".into()), 7),
            (Error::not_running(&"web"), 7),
            (
                Error::Relayed {
                    code: exit::UNHEALTHY,
                    message: "x".into(),
                },
                8,
            ),
            (Error::Provision("x".into()), 9),
        ] {
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn problems_are_reported_together_each_by_field() {
        let mut p = Problems::default();
        assert_eq!(p.check("cpus", Ok::<u32, String>(2)), Some(2));
        assert!(p.is_empty());
        assert_eq!(
            p.check::<u32>("cpus", Err("must be 1-255; got 0".into())),
            None
        );
        p.add("ports[1]", "host port must be 1-65535; got 70000");
        let e = p.into_result("web.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "web.toml: invalid VM definition:\n  cpus: must be 1-255; got 0\n  ports[1]: host port must be 1-65535; got 70000"
        );
        assert!(Problems::default().into_result("x").is_ok());
    }
}
