//! Text a client or the admin API sent, made safe for a log line: control characters (CR, LF,
//! ESC, DEL, C1, ...) and bytes that are not UTF-8 are written as `\xNN` (`\n`, `\r`, `\t` as
//! such), the Unicode line and paragraph separators and the bidirectional overrides as
//! `\u{NNNN}`, and a backslash as `\\`, so a client cannot forge a log line, hide one, reorder
//! what a terminal shows or drive it; an escaped line never splits and reads back
//! unambiguously. Everything else, printable Unicode included, passes unchanged.
//!
//! ```
//! use zgate_proxy::escape::escaped;
//! let key = "mode\nINFO forged line";
//! assert_eq!(escaped(key).to_string(), "mode\\nINFO forged line");
//! ```

use std::fmt;

/// Displays `bytes` escaped; see the module docs. `Escaped(b"a\nb")` shows `a\nb` (4 chars).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

/// `text`, displayed escaped (see the module docs). Costs nothing until formatted.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped::str(text)
}

impl<'a> Escaped<'a> {
    /// Escapes a string.
    pub fn str(s: &'a str) -> Self {
        Escaped(s.as_bytes())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => {
                        // Every control character is below U+00A0: one escape per code point.
                        write!(f, "\\x{:02x}", c as u32)?
                    }
                    c if splits_or_reorders(c) => write!(f, "\\u{{{:04x}}}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The line and paragraph separators and the bidirectional formatting characters: not
/// control characters, but they split a line or reorder what a terminal shows.
fn splits_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bad_utf8_are_escaped() {
        let e = |b: &[u8]| Escaped(b).to_string();
        assert_eq!(e(b"plain /path?q=1"), "plain /path?q=1");
        assert_eq!(e(b"a\r\nINFO forged"), "a\\r\\nINFO forged");
        assert_eq!(e(b"\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
        assert_eq!(e(b"back\\slash"), "back\\\\slash");
        assert_eq!(e(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(
            escaped("ls\u{2028}ps\u{2029}rlo\u{202e}c1\u{85}").to_string(),
            "ls\\u{2028}ps\\u{2029}rlo\\u{202e}c1\\x85"
        );
        assert_eq!(e("caf\u{e9} \u{85}".as_bytes()), "caf\u{e9} \\x85");
    }
}
