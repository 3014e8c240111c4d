//! A full disk (a real tmpfs, ENOSPC): the write that hit it fails with an error that says so,
//! the archive reopens in place with no space to spare (a segment cut short while being
//! zero-filled holds nothing durable and goes), and once space returns it takes WAL again from
//! its flushed end, without a gap or a changed byte, before and after a reopen from disk.

use super::super::{ArchiveConfig, ArchiveWriter};
use super::common::{MIB, append_until, read_range, wal, wal_names};
use super::tmpfs::Tmpfs;
use crate::wal::Lsn;

#[test]
fn a_full_disk_stops_the_archive_cleanly_and_it_resumes_once_space_returns() {
    let Some(fs) = Tmpfs::mount(8 * MIB) else { return };
    let dir = fs.path().join("archive");
    let mut w = ArchiveWriter::open(&dir, ArchiveConfig::for_test()).unwrap();
    append_until(&mut w, 1, Lsn(MIB + MIB / 2), 100_000);
    // Less than a segment left: the next segment's zero-fill runs out of space half-way.
    fs.fill_leaving(MIB / 2);
    let err = w.append(1, w.written_lsn(), &wal(w.written_lsn(), MIB as usize)).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    // Segment 1 was completed (flushed) before segment 2 could not be made.
    assert_eq!(w.flushed_lsn(), Lsn(2 * MIB));
    assert!(
        wal_names(&dir).contains(&"000000010000000000000002.partial".to_string()),
        "{:?}",
        wal_names(&dir)
    );

    // The disk is still full: reopening needs no space; the half zero-filled head goes.
    w.reopen().unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(2 * MIB));
    assert_eq!(wal_names(&dir), ["000000010000000000000000", "000000010000000000000001"]);
    assert!(!w.has_disk_room(), "the filler still takes the space");
    let err = w.append(1, w.written_lsn(), &wal(w.written_lsn(), 1000)).unwrap_err();
    assert!(err.is_disk_full(), "still full: {err}");
    w.reopen().unwrap();

    // Space returns: WAL is taken from the flushed end, every byte as sent.
    fs.free_filler();
    assert!(w.has_disk_room());
    append_until(&mut w, 1, Lsn(4 * MIB + 777), 100_000);
    let end = Lsn(4 * MIB + 777);
    assert_eq!(w.flushed_lsn(), end);
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), end), wal(Lsn(0), end.0 as usize));
    drop(w);
    let w = ArchiveWriter::open(&dir, ArchiveConfig::for_test()).unwrap();
    assert_eq!(w.flushed_lsn(), end);
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), end), wal(Lsn(0), end.0 as usize));
}
