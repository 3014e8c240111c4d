//! openraft's storage-v2 traits (`RaftLogReader`, `RaftLogStorage`) on [`LogStore`]: thin
//! adapters that convert [`LogStoreError`](super::LogStoreError) to openraft's `StorageError`.
//!
//! No logic lives here; if an adapter grows a branch, it belongs in `store.rs`.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::store::LogStore;

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        Ok(self.entries(range))
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        Ok(self.entries_within(start, end))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    /// Replication reads share the in-memory log.
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        Ok(self.log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        LogStore::save_vote(self, vote)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.vote())
    }

    // `save_committed` / `read_committed` keep openraft's defaults (not saved): openraft awaits
    // that write inside its core loop on every commit, which cost two fsyncs per commit and
    // capped single-change commits at ~1,750/s here. The state machine saves its own applied
    // id, so nothing committed is lost; a restarted member learns the commit index from the
    // captain.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_with(entries, move |result| callback.log_io_completed(result))
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.truncate_from(log_id.clone())
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.purge_upto(log_id.clone())
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::Suite;

    use super::super::LogStoreConfig;
    use super::super::test_support::{TestBuilder, TestConfig, entries, log_id, open};
    use super::*;

    /// openraft's own conformance suite for log stores (a fresh temp dir per case).
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(TestBuilder).unwrap();
    }

    #[tokio::test]
    async fn trait_calls_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store.blocking_append(entries(1, 0..5, 10)).await.unwrap();
            RaftLogStorage::save_vote(&mut store, &Vote::new(1, 0)).await.unwrap();
            store.save_committed(Some(log_id(1, 3))).await.unwrap();
            RaftLogStorage::truncate(&mut store, log_id(1, 4)).await.unwrap();
            RaftLogStorage::purge(&mut store, log_id(1, 1)).await.unwrap();
        }
        let mut store: LogStore<TestConfig> = open(dir.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
        assert_eq!(state.last_log_id, Some(log_id(1, 3)));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
        // The store keeps a committed id if asked, but openraft is not told it (see above).
        assert_eq!(store.committed(), Some(log_id(1, 3)));
        assert_eq!(store.read_committed().await.unwrap(), None);
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(..).await.unwrap(), entries(1, 2..4, 10));
    }

    /// A replication read of large entries clones a bounded amount, one entry at least (the
    /// captain cloned a whole range of 15 MB entries per send to a new member).
    #[tokio::test]
    async fn a_replication_read_stops_at_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogStoreConfig { max_read_bytes: 2500, ..LogStoreConfig::for_test() };
        let mut store: LogStore<TestConfig> = LogStore::open(dir.path(), config).unwrap();
        store.blocking_append(entries(1, 1..9, 1000)).await.unwrap();
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.limited_get_log_entries(1, 9).await.unwrap(), entries(1, 1..3, 1000));
        assert_eq!(reader.limited_get_log_entries(8, 9).await.unwrap(), entries(1, 8..9, 1000));
        assert_eq!(reader.limited_get_log_entries(5, 5).await.unwrap(), vec![]);
        let one_large = LogStoreConfig { max_read_bytes: 10, ..LogStoreConfig::for_test() };
        drop((reader, store));
        let mut store: LogStore<TestConfig> = LogStore::open(dir.path(), one_large).unwrap();
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.limited_get_log_entries(3, 9).await.unwrap(), entries(1, 3..4, 1000));
    }
}
