//! Crash recovery, simulated in-process: a dropped writer is a crash (nothing is flushed on
//! drop), and files are arranged as a crash at each step of the write protocol leaves them.

use std::fs;
use std::time::Duration;

use super::super::flush_record::TRAILER_LEN;
use super::super::{ArchiveConfig, ArchiveError, ArchiveWriter, FlushPolicy};
use super::common::{MIB, append_until, open, read_range, wal, wal_names};
use crate::wal::Lsn;

fn group_config() -> ArchiveConfig {
    ArchiveConfig {
        flush: FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: Duration::from_secs(5) },
        ..ArchiveConfig::for_test()
    }
}

#[test]
fn reopen_after_a_crash_resumes_at_the_flushed_point_and_zeroes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::open(tmp.path(), group_config()).unwrap();
    let flushed = Lsn(MIB + 100_000);
    append_until(&mut w, 1, flushed, 90_000);
    w.flush().unwrap();
    append_until(&mut w, 1, Lsn(MIB + 700_000), 90_000);
    assert_eq!((w.flushed_lsn(), w.written_lsn()), (flushed, Lsn(MIB + 700_000)));
    drop(w); // crash: no flush, no close

    let partial = tmp.path().join("000000010000000000000001.partial");
    let before = fs::read(&partial).unwrap();
    assert_eq!(before[100_000..700_000], wal(Lsn(MIB + 100_000), 600_000)[..], "page cache kept them");

    let mut w = ArchiveWriter::open(tmp.path(), group_config()).unwrap();
    assert_eq!((w.flushed_lsn(), w.written_lsn()), (flushed, flushed));
    let after = fs::read(&partial).unwrap();
    assert_eq!(after.len() as u64, MIB + TRAILER_LEN);
    assert_eq!(after[..100_000], wal(Lsn(MIB), 100_000)[..]);
    assert!(
        after[100_000..MIB as usize].iter().all(|&b| b == 0),
        "bytes past the flushed point are not trusted"
    );

    // Appending resumes from the flushed point (a gap past it is still refused).
    assert!(matches!(w.append(1, Lsn(MIB + 700_000), b"x"), Err(ArchiveError::Gap { .. })));
    append_until(&mut w, 1, Lsn(3 * MIB + 5), 250_000);
    w.flush().unwrap();
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), Lsn(3 * MIB + 5)), wal(Lsn(0), (3 * MIB + 5) as usize));
}

#[test]
fn crash_before_the_rename_of_a_full_segment_completes_it_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(2 * MIB), 300_000);
    drop(w);
    // Segment 1 was flushed to its end and truncated to the segment size; the rename had not
    // happened yet.
    fs::rename(
        tmp.path().join("000000010000000000000001"),
        tmp.path().join("000000010000000000000001.partial"),
    )
    .unwrap();
    let mut w = open(tmp.path());
    assert_eq!(w.flushed_lsn(), Lsn(2 * MIB));
    assert_eq!(wal_names(tmp.path()), ["000000010000000000000000", "000000010000000000000001"]);
    append_until(&mut w, 1, Lsn(2 * MIB + 10), 10);
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), Lsn(2 * MIB + 10)), wal(Lsn(0), (2 * MIB + 10) as usize));
}

#[test]
fn files_holding_nothing_durable_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(MIB / 2), 100_000);
    drop(w);
    // A later segment created before any of it was flushed, a new timeline's segment whose
    // switch never reached the state, and a half-written state replacement.
    let preallocated = vec![7u8; (MIB + TRAILER_LEN) as usize];
    fs::write(tmp.path().join("000000010000000000000002.partial"), &preallocated).unwrap();
    fs::write(tmp.path().join("000000020000000000000000.partial"), &preallocated).unwrap();
    fs::write(tmp.path().join("tandem-wal-archive.state.tmp"), b"half").unwrap();
    let w = open(tmp.path());
    assert_eq!(w.flushed_lsn(), Lsn(MIB / 2));
    assert_eq!(wal_names(tmp.path()), ["000000010000000000000000.partial"]);
}

#[test]
fn an_archive_that_does_not_match_its_state_is_refused() {
    // Segments but no state file: not ours to guess about.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("000000010000000000000000"), vec![0u8; MIB as usize]).unwrap();
    assert!(matches!(
        ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()),
        Err(ArchiveError::Corrupt { .. })
    ));

    // A complete segment past the durable end.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(MIB / 2), 100_000);
    drop(w);
    fs::write(tmp.path().join("000000010000000000000001"), vec![0u8; MIB as usize]).unwrap();
    assert!(matches!(
        ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()),
        Err(ArchiveError::Corrupt { .. })
    ));

    // A damaged state file.
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    fs::write(tmp.path().join("tandem-wal-archive.state"), b"tandem-wal-archive 2\ngarbage\n").unwrap();
    assert!(matches!(
        ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()),
        Err(ArchiveError::Corrupt { .. })
    ));

    // A partial segment that is not proven complete, before a complete one.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(2 * MIB + 1000), 100_000);
    drop(w);
    fs::rename(
        tmp.path().join("000000010000000000000000"),
        tmp.path().join("000000010000000000000000.partial"),
    )
    .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("000000010000000000000000.partial"))
        .unwrap()
        .set_len(MIB + TRAILER_LEN)
        .unwrap();
    assert!(matches!(
        ArchiveWriter::open(tmp.path(), ArchiveConfig::for_test()),
        Err(ArchiveError::Corrupt { .. })
    ));
}

#[test]
fn unknown_files_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("README"), b"operator notes").unwrap();
    let mut w = open(tmp.path());
    append_until(&mut w, 1, Lsn(1000), 1000);
    drop(w);
    drop(open(tmp.path()));
    assert!(tmp.path().join("README").exists());
}

/// Regression: a child process spawned by another thread holds a copy of the lock descriptor
/// until its `exec`, which made a reopen right after a drop fail with `Locked`.
#[test]
fn reopen_while_another_thread_spawns_processes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let tmp = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::process::Command::new("true").status().unwrap();
            }
        })
    };
    let mut w = open(tmp.path());
    for _ in 0..200 {
        drop(w);
        w = open(tmp.path());
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
}
