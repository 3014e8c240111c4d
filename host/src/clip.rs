//! How text a user or a peer supplied (a name, a stanza, a path, a line) appears in errors,
//! logs, status and API answers: at most [`MAX_SHOWN`] bytes of it, cut at a character
//! boundary, then an ellipsis and the whole length, so a 1 MB name cannot fill a log line,
//! a `last_error` or an HTTP answer.
//!
//! Must never: be used for a value that may be a credential (a conf value, a token, a file's
//! content). Those are shown by their length only.

use std::fmt;

/// Bytes of a supplied text shown before it is cut.
pub const MAX_SHOWN: usize = 100;
/// Bytes shown of a whole message another library made from supplied text (serde's, which
/// quotes the offending input).
pub const MAX_MESSAGE: usize = 300;

/// A supplied text as errors show it; see [`clip`], [`clip_bare`] and [`clip_message`].
pub struct Clipped<'a> {
    text: &'a str,
    quoted: bool,
    max: usize,
}

/// `text` quoted with escapes (as `{:?}` shows it), cut past [`MAX_SHOWN`] bytes:
/// `"abc…" (1048576 bytes)`.
pub fn clip(text: &str) -> Clipped<'_> {
    Clipped { text, quoted: true, max: MAX_SHOWN }
}

/// `text` unquoted with line breaks and NULs escaped, cut past [`MAX_SHOWN`] bytes:
/// `abc… (1048576 bytes)`.
pub fn clip_bare(text: &str) -> Clipped<'_> {
    Clipped { text, quoted: false, max: MAX_SHOWN }
}

/// A whole message as [`clip_bare`] shows a name, cut past [`MAX_MESSAGE`] bytes.
pub fn clip_message(text: &str) -> Clipped<'_> {
    Clipped { text, quoted: false, max: MAX_MESSAGE }
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cut = self.text.len().min(self.max);
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let shown = &self.text[..cut];
        let more = if cut < self.text.len() { "…" } else { "" };
        if self.quoted {
            // The quotes close after the ellipsis: `"abc…"`.
            let quoted = format!("{shown:?}");
            write!(f, "{}{more}\"", &quoted[..quoted.len() - 1])?;
        } else {
            for c in shown.chars() {
                match c {
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\0' => f.write_str("\\0")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str(more)?;
        }
        if !more.is_empty() {
            write!(f, " ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_shown_whole() {
        assert_eq!(clip("a\nb").to_string(), r#""a\nb""#);
        assert_eq!(clip_bare("a\nb\0").to_string(), r"a\nb\0");
        assert_eq!(clip(&"x".repeat(MAX_SHOWN)).to_string(), format!("\"{}\"", "x".repeat(MAX_SHOWN)));
    }

    #[test]
    fn long_texts_are_cut_with_their_length() {
        let long = "é".repeat(600_000);
        let shown = clip(&long).to_string();
        assert!(shown.len() < 2 * MAX_SHOWN, "{shown}");
        assert!(shown.ends_with("…\" (1200000 bytes)"), "{shown}");
        let bare = clip_bare(&long).to_string();
        assert!(bare.starts_with('é') && bare.ends_with("… (1200000 bytes)"), "{bare}");
        // cut at a character boundary (é is two bytes; 100 is even, so 50 of them)
        assert_eq!(bare.chars().filter(|&c| c == 'é').count(), MAX_SHOWN / 2);
        assert_eq!(clip_message(&long).to_string().chars().filter(|&c| c == 'é').count(), MAX_MESSAGE / 2);
    }
}
