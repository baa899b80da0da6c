//! A TOML document's shape, checked before serde reads it: control characters, syntax, then
//! every key against what its table allows and every value against the type its key wants,
//! each problem by key (or line) and line, all at once. A VM definition and each VM of a stack
//! file are checked against [`VM_KEYS`]; a stack file's own tables by `def::stack`.
//!
//! No message quotes a line of the file, and only the values of known keys are shown: a file
//! that is no definition (a secret that a symbolic link points to) stays unread in the error.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::Problems;

/// Problems found, as (line, field, why): sorted by line before they are reported.
pub type Found = Vec<(usize, String, String)>;

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .unwrap_or(text)
        .matches('\n')
        .count()
        + 1
}

/// Check `text` as a document: control characters and syntax here, then `check` on the parsed
/// top-level table; every problem in line order. `what` names the document in messages ("a VM
/// definition").
pub fn document(text: &str, what: &str, check: impl FnOnce(&DeTable<'_>, &mut Found)) -> Problems {
    let mut found: Found = Vec::new();
    let control = text
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if let Some((at, c)) = control {
        let line = line_of(text, at);
        let why = format!(
            "has the control character U+{:04X}; {what} is plain text",
            c as u32
        );
        found.push((line, format!("line {line}"), why));
    } else {
        match DeTable::parse(text) {
            Ok(doc) => check(doc.get_ref(), &mut found),
            Err(e) => {
                let line = e.span().map_or(1, |s| line_of(text, s.start));
                found.push((line, format!("line {line}"), e.message().trim().to_string()));
            }
        }
    }
    found.sort_by_key(|(line, _, _)| *line);
    let mut p = Problems::default();
    for (_, field, why) in found {
        p.add(field, why);
    }
    p
}

/// A value of the definition, as its key wants it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A whole number in the range given ("1-255").
    Int(&'static str),
    /// A string, like the example.
    Str(&'static str),
    Bool,
    /// An array of strings, each like the example.
    Strings(&'static str),
    /// The `[health]` table.
    Health,
    /// `networks`: an array of names or `{ name, address }` tables.
    Networks,
    /// A table whose keys its owner checks (a stack file's `[vms]`).
    Table,
    /// A table of strings under names of the caller's choosing (`[app_env]`).
    StringTable(&'static str),
    /// `app`: a built-in app's name, or the `[app]` table.
    App,
    /// A string like the first example, or an array of strings like the second
    /// (`requirements`).
    StrOrStrings(&'static str, &'static str),
    /// An array of tables, each with these keys (`provision`).
    Tables(&'static str, &'static [(&'static str, Kind)]),
}

/// A VM definition's keys, as `def::config::VmConfig` has them (a test holds the two
/// together).
pub const VM_KEYS: [(&str, Kind); 22] = [
    ("cpus", Kind::Int("1-255")),
    ("memory", Kind::Str("\"512M\"")),
    ("disk", Kind::Str("\"10G\"")),
    ("image", Kind::Str("\"tiny\"")),
    ("arch", Kind::Str("\"x86_64\"")),
    ("accel", Kind::Str("\"auto\"")),
    ("ports", Kind::Strings("\"8080:80\"")),
    ("stop_timeout", Kind::Int("1-3600 seconds")),
    ("user", Kind::Str("\"alice\"")),
    ("ssh_key", Kind::Str("\"/home/alice/.ssh/id_ed25519.pub\"")),
    ("app", Kind::App),
    (
        "app_env",
        Kind::StringTable("UPSTREAM = \"http://db:8080/\""),
    ),
    ("autostart", Kind::Bool),
    ("host_access", Kind::Bool),
    ("on_host_shutdown", Kind::Str("\"save\"")),
    ("after", Kind::Strings("\"db\"")),
    ("networks", Kind::Networks),
    (
        "provision",
        Kind::Tables("a provision step's", &PROVISION_KEYS),
    ),
    ("cloud_init", Kind::Str("\"packages: [jq]\"")),
    ("mounts", Kind::Strings("\"/srv/app:/app\"")),
    ("stack", Kind::Str("\"demo\"")),
    ("health", Kind::Health),
];

/// The keys of the `[app]` table, as `def::app::AppTable` has them.
pub const APP_KEYS: [(&str, Kind); 6] = [
    ("dir", Kind::Str("\"./myapp\"")),
    ("wsgi", Kind::Str("\"app:app\"")),
    ("workers", Kind::Int("1-64")),
    ("proxy", Kind::Str("\"nginx\"")),
    ("port", Kind::Int("a port 1-65535")),
    (
        "requirements",
        Kind::StrOrStrings("\"./wheels\"", "\"python3-flask\""),
    ),
];
pub const APP: (&str, &[(&str, Kind)]) = ("[app]'s", &APP_KEYS);

/// The keys of a `provision` step.
pub const PROVISION_KEYS: [(&str, Kind); 3] = [
    ("mode", Kind::Str("\"system\"")),
    ("script", Kind::Str("\"apt-get install -y jq\"")),
    ("file", Kind::Str("\"setup.sh\"")),
];

/// The keys of a `networks` entry written as a table.
pub const NETWORK_KEYS: [(&str, Kind); 2] = [
    ("name", Kind::Str("\"backend\"")),
    ("address", Kind::Str("\"10.89.0.10\"")),
];

/// The keys of `[health]`, as `def::config::HealthConfig` has them.
/// The tables a VM definition has, each with how messages name it and its keys.
pub const VM: (&str, &[(&str, Kind)]) = ("a definition's", &VM_KEYS);
pub const HEALTH: (&str, &[(&str, Kind)]) = ("[health]'s", &HEALTH_KEYS);
pub const NETWORK_ENTRY: (&str, &[(&str, Kind)]) = ("a network entry's", &NETWORK_KEYS);

pub const HEALTH_KEYS: [(&str, Kind); 5] = [
    ("http", Kind::Str("\"8080/healthz\"")),
    ("tcp", Kind::Int("a port 1-65535")),
    ("interval", Kind::Str("\"10s\"")),
    ("retries", Kind::Int("1-100")),
    ("start_period", Kind::Str("\"5m\"")),
];

/// The keys of one table (`prefix` names it: "", "health.", "vms.db.") against what `keys`
/// allows.
pub fn table(
    text: &str,
    t: &DeTable<'_>,
    prefix: &str,
    (what, keys): (&str, &[(&str, Kind)]),
    found: &mut Found,
) {
    for (k, v) in t.iter() {
        let line = line_of(text, k.span().start);
        let name = k.get_ref().as_ref();
        let Some((_, kind)) = keys.iter().find(|(key, _)| *key == name) else {
            let known: Vec<&str> = keys.iter().map(|(key, _)| *key).collect();
            found.push((
                line,
                format!("{prefix}{}", shown_key(name)),
                format!(
                    "unknown key (line {line}); {what} keys are {}",
                    known.join(", ")
                ),
            ));
            continue;
        };
        let field = format!("{prefix}{name}");
        match (kind, v.get_ref()) {
            (Kind::Health, DeValue::Table(h)) => {
                table(text, h, &format!("{field}."), HEALTH, found)
            }
            (Kind::App, DeValue::Table(a)) => table(text, a, &format!("{field}."), APP, found),
            (Kind::StrOrStrings(_, example) | Kind::Strings(example), DeValue::Array(items)) => {
                strings(text, items, &field, example, found)
            }
            (Kind::Networks, DeValue::Array(items)) => networks(text, items, &field, found),
            (Kind::Tables(what, keys), DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{field}[{i}]");
                    match item.get_ref() {
                        DeValue::Table(t) => table(text, t, &format!("{at}."), (what, keys), found),
                        _ => {
                            let line = line_of(text, item.span().start);
                            found.push((
                                line,
                                at,
                                wrong("must be a table { mode, script }", item, line),
                            ));
                        }
                    }
                }
            }
            (Kind::StringTable(example), DeValue::Table(t)) => {
                for (k, item) in t.iter() {
                    if !matches!(item.get_ref(), DeValue::String(_)) {
                        let line = line_of(text, item.span().start);
                        let why = wrong(&format!("must be a string, as in {example}"), item, line);
                        found.push((line, format!("{field}.{}", shown_key(k.get_ref())), why));
                    }
                }
            }
            (kind, value) => {
                if let Some(want) = mismatch(*kind, value) {
                    found.push((line, field, wrong(&want, v, line)));
                }
            }
        }
    }
}

/// Each item of an array of strings that is not one.
fn strings(
    text: &str,
    items: &[Spanned<DeValue<'_>>],
    field: &str,
    example: &str,
    found: &mut Found,
) {
    for (i, item) in items.iter().enumerate() {
        if !matches!(item.get_ref(), DeValue::String(_)) {
            let line = line_of(text, item.span().start);
            let why = wrong(&format!("must be a string such as {example}"), item, line);
            found.push((line, format!("{field}[{i}]"), why));
        }
    }
}

/// What `kind` wants when `value` is not it (None when it is).
pub fn mismatch(kind: Kind, value: &DeValue<'_>) -> Option<String> {
    let ok = match (kind, value) {
        (Kind::Int(_), DeValue::Integer(i)) => u64::from_str_radix(i.as_str(), i.radix()).is_ok(),
        (Kind::Str(_), DeValue::String(_))
        | (Kind::App, DeValue::String(_))
        | (Kind::StrOrStrings(..), DeValue::String(_))
        | (Kind::Bool, DeValue::Boolean(_))
        | (Kind::Table, DeValue::Table(_)) => true,
        _ => false,
    };
    (!ok).then(|| match kind {
        Kind::Int(range) => format!("must be {range}"),
        Kind::Str(example) => format!("must be a string such as {example}"),
        Kind::Bool => "must be true or false".to_string(),
        Kind::Strings(example) => format!("must be an array of strings such as [{example}]"),
        Kind::Health => "must be a table ([health] with http or tcp)".to_string(),
        Kind::Table => "must be a table".to_string(),
        Kind::App => {
            "must be a built-in app such as \"gunicorn-hello\" or an [app] table with your app's dir"
                .to_string()
        }
        Kind::StrOrStrings(one, many) => {
            format!("must be a string such as {one} or an array of strings such as [{many}]")
        }
        Kind::Tables(..) => {
            "must be an array of tables such as [{ mode = \"system\", script = \"...\" }]"
                .to_string()
        }
        Kind::StringTable(example) => format!("must be a table of strings such as {{ {example} }}"),
        Kind::Networks => {
            "must be an array of network names or { name, address } tables".to_string()
        }
    })
}

/// Each entry of `networks`: a name, or a table of `name` (required) and `address`.
fn networks(text: &str, items: &[Spanned<DeValue<'_>>], key: &str, found: &mut Found) {
    for (i, item) in items.iter().enumerate() {
        let line = line_of(text, item.span().start);
        let field = format!("{key}[{i}]");
        match item.get_ref() {
            DeValue::String(_) => {}
            DeValue::Table(t) => {
                table(text, t, &format!("{field}."), NETWORK_ENTRY, found);
                if !t.iter().any(|(k, _)| k.get_ref().as_ref() == "name") {
                    found.push((line, field, format!("needs a name (line {line})")));
                }
            }
            _ => {
                let want = "must be a network name such as \"backend\" or a table { name = \"backend\", address = \"10.89.0.10\" }";
                found.push((line, field, wrong(want, item, line)));
            }
        }
    }
}

/// "must be ...; got the integer 3 (line 2)": the value is shown as the file has it, escaped and
/// cut short, unless it is an array or a table.
pub fn wrong(want: &str, v: &Spanned<DeValue<'_>>, line: usize) -> String {
    let got = match v.get_ref() {
        DeValue::String(s) => format!("the string {}", shown(s)),
        DeValue::Integer(i) => format!("the integer {}", cut(&i.to_string())),
        DeValue::Float(f) => format!("the float {}", cut(&f.to_string())),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    };
    format!("{want}; got {got} (line {line})")
}

/// How much of a value a message shows.
const SHOWN_CHARS: usize = 64;

/// `s` quoted with its escapes, cut after [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    let head: String = s.chars().take(SHOWN_CHARS).collect();
    if head.len() < s.len() {
        format!("{head:?}…")
    } else {
        format!("{s:?}")
    }
}

/// A number as the file writes it, cut after [`SHOWN_CHARS`] characters.
fn cut(s: &str) -> String {
    let head: String = s.chars().take(SHOWN_CHARS).collect();
    if head.len() < s.len() {
        format!("{head}…")
    } else {
        head
    }
}

/// A key as TOML would write it bare, else quoted with its escapes.
fn shown_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars().count() <= SHOWN_CHARS
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_string() } else { shown(k) }
}
