//! `vmctl qmp NAME`: a QMP shell on a running VM, interactive or for scripts. This file is the
//! entry, the session (its connection and the VM's schema, each fetched when first needed) and
//! the two modes.
//!
//! Interactive (stdin is a terminal, no `--exec`): line editing and a per-VM history file
//! (`lineedit`), completion of command and argument names from the VM's own `query-qmp-schema`,
//! `cmd key=value ...` or raw JSON input, `hmp LINE`, `help [CMD]`, built-in verbs (`snapshot`,
//! `pause`, `resume`, `reset`, `powerdown`), and asynchronous events printed as they arrive. It
//! talks on the VM's third QMP socket (`qmp-shell.sock`, one shell at a time), so an open shell
//! never holds up `stop` or `snapshot`. QMP's own `quit` kills QEMU, so it asks first; `quit`,
//! `exit` and Ctrl-D leave the shell.
//!
//! For scripts (`--exec CMD`, repeatable, or commands on a non-terminal stdin): one JSON reply per
//! line on stdout, on the control socket under its lock like every one-shot client; the first
//! QMP error ends the run with exit 5.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::qmp_shell::conn::{Conn, format_error};
use crate::qmp_shell::parse::{Input, excerpt, parse_line};
use crate::qmp_shell::schema::Schema;
use crate::qmp_shell::verbs::BUILTINS;
use crate::runstate;
use crate::sys::fsutil;
use crate::term::lineedit::editor::Editor;
use crate::term::lineedit::layout::columns;
use crate::term::lineedit::state::Read;
use crate::types::VmName;

/// Run the shell on VM `name`: `exec` commands, else stdin's lines when it is not a terminal,
/// else interactively.
pub fn run(home: &Home, name: &VmName, exec: Vec<String>) -> Result<()> {
    let paths = home.defined(name)?;
    if !runstate::liveness(&paths).is_running() {
        return Err(crate::error::Error::not_running(name));
    }
    if !exec.is_empty() {
        for line in &exec {
            check_text(line).map_err(|why| {
                Error::Usage(format!("--exec: {why}; got \"{}\"", excerpt(line, 80)))
            })?;
        }
        return batch(home, name, exec.into_iter());
    }
    if !std::io::stdin().is_terminal() {
        return batch(home, name, stdin_lines()?.into_iter());
    }
    interactive(home, name, &paths)
}

/// Every line of stdin, read before any runs: one that is not text (not UTF-8, or with control
/// characters) is a usage error naming its line, and nothing is sent to QEMU.
fn stdin_lines() -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (i, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line =
            line.map_err(|e| Error::Other(format!("Cannot read commands from stdin: {e}")))?;
        let bad = |why: String| Error::Usage(format!("stdin line {}: {why}", i + 1));
        let line = String::from_utf8(line)
            .map_err(|_| bad("is not UTF-8 text; QMP commands are text".into()))?;
        let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
        check_text(&line).map_err(bad)?;
        lines.push(line);
    }
    Ok(lines)
}

/// A command line holds no control characters but tabs (JSON writes them as `\u0001`).
fn check_text(line: &str) -> std::result::Result<(), String> {
    match line.chars().find(|c| c.is_control() && *c != '\t') {
        Some(c) => Err(format!(
            "has the control character U+{:04X}; write it as \\u{:04x} in a JSON string",
            c as u32, c as u32
        )),
        None => Ok(()),
    }
}

/// Where the connection comes from: the shell socket (interactive) or the control socket under
/// its lock (scripts), reopened after a built-in that needs the control socket itself.
struct Session<'a> {
    home: &'a Home,
    name: &'a VmName,
    paths: VmPaths,
    conn: Option<Conn>,
    schema: Option<Arc<Schema>>,
}

impl Session<'_> {
    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let lock = fsutil::lock_exclusive(&self.paths.ctl_lock())?;
            self.conn = Some(Conn::open(&self.paths.qmp_ctl_socket(), lock, None)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn schema(&mut self) -> Result<Arc<Schema>> {
        if let Some(s) = &self.schema {
            return Ok(s.clone());
        }
        let reply = self.conn()?.execute("query-qmp-schema", None)?;
        let s = Arc::new(Schema::from_json(&reply["return"]));
        self.schema = Some(s.clone());
        Ok(s)
    }

    /// Run a `snapshot ...` verb through `snapshot`, which opens the control socket itself.
    fn snapshot(&mut self, words: &[String], interactive: bool) -> Result<Value> {
        use crate::vm::snapshot;
        if !interactive {
            self.conn = None;
        }
        let force = words.iter().any(|w| w == "--force");
        let words: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .filter(|w| *w != "--force")
            .collect();
        let done = match words.as_slice() {
            ["create"] => snapshot::create(self.home, self.name, None)?,
            ["create", tag] => snapshot::create(self.home, self.name, Some(tag.to_string()))?,
            ["list"] => {
                return serde_json::to_value(snapshot::list(self.home, self.name)?)
                    .map_err(|e| Error::Other(e.to_string()));
            }
            ["revert", tag] => snapshot::revert(self.home, self.name, tag, force)?,
            ["delete", tag] => snapshot::delete(self.home, self.name, tag)?,
            _ => {
                return Err(Error::Usage(
                    "Usage: snapshot create [TAG] | list | revert TAG [--force] | delete TAG"
                        .into(),
                ));
            }
        };
        serde_json::to_value(done).map_err(|e| Error::Other(e.to_string()))
    }

    fn help(&mut self, cmd: Option<&str>) -> Result<String> {
        let schema = self.schema()?;
        Ok(match cmd {
            Some(c) => match (schema.help(c), BUILTINS.iter().find(|b| b.0 == c)) {
                (_, Some(b)) => b.1.to_string(),
                (Some(h), None) => h,
                (None, None) => format!("No command {c:?}; `help` lists them"),
            },
            None => {
                let mut s = String::from("Shell commands:\n");
                for b in BUILTINS {
                    s.push_str(&format!("  {}\n", b.1));
                }
                s.push_str("QMP commands (`help CMD` for arguments; `CMD key=value ...` or {\"execute\": ...}):\n");
                s.push_str(&columns(schema.commands.keys().map(String::as_str), 100));
                s
            }
        })
    }
}

/// Scripts: one JSON reply per line on stdout; the first error ends the run.
fn batch(home: &Home, name: &VmName, lines: impl Iterator<Item = String>) -> Result<()> {
    let mut s = Session {
        home,
        name,
        paths: home.vm(name),
        conn: None,
        schema: None,
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        let needs_schema = line.contains('=') && !line.trim_start().starts_with('{');
        let schema = if needs_schema {
            Some(s.schema()?)
        } else {
            None
        };
        let reply = match parse_line(&line, schema.as_deref())? {
            Input::Empty => continue,
            Input::Leave => break,
            input if input.quits() => {
                return Err(Error::Usage(format!(
                    "{}: quit kills VM {name}'s QEMU at once; use `vmctl stop {name}` (or `vmctl kill {name}`)",
                    excerpt(line.trim(), 80)
                )));
            }
            Input::Qmp { name: cmd, args } => s.conn()?.execute(&cmd, args)?,
            Input::Hmp(l) => hmp(s.conn()?, &l)?,
            Input::Verb(cmd) => s.conn()?.execute(cmd, None)?,
            Input::Help(c) => json!({"return": s.help(c.as_deref())?}),
            Input::Snapshot(w) => json!({"return": s.snapshot(&w, false)?}),
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
        if let Some(e) = format_error(&reply) {
            return Err(Error::Qemu(format!(
                "QMP: {} (in: {})",
                excerpt(&e, 200),
                excerpt(line.trim(), 80)
            )));
        }
    }
    Ok(())
}

fn hmp(conn: &mut Conn, line: &str) -> Result<Value> {
    conn.execute("human-monitor-command", Some(json!({"command-line": line})))
}

fn interactive(home: &Home, name: &VmName, paths: &VmPaths) -> Result<()> {
    let socket = paths.qmp_shell_socket();
    if !socket.exists() {
        return Err(Error::State(format!(
            "VM {name} was started by an older vmctl, without the QMP shell's socket {}; restart it (`vmctl restart {name}`) to use the shell, or use `vmctl qmp {name} --exec CMD`",
            socket.display()
        )));
    }
    let lock = fsutil::try_lock_exclusive(&paths.shell_lock())?.ok_or_else(|| {
        Error::State(format!(
            "Another `vmctl qmp {name}` shell is open (QEMU serves one client per socket); close it, or use `vmctl qmp {name} --exec CMD`"
        ))
    })?;
    let mut rl = Editor::new(Some(paths.qmp_history()))
        .map_err(|e| Error::Other(format!("Cannot set up line editing: {e}")))?;
    let printer = rl.printer();
    let conn = Conn::open(&socket, lock, Some(Box::new(move |m| printer.print(m))))?;
    let mut s = Session {
        home,
        name,
        paths: paths.clone(),
        conn: Some(conn),
        schema: None,
    };
    let schema = s.schema()?;
    let completion = schema.clone();
    rl.set_completer(Box::new(move |line: &str, pos: usize| {
        completion.complete(line, pos)
    }));
    println!(
        "QMP shell on VM {name} ({} commands; `help`, Tab completes, Ctrl-D leaves)",
        schema.commands.len()
    );
    let prompt = format!("qmp:{name}> ");
    loop {
        let line = match rl.read_line(&prompt) {
            Ok(Read::Line(l)) => l,
            Ok(Read::Interrupted) => continue,
            Ok(Read::Eof) => break,
            Err(e) => return Err(Error::Other(format!("Cannot read input: {e}"))),
        };
        if let Err(e) = rl.add_history(&line) {
            tracing::warn!("Cannot save the shell history: {e}");
        }
        match step(&mut s, &mut rl, &line, &schema) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e @ Error::Qemu(_)) if s.conn.is_none() => return Err(e),
            Err(e) => eprintln!("Error: {e}"),
        }
    }
    Ok(())
}

fn conn<'s>(s: &'s mut Session<'_>) -> Result<&'s mut Conn> {
    s.conn
        .as_mut()
        .ok_or_else(|| Error::Qemu("QEMU closed the QMP connection".into()))
}

/// Run one interactive line; false when the shell should end.
fn step(s: &mut Session<'_>, rl: &mut Editor, line: &str, schema: &Schema) -> Result<bool> {
    let reply = match parse_line(line, Some(schema))? {
        Input::Empty => return Ok(true),
        Input::Leave => return Ok(false),
        Input::Help(c) => {
            println!("{}", s.help(c.as_deref())?.trim_end());
            return Ok(true);
        }
        Input::Snapshot(w) => {
            let v = s.snapshot(&w, true)?;
            println!("{}", pretty(&v));
            return Ok(true);
        }
        input if input.quits() => {
            let answer = rl.read_line(&format!(
                "QMP quit kills VM {}'s QEMU now, without a guest shutdown; type yes to go on: ",
                s.name
            ));
            if !matches!(answer, Ok(Read::Line(a)) if a.trim() == "yes") {
                println!("Not sent.");
                return Ok(true);
            }
            let r = conn(s)?.execute("quit", None);
            s.conn = None;
            println!("{}", r.map(|r| pretty(&r)).unwrap_or_default());
            return Ok(false);
        }
        Input::Qmp { name, args } => conn(s)?.execute(&name, args),
        Input::Hmp(l) => hmp(conn(s)?, &l),
        Input::Verb(cmd) => conn(s)?.execute(cmd, None),
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e @ Error::Qemu(_)) => {
            s.conn = None;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if let Some(e) = format_error(&reply) {
        eprintln!("Error: {e}");
    } else if let Some(text) = reply["return"].as_str() {
        // HMP's text, as the human monitor prints it.
        let text = text.trim_end();
        if !text.is_empty() {
            println!("{text}");
        }
    } else if reply["return"] == json!({}) {
        println!("OK");
    } else {
        println!("{}", pretty(&reply["return"]));
    }
    Ok(true)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_text() {
        assert_eq!(check_text("query-status\targ=1"), Ok(()));
        assert_eq!(
            check_text("hmp info status\nquit").unwrap_err(),
            "has the control character U+000A; write it as \\u000a in a JSON string"
        );
        assert!(check_text("x\u{1b}[31m").unwrap_err().contains("U+001B"));
    }
}
