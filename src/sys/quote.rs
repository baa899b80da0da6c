//! Quoting for a POSIX shell: the exact command lines vmctl prints (`show-cmd`, `ssh --print`,
//! the argv it logs before spawning QEMU) can be pasted into a shell as they are.

/// The argv as one POSIX shell command line: arguments with characters the shell would
/// interpret are single-quoted.
pub fn argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let q = argv(&["a".into(), "b c".into(), "it's".into()]);
        assert_eq!(q, r"a 'b c' 'it'\''s'");
        assert_eq!(
            argv(&["".into(), "-m".into(), "a=b,c".into()]),
            "'' -m a=b,c"
        );
    }
}
