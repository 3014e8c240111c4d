//! What the tunnel carried, per kind of stream (told apart by the client's `application_name`)
//! and direction: bytes before compression (raw) and on the link (the frames' bodies, before
//! the transport's own 18 bytes per 64 KiB record). Shared by both ends, status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Which client a tunnel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// tandem's WAL receiver.
    Wal,
    BaseBackup,
    Rewind,
    /// tandem's status SQL and fencing probe.
    Status,
    Other,
}

impl StreamKind {
    pub const ALL: [StreamKind; 5] =
        [StreamKind::Wal, StreamKind::BaseBackup, StreamKind::Rewind, StreamKind::Status, StreamKind::Other];

    /// From the startup packet's `application_name` (as tandem's clients set it).
    pub fn of(application_name: Option<&str>) -> Self {
        match application_name {
            Some(crate::wal::client::DEFAULT_APPLICATION_NAME) => StreamKind::Wal,
            Some("pg_basebackup") => StreamKind::BaseBackup,
            Some(crate::standby::postgres::REWIND_APPLICATION_NAME) => StreamKind::Rewind,
            Some(crate::wal::primary_sql::STATUS_APPLICATION_NAME) => StreamKind::Status,
            _ => StreamKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Wal => "wal",
            StreamKind::BaseBackup => "base-backup",
            StreamKind::Rewind => "rewind",
            StreamKind::Status => "status",
            StreamKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One kind's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent_raw: AtomicU64,
    pub sent_link: AtomicU64,
    pub received_raw: AtomicU64,
    pub received_link: AtomicU64,
    pub chunks_compressed: AtomicU64,
    pub chunks_raw: AtomicU64,
}

/// The tunnel's counters, shared.
#[derive(Debug, Default)]
pub struct LinkStats {
    kinds: [Counters; 5],
    pub open: AtomicU64,
    pub opened: AtomicU64,
    pub refused: AtomicU64,
}

/// One kind's numbers, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamBytes {
    pub kind: Option<StreamKind>,
    pub sent_raw_bytes: u64,
    pub sent_link_bytes: u64,
    pub received_raw_bytes: u64,
    pub received_link_bytes: u64,
    pub chunks_compressed: u64,
    pub chunks_raw: u64,
}

/// Everything, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSnapshot {
    /// Kinds that carried anything.
    pub streams: Vec<StreamBytes>,
    pub open: u64,
    pub opened: u64,
    pub refused: u64,
}

impl LinkStats {
    pub fn kind(&self, kind: StreamKind) -> &Counters {
        &self.kinds[kind.index()]
    }

    pub fn snapshot(&self) -> LinkSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let streams = StreamKind::ALL
            .iter()
            .map(|k| {
                let c = self.kind(*k);
                StreamBytes {
                    kind: Some(*k),
                    sent_raw_bytes: load(&c.sent_raw),
                    sent_link_bytes: load(&c.sent_link),
                    received_raw_bytes: load(&c.received_raw),
                    received_link_bytes: load(&c.received_link),
                    chunks_compressed: load(&c.chunks_compressed),
                    chunks_raw: load(&c.chunks_raw),
                }
            })
            .filter(|s| s.sent_raw_bytes + s.received_raw_bytes > 0)
            .collect();
        LinkSnapshot {
            streams,
            open: load(&self.open),
            opened: load(&self.opened),
            refused: load(&self.refused),
        }
    }
}

impl LinkSnapshot {
    /// One kind's numbers (zeros when it carried nothing).
    pub fn of(&self, kind: StreamKind) -> StreamBytes {
        self.streams.iter().find(|s| s.kind == Some(kind)).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_application_name_and_a_snapshot_of_what_moved() {
        assert_eq!(StreamKind::of(Some("tandem")), StreamKind::Wal);
        assert_eq!(StreamKind::of(Some("pg_basebackup")), StreamKind::BaseBackup);
        assert_eq!(StreamKind::of(Some("psql")), StreamKind::Other);
        assert_eq!(StreamKind::of(None), StreamKind::Other);
        let s = LinkStats::default();
        s.kind(StreamKind::Wal).received_raw.fetch_add(300, Ordering::Relaxed);
        s.kind(StreamKind::Wal).received_link.fetch_add(100, Ordering::Relaxed);
        let snap = s.snapshot();
        assert_eq!(snap.streams.len(), 1);
        assert_eq!(snap.of(StreamKind::Wal).received_link_bytes, 100);
        assert_eq!(snap.of(StreamKind::Rewind), StreamBytes::default());
    }
}
