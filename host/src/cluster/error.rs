//! What can go wrong in the cluster layer, as values a caller (the REST API, the CLI) can
//! match and show.

use std::path::{Path, PathBuf};

use super::client::CallError;
use super::log_store::LogStoreError;
use super::outbox::OutboxError;
use super::rpc::Refusal;
use super::types::StorageError;
use crate::conf::ConfError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "this host is not in a cluster (run `tandem cluster init` on the first member, then `tandem cluster add-member` there)"
    )]
    NotInCluster,
    #[error("this host already belongs to cluster {cluster_id}{}", if *.removed { " and was removed from it; run `tandem cluster clean` on it first" } else { "" })]
    AlreadyMember { cluster_id: String, removed: bool },
    #[error("no captain is reachable")]
    NoCaptain,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("commit log: {0}")]
    Log(#[from] LogStoreError),
    #[error("state machine: {0}")]
    Storage(Box<StorageError>),
    #[error("raft: {0}")]
    Raft(String),
    #[error("plugin: {0}")]
    Plugin(#[from] crate::plugin::PluginError),
    #[error("invalid cluster settings: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Invalid(String),
    /// `cluster resync --destructive` did not complete; nothing was discarded.
    #[error("destructive resync failed; this member is unchanged ({pending} pending changes kept): {cause}")]
    ResyncFailed { pending: usize, cause: String },
    /// A change batch the commit log cannot hold (refused before raft sees it).
    #[error(transparent)]
    TooLarge(#[from] super::limits::TooLarge),
}

impl ClusterError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

impl From<StorageError> for ClusterError {
    fn from(e: StorageError) -> Self {
        Self::Storage(Box::new(e))
    }
}
