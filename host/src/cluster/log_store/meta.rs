//! The small durable files beside the segments: `vote`, `committed` and `purged`, each one
//! record (see `record.rs`) replaced atomically (temp file, fsync, rename, fsync directory).
//!
//! Owns only the file mechanics; it never decides when a value may be written (the writer
//! thread orders these writes with appends).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use openraft::{LogId, NodeId, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::LogStoreError;
use super::record::{self, Decoded};

pub(crate) const VOTE_FILE: &str = "vote";
pub(crate) const COMMITTED_FILE: &str = "committed";
pub(crate) const PURGED_FILE: &str = "purged";
const TEMP_SUFFIX: &str = ".tmp";

/// Meta values are tiny; the bound only keeps a damaged length field from being believed.
const MAX_META_BYTES: u32 = 64 * 1024;

/// The three meta values as found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaState<NID: NodeId> {
    pub vote: Option<Vote<NID>>,
    pub committed: Option<LogId<NID>>,
    pub purged: Option<LogId<NID>>,
}

impl<NID: NodeId> MetaState<NID> {
    /// Reads all three files; a missing file means "never written".
    pub(crate) fn load(dir: &Path) -> Result<Self, LogStoreError> {
        Ok(Self {
            vote: read(dir, VOTE_FILE)?,
            committed: read::<Option<LogId<NID>>>(dir, COMMITTED_FILE)?.flatten(),
            purged: read(dir, PURGED_FILE)?,
        })
    }
}

/// Encodes a meta value as the bytes of its file, so the caller can hand them to the writer
/// thread without the writer knowing the value's type.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, LogStoreError> {
    let mut buf = Vec::new();
    record::encode_into(value, 0, MAX_META_BYTES, &mut buf)?;
    Ok(buf)
}

/// Durably replaces `dir/name` with `value`.
#[cfg(test)]
pub(crate) fn write_durable<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), LogStoreError> {
    write_file_durable(dir, name, &encode(value)?)
}

/// Durably replaces `dir/name` with `bytes` (from [`encode`]). When this returns Ok the new
/// value survives a crash; if it fails, the old value is still intact (rename is atomic).
pub(crate) fn write_file_durable(dir: &Path, name: &str, buf: &[u8]) -> Result<(), LogStoreError> {
    let final_path = dir.join(name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|e| LogStoreError::io("create", &temp_path, e))?;
    f.write_all(buf).map_err(|e| LogStoreError::io("write", &temp_path, e))?;
    f.sync_all().map_err(|e| LogStoreError::io("fsync", &temp_path, e))?;
    drop(f);
    fs::rename(&temp_path, &final_path).map_err(|e| LogStoreError::io("rename", &final_path, e))?;
    sync_dir(dir)
}

/// Reads a value written by [`write_file_durable`]. Files are replaced by rename, never torn, so
/// any defect is corruption.
pub(crate) fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, LogStoreError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogStoreError::io("read", &path, e)),
    };
    let corrupt = |reason: String| LogStoreError::Corrupt { file: path.clone(), offset: 0, reason };
    match record::decode(&bytes, MAX_META_BYTES) {
        Decoded::Record { payload, len } if len == bytes.len() => {
            record::decode_payload(payload).map(Some).map_err(|e| corrupt(format!("undecodable: {e}")))
        }
        Decoded::Record { len, .. } => Err(corrupt(format!("{} trailing bytes", bytes.len() - len))),
        Decoded::End => Err(corrupt("empty file".into())),
        Decoded::Defect(d) => Err(corrupt(d.to_string())),
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogStoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LogStoreError::io("fsync directory", dir, e))
}

/// Deletes temp files left by a crash inside [`write_file_durable`]; they were never renamed, so
/// they hold nothing anyone relied on.
pub(crate) fn remove_stale_temps(dir: &Path) -> Result<(), LogStoreError> {
    for name in [VOTE_FILE, COMMITTED_FILE, PURGED_FILE] {
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        match fs::remove_file(&temp) {
            Ok(()) => tracing::info!(file = %temp.display(), "removed stale temp file"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(LogStoreError::io("remove", &temp, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn missing_files_load_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaState::<u64>::load(dir.path()).unwrap();
        assert_eq!(m, MetaState { vote: None, committed: None, purged: None });
    }

    #[test]
    fn values_round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        write_durable(dir.path(), VOTE_FILE, &Vote::new(3, 1u64)).unwrap();
        write_durable(dir.path(), VOTE_FILE, &Vote::new(4, 2u64)).unwrap();
        write_durable(dir.path(), COMMITTED_FILE, &Some(log_id(4, 9))).unwrap();
        write_durable(dir.path(), PURGED_FILE, &log_id(2, 5)).unwrap();
        let m = MetaState::<u64>::load(dir.path()).unwrap();
        assert_eq!(m.vote, Some(Vote::new(4, 2)));
        assert_eq!(m.committed, Some(log_id(4, 9)));
        assert_eq!(m.purged, Some(log_id(2, 5)));
        assert!(!dir.path().join("vote.tmp").exists());
    }

    #[test]
    fn a_damaged_meta_file_is_corrupt_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        write_durable(dir.path(), PURGED_FILE, &log_id(2, 5)).unwrap();
        let path = dir.path().join(PURGED_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = read::<LogId<u64>>(dir.path(), PURGED_FILE).unwrap_err();
        assert!(matches!(err, LogStoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vote.tmp"), b"half").unwrap();
        remove_stale_temps(dir.path()).unwrap();
        assert!(!dir.path().join("vote.tmp").exists());
    }
}
