//! Escaping of untrusted text before it reaches a log line.
//!
//! Anything a client or the admin API sent (a JSON key, a header, a path, a parse error that
//! quotes the input) can carry a newline or a terminal escape. Logged raw, it forges log lines
//! or rewrites the operator's terminal. [`escaped`] wraps such text for `tracing`'s `%` (or
//! `format!`): control characters (C0, DEL, C1), the Unicode line and paragraph separators and
//! the bidirectional overrides come out as `\n`, `\r`, `\t` or `\u{..}`, and the backslash as
//! `\\`, so an escaped line never splits and can be read back unambiguously. Everything else,
//! including non-ASCII letters, passes through unchanged.
//!
//! ```
//! use zgate_proxy::log_escape::escaped;
//! let key = "mode\nINFO forged line";
//! assert_eq!(escaped(key).to_string(), "mode\\nINFO forged line");
//! ```

use std::fmt;

/// `text`, displayed escaped (see the module docs). Costs nothing until formatted.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// Text that displays with its control characters escaped; made by [`escaped`].
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let Some(c) = rest[at..].chars().next() else {
                break;
            };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether `c` must not appear raw in a log line.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let e = |s: &str| escaped(s).to_string();
        assert_eq!(e("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(e("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(e("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            e("nul\0 del\u{7f} c1\u{85}"),
            "nul\\u{0} del\\u{7f} c1\\u{85}"
        );
        assert_eq!(
            e("ls\u{2028}ps\u{2029}rlo\u{202e}"),
            "ls\\u{2028}ps\\u{2029}rlo\\u{202e}"
        );
        // The backslash too, so that an escaped "\n" cannot be told from a typed one.
        assert_eq!(e("a\\nb"), "a\\\\nb");
        assert_eq!(e(""), "");
        assert!(!e("x\ny").contains('\n'));
    }
}
