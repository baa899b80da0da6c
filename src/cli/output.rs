//! How a command's result is shown, decided in one place: JSON for scripts (`--json`, pretty,
//! one document) or text for people. Results go to stdout; logs and errors go to stderr.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// `--json` was given: set once, before the command runs (`lib::main`).
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether results are shown as JSON (`--json`, on any subcommand).
pub fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A result with a text form for people; its JSON form is its `Serialize`.
pub trait Show: Serialize {
    /// The text, each line ending in a newline.
    fn text(&self) -> String;
}

/// Print `value` as JSON when `json` (or `--json` anywhere), else as its text.
pub fn show<T: Show + ?Sized>(value: &T, json: bool) {
    if json || json_mode() {
        print_json(value);
    } else {
        print!("{}", value.text());
    }
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("results serialize")
    );
}

/// Lines of text for a command that reports what it did, one step each; with `--json`,
/// `{"messages": [...]}`.
pub fn print_lines(lines: &[String]) {
    if json_mode() {
        print_json(&serde_json::json!({ "messages": lines }));
        return;
    }
    for l in lines {
        println!("{l}");
    }
}

/// What an action did: its lines for people; with `--json`, one object naming the action
/// (`"done": "paused"`), what it was done to (`subject`'s fields) and the same lines.
pub fn done(action: &str, subject: serde_json::Value, lines: &[String]) {
    if !json_mode() {
        lines.iter().for_each(|l| println!("{l}"));
        return;
    }
    let mut v = serde_json::json!({ "done": action });
    if let serde_json::Value::Object(fields) = subject {
        v.as_object_mut().expect("an object").extend(fields);
    }
    v["messages"] = lines.into();
    print_json(&v);
}

/// Whether the command line asks for JSON: `--json` anywhere before a `--` (what follows that
/// is a guest command's). Read from the raw arguments, so that an error clap finds in them is
/// shown as JSON too.
pub fn wants_json<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// An error as `--json` shows it: `{"error": {"code", "kind", "message"}}`, plus each field's
/// problem for an invalid definition or command line.
pub fn error_json(code: u8, message: &str, problems: &[crate::error::FieldError]) -> String {
    let mut error = serde_json::json!({
        "code": code,
        "kind": crate::error::kind_of(code),
        "message": message,
    });
    if !problems.is_empty() {
        error["problems"] = problems
            .iter()
            .map(|p| serde_json::json!({ "field": p.field, "message": p.message }))
            .collect();
    }
    serde_json::to_string_pretty(&serde_json::json!({ "error": error })).expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        a.iter().map(Into::into).collect()
    }

    #[test]
    fn json_is_asked_for_before_a_double_dash_only() {
        assert!(wants_json(args(&["vmctl", "list", "--json"])));
        assert!(wants_json(args(&["vmctl", "--json", "kill", "web"])));
        assert!(!wants_json(args(&[
            "vmctl", "ssh", "web", "--", "tool", "--json"
        ])));
        assert!(!wants_json(args(&["vmctl", "list", "--jsonx"])));
        assert!(!wants_json(args(&["--json"])), "argv[0] is the program");
    }

    #[test]
    fn an_error_is_one_object_with_its_code_kind_and_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&error_json(3, "VM \"x\" not found", &[])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": 3, "kind": "not_found", "message": "VM \"x\" not found"}})
        );
        let p = [FieldError {
            field: "memory".into(),
            message: "got 8M".into(),
        }];
        let v: serde_json::Value = serde_json::from_str(&error_json(2, "bad", &p)).unwrap();
        assert_eq!(v["error"]["kind"], "usage");
        assert_eq!(v["error"]["problems"][0]["field"], "memory");
    }
}
