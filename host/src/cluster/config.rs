//! Settings of the captain commit log (`[cluster]` in tandem.toml).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The captain sends a heartbeat this often, ms.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// A follower that hears nothing from the captain for this long (randomised up to a third
/// more) calls an election, ms. Far above a log append (an fsync: ~1-10 ms here).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 800;
/// A change forwarded to the captain that is not committed within this time is kept in the
/// outbox and applied locally, ms.
pub const DEFAULT_COMMIT_TIMEOUT_MS: u64 = 3_000;
/// How often pending local changes are offered to the captain, ms.
pub const DEFAULT_RETRY_MS: u64 = 250;
/// How often the purge plugin is asked how much history may go, ms (the seed: hourly).
pub const DEFAULT_PURGE_PERIOD_MS: u64 = 3_600_000;
/// How often applied changes are made durable on this member (the log already is), ms.
pub const DEFAULT_CHECKPOINT_MS: u64 = 1_000;
/// Entries per append RPC.
pub const DEFAULT_MAX_PAYLOAD_ENTRIES: u64 = 300;
/// Entry bytes per append RPC (an entry larger than this still goes, alone). A send is not
/// bounded by the heartbeat (see `append_timeout_ms`); the budget bounds memory per send and
/// how much is sent again when a send fails.
pub const DEFAULT_MAX_APPEND_BYTES: u64 = 4 * 1024 * 1024;
/// Time allowed for one append RPC that carries entries, ms. openraft gives each send one
/// heartbeat; a send that takes longer goes on in the background and openraft's next attempt
/// waits for it, up to this long.
pub const DEFAULT_APPEND_TIMEOUT_MS: u64 = 30_000;
/// Time allowed for one step of a snapshot transfer, ms: building it and sending its first
/// chunk, one chunk, or installing it once the last chunk arrived.
pub const DEFAULT_SNAPSHOT_TIMEOUT_MS: u64 = 60_000;
/// Time a joining member (or a destructive resync) has to download and install the captain's
/// whole snapshot, ms. It grows with the conf tree (1 GiB at 20 MB/s: under a minute; a debug
/// build or a slow link: several), so it is separate from the per-chunk `snapshot_timeout_ms`,
/// which still stops a download that makes no progress.
pub const DEFAULT_JOIN_TIMEOUT_MS: u64 = 1_800_000;
/// Bytes of a snapshot per message (openraft's install chunks, a joining member's download).
/// A chunk is the unit of resume after a cut and of memory per transfer on both ends.
pub const DEFAULT_SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Largest snapshot (unpacked: file bytes plus per-file framing) this member builds, accepts
/// or installs; the packed file it receives is bounded by the same number (see
/// `conf::snapshot::max_packed_bytes`). Every member should have the same value.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = crate::conf::snapshot::DEFAULT_MAX_UNPACKED_BYTES;
/// Smallest chunk allowed (a chunk per round trip must still move data at link speed).
const MIN_SNAPSHOT_CHUNK_BYTES: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The conf tree this member replicates (the seed's `$SPLUNK_HOME/etc`). Unset:
    /// `<data_dir>/etc`.
    pub conf_root: Option<std::path::PathBuf>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub commit_timeout_ms: u64,
    pub retry_ms: u64,
    pub purge_period_ms: u64,
    pub checkpoint_ms: u64,
    pub max_payload_entries: u64,
    pub max_append_bytes: u64,
    pub append_timeout_ms: u64,
    pub snapshot_timeout_ms: u64,
    pub snapshot_chunk_bytes: u64,
    pub max_snapshot_bytes: u64,
    pub join_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            conf_root: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            commit_timeout_ms: DEFAULT_COMMIT_TIMEOUT_MS,
            retry_ms: DEFAULT_RETRY_MS,
            purge_period_ms: DEFAULT_PURGE_PERIOD_MS,
            checkpoint_ms: DEFAULT_CHECKPOINT_MS,
            max_payload_entries: DEFAULT_MAX_PAYLOAD_ENTRIES,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            append_timeout_ms: DEFAULT_APPEND_TIMEOUT_MS,
            snapshot_timeout_ms: DEFAULT_SNAPSHOT_TIMEOUT_MS,
            snapshot_chunk_bytes: DEFAULT_SNAPSHOT_CHUNK_BYTES,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            join_timeout_ms: DEFAULT_JOIN_TIMEOUT_MS,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= 3 * self.heartbeat_ms {
            return Err(format!(
                "cluster.election_timeout_ms ({}) must be more than 3 heartbeats (cluster.heartbeat_ms = {})",
                self.election_timeout_ms, self.heartbeat_ms
            ));
        }
        for (name, v) in [
            ("commit_timeout_ms", self.commit_timeout_ms),
            ("retry_ms", self.retry_ms),
            ("purge_period_ms", self.purge_period_ms),
            ("checkpoint_ms", self.checkpoint_ms),
            ("max_payload_entries", self.max_payload_entries),
            ("max_append_bytes", self.max_append_bytes),
            ("append_timeout_ms", self.append_timeout_ms),
            ("snapshot_timeout_ms", self.snapshot_timeout_ms),
            ("join_timeout_ms", self.join_timeout_ms),
        ] {
            if v == 0 {
                return Err(format!("cluster.{name} must be above 0"));
            }
        }
        if self.snapshot_chunk_bytes < MIN_SNAPSHOT_CHUNK_BYTES {
            return Err(format!(
                "cluster.snapshot_chunk_bytes = {}: at least {MIN_SNAPSHOT_CHUNK_BYTES}",
                self.snapshot_chunk_bytes
            ));
        }
        if self.max_snapshot_bytes < 1 << 20 {
            return Err(format!("cluster.max_snapshot_bytes = {}: at least 1 MiB", self.max_snapshot_bytes));
        }
        Ok(())
    }

    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }

    pub fn append_timeout(&self) -> Duration {
        Duration::from_millis(self.append_timeout_ms)
    }

    pub fn snapshot_timeout(&self) -> Duration {
        Duration::from_millis(self.snapshot_timeout_ms)
    }

    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_ms)
    }

    /// openraft's configuration: no automatic snapshots and no automatic purge; both happen
    /// when the purge plugin says so (the host snapshots first, then purges).
    ///
    /// Election timing: an openraft follower that has heard a captain waits its leader lease
    /// (`election_timeout_max`) plus its own election timeout (drawn once in
    /// `[election_timeout_min, election_timeout_max)`) before it calls an election, and
    /// refuses to vote for anyone until its lease is over. Passing `election_timeout_ms` as
    /// the minimum and twice it as the maximum made that 2.4-3.2 s for the documented 800 ms.
    /// With a maximum of two thirds and a minimum of one third, a follower calls an election
    /// `election_timeout_ms` to 4/3 of it after the last heartbeat, and the others' leases are
    /// over by then.
    pub fn raft(&self, cluster_name: &str) -> Result<openraft::Config, String> {
        let (min, max) = election_bounds(self.election_timeout_ms);
        openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: min,
            election_timeout_max: max,
            max_payload_entries: self.max_payload_entries,
            install_snapshot_timeout: self.snapshot_timeout_ms,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }

    pub fn for_test() -> Self {
        Self { heartbeat_ms: 50, election_timeout_ms: 300, retry_ms: 100, ..Self::default() }
    }
}

/// openraft's `(election_timeout_min, election_timeout_max)` for a first election between
/// `timeout` and 4/3 of it after the captain went silent (lease `max` + draw in `[min, max)`).
fn election_bounds(timeout: u64) -> (u64, u64) {
    let min = timeout / 3;
    (min, timeout - min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_elects_between_the_timeout_and_a_third_more() {
        let c = ClusterConfig::default();
        let raft = c.raft("x").unwrap();
        // openraft waits lease (= max) + a draw in [min, max).
        let (first, last) =
            (raft.election_timeout_max + raft.election_timeout_min, 2 * raft.election_timeout_max);
        assert!(first >= c.election_timeout_ms && first <= c.election_timeout_ms + 1, "{first}");
        assert!(last <= c.election_timeout_ms * 4 / 3 + 2, "{last}");
        assert!(raft.election_timeout_min > raft.heartbeat_interval);
        let tight = ClusterConfig { election_timeout_ms: 300, ..c };
        assert!(tight.validate().is_err());
    }
}
