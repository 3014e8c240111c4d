//! The configuration model's error type: one enum a caller can match, each variant naming the
//! offending value so a refused change explains itself in a log line or an API response.
//!
//! `ConfError` is `Clone` (I/O errors are shared behind an `Arc`) because a batch reports one
//! failure to every change that targeted the same file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong validating, applying, reading or snapshotting configuration.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfError {
    #[error("invalid conf type {0:?}: expected 1-64 characters from [A-Za-z0-9_-]")]
    ConfType(String),
    #[error("invalid app name {0:?}: expected 1-128 characters from [A-Za-z0-9_.@-], not starting with '.'")]
    AppName(String),
    #[error("invalid user name {0:?}: expected 1-128 characters from [A-Za-z0-9_.@-], not starting with '.'")]
    UserName(String),
    #[error(
        "invalid file name {0:?}: expected one path component of 1-255 characters from \
         [A-Za-z0-9_.@ -], not starting with '.'"
    )]
    FileName(String),
    #[error("invalid stanza name {stanza:?}: {reason}")]
    Stanza { stanza: String, reason: &'static str },
    #[error("invalid key {key:?}: {reason}")]
    Key { key: String, reason: &'static str },
    #[error("invalid value {value:?} for key {key:?}: {reason}")]
    Value { key: String, value: String, reason: &'static str },
    #[error(
        "meta stanza {stanza:?} is not about conf type {conf_type:?}: expected [{conf_type}] or [{conf_type}/<object>]"
    )]
    MetaStanza { conf_type: String, stanza: String },
    #[error("a {target} target is not allowed in {scope} scope")]
    TargetScope { target: &'static str, scope: String },
    #[error("operation {op} does not apply to a {target} target")]
    OpTarget { op: &'static str, target: &'static str },
    #[error("conf type {0:?} cannot hold files: its folder holds the views, nav and html folders")]
    ReservedFileType(String),
    #[error("invalid relative path {path:?}: {reason}")]
    RelPath { path: String, reason: &'static str },
    #[error("line {line_no}: not a stanza header, comment or key = value line: {line:?}")]
    Parse { line_no: usize, line: String },
    #[error("{path}: line {line_no}: not a stanza header, comment or key = value line: {line:?}")]
    ParseFile { path: String, line_no: usize, line: String },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("refusing to go through symlink {}", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: Arc<io::Error> },
    #[error("snapshot entry {path:?} refused: {reason}")]
    SnapshotEntry { path: String, reason: &'static str },
    #[error("snapshot exceeds the cap of {limit} unpacked bytes")]
    SnapshotTooLarge { limit: u64 },
    #[error("snapshot has no metadata entry")]
    SnapshotNoMeta,
    #[error("snapshot is not a readable tar+zstd stream: {0}")]
    SnapshotCorrupt(String),
}

impl ConfError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        ConfError::Io { path: path.to_path_buf(), source: Arc::new(source) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn io_error_keeps_its_source_and_path() {
        let err = ConfError::io(Path::new("/x/y"), io::Error::other("disk on fire"));
        assert!(err.to_string().contains("/x/y"));
        assert!(err.source().is_some());
        // Clone shares the same source, so a batch can hand it to every change of a file.
        assert_eq!(err.clone().to_string(), err.to_string());
    }

    #[test]
    fn messages_name_the_offending_value() {
        let err = ConfError::Value { key: "cron".into(), value: "a\nb".into(), reason: "contains a newline" };
        assert!(err.to_string().contains(r#""a\nb""#), "{err}");
    }
}
