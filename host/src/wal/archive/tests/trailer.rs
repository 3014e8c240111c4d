//! The flush record in the head segment's trailer: a torn flush (the record reached the disk,
//! a WAL page of its range did not) falls back to the record before; a crash at each step of a
//! segment's completion (flushed, truncated, renamed) reopens with the segment complete and
//! exact; complete segments are byte for byte the WAL appended.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::super::flush_record::TRAILER_LEN;
use super::super::{ArchiveConfig, ArchiveWriter, Durability, FlushPolicy, FsDurability, SegmentInit};
use super::common::{MIB, append_until, read_range, wal, wal_names};
use crate::wal::{Lsn, WalSegmentSize};

fn group() -> ArchiveConfig {
    ArchiveConfig {
        flush: FlushPolicy::Group { max_bytes: 64 * MIB, max_delay: Duration::from_secs(5) },
        ..ArchiveConfig::for_test()
    }
}

fn seg() -> WalSegmentSize {
    WalSegmentSize::new(MIB).unwrap()
}

/// Overwrites the 4 KiB page of `path` holding `offset` with zeros: that page's write never
/// reached the preallocated (zeroed) file.
fn lose_page(path: &Path, offset: u64) {
    let page = offset / 4096 * 4096;
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(&[0u8; 4096], page).unwrap();
}

#[test]
fn torn_flush_falls_back_to_the_previous_record_and_never_reports_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    let first = Lsn(MIB + 100_000);
    let second = Lsn(MIB + 300_000);
    append_until(&mut w, 1, first, 30_000);
    w.flush().unwrap();
    append_until(&mut w, 1, second, 30_000);
    w.flush().unwrap();
    drop(w);
    // Crash image: the second record is on disk, one WAL page of its range is not.
    let partial = tmp.path().join(seg().partial_name(1, 1));
    lose_page(&partial, 250_000);

    let mut w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    assert_eq!((w.flushed_lsn(), w.written_lsn()), (first, first));
    let r = w.reader();
    assert!(r.read(1, first, 10).unwrap().is_empty(), "nothing past the proven record is served");
    assert_eq!(read_range(&r, 1, Lsn(0), first), wal(Lsn(0), first.0 as usize));
    let bytes = fs::read(&partial).unwrap();
    assert!(bytes[100_000..MIB as usize].iter().all(|&b| b == 0), "bytes past the proven record are zeroed");

    // The stream resumes from there, and later crashes still land on proven records.
    append_until(&mut w, 1, Lsn(MIB + 500_000), 70_000);
    w.flush().unwrap();
    drop(w);
    let w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(MIB + 500_000));
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), w.flushed_lsn()), wal(Lsn(0), (MIB + 500_000) as usize));
}

#[test]
fn torn_first_flush_of_a_segment_falls_back_to_the_segment_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    append_until(&mut w, 1, Lsn(MIB), 100_000); // segment 0 completes
    append_until(&mut w, 1, Lsn(MIB + 40_000), 100_000);
    w.flush().unwrap();
    drop(w);
    lose_page(&tmp.path().join(seg().partial_name(1, 1)), 10);
    let w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(MIB), "the previous segment's end, made durable before");
    assert_eq!(read_range(&w.reader(), 1, Lsn(0), Lsn(MIB)), wal(Lsn(0), MIB as usize));
}

/// Real syncs; when armed, copies the archive folder aside right after the next sync of the
/// armed kind returns, as a crash image of that moment (page cache included).
#[derive(Debug, Default)]
struct Snapshots {
    dir: Mutex<Option<PathBuf>>,
    after_data: AtomicBool,
    after_all: AtomicBool,
    images: Mutex<Vec<tempfile::TempDir>>,
}

impl Snapshots {
    fn take(&self, armed: &AtomicBool) {
        if !armed.swap(false, Ordering::SeqCst) {
            return;
        }
        let from = self.dir.lock().unwrap().clone().unwrap();
        let image = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), image.path().join(entry.file_name())).unwrap();
        }
        self.images.lock().unwrap().push(image);
    }
}

impl Durability for Snapshots {
    fn sync_data(&self, file: &fs::File) -> io::Result<()> {
        FsDurability.sync_data(file)?;
        self.take(&self.after_data);
        Ok(())
    }
    fn sync_all(&self, file: &fs::File) -> io::Result<()> {
        FsDurability.sync_all(file)?;
        self.take(&self.after_all);
        Ok(())
    }
    fn sync_dir(&self, dir: &fs::File) -> io::Result<()> {
        FsDurability.sync_dir(dir)
    }
}

#[test]
fn a_crash_at_each_step_of_a_segment_completion_reopens_it_complete_and_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Arc::new(Snapshots::default());
    *snaps.dir.lock().unwrap() = Some(tmp.path().to_owned());
    let config = ArchiveConfig { flush: FlushPolicy::EveryAppend, ..ArchiveConfig::for_test() };
    let mut w = ArchiveWriter::open_with(tmp.path(), config.clone(), snaps.clone()).unwrap();
    let origin = Lsn(3 * MIB + 777);
    w.append(1, origin, &[]).unwrap();
    append_until(&mut w, 1, Lsn(4 * MIB - 1000), 200_000);
    // The completing append: its flush (fdatasync), then the truncate's fsync, then the rename.
    snaps.after_data.store(true, Ordering::SeqCst);
    snaps.after_all.store(true, Ordering::SeqCst);
    append_until(&mut w, 1, Lsn(4 * MIB), 200_000);
    drop(w);
    let images = std::mem::take(&mut *snaps.images.lock().unwrap());
    assert_eq!(images.len(), 2);
    let name = seg().file_name(1, 3);
    let partial_len = |dir: &Path| fs::metadata(dir.join(format!("{name}.partial"))).unwrap().len();
    // Flushed to the end, trailer still there; then truncated, not yet renamed.
    assert_eq!(partial_len(images[0].path()), MIB + TRAILER_LEN);
    assert_eq!(partial_len(images[1].path()), MIB);

    for (step, image) in ["flushed", "truncated"].iter().zip(&images) {
        let mut w = ArchiveWriter::open(image.path(), config.clone()).unwrap();
        assert_eq!(w.flushed_lsn(), Lsn(4 * MIB), "{step}");
        assert_eq!(wal_names(image.path()), std::slice::from_ref(&name), "{step}");
        let bytes = fs::read(image.path().join(&name)).unwrap();
        assert_eq!(bytes.len() as u64, MIB, "{step}: exactly the segment size");
        assert_eq!(bytes[777..], wal(origin, (MIB - 777) as usize)[..], "{step}");
        append_until(&mut w, 1, Lsn(4 * MIB + 10), 10);
        assert_eq!(read_range(&w.reader(), 1, origin, Lsn(4 * MIB + 10)), wal(origin, (MIB - 767) as usize));
    }
}

#[test]
fn a_partial_of_exactly_the_segment_size_that_is_not_the_next_segment_is_not_trusted() {
    // Only a completion's truncate makes a `.partial` of exactly the segment size, and only for
    // the segment continuing the durable WAL; a stray one further on holds nothing durable.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    append_until(&mut w, 1, Lsn(MIB / 2), 100_000);
    w.flush().unwrap();
    drop(w);
    fs::write(tmp.path().join(seg().partial_name(1, 2)), vec![7u8; MIB as usize]).unwrap();
    let w = ArchiveWriter::open(tmp.path(), group()).unwrap();
    assert_eq!(w.flushed_lsn(), Lsn(MIB / 2));
    assert_eq!(wal_names(tmp.path()), [seg().partial_name(1, 0)]);
}

#[test]
fn complete_segments_are_exactly_the_segment_size_and_the_appended_bytes() {
    for (flush, init) in [
        (FlushPolicy::EveryAppend, SegmentInit::Zeroed),
        (FlushPolicy::Group { max_bytes: 300_000, max_delay: Duration::from_secs(5) }, SegmentInit::Sparse),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let config = ArchiveConfig { flush, segment_init: init, ..ArchiveConfig::for_test() };
        let mut w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
        append_until(&mut w, 1, Lsn(4 * MIB + 12_345), 77_777);
        w.close().unwrap();
        let names = wal_names(tmp.path());
        assert_eq!(names.len(), 5, "{names:?}");
        for segno in 0..4 {
            let bytes = fs::read(tmp.path().join(seg().file_name(1, segno))).unwrap();
            assert!(bytes == wal(seg().start(segno), MIB as usize), "segment {segno} ({flush:?}, {init:?})");
        }
        let head = fs::read(tmp.path().join(seg().partial_name(1, 4))).unwrap();
        assert_eq!(head.len() as u64, MIB + TRAILER_LEN);
        assert_eq!(head[..12_345], wal(Lsn(4 * MIB), 12_345)[..]);
        assert!(head[12_345..MIB as usize].iter().all(|&b| b == 0));
    }
}
