//! Appending WAL: segment files and names, read-back, contiguity and restated bytes.

use std::fs;

use super::super::flush_record::TRAILER_LEN;
use super::super::{ArchiveConfig, ArchiveError, ArchiveWriter, FlushPolicy};
use super::common::{MIB, append_until, open, read_range, wal, wal_names};
use crate::wal::Lsn;

#[test]
fn append_across_segment_boundaries_completes_and_renames_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    let origin = Lsn(16 * MIB);
    w.append(1, origin, &[]).unwrap();
    append_until(&mut w, 1, Lsn(origin.0 + 2 * MIB + MIB / 2), 100_000);
    assert_eq!(w.flushed_lsn(), Lsn(origin.0 + 2 * MIB + MIB / 2));
    assert_eq!(w.flushed_lsn().to_string(), "0/1280000");
    assert_eq!(
        wal_names(tmp.path()),
        ["000000010000000000000010", "000000010000000000000011", "000000010000000000000012.partial"]
    );
    // Complete segments hold the stream, exactly; the partial one is full size plus the flush
    // record's trailer, zeros past the end of its WAL.
    let first = fs::read(tmp.path().join("000000010000000000000010")).unwrap();
    assert_eq!(first, wal(origin, MIB as usize));
    let partial = fs::read(tmp.path().join("000000010000000000000012.partial")).unwrap();
    assert_eq!(partial.len() as u64, MIB + TRAILER_LEN);
    assert_eq!(&partial[..(MIB / 2) as usize], &wal(Lsn(origin.0 + 2 * MIB), (MIB / 2) as usize)[..]);
    assert!(partial[(MIB / 2) as usize..MIB as usize].iter().all(|&b| b == 0));
}

#[test]
fn read_returns_exactly_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    let origin = Lsn(3 * MIB + 12_345);
    w.append(1, origin, &[]).unwrap();
    let end = Lsn(origin.0 + 3 * MIB + 777);
    append_until(&mut w, 1, end, 65_521);
    let r = w.reader();
    assert_eq!(read_range(&r, 1, origin, end), wal(origin, (end.0 - origin.0) as usize));
    // Arbitrary windows, across segment boundaries too.
    for (at, max) in [(origin.0, 1), (4 * MIB - 10, 20), (5 * MIB - 1, 2 * MIB as usize), (end.0 - 5, 100)] {
        let got = r.read(1, Lsn(at), max).unwrap();
        let want = (max as u64).min(end.0 - at) as usize;
        assert_eq!(got[..], wal(Lsn(at), want)[..], "read at {at:#x} max {max}");
    }
    // Nothing past the flushed end yet; nothing before the origin at all.
    assert!(r.read(1, end, 10).unwrap().is_empty());
    assert!(matches!(r.read(1, Lsn(origin.0 - 1), 10), Err(ArchiveError::Removed { .. })));
    assert!(matches!(r.read(2, origin, 10), Err(ArchiveError::UnknownTimeline(2))));
}

#[test]
fn gap_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    w.append(1, Lsn(MIB), &wal(Lsn(MIB), 1000)).unwrap();
    let err = w.append(1, Lsn(MIB + 1001), &wal(Lsn(MIB + 1001), 10)).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Gap { expected: Lsn(e), got: Lsn(g), .. } if e == MIB + 1000 && g == MIB + 1001)
    );
    assert_eq!(w.written_lsn(), Lsn(MIB + 1000));
    w.append(1, Lsn(MIB + 1000), &wal(Lsn(MIB + 1000), 10)).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(MIB + 1010));
}

#[test]
fn restated_durable_bytes_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(2 * MIB + 500), 300_000);
    // A reconnect resends from an earlier point: same bytes are fine, and new ones extend.
    w.append(1, Lsn(MIB - 10), &wal(Lsn(MIB - 10), (MIB + 1000) as usize)).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(2 * MIB + 990));
    // Changing a durable byte is refused, naming the first differing LSN.
    let mut changed = wal(Lsn(MIB), 100);
    changed[42] ^= 0xFF;
    let err = w.append(1, Lsn(MIB), &changed).unwrap_err();
    assert!(matches!(err, ArchiveError::Mismatch { timeline: 1, lsn: Lsn(l) } if l == MIB + 42), "{err}");
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), w.flushed_lsn()), wal(Lsn(0), (2 * MIB + 990) as usize));
}

#[test]
fn unflushed_bytes_are_replaced_by_a_resend() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ArchiveConfig {
        flush: FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: std::time::Duration::from_secs(5) },
        ..ArchiveConfig::for_test()
    };
    let mut w = ArchiveWriter::open(tmp.path(), config).unwrap();
    w.append(1, Lsn(0), &wal(Lsn(0), 1000)).unwrap();
    w.flush().unwrap();
    w.append(1, Lsn(1000), &[0xAA; 5000]).unwrap();
    assert_eq!((w.flushed_lsn(), w.written_lsn()), (Lsn(1000), Lsn(6000)));
    // The stream restarts at 1000 with other bytes: they replace the unflushed ones.
    w.append(1, Lsn(1000), &wal(Lsn(1000), 3000)).unwrap();
    assert_eq!(w.written_lsn(), Lsn(4000));
    w.flush().unwrap();
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), Lsn(4000)), wal(Lsn(0), 4000));
}

#[test]
fn nonsense_positions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    assert!(matches!(w.append(0, Lsn(0), b"x"), Err(ArchiveError::InvalidTimeline)));
    assert!(matches!(w.append(1, Lsn(u64::MAX - 1), b"xyz"), Err(ArchiveError::LsnOverflow { .. })));
    assert_eq!(w.flushed_lsn(), Lsn::INVALID);
}

#[test]
fn a_second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let w = open(tmp.path());
    assert!(matches!(
        ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()),
        Err(ArchiveError::Locked { .. })
    ));
    drop(w);
    open(tmp.path());
}

#[test]
fn segment_size_must_match_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    let other = ArchiveConfig { segment_size: 2 * MIB, ..ArchiveConfig::for_test() };
    assert!(matches!(ArchiveWriter::open(tmp.path(), other), Err(ArchiveError::Config(_))));
}

/// Regression: segments were 0644 in a 0755 folder, readable by any local user (PostgreSQL
/// keeps its own WAL 0600 in 0700 folders). New files are private, and an archive an older
/// tandem left readable is made private when it opens.
#[test]
fn the_archive_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let all_private = |dir: &std::path::Path| {
        assert_eq!(mode(dir), 0o700);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    };
    let mut w = open(&dir);
    append_until(&mut w, 1, Lsn(MIB + 10), 100_000);
    w.write_history(2, b"1\t0/100000A\tno recovery target specified\n").unwrap();
    all_private(&dir);
    drop(w);
    // As an older tandem left it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut w = open(&dir);
    all_private(&dir);
    append_until(&mut w, 1, Lsn(3 * MIB + 10), 100_000);
    all_private(&dir);
}
