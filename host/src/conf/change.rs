//! `ConfChange`: one runtime configuration change, the unit the captain's log replicates. This
//! file owns the change types, their validation (every rule a member checks before touching
//! disk) and their one-line display for logs (names clipped, values shown by length only).
//!
//! These types are encoded with postcard as well as JSON, so serde stays externally tagged:
//! no `tag`, `untagged`, `flatten` or `skip_serializing_if`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clip::clip_bare;
use crate::conf::error::ConfError;
use crate::conf::layout;
use crate::conf::names;
use crate::conf::relpath::RelPath;
use crate::conf::scope::Scope;

/// What a change writes in its scope: the local `<conf_type>.conf`, the scope's `local.meta`
/// (permissions), or a named file (lookup table, view XML, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Conf,
    Meta,
    File { name: String },
}

/// The edit itself. Key and stanza ops need a `Conf` or `Meta` target, file ops a `File`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    SetKey {
        stanza: String,
        key: String,
        value: String,
    },
    DeleteKey {
        stanza: String,
        key: String,
    },
    AddStanza {
        stanza: String,
    },
    RemoveStanza {
        stanza: String,
    },
    // Bytes, not a sequence of numbers: a 4 MiB file is one copy, not 4 Mi calls (the
    // encoding is the same in postcard and JSON).
    PutFile {
        #[serde(with = "serde_bytes")]
        content: Vec<u8>,
    },
    DeleteFile,
}

/// One replicated change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChange {
    pub conf_type: String,
    pub scope: Scope,
    pub target: Target,
    pub op: Op,
}

/// The kind of a `Target`, without its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Conf,
    Meta,
    File,
}

/// What a file under the tree is: which conf type, scope and kind of target wrote it. A
/// `local.meta` holds stanzas of many conf types, so its `conf_type` is `""`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfChangeKey {
    pub conf_type: String,
    pub scope: Scope,
    pub target_kind: TargetKind,
}

impl Target {
    /// The kind, for matching and messages.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Conf => TargetKind::Conf,
            Target::Meta => TargetKind::Meta,
            Target::File { .. } => TargetKind::File,
        }
    }
}

impl TargetKind {
    /// A lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Conf => "conf",
            TargetKind::Meta => "meta",
            TargetKind::File => "file",
        }
    }
}

impl Op {
    /// A short verb for messages and display.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::SetKey { .. } => "set",
            Op::DeleteKey { .. } => "delete-key",
            Op::AddStanza { .. } => "add-stanza",
            Op::RemoveStanza { .. } => "remove-stanza",
            Op::PutFile { .. } => "put-file",
            Op::DeleteFile => "delete-file",
        }
    }

    /// The stanza a key or stanza op names (`None` for file ops).
    pub fn stanza(&self) -> Option<&str> {
        match self {
            Op::SetKey { stanza, .. }
            | Op::DeleteKey { stanza, .. }
            | Op::AddStanza { stanza }
            | Op::RemoveStanza { stanza } => Some(stanza),
            Op::PutFile { .. } | Op::DeleteFile => None,
        }
    }

    /// Checks the stanza, key and value an op carries (not its fit with a target).
    pub fn validate_fields(&self) -> Result<(), ConfError> {
        if let Some(stanza) = self.stanza() {
            names::stanza(stanza)?;
        }
        match self {
            Op::SetKey { key, value, .. } => names::key(key).and_then(|()| names::value(key, value)),
            Op::DeleteKey { key, .. } => names::key(key),
            _ => Ok(()),
        }
    }
}

impl ConfChange {
    /// Checks every rule: names, scope/target fit, op/target fit, the op's fields, and that a
    /// meta stanza is about this change's conf type.
    pub fn validate(&self) -> Result<(), ConfError> {
        names::conf_type(&self.conf_type)?;
        self.scope.validate()?;
        let kind = self.target.kind();
        if self.scope == Scope::System && kind != TargetKind::Conf {
            return Err(ConfError::TargetScope { target: kind.name(), scope: self.scope.to_string() });
        }
        let file_op = matches!(self.op, Op::PutFile { .. } | Op::DeleteFile);
        if file_op != (kind == TargetKind::File) {
            return Err(ConfError::OpTarget { op: self.op.verb(), target: kind.name() });
        }
        if let Target::File { name } = &self.target {
            names::file_name(name)?;
            // `local/data/ui/<name>` would collide with the views/nav/html folders.
            if self.conf_type == "ui" {
                return Err(ConfError::ReservedFileType(self.conf_type.clone()));
            }
        }
        self.op.validate_fields()?;
        if let (Target::Meta, Some(stanza)) = (&self.target, self.op.stanza()) {
            let ours = stanza == self.conf_type
                || stanza.strip_prefix(self.conf_type.as_str()).is_some_and(|rest| rest.starts_with('/'));
            if !ours {
                return Err(ConfError::MetaStanza {
                    conf_type: self.conf_type.clone(),
                    stanza: stanza.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The file under the etc root this change writes (validates first).
    pub fn rel_path(&self) -> Result<RelPath, ConfError> {
        self.validate()?;
        layout::target_path(&self.conf_type, &self.scope, &self.target)
    }

    /// What the written file is, as `ConfTree::replicable_files` would classify it.
    pub fn key(&self) -> ConfChangeKey {
        let conf_type = if self.target == Target::Meta { String::new() } else { self.conf_type.clone() };
        ConfChangeKey { conf_type, scope: self.scope.clone(), target_kind: self.target.kind() }
    }
}

/// Shows names clipped with control characters escaped, so a refused change cannot break or
/// flood a log line, and never a value.
impl fmt::Display for ConfChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::Conf => clip_bare(&self.conf_type).to_string(),
            Target::Meta => format!("{}(meta)", clip_bare(&self.conf_type)),
            Target::File { name } => format!("{}:{}", clip_bare(&self.conf_type), clip_bare(name)),
        };
        write!(f, "{} {target} [{}]", self.op.verb(), self.scope)?;
        if let Some(stanza) = self.op.stanza() {
            write!(f, " [{}]", clip_bare(stanza))?;
        }
        match &self.op {
            // The value may be a credential: its length only.
            Op::SetKey { key, value, .. } => write!(f, " {} = ({} bytes)", clip_bare(key), value.len()),
            Op::DeleteKey { key, .. } => write!(f, " {}", clip_bare(key)),
            Op::PutFile { content } => write!(f, " ({} bytes)", content.len()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Scope {
        Scope::App("search".into())
    }

    fn set(target: Target, stanza: &str, key: &str, value: &str) -> ConfChange {
        let op = Op::SetKey { stanza: stanza.into(), key: key.into(), value: value.into() };
        ConfChange { conf_type: "savedsearches".into(), scope: app(), target, op }
    }

    #[test]
    fn display_reads_like_a_log_line() {
        let c = set(Target::Conf, "my search", "cron", "*/5 * * * *");
        assert_eq!(c.to_string(), "set savedsearches [app:search] [my search] cron = (11 bytes)");
        let c = ConfChange {
            conf_type: "lookups".into(),
            scope: app(),
            target: Target::File { name: "a.csv".into() },
            op: Op::PutFile { content: vec![1, 2, 3] },
        };
        assert_eq!(c.to_string(), "put-file lookups:a.csv [app:search] (3 bytes)");
        let bad = set(Target::Conf, "s\nt", "k", "a\nb");
        assert_eq!(bad.to_string(), "set savedsearches [app:search] [s\\nt] k = (3 bytes)");
    }

    /// Regression (issue 14): the display went into logs and `last_error` with the whole value
    /// (which may be a credential) and whole names (a 1 MB stanza).
    #[test]
    fn display_never_shows_a_value_and_cuts_long_names() {
        let c = set(Target::Conf, &"s".repeat(1 << 20), "password", "hunter2-hunter2");
        let line = c.to_string();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.len() < 300 && line.contains("(1048576 bytes)"), "{line}");
    }

    #[test]
    fn newline_in_value_is_refused() {
        let err = set(Target::Conf, "s", "search", "index=main\n[x]").validate().unwrap_err();
        assert!(matches!(err, ConfError::Value { .. }), "{err}");
    }

    #[test]
    fn dotdot_app_is_refused() {
        let mut c = set(Target::Conf, "s", "k", "v");
        c.scope = Scope::App("..".into());
        assert!(matches!(c.validate(), Err(ConfError::AppName(_))));
        assert!(c.rel_path().is_err());
    }

    #[test]
    fn slash_in_file_name_is_refused() {
        let c = ConfChange {
            conf_type: "lookups".into(),
            scope: app(),
            target: Target::File { name: "../../x.csv".into() },
            op: Op::DeleteFile,
        };
        assert!(matches!(c.validate(), Err(ConfError::FileName(_))));
    }

    #[test]
    fn meta_and_file_targets_are_refused_in_system_scope() {
        let mut c = set(Target::Meta, "savedsearches", "access", "read : [ * ]");
        c.scope = Scope::System;
        assert!(matches!(c.validate(), Err(ConfError::TargetScope { target: "meta", .. })));
        let c = ConfChange {
            conf_type: "lookups".into(),
            scope: Scope::System,
            target: Target::File { name: "a.csv".into() },
            op: Op::DeleteFile,
        };
        assert!(matches!(c.validate(), Err(ConfError::TargetScope { target: "file", .. })));
    }

    #[test]
    fn op_target_mismatch_is_refused() {
        let c = set(Target::File { name: "a.csv".into() }, "s", "k", "v");
        assert!(matches!(c.validate(), Err(ConfError::OpTarget { op: "set", target: "file" })));
        let c =
            ConfChange { conf_type: "props".into(), scope: app(), target: Target::Conf, op: Op::DeleteFile };
        assert!(matches!(c.validate(), Err(ConfError::OpTarget { op: "delete-file", target: "conf" })));
    }

    #[test]
    fn meta_stanza_must_be_about_the_conf_type() {
        assert!(set(Target::Meta, "savedsearches", "export", "system").validate().is_ok());
        assert!(set(Target::Meta, "savedsearches/My Search", "export", "system").validate().is_ok());
        for bad in ["props", "savedsearchesX", "savedsearches_x/y", "views/x"] {
            let err = set(Target::Meta, bad, "export", "system").validate().unwrap_err();
            assert!(matches!(err, ConfError::MetaStanza { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn ui_is_reserved_for_files() {
        let c = ConfChange {
            conf_type: "ui".into(),
            scope: app(),
            target: Target::File { name: "views".into() },
            op: Op::DeleteFile,
        };
        assert!(matches!(c.validate(), Err(ConfError::ReservedFileType(_))));
    }

    #[test]
    fn serde_round_trips_externally_tagged() {
        let c = set(Target::File { name: "x".into() }, "s", "k", "v");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""target":{"file":{"name":"x"}}"#), "{json}");
        assert!(json.contains(r#""op":{"set_key":{"#), "{json}");
        assert_eq!(serde_json::from_str::<ConfChange>(&json).unwrap(), c);
        let del = ConfChange { op: Op::DeleteFile, ..c };
        let json = serde_json::to_string(&del).unwrap();
        assert!(json.contains(r#""op":"delete_file""#), "{json}");
    }

    #[test]
    fn key_of_a_meta_change_has_no_conf_type() {
        let c = set(Target::Meta, "savedsearches", "export", "system");
        assert_eq!(c.key().conf_type, "");
        assert_eq!(c.key().target_kind, TargetKind::Meta);
    }
}
