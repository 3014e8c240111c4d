//! Validation of every name and text a change carries (conf types, app, user and file names,
//! stanzas, keys, values). These rules are what keeps a replicated change from escaping the
//! etc root or corrupting the line structure of a `.conf` file on every member at once.

use crate::conf::error::ConfError;

const MAX_CONF_TYPE: usize = 64;
const MAX_SCOPE_NAME: usize = 128;
const MAX_FILE_NAME: usize = 255;
const MAX_STANZA: usize = 1024;

fn all_chars(s: &str, extra: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// A conf type: `[A-Za-z0-9_-]{1,64}` (it becomes a file name, `<type>.conf`).
pub fn conf_type(s: &str) -> Result<(), ConfError> {
    if (1..=MAX_CONF_TYPE).contains(&s.len()) && all_chars(s, "_-") {
        Ok(())
    } else {
        Err(ConfError::ConfType(s.to_owned()))
    }
}

fn scope_name(s: &str) -> bool {
    // No leading '.' rules out "." and ".." (the only ways these charsets could escape).
    (1..=MAX_SCOPE_NAME).contains(&s.len()) && !s.starts_with('.') && all_chars(s, "_.@-")
}

/// An app folder name: `[A-Za-z0-9_.@-]{1,128}`, not starting with `.`.
pub fn app(s: &str) -> Result<(), ConfError> {
    if scope_name(s) { Ok(()) } else { Err(ConfError::AppName(s.to_owned())) }
}

/// A user folder name: `[A-Za-z0-9_.@-]{1,128}`, not starting with `.`.
pub fn user(s: &str) -> Result<(), ConfError> {
    if scope_name(s) { Ok(()) } else { Err(ConfError::UserName(s.to_owned())) }
}

/// A file name (lookup table, view, ...): one component `[A-Za-z0-9_.@ -]{1,255}`, not
/// starting with `.` (so never `.`, `..`, a hidden file or one of our temporaries).
pub fn file_name(s: &str) -> Result<(), ConfError> {
    if (1..=MAX_FILE_NAME).contains(&s.len()) && !s.starts_with('.') && all_chars(s, "_.@ -") {
        Ok(())
    } else {
        Err(ConfError::FileName(s.to_owned()))
    }
}

fn line_breaker(s: &str) -> Option<&'static str> {
    if s.contains('\n') {
        Some("contains a newline")
    } else if s.contains('\r') {
        Some("contains a carriage return")
    } else if s.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    }
}

/// A stanza name: non-empty, at most 1024 bytes, single line. It is written as `[name]` and
/// read back untrimmed, so any other character round-trips.
pub fn stanza(s: &str) -> Result<(), ConfError> {
    let reason = if s.is_empty() {
        Some("is empty")
    } else if s.len() > MAX_STANZA {
        Some("is longer than 1024 bytes")
    } else {
        line_breaker(s)
    };
    match reason {
        Some(reason) => Err(ConfError::Stanza { stanza: s.to_owned(), reason }),
        None => Ok(()),
    }
}

/// A key: written as `key = value` and read back by splitting at the first `=` and trimming,
/// so it must hold no `=`, no surrounding whitespace, and must not look like a header or a
/// comment.
pub fn key(s: &str) -> Result<(), ConfError> {
    let reason = if s.trim().is_empty() {
        Some("is empty or whitespace only")
    } else if s.trim() != s {
        Some("has leading or trailing whitespace")
    } else if s.contains('=') {
        Some("contains '='")
    } else if s.starts_with('[') {
        Some("starts with '[' (would read as a stanza header)")
    } else if s.starts_with('#') {
        Some("starts with '#' (would read as a comment)")
    } else {
        line_breaker(s)
    };
    match reason {
        Some(reason) => Err(ConfError::Key { key: s.to_owned(), reason }),
        None => Ok(()),
    }
}

/// A value: single line, and not ending in `\`, which `.conf` reads as "continues on the
/// next line" and would swallow whatever line follows it.
pub fn value(key: &str, s: &str) -> Result<(), ConfError> {
    let reason = match line_breaker(s) {
        Some(reason) => Some(reason),
        None if s.trim_end().ends_with('\\') => Some("ends with a backslash (a line continuation)"),
        None => None,
    };
    match reason {
        Some(reason) => Err(ConfError::Value { key: key.to_owned(), value: s.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_types() {
        assert!(conf_type("savedsearches").is_ok());
        assert!(conf_type("ui-prefs").is_ok());
        for bad in ["", "a.b", "a/b", "../x", &"x".repeat(65)] {
            assert!(matches!(conf_type(bad), Err(ConfError::ConfType(_))), "{bad}");
        }
    }

    #[test]
    fn app_and_user_names_cannot_escape() {
        assert!(app("search").is_ok());
        assert!(user("jane.doe@example.com").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(matches!(app(bad), Err(ConfError::AppName(_))), "{bad}");
            assert!(matches!(user(bad), Err(ConfError::UserName(_))), "{bad}");
        }
        let err = app("..").unwrap_err().to_string();
        assert!(err.contains("\"..\""), "{err}");
    }

    #[test]
    fn file_names_are_one_component() {
        assert!(file_name("my lookup.csv").is_ok());
        for bad in ["", ".", "..", ".x", "a/b.csv", "../b", "a\\b", &"x".repeat(256)] {
            assert!(matches!(file_name(bad), Err(ConfError::FileName(_))), "{bad}");
        }
    }

    #[test]
    fn stanzas() {
        assert!(stanza("my search [v2]").is_ok());
        assert!(stanza("source::/var/log/*.log").is_ok());
        for bad in ["", "a\nb", "a\rb", "a\0b", &"x".repeat(1025)] {
            assert!(matches!(stanza(bad), Err(ConfError::Stanza { .. })), "{bad:?}");
        }
    }

    #[test]
    fn keys() {
        assert!(key("dispatch.earliest_time").is_ok());
        for bad in ["", "  ", " k", "k ", "a=b", "[a", "#a", "a\nb", "a\rb", "a\0"] {
            assert!(matches!(key(bad), Err(ConfError::Key { .. })), "{bad:?}");
        }
    }

    #[test]
    fn a_value_with_a_newline_is_refused_clearly() {
        let err = value("search", "index=main\n[evil]").unwrap_err();
        assert!(matches!(err, ConfError::Value { reason: "contains a newline", .. }));
        assert!(err.to_string().contains("newline"), "{err}");
        assert!(value("cron", "*/5 * * * *").is_ok());
        assert!(value("k", "").is_ok());
        assert!(value("k", "a\\b").is_ok());
        for bad in ["a\r", "a\0", "ends\\", "ends\\  "] {
            assert!(value("k", bad).is_err(), "{bad:?}");
        }
    }
}
