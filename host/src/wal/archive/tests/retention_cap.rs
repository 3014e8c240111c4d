//! Retention (replayed WAL plus a reserve goes, history files stay) and the disk cap.

use super::super::{ArchiveConfig, ArchiveError, ArchiveWriter};
use super::common::{MIB, append_until, read_range, wal, wal_names};
use crate::wal::Lsn;

#[test]
fn retention_removes_only_old_complete_segments_beyond_the_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ArchiveConfig { reserve_segments: 2, ..ArchiveConfig::for_test() };
    let mut w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
    append_until(&mut w, 1, Lsn(10 * MIB + 500), 400_000);
    w.write_history(2, b"1\t0/A0001F4\tno recovery target specified\n").unwrap();
    let size_before = w.size_bytes();

    // Nothing is removed before the standby reports replay progress, nor for replay inside
    // the reserve.
    assert!(w.set_replayed_lsn(Lsn(2 * MIB + 5)).unwrap().removed.is_empty());

    let report = w.set_replayed_lsn(Lsn(6 * MIB + 123)).unwrap();
    assert_eq!(
        report.removed,
        [
            "000000010000000000000000",
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003"
        ]
    );
    assert_eq!(report.freed_bytes, 4 * MIB);
    assert_eq!(w.size_bytes(), size_before - 4 * MIB);
    assert_eq!(
        wal_names(tmp.path()),
        [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007",
            "000000010000000000000008",
            "000000010000000000000009",
            "00000001000000000000000A.partial",
            "00000002.history", // history files are never removed
        ]
    );

    let r = w.reader();
    assert!(matches!(r.read(1, Lsn(4 * MIB - 1), 1), Err(ArchiveError::Removed { .. })));
    assert_eq!(
        read_range(&r, 1, Lsn(4 * MIB), Lsn(10 * MIB + 500)),
        wal(Lsn(4 * MIB), (6 * MIB + 500) as usize)
    );

    // A replay position past the flushed end keeps the head and the reserve before it.
    w.set_replayed_lsn(Lsn(100 * MIB)).unwrap();
    assert_eq!(
        wal_names(tmp.path()),
        [
            "000000010000000000000008",
            "000000010000000000000009",
            "00000001000000000000000A.partial",
            "00000002.history"
        ]
    );
    drop(w);
    let w = ArchiveWriter::open(tmp.path(), config).unwrap();
    assert_eq!(w.reader().timelines()[0].start, Lsn(8 * MIB));
    assert_eq!(w.flushed_lsn(), Lsn(10 * MIB + 500));
}

#[test]
fn disk_cap_stops_acceptance_until_retention_frees_space() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        ArchiveConfig { disk_cap_bytes: Some(4 * MIB), reserve_segments: 0, ..ArchiveConfig::for_test() };
    let mut w = ArchiveWriter::open(tmp.path(), config).unwrap();
    append_until(&mut w, 1, Lsn(3 * MIB - 10), 200_000);
    assert!(w.accepting(), "3 segments of 4: room for one more");
    append_until(&mut w, 1, Lsn(3 * MIB + 10), 200_000);
    assert_eq!(w.size_bytes(), 4 * MIB);
    assert!(!w.accepting());
    // The segment being written still takes WAL; a new segment is refused whole.
    append_until(&mut w, 1, Lsn(4 * MIB - 100), 200_000);
    let at = w.written_lsn();
    let err = w.append(1, at, &wal(at, 200)).unwrap_err();
    assert!(
        matches!(err, ArchiveError::CapReached { size, cap } if size == 4 * MIB && cap == 4 * MIB),
        "{err}"
    );
    assert_eq!(w.written_lsn(), at);
    // The standby replays; retention frees segments; WAL flows again.
    w.set_replayed_lsn(Lsn(2 * MIB)).unwrap();
    assert!(w.accepting());
    w.append(1, at, &wal(at, 200)).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(4 * MIB + 100));
}

/// Regression (found while moving the flush record into the head segment): recovery proves the
/// newest timeline's end from its complete segments on, so retention removing all of them
/// must not take the flushed LSN back with them.
#[test]
fn retention_of_every_complete_segment_keeps_the_flushed_lsn_across_a_crash() {
    for end in [Lsn(3 * MIB + 500), Lsn(3 * MIB)] {
        let tmp = tempfile::tempdir().unwrap();
        let config = ArchiveConfig { reserve_segments: 0, ..ArchiveConfig::for_test() };
        let mut w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
        w.append(1, Lsn(100), &[]).unwrap();
        append_until(&mut w, 1, end, 300_000);
        let report = w.set_replayed_lsn(end).unwrap();
        assert_eq!(report.removed.len(), 3, "{end}");
        drop(w); // crash
        let w = ArchiveWriter::open(tmp.path(), config).unwrap();
        assert_eq!(w.flushed_lsn(), end);
        assert_eq!(
            read_range(&w.reader(), 1, Lsn(3 * MIB), end),
            wal(Lsn(3 * MIB), (end.0 - 3 * MIB) as usize)
        );
    }
}
