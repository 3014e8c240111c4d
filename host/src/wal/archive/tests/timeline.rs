//! Timeline switches: the old timeline's partial segment stays, the new one's segments begin,
//! and readers get each timeline's own WAL.

use std::fs;

use super::super::{ArchiveConfig, ArchiveError, ArchiveWriter};
use super::common::{MIB, append_until, open, read_range, wal, wal_seeded};
use crate::wal::Lsn;

/// Appends timeline `timeline`'s stream (seed = timeline - 1) from the writer's end to `to`.
fn append_tl(w: &mut ArchiveWriter, timeline: u32, to: Lsn) {
    let seed = u64::from(timeline - 1);
    let mut pos = w.written_lsn();
    while pos < to {
        let n = ((to.0 - pos.0) as usize).min(150_000);
        w.append(timeline, pos, &wal_seeded(seed, pos, n)).unwrap();
        pos = Lsn(pos.0 + n as u64);
    }
}

#[test]
fn switch_keeps_the_old_partial_and_serves_both_timelines() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    let tl1_end = Lsn(2 * MIB + MIB / 2);
    append_until(&mut w, 1, tl1_end, 150_000);
    // The new primary branched off at `switch`, before the end of what timeline 1 sent us.
    let switch = Lsn(2 * MIB + 300_000);
    w.write_history(2, format!("1\t{switch}\tno recovery target specified\n").as_bytes()).unwrap();
    w.append(2, switch, &wal_seeded(1, switch, 1000)).unwrap();
    append_tl(&mut w, 2, Lsn(4 * MIB + 200_000));
    assert_eq!(w.timeline(), Some(2));

    let names = super::common::wal_names(tmp.path());
    for name in [
        "000000010000000000000000",
        "000000010000000000000001",
        "000000010000000000000002.partial",
        "000000020000000000000002",
        "000000020000000000000003",
        "000000020000000000000004.partial",
        "00000002.history",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} missing from {names:?}");
    }
    // Timeline 2's first segment starts with timeline 1's bytes up to the switch point.
    let seg2 = fs::read(tmp.path().join("000000020000000000000002")).unwrap();
    assert_eq!(seg2[..300_000], wal(Lsn(2 * MIB), 300_000)[..]);
    assert_eq!(seg2[300_000..], wal_seeded(1, switch, (MIB - 300_000) as usize)[..]);

    let check = |w: &ArchiveWriter| {
        let r = w.reader();
        // Timeline 1 as it was, diverged tail included.
        assert_eq!(read_range(&r, 1, Lsn(0), tl1_end), wal(Lsn(0), tl1_end.0 as usize));
        assert!(r.read(1, tl1_end, 10).unwrap().is_empty());
        // Timeline 2: its parent's WAL before the switch, its own after.
        let end = Lsn(4 * MIB + 200_000);
        let mut want = wal(Lsn(0), switch.0 as usize);
        want.extend(wal_seeded(1, switch, (end.0 - switch.0) as usize));
        assert_eq!(read_range(&r, 2, Lsn(0), end), want);
        assert_eq!(
            r.read_history(2).unwrap().unwrap(),
            format!("1\t{switch}\tno recovery target specified\n")
        );
        assert_eq!(r.read_history(3).unwrap(), None);
    };
    check(&w);
    drop(w);
    let mut w = open(tmp.path());
    check(&w);

    // Timelines only move forward; a new one must start inside the current one's WAL.
    assert!(matches!(
        w.append(1, Lsn(0), b"x"),
        Err(ArchiveError::TimelineRegression { current: 2, got: 1 })
    ));
    assert!(matches!(w.append(3, Lsn(5 * MIB), b"x"), Err(ArchiveError::TimelineStart { .. })));
    // History files never change.
    assert!(matches!(w.write_history(2, b"other"), Err(ArchiveError::HistoryMismatch(2))));
}

#[test]
fn switch_streamed_from_the_segment_start_like_pg_receivewal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()).unwrap();
    append_until(&mut w, 1, Lsn(MIB + 400_000), 150_000);
    // pg_receivewal restarts the new timeline at the start of the switch point's segment.
    w.append(2, Lsn(MIB), &wal(Lsn(MIB), 400_000)).unwrap();
    append_tl(&mut w, 2, Lsn(2 * MIB + 10));
    let r = w.reader();
    assert_eq!(r.timelines()[1].start, Lsn(MIB));
    let mut want = wal(Lsn(0), (MIB + 400_000) as usize);
    want.extend(wal_seeded(1, Lsn(MIB + 400_000), (MIB - 400_000 + 10) as usize));
    assert_eq!(read_range(&r, 2, Lsn(0), Lsn(2 * MIB + 10)), want);
    assert!(tmp.path().join("000000010000000000000001.partial").exists());
}

#[tokio::test]
async fn readers_wait_for_new_wal_and_see_timeline_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    w.append(1, Lsn(0), &wal(Lsn(0), 100)).unwrap();
    let mut r = w.reader();
    let waiter = tokio::spawn(async move { r.wait_past(1, Lsn(100)).await });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    w.append(1, Lsn(100), &wal(Lsn(100), 50)).unwrap();
    let point = waiter.await.unwrap().unwrap();
    assert_eq!((point.timeline, point.lsn), (1, Lsn(150)));

    let mut r = w.reader();
    let waiter = tokio::spawn(async move { r.wait_past(1, Lsn(150)).await });
    w.append(2, Lsn(120), &wal_seeded(1, Lsn(120), 10)).unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().timeline, 2);

    let mut r = w.reader();
    drop(w);
    assert_eq!(r.wait_past(2, Lsn(130)).await, None, "the writer is gone");
}
