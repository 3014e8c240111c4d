//! The flush policy, counted at the sync calls: the flushed LSN never runs ahead of fsync, and
//! each flush is one fdatasync of the head segment (WAL and flush record together).

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use super::super::{ArchiveConfig, ArchiveError, ArchiveWriter, CountingDurability, FlushPolicy};
use super::common::{MIB, wal};
use crate::wal::Lsn;

fn writer(
    flush: FlushPolicy,
    segment_size: u64,
) -> (tempfile::TempDir, ArchiveWriter, Arc<CountingDurability>) {
    let tmp = tempfile::tempdir().unwrap();
    let counter = Arc::new(CountingDurability::default());
    let config = ArchiveConfig { flush, segment_size, ..ArchiveConfig::for_test() };
    let w = ArchiveWriter::open_with(tmp.path(), config, counter.clone()).unwrap();
    (tmp, w, counter)
}

#[test]
fn every_append_is_fsynced_before_it_is_reported_flushed() {
    let (_tmp, mut w, counter) = writer(FlushPolicy::EveryAppend, 4 * MIB);
    let chunk = 128 * 1024;
    for i in 0..20u64 {
        let before = counter.counts().data;
        w.append(1, Lsn(i * chunk), &wal(Lsn(i * chunk), chunk as usize)).unwrap();
        assert_eq!(counter.counts().data, before + 1, "per append: one fdatasync, WAL and flush record");
        assert_eq!(w.flushed_lsn(), Lsn((i + 1) * chunk));
    }
}

#[test]
fn group_commit_syncs_once_per_max_bytes_and_reports_only_synced_wal() {
    let flush = FlushPolicy::Group { max_bytes: MIB, max_delay: Duration::from_secs(5) };
    let (_tmp, mut w, counter) = writer(flush, 16 * MIB);
    let chunk = 128 * 1024u64;
    let mut syncs_seen = counter.counts().data;
    let mut last_flushed = w.flushed_lsn();
    for i in 0..64u64 {
        w.append(1, Lsn(i * chunk), &wal(Lsn(i * chunk), chunk as usize)).unwrap();
        let syncs = counter.counts().data;
        if (i + 1) % 8 == 0 {
            assert_eq!(syncs, syncs_seen + 1, "append {i} fills a group: WAL and flush record, one sync");
            assert_eq!(w.flushed_lsn(), w.written_lsn());
        } else {
            assert_eq!(syncs, syncs_seen, "append {i} waits for the group");
            assert_eq!(w.flushed_lsn(), last_flushed, "flushed must not move without a sync");
        }
        syncs_seen = syncs;
        last_flushed = w.flushed_lsn();
    }
    assert_eq!(counter.counts().data, 8);
}

#[test]
fn group_commit_flushes_when_the_delay_runs_out() {
    let flush = FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: Duration::from_millis(30) };
    let (_tmp, mut w, counter) = writer(flush, MIB);
    assert_eq!(w.flush_deadline(), None);
    w.append(1, Lsn(0), &wal(Lsn(0), 1000)).unwrap();
    let deadline = w.flush_deadline().expect("unflushed WAL has a deadline");
    assert_eq!(w.flush_if_due().unwrap(), Lsn(0));
    assert_eq!(w.flushed_lsn(), Lsn(0));
    std::thread::sleep(
        deadline.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(5),
    );
    assert_eq!(w.flush_if_due().unwrap(), Lsn(1000));
    assert_eq!(counter.counts().data, 1);
    assert_eq!(w.flush_deadline(), None);
}

#[test]
fn a_full_segment_is_flushed_renamed_and_the_directory_synced() {
    let flush = FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: Duration::from_secs(5) };
    let (tmp, mut w, counter) = writer(flush, MIB);
    w.append(1, Lsn(0), &[]).unwrap();
    let before = counter.counts();
    w.append(1, Lsn(0), &wal(Lsn(0), MIB as usize)).unwrap();
    let after = counter.counts();
    // WAL and flush record fdatasynced together; segment created (file + directory); trailer
    // truncated off (file); rename (directory).
    assert_eq!(after.data - before.data, 1);
    assert_eq!(after.all - before.all, 2);
    assert_eq!(after.dir - before.dir, 2);
    assert_eq!(w.flushed_lsn(), Lsn(MIB));
    let complete = tmp.path().join("000000010000000000000000");
    assert_eq!(fs::metadata(&complete).unwrap().len(), MIB, "a complete segment has no trailer");
}

#[test]
fn a_failed_fsync_stops_the_writer_and_reports_nothing_new() {
    let (tmp, mut w, counter) = writer(FlushPolicy::EveryAppend, MIB);
    w.append(1, Lsn(0), &wal(Lsn(0), 5000)).unwrap();
    counter.fail_next_data_sync();
    assert!(matches!(w.append(1, Lsn(5000), &wal(Lsn(5000), 5000)), Err(ArchiveError::Io { .. })));
    assert_eq!(w.flushed_lsn(), Lsn(5000));
    assert!(matches!(w.append(1, Lsn(10_000), b"x"), Err(ArchiveError::Poisoned)));
    assert!(matches!(w.flush(), Err(ArchiveError::Poisoned)));
    drop(w);
    let w = ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(5000));
}

#[test]
fn each_flush_is_exactly_one_data_sync_and_nothing_else() {
    let flush = FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: Duration::from_secs(5) };
    let (_tmp, mut w, counter) = writer(flush, 16 * MIB);
    w.append(1, Lsn(0), &wal(Lsn(0), 10)).unwrap();
    w.flush().unwrap();
    for i in 1..50u64 {
        let at = w.written_lsn();
        let n = (i * 7919 % 200_000 + 1) as usize;
        w.append(1, at, &wal(at, n)).unwrap();
        let before = counter.counts();
        assert_eq!(w.flush().unwrap(), Lsn(at.0 + n as u64));
        let after = counter.counts();
        assert_eq!(
            (after.data - before.data, after.all - before.all, after.dir - before.dir),
            (1, 0, 0),
            "flush {i}: one fdatasync, no fsync, no directory sync"
        );
        // Nothing waits: no sync at all.
        w.flush().unwrap();
        assert_eq!(counter.counts(), after);
    }
}
