//! Test-only fixtures: a raft type config, entry builders, a minimal in-memory state machine
//! and the `StoreBuilder` that openraft's storage suite drives.
//!
//! Never compiled outside tests; the host's real state machine lives elsewhere.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::StoreBuilder;
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId,
    OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use super::{LogStore, LogStoreConfig};

/// Application data of the test config: opaque bytes, so tests can size entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub payload: Vec<u8>,
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = Request,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type TestEntry = Entry<TestConfig>;

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// A normal entry whose payload is `payload_len` bytes derived from its index.
pub fn entry(term: u64, index: u64, payload_len: usize) -> TestEntry {
    let payload = (0..payload_len).map(|i| (index as usize + i) as u8).collect();
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Request { payload }) }
}

/// Entries `range` of `term`, each with a `payload_len`-byte payload.
pub fn entries(term: u64, range: std::ops::Range<u64>, payload_len: usize) -> Vec<TestEntry> {
    range.map(|i| entry(term, i, payload_len)).collect()
}

/// Appends and waits until the entries are durable.
pub async fn append(store: &LogStore<TestConfig>, entries: Vec<TestEntry>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .append_with(entries, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.await.unwrap().unwrap();
}

/// Appends from synchronous code and waits until the entries are durable.
pub fn append_blocking(store: &LogStore<TestConfig>, entries: Vec<TestEntry>) {
    let (tx, rx) = std::sync::mpsc::channel();
    store
        .append_with(entries, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv().unwrap().unwrap();
}

/// Opens the store in `dir`. A store just dropped may still hold the directory's lock for a
/// moment: when the last reference went with a completion callback on the writer thread, that
/// thread closes the lock file as it exits, after the test thread moved on (seen under load).
pub fn open(dir: &std::path::Path) -> LogStore<TestConfig> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match LogStore::open(dir, LogStoreConfig::for_test()) {
            Err(super::LogStoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}

#[derive(Debug, Default)]
struct SmState {
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    applied: Vec<Request>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

/// In-memory state machine: just enough for openraft's storage suite.
#[derive(Debug, Clone, Default)]
pub struct TestStateMachine {
    inner: Arc<Mutex<SmState>>,
}

impl RaftSnapshotBuilder<TestConfig> for TestStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<u64>> {
        let mut s = self.inner.lock().unwrap();
        let data = postcard::to_allocvec(&s.applied)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let meta = SnapshotMeta {
            last_log_id: s.last_applied,
            last_membership: s.last_membership.clone(),
            snapshot_id: format!("{:?}-{}", s.last_applied, s.applied.len()),
        };
        s.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TestConfig> for TestStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let s = self.inner.lock().unwrap();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = TestEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = self.inner.lock().unwrap();
        let mut replies = Vec::new();
        for e in entries {
            s.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(r) => s.applied.push(r),
                EntryPayload::Membership(m) => s.last_membership = StoredMembership::new(Some(e.log_id), m),
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let applied = postcard::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let mut s = self.inner.lock().unwrap();
        s.last_applied = meta.last_log_id;
        s.last_membership = meta.last_membership.clone();
        s.applied = applied;
        s.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TestConfig>>, StorageError<u64>> {
        let s = self.inner.lock().unwrap();
        Ok(s.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

/// Fresh store in a fresh temp dir per suite test; the `TempDir` is the guard.
pub struct TestBuilder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, TestStateMachine, TempDir> for TestBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<TestConfig>, TestStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        // The suite appends index 3 right after 1 in one case.
        let config = LogStoreConfig { lenient_appends: true, ..LogStoreConfig::for_test() };
        let store = LogStore::open(dir.path(), config)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok((dir, store, TestStateMachine::default()))
    }
}

/// Compile-time check that the store satisfies openraft's storage bound.
#[allow(dead_code)]
fn assert_log_storage<S: RaftLogStorage<TestConfig>>() {}
#[allow(dead_code)]
fn assert_store_is_log_storage() {
    assert_log_storage::<LogStore<TestConfig>>();
}
