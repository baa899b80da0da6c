//! Your provisioning: `provision = [{ mode = "system", script = "..." }, { mode = "user", file =
//! "setup.sh" }]` (Lima's shape). Each step runs once, at first boot, in order, after vmctl's
//! own provisioning and before the apps: `system` as root, `user` as the login user. A `file`
//! is read when the definition is (relative to the definition file's folder) and kept in the
//! VM's definition as its `script`, so the VM never depends on the file again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::sys::fsutil::{self, FileProblem};

/// The largest script: a provisioning script is a few lines; bigger things go in through a
/// shared folder or `vmctl cp`.
pub const MAX_SCRIPT_BYTES: usize = 32 * 1024;

/// All scripts together: they travel in the provisioning credential, which QEMU reads from a
/// pipe of 64 KiB (`sys::child::PIPE_MAX`) with the keys and the rest of the credential.
pub const MAX_TOTAL_BYTES: usize = 48 * 1024;

/// One `provision` entry as the TOML has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionStep {
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Who a script runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    System,
    User,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::System => "system",
            Mode::User => "user",
        }
    }
}

/// A validated step: who runs it, and the script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Script {
    pub mode: Mode,
    pub script: String,
}

/// Validate `provision`: a mode of `system` or `user`, a script (a `file` must have been read
/// into one by [`embed`]), text of at most [`MAX_SCRIPT_BYTES`].
pub fn validate(steps: &[ProvisionStep], p: &mut Problems) -> Vec<Script> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let field = format!("provision[{i}]");
        let mode = match s.mode.as_str() {
            "system" => Some(Mode::System),
            "user" => Some(Mode::User),
            other => {
                p.add(
                    format!("{field}.mode"),
                    format!("must be \"system\" (as root) or \"user\" (as the login user); got {other:?}"),
                );
                None
            }
        };
        let script = match (&s.script, &s.file) {
            (Some(text), None) => Some(text.clone()),
            (None, Some(f)) => {
                p.add(
                    format!("{field}.file"),
                    format!("{f:?} was not read: a file is read where the definition is (create --from FILE)"),
                );
                None
            }
            _ => {
                p.add(
                    &field,
                    "give exactly one of script = \"...\" or file = \"setup.sh\"",
                );
                None
            }
        };
        if let Some(text) = &script {
            if text.len() > MAX_SCRIPT_BYTES {
                p.add(
                    format!("{field}.script"),
                    format!("is {} bytes; at most {MAX_SCRIPT_BYTES} (copy bigger files in with a shared folder or vmctl cp)", text.len()),
                );
            } else if text.contains('\0') {
                p.add(
                    format!("{field}.script"),
                    "holds a NUL byte; a script is text",
                );
            } else if text.trim().is_empty() {
                p.add(format!("{field}.script"), "is empty");
            }
        }
        if let (Some(mode), Some(script)) = (mode, script) {
            out.push(Script { mode, script });
        }
    }
    let total: usize = out.iter().map(|s| s.script.len()).sum();
    if total > MAX_TOTAL_BYTES {
        p.add(
            "provision",
            format!("scripts of {total} bytes in all; at most {MAX_TOTAL_BYTES}"),
        );
    }
    out
}

/// Read each step's `file` (relative to `base`, the definition file's folder) into its
/// `script`; what cannot be read is a problem of that step, by field and path.
pub fn embed(steps: &mut [ProvisionStep], base: &Path, p: &mut Problems) {
    for (i, s) in steps.iter_mut().enumerate() {
        let Some(f) = s.file.clone() else { continue };
        if s.script.is_some() {
            continue; // both given: validate says so
        }
        let path = base.join(&f);
        let field = format!("provision[{i}].file");
        let why = "a provisioning script is a few lines of text (copy bigger files in with a shared folder or vmctl cp)";
        match fsutil::read_text(&path, MAX_SCRIPT_BYTES as u64, why) {
            Ok(text) => {
                s.script = Some(text);
                s.file = None;
            }
            Err(FileProblem::Io(e)) => p.add(field, format!("cannot read {}: {e}", path.display())),
            Err(FileProblem::Content(why)) => p.add(field, format!("{} {why}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(mode: &str, script: Option<&str>, file: Option<&str>) -> ProvisionStep {
        ProvisionStep {
            mode: mode.into(),
            script: script.map(Into::into),
            file: file.map(Into::into),
        }
    }

    #[test]
    fn steps_are_checked_by_field() {
        let mut p = Problems::default();
        let ok = validate(
            &[
                step("system", Some("apt-get install -y jq\n"), None),
                step("user", Some("echo hi"), None),
            ],
            &mut p,
        );
        assert!(p.is_empty());
        assert_eq!(
            ok.iter().map(|s| s.mode).collect::<Vec<_>>(),
            [Mode::System, Mode::User]
        );
        let mut p = Problems::default();
        validate(
            &[
                step("root", Some("x"), None),
                step("user", None, None),
                step("user", Some("a"), Some("b")),
                step("system", Some("  \n"), None),
                step("system", None, Some("setup.sh")),
            ],
            &mut p,
        );
        let e = p.into_result("t").unwrap_err().to_string();
        for needle in [
            "provision[0].mode: must be \"system\"",
            "provision[1]: give exactly one of script",
            "provision[2]: give exactly one",
            "provision[3].script: is empty",
            "provision[4].file: \"setup.sh\" was not read",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn too_big_is_refused_by_field() {
        let big = "#".repeat(MAX_SCRIPT_BYTES + 1);
        let part = "#".repeat(MAX_SCRIPT_BYTES);
        let mut p = Problems::default();
        validate(&[step("system", Some(&big), None)], &mut p);
        let five: Vec<_> = (0..5).map(|_| step("user", Some(&part), None)).collect();
        validate(&five, &mut p);
        let e = p.into_result("t").unwrap_err().to_string();
        assert!(
            e.contains("provision[0].script: is 32769 bytes; at most 32768"),
            "{e}"
        );
        assert!(
            e.contains("provision: scripts of 163840 bytes in all"),
            "{e}"
        );
    }

    /// The TOML's shape is checked before the values: a step that is no table, an unknown key,
    /// a script that is no string, each by field and line.
    #[test]
    fn the_shape_of_provision_is_checked_by_key_and_line() {
        let text = "provision = [\"echo hi\", { mode = \"user\", run = \"x\" }, { mode = \"user\", script = 3 }]\n";
        let e = crate::def::config::VmConfig::parse(text, "web.toml")
            .unwrap_err()
            .to_string();
        for needle in [
            "provision[0]: must be a table { mode, script }; got the string \"echo hi\" (line 1)",
            "provision[1].run: unknown key (line 1); a provision step's keys are mode, script, file",
            "provision[2].script: must be a string such as \"apt-get install -y jq\"; got the integer 3 (line 1)",
        ] {
            assert!(e.contains(needle), "{needle}\n{e}");
        }
    }

    #[test]
    fn files_are_read_relative_to_the_definition() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("setup.sh"), "echo from a file\n").unwrap();
        let mut steps = vec![
            step("user", None, Some("setup.sh")),
            step("user", None, Some("missing.sh")),
        ];
        let mut p = Problems::default();
        embed(&mut steps, d.path(), &mut p);
        assert_eq!(steps[0].script.as_deref(), Some("echo from a file\n"));
        assert_eq!(steps[0].file, None);
        let e = p.into_result("t").unwrap_err().to_string();
        assert!(
            e.contains("provision[1].file: cannot read") && e.contains("missing.sh"),
            "{e}"
        );
    }
}
