//! One line of the shell's input parsed into what to do: raw JSON, a built-in verb, or
//! `cmd key=value ...` with JSON values (strings where the schema says `str`).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::qmp_shell::schema::Schema;

/// One line of input, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Empty,
    /// A QMP command with its arguments.
    Qmp {
        name: String,
        args: Option<Value>,
    },
    Hmp(String),
    Help(Option<String>),
    Snapshot(Vec<String>),
    /// pause, resume, reset, powerdown: the QMP command each stands for.
    Verb(&'static str),
    Leave,
}

impl Input {
    /// Whether running this kills QEMU: QMP `quit`, or HMP's `quit`/`q` (also through
    /// `human-monitor-command`).
    pub fn quits(&self) -> bool {
        let hmp_quits = |l: &str| matches!(l.split_whitespace().next(), Some("quit" | "q"));
        match self {
            Input::Qmp { name, .. } if name == "quit" => true,
            Input::Qmp { name, args } if name == "human-monitor-command" => args
                .as_ref()
                .and_then(|a| a["command-line"].as_str())
                .is_some_and(hmp_quits),
            Input::Hmp(l) => hmp_quits(l),
            _ => false,
        }
    }
}

/// How much of a line an error message shows.
const EXCERPT_CHARS: usize = 80;

/// `text` as an error message may show it: control characters as escapes, and cut after
/// `max` characters with the size of the whole.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(max).is_some() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

/// Split on blanks outside brackets and quotes. Double quotes stay (they are JSON); single quotes
/// group and are removed.
pub fn tokenize(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut started = false;
    for c in line.chars() {
        if let Some(q) = quote {
            if q == '"' && escaped {
                escaped = false;
                cur.push(c);
                continue;
            }
            if q == '"' && c == '\\' {
                escaped = true;
                cur.push(c);
                continue;
            }
            if c == q {
                quote = None;
                if q == '"' {
                    cur.push(c);
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                started = true;
                if c == '"' {
                    cur.push(c);
                }
            }
            '{' | '[' => {
                depth += 1;
                cur.push(c);
                started = true;
            }
            '}' | ']' => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && depth <= 0 => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Error::Usage(format!(
            "Unterminated quote in: {}",
            excerpt(line, EXCERPT_CHARS)
        )));
    }
    if depth > 0 {
        return Err(Error::Usage(format!(
            "Unclosed bracket in: {}",
            excerpt(line, EXCERPT_CHARS)
        )));
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

/// Parse one line: raw JSON (`{"execute": ...}`), a built-in verb, or `cmd key=value ...` whose
/// values are JSON when they parse as JSON (strings otherwise, and always for `str` arguments).
pub fn parse_line(line: &str, schema: Option<&Schema>) -> Result<Input> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Input::Empty);
    }
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            Error::Usage(format!(
                "Not valid JSON: {e}: {}",
                excerpt(line, EXCERPT_CHARS)
            ))
        })?;
        let name = v["execute"].as_str().ok_or_else(|| {
            Error::Usage(format!(
                "JSON input needs \"execute\": {}",
                excerpt(line, EXCERPT_CHARS)
            ))
        })?;
        return Ok(Input::Qmp {
            name: name.to_string(),
            args: v.get("arguments").cloned(),
        });
    }
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match word {
        "hmp" if rest.is_empty() => return Err(Error::Usage("Usage: hmp LINE".into())),
        "hmp" => return Ok(Input::Hmp(rest.to_string())),
        "help" | "?" => return Ok(Input::Help((!rest.is_empty()).then(|| rest.to_string()))),
        "quit" | "exit" if rest.is_empty() => return Ok(Input::Leave),
        "snapshot" => return Ok(Input::Snapshot(tokenize(rest)?)),
        "pause" | "resume" | "reset" | "powerdown" if rest.is_empty() => {
            return Ok(Input::Verb(match word {
                "pause" => "stop",
                "resume" => "cont",
                "reset" => "system_reset",
                _ => "system_powerdown",
            }));
        }
        _ => {}
    }
    let mut args = serde_json::Map::new();
    for tok in tokenize(rest)? {
        let (k, v) = tok.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "Arguments are key=value; got {tok:?} (see `help {word}`)"
            ))
        })?;
        let is_str = schema.is_some_and(|s| s.arg_is_str(word, k));
        let value = match serde_json::from_str::<Value>(v) {
            Ok(Value::String(s)) => Value::String(s),
            Ok(j) if !is_str => j,
            _ => Value::String(v.to_string()),
        };
        args.insert(k.to_string(), value);
    }
    Ok(Input::Qmp {
        name: word.to_string(),
        args: (!args.is_empty()).then_some(Value::Object(args)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp_shell::schema::tests::schema;
    use serde_json::json;

    #[test]
    fn lines_parse_into_commands_with_json_values() {
        let s = schema();
        assert_eq!(
            parse_line(r#"set-x modes=["a", "b"] tag=1"#, Some(&s)).unwrap(),
            Input::Qmp {
                name: "set-x".into(),
                args: Some(json!({"modes": ["a", "b"], "tag": "1"}))
            },
            "JSON where it parses, a str argument stays a string"
        );
        assert_eq!(
            parse_line("x n=1 b=true o={\"k\": [1, 2]} w='a b' s=plain", None).unwrap(),
            Input::Qmp {
                name: "x".into(),
                args: Some(
                    json!({"n": 1, "b": true, "o": {"k": [1, 2]}, "w": "a b", "s": "plain"})
                )
            }
        );
        assert_eq!(
            parse_line(r#"{"execute": "query-status"}"#, None).unwrap(),
            Input::Qmp {
                name: "query-status".into(),
                args: None
            }
        );
        assert_eq!(
            parse_line("hmp info status", None).unwrap(),
            Input::Hmp("info status".into())
        );
        assert_eq!(parse_line("  ", None).unwrap(), Input::Empty);
        assert_eq!(parse_line("exit", None).unwrap(), Input::Leave);
        assert_eq!(parse_line("pause", None).unwrap(), Input::Verb("stop"));
        assert_eq!(
            parse_line("snapshot revert t1 --force", None).unwrap(),
            Input::Snapshot(vec!["revert".into(), "t1".into(), "--force".into()])
        );
        assert!(parse_line("x novalue", None).is_err());
        assert!(parse_line("x a={", None).is_err());
        assert!(parse_line(r#"{"arguments": {}}"#, None).is_err());
    }

    #[test]
    fn every_way_to_quit_qemu_is_known() {
        for line in [
            "quit x=1",
            r#"{"execute": "quit"}"#,
            "hmp quit",
            "hmp  q",
            "human-monitor-command command-line=q",
            r#"{"execute": "human-monitor-command", "arguments": {"command-line": "quit now"}}"#,
        ] {
            assert!(parse_line(line, None).unwrap().quits(), "{line}");
        }
        for line in [
            "quit",
            "exit",
            "hmp info status",
            "hmp quitx",
            "query-status",
        ] {
            assert!(!parse_line(line, None).unwrap().quits(), "{line}");
        }
    }

    #[test]
    fn excerpts_escape_and_cut() {
        assert_eq!(excerpt("a\u{1}\u{1b}[31m", 80), "a\\u{1}\\u{1b}[31m");
        let long = "x".repeat(1000);
        assert_eq!(excerpt(&long, 3), "xxx… (1000 bytes)");
        assert_eq!(excerpt("abc", 3), "abc");
        let e = parse_line(&format!("{{\"execute\": \"{long}"), None).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }

    /// serde_json's default float parsing can be one unit off in the last place: the command
    /// sent to QEMU then held another number than the one typed (found by a property test).
    #[test]
    fn a_float_argument_is_sent_as_typed() {
        for (text, want) in [
            ("902414.7490234375", 902414.7490234375_f64),
            ("-1011059.7119140625", -1011059.7119140625),
        ] {
            let Input::Qmp { args: Some(a), .. } =
                parse_line(&format!("x n={text}"), None).unwrap()
            else {
                panic!("not a command");
            };
            assert_eq!(a["n"].as_f64(), Some(want), "{text}");
        }
    }

    mod proptests {
        use super::*;
        use crate::types::tests::proptests::{any_text, config, one_of, text};
        use proptest::prelude::*;

        /// JSON values, floats included (serde_json prints the shortest text that reads back).
        fn json_value() -> impl Strategy<Value = Value> {
            let string = prop_oneof![any_text(8), text("a \"'\\{}[]=#\u{2028}\n", 8)];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<i32>().prop_map(|n| Value::from(f64::from(n) / 1024.0)),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                string.prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(text("abk-_ ", 4), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn key() -> BoxedStrategy<String> {
            (
                prop::sample::select(vec!['a', 'b', 'x', 'z']),
                text("abcxyz09_-", 8),
            )
                .prop_map(|(a, b)| format!("{a}{b}"))
                .boxed()
        }

        proptest! {
            #![proptest_config(config(3000))]

            /// Any line is a command or a usage error (exit 2), never a panic.
            #[test]
            fn any_line(line in prop_oneof![
                any_text(40),
                text("ab =\"'\\{}[] \t#", 30),
                (one_of(&["hmp", "help", "snapshot", "pause", "x", "{", "quit"]), text("a =\"'{}[] ", 20))
                    .prop_map(|(w, r)| format!("{w} {r}")),
            ]) {
                if let Err(e) = tokenize(&line) {
                    prop_assert_eq!(e.code(), crate::error::exit::USAGE);
                }
                if let Err(e) = parse_line(&line, Some(&crate::qmp_shell::schema::tests::schema())) {
                    prop_assert_eq!(e.code(), crate::error::exit::USAGE);
                }
            }

            /// Plain words split on any run of blanks.
            #[test]
            fn words_split_on_blanks(
                words in prop::collection::vec(text("az09_=.:,-/", 8).prop_filter("a word", |w| !w.is_empty()), 0..6),
                blank in one_of(&[" ", "  ", "\t", " \t "]),
            ) {
                prop_assert_eq!(tokenize(&words.join(&blank)).unwrap(), words);
            }

            /// `cmd key=JSON ...` gives each argument the value its JSON text says.
            #[test]
            fn json_arguments_read_back(
                args in prop::collection::btree_map(key(), json_value(), 1..4),
            ) {
                let line = args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let want: serde_json::Map<String, Value> = args.into_iter().collect();
                prop_assert_eq!(
                    parse_line(&format!("x-cmd {line}"), None).unwrap(),
                    Input::Qmp { name: "x-cmd".into(), args: Some(Value::Object(want)) }
                );
            }

            /// A `str` argument stays the text it was given, even when that is JSON.
            #[test]
            fn str_arguments_stay_text(n in any::<i64>(), word in text("az09.", 6)) {
                let s = crate::qmp_shell::schema::tests::schema();
                for v in [n.to_string(), format!("{word}1"), "true".into(), "null".into()] {
                    prop_assert_eq!(
                        parse_line(&format!("set-x tag={v}"), Some(&s)).unwrap(),
                        Input::Qmp { name: "set-x".into(), args: Some(serde_json::json!({"tag": v})) }
                    );
                }
            }

            /// Raw JSON: its `execute` and `arguments`, whatever they hold.
            #[test]
            fn raw_json_reads_back(name in any_text(12), args in json_value()) {
                let line = serde_json::json!({"execute": name, "arguments": args}).to_string();
                prop_assert_eq!(
                    parse_line(&line, None).unwrap(),
                    Input::Qmp { name, args: Some(args) }
                );
            }
        }
    }
}
