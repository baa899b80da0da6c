//! What the VM's QMP offers, from its `query-qmp-schema`: command names and their arguments
//! with types as people read them, for Tab completion and `help CMD`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::qmp_shell::verbs::BUILTINS;

/// One argument of a command, from the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: String,
    /// The type as people read it: `str`, `int`, `[str]`, `enum(a|b)`, `object`.
    pub ty: String,
    pub optional: bool,
}

/// Command names and their arguments, from `query-qmp-schema`.
#[derive(Debug, Default)]
pub struct Schema {
    pub commands: BTreeMap<String, Vec<Arg>>,
}

impl Schema {
    pub fn from_json(v: &Value) -> Schema {
        let entries = v.as_array().cloned().unwrap_or_default();
        let types: BTreeMap<&str, &Value> = entries
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e)))
            .collect();
        let mut commands = BTreeMap::new();
        for e in &entries {
            if e["meta-type"] != "command" {
                continue;
            }
            let Some(name) = e["name"].as_str() else {
                continue;
            };
            let args = e["arg-type"]
                .as_str()
                .and_then(|t| types.get(t))
                .map(|t| object_members(t, &types))
                .unwrap_or_default();
            commands.insert(name.to_string(), args);
        }
        Schema { commands }
    }

    pub(super) fn arg_is_str(&self, command: &str, arg: &str) -> bool {
        self.commands
            .get(command)
            .and_then(|a| a.iter().find(|a| a.name == arg))
            .is_some_and(|a| a.ty == "str")
    }

    /// Where the word under the cursor starts, and what may replace it.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let mut out: Vec<String> = match words.first() {
            None => self
                .commands
                .keys()
                .map(String::as_str)
                .chain(BUILTINS.iter().map(|b| b.0))
                .filter(|c| c.starts_with(word))
                .map(str::to_string)
                .collect(),
            Some(&"help") if words.len() == 1 => self
                .commands
                .keys()
                .filter(|c| c.starts_with(word))
                .cloned()
                .collect(),
            Some(&"snapshot") if words.len() == 1 => ["create", "list", "revert", "delete"]
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| c.to_string())
                .collect(),
            Some(cmd) if !word.contains('=') => {
                let used: BTreeSet<&str> = words[1..]
                    .iter()
                    .filter_map(|w| w.split_once('=').map(|p| p.0))
                    .collect();
                self.commands
                    .get(*cmd)
                    .into_iter()
                    .flatten()
                    .filter(|a| a.name.starts_with(word) && !used.contains(a.name.as_str()))
                    .map(|a| format!("{}=", a.name))
                    .collect()
            }
            _ => Vec::new(),
        };
        out.sort();
        out.dedup();
        (start, out)
    }

    /// `help CMD`: its arguments with types and whether they may be left out.
    pub fn help(&self, command: &str) -> Option<String> {
        let args = self.commands.get(command)?;
        let mut s = command.to_string();
        if args.is_empty() {
            s.push_str(" (no arguments)");
        }
        for a in args {
            s.push_str(&format!(
                "\n  {}={}{}",
                a.name,
                a.ty,
                if a.optional { "  (optional)" } else { "" }
            ));
        }
        Some(s)
    }
}

fn object_members(t: &Value, types: &BTreeMap<&str, &Value>) -> Vec<Arg> {
    t["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Arg {
                name: m["name"].as_str()?.to_string(),
                ty: type_name(m["type"].as_str().unwrap_or("any"), types, 0),
                optional: m.get("default").is_some(),
            })
        })
        .collect()
}

fn type_name(name: &str, types: &BTreeMap<&str, &Value>, depth: u8) -> String {
    let Some(t) = types.get(name) else {
        return name.to_string();
    };
    if depth > 3 {
        return "...".into();
    }
    match t["meta-type"].as_str().unwrap_or("") {
        "builtin" => name.to_string(),
        "enum" => {
            // QEMU 6.2+ has "members" [{name}], older ones "values" [name].
            let values: Vec<&str> = t["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .chain(
                    t["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m["name"].as_str()),
                )
                .collect();
            let mut s = values.iter().take(8).copied().collect::<Vec<_>>().join("|");
            if values.len() > 8 {
                s.push_str("|...");
            }
            format!("enum({s})")
        }
        "array" => format!(
            "[{}]",
            type_name(
                t["element-type"].as_str().unwrap_or("any"),
                types,
                depth + 1
            )
        ),
        "alternate" => t["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| type_name(m["type"].as_str().unwrap_or("any"), types, depth + 1))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "object".into(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub(in crate::qmp_shell) fn schema() -> Schema {
        Schema::from_json(&json!([
            {"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
            {"name": "query-stats", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
            {"name": "human-monitor-command", "meta-type": "command", "arg-type": "2", "ret-type": "str"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "2", "meta-type": "object", "members": [
                {"name": "command-line", "type": "str"},
                {"name": "cpu-index", "type": "int", "default": null}]},
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "int", "meta-type": "builtin", "json-type": "int"},
            {"name": "3", "meta-type": "enum", "values": ["a", "b"]},
            {"name": "4", "meta-type": "array", "element-type": "3"},
            {"name": "set-x", "meta-type": "command", "arg-type": "5"},
            {"name": "5", "meta-type": "object", "members": [
                {"name": "modes", "type": "4"}, {"name": "tag", "type": "str"}]},
        ]))
    }

    #[test]
    fn command_and_argument_names_complete_from_the_schema() {
        let s = schema();
        assert_eq!(
            s.complete("query-st", 8),
            (
                0,
                vec!["query-stats".to_string(), "query-status".to_string()]
            )
        );
        assert_eq!(
            s.complete("human-monitor-command ", 22).1,
            vec!["command-line=", "cpu-index="]
        );
        let l = "human-monitor-command command-line=x c";
        assert_eq!(s.complete(l, l.len()), (37, vec!["cpu-index=".into()]));
        assert_eq!(s.complete("snapshot re", 11).1, vec!["revert"]);
        assert!(s.complete("he", 2).1.contains(&"help".to_string()));
        assert!(s.complete("query-status x=", 15).1.is_empty());
    }

    #[test]
    fn help_shows_types_and_optionality() {
        let s = schema();
        let h = s.help("human-monitor-command").unwrap();
        assert!(h.contains("command-line=str\n"), "{h}");
        assert!(h.contains("cpu-index=int  (optional)"), "{h}");
        assert!(s.help("set-x").unwrap().contains("modes=[enum(a|b)]"));
        assert!(s.help("query-status").unwrap().contains("no arguments"));
        assert!(s.help("nope").is_none());
    }
}
