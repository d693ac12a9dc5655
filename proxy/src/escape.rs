//! Client-supplied text made safe for a log line: control characters (CR, LF, ESC, DEL, ...)
//! and bytes that are not UTF-8 are written as `\xNN` (`\n`, `\r`, `\t` as such), and a
//! backslash as `\\`, so a client cannot forge a log line, hide one, or drive a terminal.
//! Everything else, printable Unicode included, passes unchanged.

use std::fmt;

/// Displays `bytes` escaped; see the module docs. `Escaped(b"a\nb")` shows `a\nb` (4 chars).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

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
        assert_eq!(e("caf\u{e9} \u{85}".as_bytes()), "caf\u{e9} \\x85");
    }
}
