//! Fitting text into the terminal's width: the visible part of a line wider than the terminal
//! (it scrolls sideways around the cursor), and words in columns (Tab's list of candidates).

use unicode_width::UnicodeWidthChar;

/// The part of `line` that fits in `width` columns after `prompt`, keeping the cursor (`pos`)
/// in view, and the cursor's column.
pub(super) fn layout(prompt: &str, line: &[char], pos: usize, width: usize) -> (String, usize) {
    let w = |c: &char| c.width().unwrap_or(0);
    let pw: usize = prompt.chars().map(|c| w(&c)).sum();
    // Keep the last column free: a character there would wrap the cursor to the next row.
    let room = width.saturating_sub(pw + 1).max(1);
    let mut start = 0;
    let mut before: usize = line[..pos].iter().map(w).sum();
    while before > room && start < pos {
        before -= w(&line[start]);
        start += 1;
    }
    let mut end = pos;
    let mut used = before;
    while end < line.len() && used + w(&line[end]) <= room {
        used += w(&line[end]);
        end += 1;
    }
    (line[start..end].iter().collect(), pw + before)
}

/// `words` in columns that fit `width`, a row per line, each line ending in a newline.
pub fn columns<'a>(words: impl Iterator<Item = &'a str>, width: usize) -> String {
    let words: Vec<&str> = words.collect();
    let w = words.iter().map(|w| w.len()).max().unwrap_or(0) + 2;
    let per = (width.saturating_sub(2) / w).max(1);
    let mut s = String::new();
    for row in words.chunks(per) {
        let mut line = String::from("  ");
        for word in row {
            line.push_str(&format!("{word:<w$}"));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::lineedit::state::common_prefix;

    #[test]
    fn a_long_line_scrolls_sideways_around_the_cursor() {
        let line: Vec<char> = "0123456789abcdefghij".chars().collect();
        // Fits: all of it, cursor after the prompt and the text before it.
        assert_eq!(layout("> ", &line[..5], 3, 80), ("01234".into(), 5));
        // Cursor at the end of a line wider than the room (12 - 2 - 1 = 9 columns).
        let (shown, col) = layout("> ", &line, 20, 12);
        assert_eq!((shown.as_str(), col), ("bcdefghij", 11));
        // Cursor at the start: the start is shown.
        let (shown, col) = layout("> ", &line, 0, 12);
        assert_eq!((shown.as_str(), col), ("012345678", 2));
        // Wide characters count twice.
        let wide: Vec<char> = "日本語".chars().collect();
        assert_eq!(layout("", &wide, 3, 80), ("日本語".into(), 6));
    }

    #[test]
    fn columns_fit_the_width() {
        let s = columns(["aa", "bbbb", "c"].into_iter(), 14);
        assert_eq!(s, "  aa    bbbb\n  c\n");
        assert_eq!(
            common_prefix(&["query-status".into(), "query-stats".into()]),
            "query-stat"
        );
    }
}
