//! The line being edited: its characters, the cursor, and what the editing keys do to them.

use crate::term::lineedit::keys::Key;

/// The line being edited: characters and the cursor (an index into them).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Line {
    pub(super) chars: Vec<char>,
    pub(super) pos: usize,
}

impl Line {
    pub(super) fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub(super) fn set(&mut self, s: &str) {
        self.chars = s.chars().collect();
        self.pos = self.chars.len();
    }

    pub(super) fn byte_pos(&self) -> usize {
        self.chars[..self.pos].iter().map(|c| c.len_utf8()).sum()
    }

    fn word_left(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    fn word_right(&self) -> usize {
        let mut i = self.pos;
        let n = self.chars.len();
        while i < n && self.chars[i].is_whitespace() {
            i += 1;
        }
        while i < n && !self.chars[i].is_whitespace() {
            i += 1;
        }
        i
    }

    /// Apply an editing key; false when the key is not an edit.
    pub(super) fn edit(&mut self, key: &Key) -> bool {
        let n = self.chars.len();
        match key {
            Key::Char(c) => {
                self.chars.insert(self.pos, *c);
                self.pos += 1;
            }
            Key::Backspace if self.pos > 0 => {
                self.pos -= 1;
                self.chars.remove(self.pos);
            }
            Key::Delete | Key::EofOrDelete if self.pos < n => {
                self.chars.remove(self.pos);
            }
            Key::Left => self.pos = self.pos.saturating_sub(1),
            Key::Right => self.pos = (self.pos + 1).min(n),
            Key::Home => self.pos = 0,
            Key::End => self.pos = n,
            Key::WordLeft => self.pos = self.word_left(),
            Key::WordRight => self.pos = self.word_right(),
            Key::KillEnd => self.chars.truncate(self.pos),
            Key::KillStart => {
                self.chars.drain(..self.pos);
                self.pos = 0;
            }
            Key::KillWordBack => {
                let i = self.word_left();
                self.chars.drain(i..self.pos);
                self.pos = i;
            }
            Key::KillWordForward => {
                let i = self.word_right();
                self.chars.drain(self.pos..i);
            }
            Key::Transpose if n >= 2 && self.pos > 0 => {
                let i = if self.pos == n { n - 1 } else { self.pos };
                self.chars.swap(i - 1, i);
                self.pos = (i + 1).min(n);
            }
            Key::Backspace | Key::Delete | Key::EofOrDelete | Key::Transpose => {}
            _ => return false,
        }
        true
    }

    /// Replace the bytes `start..cursor` with `with`.
    pub(super) fn replace_word(&mut self, start: usize, with: &str) {
        let text = self.text();
        let end = self.byte_pos();
        let start = start.min(end);
        let rest: Vec<char> = text[end..].chars().collect();
        self.set(&format!("{}{with}", &text[..start]));
        let pos = self.chars.len();
        self.chars.extend(rest);
        self.pos = pos;
    }
}
