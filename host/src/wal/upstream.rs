//! Whose WAL the archive holds: the primary cluster's system identifier, its server version and
//! segment size, as the receiver learnt them from the primary (IDENTIFY_SYSTEM, the startup
//! parameters, `SHOW wal_segment_size`). Kept in a small durable file beside the archive so the
//! walsender can answer a standby while the primary is unreachable, and so the receiver refuses
//! to mix WAL of another cluster into the archive.
//!
//! Owns the file `upstream.json`. Must never be replaced by the identity of a different cluster
//! without the operator removing the archive first.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lsn::WalSegmentSize;

/// File name, in the WAL state folder (beside the archive folder).
pub const UPSTREAM_FILE: &str = "upstream.json";

/// The primary cluster the archived WAL comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamIdentity {
    /// `pg_control_system().system_identifier`: every server of one cluster shares it.
    pub system_id: u64,
    /// The primary's `server_version` parameter ("15.8"), reported to standbys as ours.
    pub server_version: String,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

/// Errors reading or writing the identity file.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a tandem upstream file: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "the WAL archive holds cluster {have}, the primary is cluster {got}: remove the archive \
         (and rebuild the standby) to follow a different cluster"
    )]
    OtherCluster { have: u64, got: u64 },
}

impl UpstreamIdentity {
    /// The segment size as a checked value.
    pub fn segment_size(&self) -> Result<WalSegmentSize, String> {
        WalSegmentSize::new(self.segment_size).map_err(|e| e.to_string())
    }

    /// The identity stored in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>, UpstreamError> {
        let path = dir.join(UPSTREAM_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(UpstreamError::Io { path, source }),
        };
        let id: Self = serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Malformed { path: path.clone(), why: e.to_string() })?;
        id.segment_size().map_err(|why| UpstreamError::Malformed { path, why })?;
        Ok(Some(id))
    }

    /// Records `self` in `dir` durably. Refuses if `dir` already holds another cluster's
    /// identity; a new server version of the same cluster replaces the old one.
    pub fn store(&self, dir: &Path) -> Result<(), UpstreamError> {
        if let Some(have) = Self::load(dir)? {
            if have.system_id != self.system_id {
                return Err(UpstreamError::OtherCluster { have: have.system_id, got: self.system_id });
            }
            if &have == self {
                return Ok(());
            }
        }
        let path = dir.join(UPSTREAM_FILE);
        let json = serde_json::to_vec_pretty(self).expect("plain struct serialises");
        crate::durable::write_private(&path, &json).map_err(|source| UpstreamError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(system_id: u64, version: &str) -> UpstreamIdentity {
        UpstreamIdentity { system_id, server_version: version.into(), segment_size: 16 << 20 }
    }

    #[test]
    fn stores_loads_and_refuses_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(UpstreamIdentity::load(dir.path()).unwrap(), None);
        id(7, "15.8").store(dir.path()).unwrap();
        assert_eq!(UpstreamIdentity::load(dir.path()).unwrap(), Some(id(7, "15.8")));
        id(7, "15.9").store(dir.path()).unwrap();
        assert_eq!(UpstreamIdentity::load(dir.path()).unwrap(), Some(id(7, "15.9")));
        let err = id(8, "15.9").store(dir.path()).unwrap_err();
        assert!(matches!(err, UpstreamError::OtherCluster { have: 7, got: 8 }), "{err}");
        assert_eq!(UpstreamIdentity::load(dir.path()).unwrap(), Some(id(7, "15.9")));
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UPSTREAM_FILE), b"{\"system_id\": 1").unwrap();
        let err = UpstreamIdentity::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a tandem upstream file"), "{err}");
    }
}
