//! How a command's result is shown, decided in one place: JSON for scripts (`--json`, pretty,
//! one document) or text for people. Results go to stdout; logs and errors go to stderr.

use serde::Serialize;

/// A result with a text form for people; its JSON form is its `Serialize`.
pub trait Show: Serialize {
    /// The text, each line ending in a newline.
    fn text(&self) -> String;
}

/// Print `value` as JSON when `json`, else as its text.
pub fn show<T: Show + ?Sized>(value: &T, json: bool) {
    if json {
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

/// Lines of text for a command that reports what it did, one step each.
pub fn print_lines(lines: &[String]) {
    for l in lines {
        println!("{l}");
    }
}
