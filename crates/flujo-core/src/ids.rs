//! Bounds on the identifiers a user may choose (run ids, pause ids given to `resume`): they are stored,
//! printed in tables and pasted into shell commands, so each must be non-empty, short and free of
//! characters that do not print.

/// The longest run id accepted, in characters (generated ids are 32).
pub const MAX_RUN_ID_CHARS: usize = 128;

/// Characters that do not print but change how text reads: zero-width spaces and joiners, bidirectional
/// overrides and isolates, the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// The first character of `s` that an identifier may not contain (control characters, whitespace,
/// invisible format characters), as a readable description.
pub fn forbidden_char(s: &str) -> Option<String> {
    s.chars().find(|&c| c.is_control() || c.is_whitespace() || is_invisible(c)).map(|c| {
        if c == ' ' {
            "a space".to_owned()
        } else {
            format!("the character U+{:04X} ({})", u32::from(c), c.escape_default())
        }
    })
}

/// Checks a run id chosen by a user: 1 to [`MAX_RUN_ID_CHARS`] characters, none of them a control
/// character, whitespace or an invisible format character. The error says what is wrong.
pub fn check_run_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a run id cannot be empty".to_owned());
    }
    let n = id.chars().count();
    if n > MAX_RUN_ID_CHARS {
        return Err(format!("a run id has at most {MAX_RUN_ID_CHARS} characters; this one has {n}"));
    }
    if let Some(c) = forbidden_char(id) {
        return Err(format!("a run id cannot contain {c}"));
    }
    Ok(())
}

/// `s` shortened to at most `max` characters (an ellipsis marks the cut) with control characters escaped,
/// for echoing user input in a message.
pub fn shorten_for_display(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        assert!(check_run_id("r1").is_ok());
        assert!(check_run_id("0193a4f2c3d47e8b9a1b2c3d4e5f6a7b").is_ok());
        assert!(check_run_id(&"x".repeat(MAX_RUN_ID_CHARS)).is_ok());
        assert!(check_run_id("ñandú-1").is_ok());
        for bad in ["", "a\nb", "a\u{1b}[31m", "a b", " a", "a\t", "a\u{202e}b", "a\u{0}"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        let long = check_run_id(&"x".repeat(70_000)).unwrap_err();
        assert!(long.contains("at most 128") && long.contains("70000"), "{long}");
        assert!(check_run_id("a\nb").unwrap_err().contains("U+000A"));
    }

    #[test]
    fn display_is_short_and_printable() {
        assert_eq!(shorten_for_display("abc", 2), "ab…");
        assert_eq!(shorten_for_display("a\nb", 10), "a\\nb");
        assert_eq!(shorten_for_display("", 3), "");
    }
}
