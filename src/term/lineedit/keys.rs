//! Bytes a terminal sends, decoded into the keys the editor binds: control characters, escape
//! sequences and UTF-8 characters.

/// A key, after decoding the bytes a terminal sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Char(char),
    Enter,
    Tab,
    Backspace,
    Delete,
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Up,
    Down,
    KillEnd,
    KillStart,
    KillWordBack,
    KillWordForward,
    Transpose,
    ClearScreen,
    Interrupt,
    EofOrDelete,
    Suspend,
    Search,
    Cancel,
    Esc,
    /// The terminal closed.
    Hangup,
    /// A sequence this editor does not use.
    Ignored,
}

/// The first key in `b` (not empty) and how many bytes it took, or None when `b` holds only the
/// start of a sequence.
pub(super) fn decode(b: &[u8]) -> Option<(Key, usize)> {
    let key = match b[0] {
        0x1b => return decode_escape(b),
        b'\r' if b.get(1) == Some(&b'\n') => return Some((Key::Enter, 2)),
        b'\r' | b'\n' => Key::Enter,
        0x01 => Key::Home,
        0x02 => Key::Left,
        0x03 => Key::Interrupt,
        0x04 => Key::EofOrDelete,
        0x05 => Key::End,
        0x06 => Key::Right,
        0x07 => Key::Cancel,
        0x08 | 0x7f => Key::Backspace,
        b'\t' => Key::Tab,
        0x0b => Key::KillEnd,
        0x0c => Key::ClearScreen,
        0x0e => Key::Down,
        0x10 => Key::Up,
        0x12 => Key::Search,
        0x14 => Key::Transpose,
        0x15 => Key::KillStart,
        0x17 => Key::KillWordBack,
        0x1a => Key::Suspend,
        c if c < 0x20 => Key::Ignored,
        c => {
            let len = match c {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                0x80.. => return Some((Key::Ignored, 1)),
                _ => 1,
            };
            if b.len() < len {
                return None;
            }
            return Some(match std::str::from_utf8(&b[..len]) {
                Ok(s) => (Key::Char(s.chars().next().unwrap_or(' ')), len),
                Err(_) => (Key::Ignored, 1),
            });
        }
    };
    Some((key, 1))
}

fn decode_escape(b: &[u8]) -> Option<(Key, usize)> {
    let arrow = |c: u8| match c {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' => Key::Right,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        _ => Key::Ignored,
    };
    match b.get(1)? {
        b'[' => {
            let end = b[2..].iter().position(|c| (0x40..=0x7e).contains(c));
            let Some(end) = end.map(|i| i + 2) else {
                // A sequence that never ends is not one.
                return if b.len() > 16 {
                    Some((Key::Ignored, b.len()))
                } else {
                    None
                };
            };
            let params = &b[2..end];
            let key = match (params, b[end]) {
                (b"", c) => arrow(c),
                (b"1;5" | b"1;3", b'C') => Key::WordRight,
                (b"1;5" | b"1;3", b'D') => Key::WordLeft,
                (b"1" | b"7", b'~') => Key::Home,
                (b"4" | b"8", b'~') => Key::End,
                (b"3", b'~') => Key::Delete,
                _ => Key::Ignored,
            };
            Some((key, end + 1))
        }
        b'O' => Some((arrow(*b.get(2)?), 3)),
        b'b' => Some((Key::WordLeft, 2)),
        b'f' => Some((Key::WordRight, 2)),
        b'd' => Some((Key::KillWordForward, 2)),
        0x7f | 0x08 => Some((Key::KillWordBack, 2)),
        _ => Some((Key::Esc, 1)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::term::lineedit) fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut out = Vec::new();
        let mut b = bytes;
        while !b.is_empty() {
            let (k, n) = decode(b).expect("complete input");
            out.push(k);
            b = &b[n..];
        }
        out
    }

    #[test]
    fn bytes_decode_into_keys() {
        use Key::*;
        assert_eq!(
            keys(b"a\xc3\xa9\r\n\x1b[A\x1bOB\x1b[1;5C\x1b[3~\x1bb\x01\x7f\t\x12\x1b[200~"),
            vec![
                Char('a'),
                Char('é'),
                Enter,
                Up,
                Down,
                WordRight,
                Delete,
                WordLeft,
                Home,
                Backspace,
                Tab,
                Search,
                Ignored
            ]
        );
        // The start of a sequence or of a character waits for more.
        assert_eq!(decode(b"\x1b"), None);
        assert_eq!(decode(b"\x1b[1;"), None);
        assert_eq!(decode(b"\xe2\x82"), None);
        // A stray continuation byte is skipped, not fatal.
        assert_eq!(decode(b"\x82a"), Some((Key::Ignored, 1)));
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        /// Bytes a terminal might send: escape sequences, UTF-8, control bytes, and any byte.
        fn input() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                4 => any::<u8>().prop_map(|b| vec![b]),
                2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
                2 => prop::sample::select(vec![
                    &b"\x1b"[..], b"\x1b[", b"\x1bO", b"\x1b[1;5", b"\x1b[3~", b"\x1b[200~",
                    b"\r\n", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b";", b"0",
                ])
                .prop_map(<[u8]>::to_vec),
            ];
            prop::collection::vec(piece, 1..12).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(crate::types::tests::proptests::config(10000))]

            /// Never a panic on input that is not empty; a key takes between one byte and all of
            /// them; only a short start of a sequence waits for more, so the editor never waits
            /// on a longer buffer.
            #[test]
            fn any_bytes_decode(b in input()) {
                match decode(&b) {
                    Some((_, n)) => prop_assert!(n >= 1 && n <= b.len(), "{} of {}", n, b.len()),
                    None => prop_assert!(b.len() <= 16, "{} bytes wait", b.len()),
                }
                // The editor's loop: key after key until the rest waits for more.
                let mut rest = &b[..];
                while !rest.is_empty() {
                    let Some((_, n)) = decode(rest) else { break };
                    rest = &rest[n..];
                }
            }

            /// Typed text comes back as the characters it is, whatever the script.
            #[test]
            fn text_decodes_to_its_characters(s in prop::collection::vec(
                any::<char>().prop_filter("printable", |c| !c.is_ascii_control()),
                0..16,
            )) {
                let bytes: String = s.iter().collect();
                prop_assert_eq!(keys(bytes.as_bytes()), s.into_iter().map(Key::Char).collect::<Vec<_>>());
            }
        }
    }
}
