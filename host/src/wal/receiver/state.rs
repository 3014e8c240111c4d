//! What the receiver knows about itself, published on a watch for the status API and logs:
//! connection state, positions on the primary's side, the last WAL and the last error. Also
//! the arrival times of WAL, from which the standby's lag in seconds is computed.
//!
//! Owns no I/O. Must never hold a lock across an await.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::wal::lsn::{Lsn, TimeLineId};

/// Arrival records kept for lag in seconds (older ones are folded away).
const LAG_RECORDS: usize = 4096;

/// Where the receiver stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Not started yet, or learning the primary's identity.
    #[default]
    Starting,
    /// Connecting (or waiting to retry after `last_error`).
    Connecting,
    /// START_REPLICATION is running.
    Streaming,
    /// The archive is at its disk cap: tandem takes no WAL and the slot holds it on the
    /// primary until the standby replays and retention frees space.
    CapReached,
    /// The archive's filesystem is full: as at the cap, until it has room for a segment again.
    DiskFull,
    /// The archive refused WAL for good (another cluster, a failed fsync): an operator must act.
    Failed,
    /// Shut down.
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Connecting => "connecting",
            Phase::Streaming => "streaming",
            Phase::CapReached => "archive-full",
            Phase::DiskFull => "archive-disk-full",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
        }
    }
}

/// The receiver's published state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiverState {
    pub phase: Phase,
    /// The primary's address as configured.
    pub primary: String,
    pub slot: String,
    /// Timeline being streamed (0 before the first connection).
    pub timeline: TimeLineId,
    /// The primary's WAL end as it last said (XLogData or keepalive).
    pub primary_end: Lsn,
    /// End of WAL received (written to the archive, maybe not yet flushed).
    pub received: Lsn,
    /// When the primary last said anything.
    pub last_message_at: Option<SystemTime>,
    /// When the last WAL arrived, and the primary's clock when it sent it.
    pub last_wal_at: Option<SystemTime>,
    pub last_wal_sent_at: Option<SystemTime>,
    /// Streaming since.
    pub connected_since: Option<SystemTime>,
    /// Connections made since start.
    pub connections: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// When streaming worked again after `last_error`: the error is history, kept for context.
    pub last_error_resolved_at: Option<SystemTime>,
}

impl ReceiverState {
    /// Records `error` as the current one (unless it is the current one already).
    pub fn set_error(&mut self, error: String) {
        if self.last_error.as_ref() == Some(&error) && self.last_error_resolved_at.is_none() {
            return;
        }
        self.last_error = Some(error);
        self.last_error_at = Some(SystemTime::now());
        self.last_error_resolved_at = None;
    }

    /// Streaming works: the last error, if any, no longer applies.
    pub fn resolve_error(&mut self) {
        if self.last_error.is_some() && self.last_error_resolved_at.is_none() {
            self.last_error_resolved_at = Some(SystemTime::now());
        }
    }
}

/// When WAL positions arrived, to turn a byte lag into seconds: the standby is as far behind
/// as the oldest WAL it has not replayed is old.
#[derive(Debug, Default)]
pub struct ArrivalTimes {
    records: VecDeque<(Lsn, SystemTime)>,
}

impl ArrivalTimes {
    /// WAL up to `end` arrived at `at`.
    pub fn record(&mut self, end: Lsn, at: SystemTime) {
        if self.records.back().is_some_and(|&(l, _)| l >= end) {
            return;
        }
        if self.records.len() == LAG_RECORDS {
            // Thin: the second record goes and the third takes its (earlier) time, so a lag is
            // only ever overstated by the thinning, never understated.
            if let Some((_, at)) = self.records.remove(1)
                && let Some(next) = self.records.get_mut(1)
            {
                next.1 = at;
            }
        }
        self.records.push_back((end, at));
    }

    /// How far behind a reader that has applied up to `applied` is at `now`, given the archive
    /// holds WAL up to `flushed`: zero when it has everything; `None` when it lacks WAL whose
    /// arrival this process did not see (it arrived before a restart).
    pub fn lag(&mut self, applied: Lsn, flushed: Lsn, now: SystemTime) -> Option<Duration> {
        while self.records.front().is_some_and(|&(l, _)| l <= applied) {
            self.records.pop_front();
        }
        match self.records.front() {
            // The first record past `applied` is the oldest WAL not applied yet.
            Some(&(_, at)) => Some(now.duration_since(at).unwrap_or_default()),
            None if applied >= flushed => Some(Duration::ZERO),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_unapplied_wal() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut a = ArrivalTimes::default();
        a.record(Lsn(100), t0);
        a.record(Lsn(200), t0 + Duration::from_secs(2));
        a.record(Lsn(150), t0 + Duration::from_secs(3)); // never backwards
        let now = t0 + Duration::from_secs(5);
        assert_eq!(a.lag(Lsn(50), Lsn(200), now), Some(Duration::from_secs(5)));
        assert_eq!(a.lag(Lsn(100), Lsn(200), now), Some(Duration::from_secs(3)));
        assert_eq!(a.lag(Lsn(200), Lsn(200), now), Some(Duration::ZERO));
        // Behind WAL that arrived before this process started: unknown, not zero.
        assert_eq!(ArrivalTimes::default().lag(Lsn(10), Lsn(99), now), None);
    }

    #[test]
    fn an_error_is_resolved_once_and_a_new_one_is_current_again() {
        let mut s = ReceiverState::default();
        s.resolve_error();
        assert_eq!(s.last_error_resolved_at, None, "nothing to resolve");
        s.set_error("refused".into());
        let at = s.last_error_at;
        s.set_error("refused".into());
        assert_eq!(s.last_error_at, at, "the same error keeps its time");
        s.resolve_error();
        let resolved = s.last_error_resolved_at.expect("resolved");
        s.resolve_error();
        assert_eq!(s.last_error_resolved_at, Some(resolved), "resolved once");
        s.set_error("refused".into());
        assert_eq!(s.last_error_resolved_at, None, "failing again makes it current");
    }

    #[test]
    fn bounded_and_keeps_the_oldest() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut a = ArrivalTimes::default();
        for i in 1..=(LAG_RECORDS as u64 * 2) {
            a.record(Lsn(i), t0 + Duration::from_millis(i));
        }
        assert_eq!(a.records.len(), LAG_RECORDS);
        let end = Lsn(LAG_RECORDS as u64 * 2);
        assert_eq!(
            a.lag(Lsn(0), end, t0 + Duration::from_secs(100)),
            Some(Duration::from_millis(100_000 - 1))
        );
        // Thinned away: a reader past the oldest record is dated no later than the truth.
        let lag = a.lag(Lsn(5), end, t0 + Duration::from_secs(100)).unwrap();
        assert!(lag >= Duration::from_millis(100_000 - 6), "{lag:?} understates");
    }
}
