//! The configuration model's error type: one enum a caller can match, each variant naming the
//! offending value so a refused change explains itself in a log line or an API response.
//!
//! `ConfError` is `Clone` (I/O errors are shared behind an `Arc`) because a batch reports one
//! failure to every change that targeted the same file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clip::{clip, clip_bare};

/// Everything that can go wrong validating, applying, reading or snapshotting configuration.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfError {
    #[error("invalid conf type {}: expected 1-64 characters from [A-Za-z0-9_-]", clip(.0))]
    ConfType(String),
    #[error("invalid app name {}: expected 1-128 characters from [A-Za-z0-9_.@-], not starting with '.'", clip(.0))]
    AppName(String),
    #[error("invalid user name {}: expected 1-128 characters from [A-Za-z0-9_.@-], not starting with '.'", clip(.0))]
    UserName(String),
    #[error(
        "invalid file name {}: expected one path component of 1-255 characters from \
         [A-Za-z0-9_.@ -], not starting with '.'",
        clip(.0)
    )]
    FileName(String),
    #[error("invalid stanza name {}: {reason}", clip(stanza))]
    Stanza { stanza: String, reason: &'static str },
    #[error("invalid key {}: {reason}", clip(key))]
    Key { key: String, reason: &'static str },
    /// The value itself is never shown: it may be a credential.
    #[error("invalid value for key {} ({} bytes): {reason}", clip(key), value.len())]
    Value { key: String, value: String, reason: &'static str },
    #[error(
        "meta stanza {} is not about conf type {}: expected [{}] or [{}/<object>]",
        clip(stanza),
        clip(conf_type),
        clip_bare(conf_type),
        clip_bare(conf_type)
    )]
    MetaStanza { conf_type: String, stanza: String },
    #[error("a {target} target is not allowed in {scope} scope")]
    TargetScope { target: &'static str, scope: String },
    #[error("operation {op} does not apply to a {target} target")]
    OpTarget { op: &'static str, target: &'static str },
    #[error("conf type {} cannot hold files: its folder holds the views, nav and html folders", clip(.0))]
    ReservedFileType(String),
    #[error("invalid relative path {}: {reason}", clip(path))]
    RelPath { path: String, reason: &'static str },
    /// The line itself is not shown: it may hold a credential (a mistyped `password = ...`).
    #[error("line {line_no} ({} bytes): not a stanza header, comment or key = value line", line.len())]
    Parse { line_no: usize, line: String },
    #[error(
        "{}: line {line_no} ({} bytes): not a stanza header, comment or key = value line",
        clip_bare(path),
        line.len()
    )]
    ParseFile { path: String, line_no: usize, line: String },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("refusing to go through symlink {}", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: Arc<io::Error> },
    #[error("snapshot entry {} refused: {reason}", clip(path))]
    SnapshotEntry { path: String, reason: &'static str },
    #[error("snapshot exceeds the cap of {limit} unpacked bytes (cluster.max_snapshot_bytes)")]
    SnapshotTooLarge { limit: u64 },
    #[error("snapshot has no metadata entry")]
    SnapshotNoMeta,
    #[error("snapshot is not a readable tar+zstd stream: {0}")]
    SnapshotCorrupt(String),
}

impl ConfError {
    /// Whether the error depends on this member's disk rather than on the change (which every
    /// member would refuse alike).
    pub fn is_local_failure(&self) -> bool {
        !matches!(
            self,
            ConfError::ConfType { .. }
                | ConfError::AppName { .. }
                | ConfError::UserName { .. }
                | ConfError::FileName { .. }
                | ConfError::Stanza { .. }
                | ConfError::Key { .. }
                | ConfError::Value { .. }
                | ConfError::MetaStanza { .. }
                | ConfError::TargetScope { .. }
                | ConfError::OpTarget { .. }
                | ConfError::ReservedFileType { .. }
                | ConfError::RelPath { .. }
        )
    }

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
    fn messages_name_the_offending_key_but_never_show_the_value() {
        let err = ConfError::Value { key: "cron".into(), value: "a\nb".into(), reason: "contains a newline" };
        assert_eq!(err.to_string(), r#"invalid value for key "cron" (3 bytes): contains a newline"#);
    }

    /// Regression (issue 14): a 1 MB name came back whole in the API answer and in `last_error`.
    #[test]
    fn a_huge_name_is_cut_in_the_message() {
        let err = ConfError::Stanza { stanza: "s".repeat(1 << 20), reason: "too long" };
        let text = err.to_string();
        assert!(text.len() < 200 && text.contains("(1048576 bytes)"), "{text}");
    }
}
