//! `vmctl qmp NAME`: a QMP shell on a running VM, interactive or for scripts.
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
//!
//! The connection is a plain blocking socket with a reader thread: replies go to the waiting
//! command through a channel; events go to the line editor's printer, which prints them at once,
//! above the prompt while it waits (keeping a half-typed line) and in line while a command runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::paths::{Home, VmPaths};
use crate::runstate;
use crate::sys::fsutil;
use crate::term::lineedit::editor::Editor;
use crate::term::lineedit::layout::columns;
use crate::term::lineedit::state::Read;
use crate::types::VmName;

/// Bound for one command's reply (long enough for a QMP command that does real work).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The shell's own verbs, completed and listed beside QMP's commands.
const BUILTINS: &[(&str, &str)] = &[
    (
        "help",
        "help [CMD]: list commands, or one command's arguments",
    ),
    (
        "hmp",
        "hmp LINE: a human monitor command (e.g. hmp info status)",
    ),
    (
        "snapshot",
        "snapshot create [TAG] | list | revert TAG [--force] | delete TAG",
    ),
    ("pause", "pause: freeze the guest's CPUs (QMP stop)"),
    ("resume", "resume: let a paused guest run on (QMP cont)"),
    ("reset", "reset: press the reset button (QMP system_reset)"),
    ("powerdown", "powerdown: press the ACPI power button"),
    (
        "quit",
        "quit, exit, Ctrl-D: leave the shell (the VM keeps running)",
    ),
    ("exit", "exit: leave the shell"),
];

/// Run the shell on VM `name`: `exec` commands, else stdin's lines when it is not a terminal,
/// else interactively.
pub fn run(home: &Home, name: &VmName, exec: Vec<String>) -> Result<()> {
    let paths = home.vm(name);
    if !paths.definition().exists() {
        return Err(Error::vm_not_found(name.as_str()));
    }
    if !runstate::liveness(&paths).is_running() {
        return Err(crate::error::Error::not_running(name));
    }
    if !exec.is_empty() {
        return batch(home, name, exec.into_iter());
    }
    if !std::io::stdin().is_terminal() {
        let lines: Vec<String> = std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::Other(format!("Cannot read commands from stdin: {e}")))?;
        return batch(home, name, lines.into_iter());
    }
    interactive(home, name, &paths)
}

// ---- input ------------------------------------------------------------------------------------

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
        return Err(Error::Usage(format!("Unterminated quote in: {line}")));
    }
    if depth > 0 {
        return Err(Error::Usage(format!("Unclosed bracket in: {line}")));
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
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::Usage(format!("Not valid JSON: {e}: {line}")))?;
        let name = v["execute"]
            .as_str()
            .ok_or_else(|| Error::Usage(format!("JSON input needs \"execute\": {line}")))?;
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

// ---- schema -----------------------------------------------------------------------------------

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

    fn arg_is_str(&self, command: &str, arg: &str) -> bool {
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

// ---- connection -------------------------------------------------------------------------------

type EventSink = Box<dyn FnMut(String) + Send>;

/// A QMP connection on a blocking socket; a reader thread sorts replies from events.
struct Conn {
    writer: UnixStream,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    _lock: fsutil::Lock,
}

impl Conn {
    fn open(socket: &Path, lock: fsutil::Lock, on_event: Option<EventSink>) -> Result<Conn> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Qemu(format!("Cannot talk to QEMU at {}: {e}", socket.display()))
        };
        let stream = UnixStream::connect(socket).map_err(|e| fail(&e))?;
        stream
            .set_read_timeout(Some(crate::qemu::qmp::COMMAND_TIMEOUT))
            .map_err(|e| fail(&e))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| fail(&e))?);
        let mut writer = stream;
        let greeting = read_json(&mut reader).map_err(|e| fail(&e))?;
        if greeting.get("QMP").is_none() {
            return Err(fail(&format!("expected a QMP greeting, got {greeting}")));
        }
        writer
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .map_err(|e| fail(&e))?;
        loop {
            let v = read_json(&mut reader).map_err(|e| fail(&e))?;
            if let Some(e) = v.get("error") {
                return Err(fail(&e));
            }
            if v.get("return").is_some() {
                break;
            }
        }
        writer.set_read_timeout(None).map_err(|e| fail(&e))?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || read_loop(reader, tx, on_event));
        Ok(Conn {
            writer,
            replies,
            next_id: 1,
            _lock: lock,
        })
    }

    /// Send a command; the whole reply (`return` or `error`) comes back, without its id.
    fn execute(&mut self, name: &str, args: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": name, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        tracing::debug!(target: "vmctl::qmp", "-> {msg}");
        let gone = || Error::Qemu("QEMU closed the QMP connection (did the VM stop?)".into());
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|_| gone())?;
        loop {
            let mut reply = match self.replies.recv_timeout(REPLY_TIMEOUT) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout(format!(
                        "No reply to {name} within {REPLY_TIMEOUT:?}"
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
            };
            if reply.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(o) = reply.as_object_mut() {
                    o.remove("id");
                }
                return Ok(reply);
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the reader thread's blocking read.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

fn read_json(r: &mut impl BufRead) -> std::io::Result<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if !line.trim().is_empty() {
            tracing::debug!(target: "vmctl::qmp", "<- {}", line.trim_end());
            return serde_json::from_str(&line).map_err(std::io::Error::other);
        }
    }
}

fn read_loop(mut r: impl BufRead, tx: mpsc::Sender<Value>, mut on_event: Option<EventSink>) {
    while let Ok(v) = read_json(&mut r) {
        if let Some(ev) = v.get("event").and_then(Value::as_str) {
            if let Some(sink) = on_event.as_mut() {
                sink(format_event(ev, &v));
            }
        } else if tx.send(v).is_err() {
            return;
        }
    }
}

fn format_event(name: &str, v: &Value) -> String {
    let secs = v["timestamp"]["seconds"].as_i64().unwrap_or(0);
    let usecs = v["timestamp"]["microseconds"].as_i64().unwrap_or(0);
    match v.get("data") {
        Some(d) => format!("event {name} at {secs}.{usecs:06}: {d}"),
        None => format!("event {name} at {secs}.{usecs:06}"),
    }
}

/// A QMP error reply as one line: `CommandNotFound: The command foo has not been found`.
pub fn format_error(reply: &Value) -> Option<String> {
    let e = reply.get("error")?;
    Some(format!(
        "{}: {}",
        e["class"].as_str().unwrap_or("GenericError"),
        e["desc"].as_str().unwrap_or("")
    ))
}

// ---- the two modes ----------------------------------------------------------------------------

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
            Input::Qmp { name: cmd, .. } if cmd == "quit" => {
                return Err(Error::Usage(format!(
                    "QMP quit kills VM {name}'s QEMU at once; use `vmctl stop {name}` (or `vmctl kill {name}`)"
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
            return Err(Error::Qemu(format!("QMP: {e} (in: {})", line.trim())));
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
        Input::Qmp { name, .. } if name == "quit" => {
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

    fn schema() -> Schema {
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
    fn errors_and_events_print_on_one_line() {
        let r = json!({"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}});
        assert_eq!(
            format_error(&r).unwrap(),
            "CommandNotFound: The command foo has not been found"
        );
        assert!(format_error(&json!({"return": {}})).is_none());
        let e = json!({"event": "STOP", "timestamp": {"seconds": 5, "microseconds": 42}});
        assert_eq!(format_event("STOP", &e), "event STOP at 5.000042");
    }
}
