//! One `read_line`'s editing state and what each key does to it: editing the line, browsing the
//! history, reverse search (Ctrl-R) and Tab completion; and how a `read_line` ends.

use crate::term::lineedit::history::History;
use crate::term::lineedit::keys::Key;
use crate::term::lineedit::line::Line;

/// How `read_line` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// Ctrl-C: the line was dropped.
    Interrupted,
    /// Ctrl-D on an empty line, or the terminal closed.
    Eof,
}

/// Completion: for the line and the cursor's byte offset, where the word being completed starts
/// (a byte offset) and what may replace it.
pub type Completer = Box<dyn Fn(&str, usize) -> (usize, Vec<String>)>;

/// Reverse incremental search (Ctrl-R): the query and the entry it found.
#[derive(Debug)]
struct Search {
    query: String,
    found: Option<usize>,
    /// The line as it was before the search, restored by Ctrl-G.
    before: Line,
}

/// What the terminal should do after a key.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    Redraw,
    Bell,
    List(Vec<String>),
    ClearScreen,
    Suspend,
    Done(Read),
}

/// One `read_line`'s editing state.
pub(super) struct State {
    pub(super) prompt: String,
    pub(super) line: Line,
    /// The history entry shown (`entries.len()` is the line being typed).
    hist: usize,
    /// The line being typed, kept while Up/Down show history.
    draft: Line,
    search: Option<Search>,
    tabbed: bool,
}

impl State {
    pub(super) fn new(prompt: &str, history_len: usize) -> State {
        State {
            prompt: prompt.to_string(),
            line: Line::default(),
            hist: history_len,
            draft: Line::default(),
            search: None,
            tabbed: false,
        }
    }

    /// The prompt, line and cursor to show.
    pub(super) fn view(&self, history: &History) -> (String, Vec<char>, usize) {
        match &self.search {
            Some(s) => {
                let (found, pos) = match s.found {
                    Some(i) => {
                        let e = &history.entries[i];
                        let b = e.find(&s.query).unwrap_or(0);
                        (e.chars().collect(), e[..b].chars().count())
                    }
                    None => (Vec::new(), 0),
                };
                let fail = if s.found.is_none() && !s.query.is_empty() {
                    "failed "
                } else {
                    ""
                };
                (
                    format!("({fail}reverse-i-search)`{}': ", s.query),
                    found,
                    pos,
                )
            }
            None => (self.prompt.clone(), self.line.chars.clone(), self.line.pos),
        }
    }

    pub(super) fn key(&mut self, key: Key, history: &History, complete: &Completer) -> Action {
        if self.search.is_some() {
            if let Some(a) = self.search_key(&key, history) {
                return a;
            }
        }
        let tabbed = std::mem::replace(&mut self.tabbed, false);
        match key {
            Key::Enter => Action::Done(Read::Line(self.line.text())),
            Key::Interrupt => Action::Done(Read::Interrupted),
            Key::Hangup => Action::Done(Read::Eof),
            Key::EofOrDelete if self.line.chars.is_empty() => Action::Done(Read::Eof),
            Key::Tab => self.complete(complete, tabbed),
            Key::Up | Key::Down => self.browse(key == Key::Up, history),
            Key::Search => {
                self.search = Some(Search {
                    query: String::new(),
                    found: None,
                    before: self.line.clone(),
                });
                Action::Redraw
            }
            Key::ClearScreen => Action::ClearScreen,
            // A lone Esc (or Esc then a key this editor does not bind) does nothing.
            Key::Esc => Action::Redraw,
            Key::Suspend => Action::Suspend,
            k => {
                if self.line.edit(&k) {
                    Action::Redraw
                } else {
                    Action::Bell
                }
            }
        }
    }

    /// A key during Ctrl-R; None when it ends the search and should then act on the line.
    fn search_key(&mut self, key: &Key, history: &History) -> Option<Action> {
        let s = self.search.as_mut()?;
        match key {
            Key::Char(c) => {
                s.query.push(*c);
                s.found = history.search(&s.query, s.found.unwrap_or(usize::MAX));
            }
            Key::Backspace => {
                s.query.pop();
                s.found = history.search(&s.query, usize::MAX);
            }
            Key::Search => {
                let older = s
                    .found
                    .map(|i| i.checked_sub(1))
                    .unwrap_or(Some(usize::MAX));
                match older.and_then(|from| history.search(&s.query, from)) {
                    Some(i) => s.found = Some(i),
                    None => return Some(Action::Bell),
                }
            }
            Key::Cancel | Key::Interrupt | Key::Esc => {
                self.line = s.before.clone();
                self.search = None;
            }
            _ => {
                // Any other key takes the match into the line and then does its usual job.
                if let Some(i) = s.found {
                    self.line.set(&history.entries[i]);
                }
                self.search = None;
                return None;
            }
        }
        Some(Action::Redraw)
    }

    fn browse(&mut self, up: bool, history: &History) -> Action {
        let n = history.entries.len();
        let to = match (up, self.hist) {
            (true, 0) => return Action::Bell,
            (true, i) => i - 1,
            (false, i) if i >= n => return Action::Bell,
            (false, i) => i + 1,
        };
        if self.hist == n {
            self.draft = self.line.clone();
        }
        self.hist = to;
        if to == n {
            self.line = self.draft.clone();
        } else {
            self.line.set(&history.entries[to]);
        }
        Action::Redraw
    }

    /// Tab: one candidate replaces the word; several extend it to what they share, and a second
    /// Tab lists them.
    fn complete(&mut self, complete: &Completer, tabbed: bool) -> Action {
        let text = self.line.text();
        let (start, cands) = complete(&text, self.line.byte_pos());
        let word = &text[start.min(text.len())..self.line.byte_pos()];
        match cands.as_slice() {
            [] => Action::Bell,
            [one] => {
                self.line.replace_word(start, one);
                Action::Redraw
            }
            many => {
                let common = common_prefix(many);
                if common.len() > word.len() {
                    self.line.replace_word(start, &common);
                    self.tabbed = true;
                    Action::Redraw
                } else if tabbed {
                    Action::List(cands)
                } else {
                    self.tabbed = true;
                    Action::Bell
                }
            }
        }
    }
}

pub(super) fn common_prefix(words: &[String]) -> String {
    let mut p = words[0].as_str();
    for w in &words[1..] {
        while !w.starts_with(p) {
            p = &p[..p.char_indices().last().map_or(0, |(i, _)| i)];
        }
    }
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::lineedit::history::tests::history;
    use crate::term::lineedit::keys::tests::keys;

    fn completer() -> Completer {
        Box::new(|line: &str, pos: usize| {
            let start = line[..pos].rfind(' ').map(|i| i + 1).unwrap_or(0);
            let word = &line[start..pos];
            let c = ["query-status", "query-stats", "query-name", "quit"]
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| c.to_string())
                .collect();
            (start, c)
        })
    }

    /// Type `bytes` into a fresh state; the actions and the state after.
    fn typed(bytes: &[u8], h: &History) -> (Vec<Action>, State) {
        let mut s = State::new("> ", h.entries.len());
        let c = completer();
        let actions = keys(bytes).into_iter().map(|k| s.key(k, h, &c)).collect();
        (actions, s)
    }

    #[test]
    fn editing_keys_change_the_line_and_cursor() {
        let h = history(&[]);
        let (_, s) = typed(b"query-status now\x17name\x01\x1bfX", &h);
        assert_eq!(s.line.text(), "query-statusX name");
        let (_, s) = typed(b"abc\x02\x02\x0b", &h);
        assert_eq!((s.line.text().as_str(), s.line.pos), ("a", 1));
        let (_, s) = typed(b"abc\x02\x15", &h);
        assert_eq!((s.line.text().as_str(), s.line.pos), ("c", 0));
        let (_, s) = typed(b"ab\x14", &h);
        assert_eq!(s.line.text(), "ba");
        let (a, _) = typed(b"ab\x7f\x7f\x7f", &h);
        assert_eq!(
            a.last(),
            Some(&Action::Redraw),
            "Backspace at the start is harmless"
        );
        let (a, _) = typed(b"x\x03", &h);
        assert_eq!(a.last(), Some(&Action::Done(Read::Interrupted)));
        let (a, _) = typed(b"\x04", &h);
        assert_eq!(a, vec![Action::Done(Read::Eof)]);
        let (a, s) = typed(b"ab\x02\x04\r", &h);
        assert_eq!(a.last(), Some(&Action::Done(Read::Line("a".into()))));
        assert_eq!(s.line.text(), "a", "Ctrl-D on a line deletes");
    }

    #[test]
    fn tab_completes_then_lists() {
        let h = history(&[]);
        let (a, s) = typed(b"query-st\t", &h);
        assert_eq!(s.line.text(), "query-stat");
        assert_eq!(a.last(), Some(&Action::Redraw));
        let (a, _) = typed(b"query-st\t\t", &h);
        assert_eq!(
            a.last(),
            Some(&Action::List(vec![
                "query-status".into(),
                "query-stats".into()
            ]))
        );
        // One candidate replaces the word under the cursor, keeping what follows.
        let (_, s) = typed(b"x query-n\t", &h);
        assert_eq!(s.line.text(), "x query-name");
        let (_, s) = typed(b"qu zz\x01\x06\x06\t", &h);
        assert_eq!(
            s.line.text(),
            "qu zz",
            "q has several candidates: unchanged"
        );
        let (a, _) = typed(b"nothing\t", &h);
        assert_eq!(a.last(), Some(&Action::Bell));
    }

    #[test]
    fn history_browses_keeps_the_draft_and_searches() {
        let h = history(&["query-status", "hmp info status", "query-name"]);
        let (_, s) = typed(b"dra\x1b[A\x1b[A", &h);
        assert_eq!(s.line.text(), "hmp info status");
        let (_, s) = typed(b"dra\x1b[A\x1b[A\x1b[B\x1b[B", &h);
        assert_eq!(
            s.line.text(),
            "dra",
            "Down past the newest entry restores the draft"
        );
        let (a, _) = typed(b"\x1b[B", &h);
        assert_eq!(a, vec![Action::Bell]);
        // Ctrl-R: newest match first, Ctrl-R again goes older, a movement key takes the match.
        let (_, s) = typed(b"\x12stat", &h);
        assert_eq!(s.search.as_ref().unwrap().found, Some(1));
        let (_, s) = typed(b"\x12stat\x12\x05", &h);
        assert!(s.search.is_none());
        assert_eq!(s.line.text(), "query-status");
        let (a, _) = typed(b"\x12stat\x12\x12", &h);
        assert_eq!(a.last(), Some(&Action::Bell), "no older match");
        let (_, s) = typed(b"keep\x12zzz\x07", &h);
        assert_eq!(s.line.text(), "keep", "Ctrl-G restores the line");
        let (a, _) = typed(b"\x12name\r", &h);
        assert_eq!(
            a.last(),
            Some(&Action::Done(Read::Line("query-name".into())))
        );
    }
}
