//! The start handshake: `vmctl start` spawns `vmctl run --notify-stdout NAME` detached and reads
//! one line from its stdout, `READY <pid>` once QEMU answers QMP, or `ERROR <code> <message>`
//! when the launch failed. Encoded and decoded here only, so that what the supervisor reports
//! reaches the user whole: the same message and the same exit code.

use std::io::Write;

use crate::error::{Error, exit};

/// `READY <pid>`: QEMU runs as `pid` and answers QMP.
pub fn ready(pid: i32) -> String {
    format!("READY {pid}")
}

/// `ERROR <code> <message>`, the message on one line (`\` and newlines escaped).
pub fn error(e: &Error) -> String {
    format!("ERROR {} {}", e.code(), escape(&e.to_string()))
}

/// What a line says: the pid, the error with its exit code, or `None` when it is no handshake
/// line (the supervisor died before it could write one).
pub fn decode(line: &str) -> Option<Result<i32, Error>> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(pid) = line.strip_prefix("READY ") {
        return Some(
            pid.trim()
                .parse()
                .map_err(|_| Error::Other(format!("supervisor said {line:?}"))),
        );
    }
    let rest = line.strip_prefix("ERROR ")?;
    let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = match code.parse::<u8>() {
        Ok(c) if (exit::FAILURE..=exit::UNHEALTHY).contains(&c) => c,
        _ => exit::FAILURE,
    };
    Some(Err(Error::Relayed {
        code,
        message: unescape(message),
    }))
}

/// Write a handshake line to stdout, where the parent waits for it. Errors are ignored: a
/// parent that went away reads nothing either way.
pub fn send(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    /// One error of each kind, with messages that need escaping.
    fn every_kind() -> Vec<Error> {
        vec![
            Error::Usage("--mem: bad".into()),
            Error::Invalid {
                source_name: "vms/web/vm.toml".into(),
                problems: vec![
                    FieldError {
                        field: "cpus".into(),
                        message: "must be 1-255; got 0".into(),
                    },
                    FieldError {
                        field: "ports[1]".into(),
                        message: "a \\n that is not a newline".into(),
                    },
                ],
            },
            Error::NotFound {
                what: "image",
                name: "tiny".into(),
                hint: " for x86_64; build it with `vmctl image build tiny`".into(),
            },
            Error::Host("qemu-system-x86_64 is not installed".into()),
            Error::Qemu("QEMU for VM web did not come up\nQEMU said:\nno".into()),
            Error::Timeout("no QMP reply within 10s".into()),
            Error::State("Host port 127.0.0.1:8080/tcp of ports[0] is already in use".into()),
            Error::Io {
                context: "Cannot write C:\\x".into(),
                source: std::io::Error::other("disk full"),
            },
            Error::Other("supervisor said nothing".into()),
            Error::Relayed {
                code: exit::UNHEALTHY,
                message: "unhealthy".into(),
            },
        ]
    }

    #[test]
    fn every_error_comes_back_with_its_code_and_message() {
        let mut codes: Vec<u8> = Vec::new();
        for e in every_kind() {
            let line = error(&e);
            assert!(!line.contains('\n'), "{line}");
            let back = decode(&line).expect("a handshake line").unwrap_err();
            assert_eq!(back.code(), e.code(), "{line}");
            assert_eq!(back.to_string(), e.to_string(), "{line}");
            codes.push(e.code());
        }
        codes.sort();
        codes.dedup();
        assert_eq!(codes, (exit::FAILURE..=exit::UNHEALTHY).collect::<Vec<_>>());
    }

    #[test]
    fn ready_lines_and_what_is_not_a_handshake() {
        assert_eq!(decode(&ready(4242)).unwrap().unwrap(), 4242);
        assert_eq!(decode("READY 17\n").unwrap().unwrap(), 17);
        assert!(decode("READY x").unwrap().is_err());
        assert!(decode("").is_none());
        assert!(decode("qemu-system-x86_64: -drive ...: Could not open").is_none());
        // An unknown code is a plain failure, not a code vmctl never documented.
        assert_eq!(
            decode("ERROR 42 odd").unwrap().unwrap_err().code(),
            exit::FAILURE
        );
        assert_eq!(decode("ERROR 3").unwrap().unwrap_err().to_string(), "");
    }
}
