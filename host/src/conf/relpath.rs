//! `RelPath`: a validated path relative to the etc root. Every path tandem reads or writes
//! under the root, and every snapshot entry, goes through this type, so "cannot escape the
//! root" is checked in one place (plus the symlink checks of `fsio`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conf::error::ConfError;

const MAX_REL_PATH: usize = 4096;

/// A relative path with `/` separators: no leading `/`, no empty, `.` or `..` component, no
/// NUL or backslash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `path`.
    pub fn new(path: impl Into<String>) -> Result<Self, ConfError> {
        let path = path.into();
        let reason = if path.is_empty() {
            Some("is empty")
        } else if path.len() > MAX_REL_PATH {
            Some("is longer than 4096 bytes")
        } else if path.starts_with('/') {
            Some("is absolute")
        } else if path.contains('\0') || path.contains('\\') {
            Some("contains a NUL byte or a backslash")
        } else if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            Some("has an empty, '.' or '..' component")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ConfError::RelPath { path, reason }),
            None => Ok(RelPath(path)),
        }
    }

    /// The path as text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path, to join onto the root.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = ConfError;
    fn try_from(path: String) -> Result<Self, ConfError> {
        RelPath::new(path)
    }
}

impl From<RelPath> for String {
    fn from(path: RelPath) -> String {
        path.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let p = RelPath::new("apps/search/local/savedsearches.conf").unwrap();
        assert_eq!(p.to_string(), "apps/search/local/savedsearches.conf");
        assert_eq!(p.as_path(), Path::new("apps/search/local/savedsearches.conf"));
        assert_eq!(p.components().count(), 4);
    }

    #[test]
    fn refuses_escapes() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a\0b"] {
            assert!(matches!(RelPath::new(bad), Err(ConfError::RelPath { .. })), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<RelPath>(r#""../x""#).is_err());
        let p: RelPath = serde_json::from_str(r#""system/local/a.conf""#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""system/local/a.conf""#);
    }
}
