//! Text read from outside (the store, a metadata service, a report) made safe to print:
//! on a terminal, in a log line or on a page. The ground floor: imports nothing of the
//! crate.

/// `text` with every control character (a terminal escape, a line break, a NUL) made a
/// space, cut at `cap` characters (then ending in `…`).
pub fn printable(text: &str, cap: usize) -> String {
    let mut out: String = text
        .chars()
        .take(cap)
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if text.chars().nth(cap).is_some() {
        out.push('…');
    }
    out
}

/// Whether `text` would print as it is: no control character, no bidirectional
/// override (which reorders what a terminal shows).
pub fn is_printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// Whether an HTTP header can carry `text` as it is, as AWS keys and session tokens
/// must be: printable ASCII, no space.
pub fn is_header_token(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// The Unicode bidirectional controls: not `is_control`, yet they reorder a line.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_become_spaces() {
        assert_eq!(printable("a\x1b[2Jb\nc", 100), "a [2Jb c");
        assert_eq!(printable("x\u{202E}y", 100), "x y");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert!(is_printable("v1.2-ok"));
        assert!(!is_printable("v1\r"));
        assert!(is_header_token("AKIA+/=x"));
        assert!(!is_header_token("t\u{f6}k") && !is_header_token("a b") && !is_header_token("a\n"));
    }
}
