//! Recovery at open: reads the segments in order, checks every record (length, CRC, decodes,
//! index contiguous from the purged id) and rebuilds the in-memory log and the writer's
//! segment table.
//!
//! The one repair it makes is cutting a torn tail: a defective record at the end of the LAST
//! segment with no valid record after it (what a crash mid-write leaves). Anything else that
//! does not add up is [`LogStoreError::Corrupt`]: it must never guess which entries were
//! committed.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::Path;

use openraft::{LogId, RaftLogId, RaftTypeConfig};

use super::config::LogStoreConfig;
use super::error::LogStoreError;
use super::meta::sync_dir;
use super::record::{self, Decoded};
use super::segment::{self, Segment};

/// What recovery hands to the store.
pub(crate) struct Recovered<C: RaftTypeConfig> {
    /// Entries after the purged id, by index.
    pub entries: BTreeMap<u64, C::Entry>,
    /// Segments still holding at least one unpurged entry, in order; the last one is where
    /// appends continue.
    pub segments: Vec<Segment>,
}

/// A defective record: where, and why.
struct Defect {
    offset: u64,
    reason: String,
}

/// One segment file, parsed up to its first defect.
struct Scan<E> {
    offsets: Vec<u64>,
    entries: Vec<E>,
    /// End of the last good record.
    end: u64,
    /// The first defective record, if any: a torn tail if it is the last segment's and no
    /// valid record follows.
    defect: Option<Defect>,
    /// An intact record with the wrong index: written that way, never a torn write.
    misplaced: Option<Defect>,
}

/// Rebuilds the log from `dir`. Entries at or below `purged` are not loaded, and segments
/// holding only such entries are deleted (finishing a purge a crash interrupted).
pub(crate) fn recover<C: RaftTypeConfig>(
    dir: &Path,
    config: &LogStoreConfig,
    purged: Option<&LogId<C::NodeId>>,
) -> Result<Recovered<C>, LogStoreError> {
    // First index that must be present if any entry is; everything below it may be gone.
    let floor = purged.map_or(0, |p| p.index + 1);
    let files = segment::list(dir)?;
    let mut entries = BTreeMap::new();
    let mut segments = Vec::new();
    let mut expected: Option<u64> = None;
    let mut dir_changed = false;

    for (i, (first, path)) in files.iter().enumerate() {
        let next_first = files.get(i + 1).map(|(f, _)| *f);
        if next_first.is_some_and(|next| next <= floor) {
            // Every entry in here is purged: no need to read it.
            remove(path, "purged segment")?;
            dir_changed = true;
            continue;
        }
        let corrupt =
            |offset: u64, reason: String| LogStoreError::Corrupt { file: path.clone(), offset, reason };
        match expected {
            Some(e) if *first < e => {
                return Err(corrupt(0, format!("overlaps the previous segment ending at {e}")));
            }
            Some(e) if *first > e && *first > floor && !config.lenient_appends => {
                return Err(corrupt(0, format!("entries {e}..{first} are missing")));
            }
            None if *first > floor && purged.is_some() => {
                return Err(corrupt(0, format!("entries {floor}..{first} are missing after the purge")));
            }
            _ => {}
        }

        let bytes = fs::read(path).map_err(|e| LogStoreError::io("read", path, e))?;
        let scan = scan::<C>(&bytes, *first, config.max_entry_bytes);
        if let Some(m) = scan.misplaced {
            return Err(corrupt(m.offset, m.reason));
        }
        if let Some(defect) = scan.defect {
            let is_last = next_first.is_none();
            if !is_last {
                return Err(corrupt(defect.offset, format!("{} in a sealed segment", defect.reason)));
            }
            if let Some(at) = valid_record_after::<C>(&bytes, defect.offset + 1, config.max_entry_bytes) {
                let reason = format!("{}, yet a valid record follows at offset {at}", defect.reason);
                return Err(corrupt(defect.offset, reason));
            }
            cut_torn_tail(path, &defect)?;
        }

        let seg = Segment::recovered(*first, path.clone(), scan.offsets, scan.end);
        if seg.last_index().is_none_or(|last| last < floor) {
            // Empty (a crash right after creating it, or a torn first record) or fully purged.
            remove(path, "segment without live entries")?;
            dir_changed = true;
            continue;
        }
        expected = Some(seg.next_index());
        entries.extend(
            scan.entries.into_iter().map(|e| (e.get_log_id().index, e)).filter(|(index, _)| *index >= floor),
        );
        segments.push(seg);
    }
    if dir_changed {
        sync_dir(dir)?;
    }
    Ok(Recovered { entries, segments })
}

/// Parses records from the start of a segment until the end or the first defect.
fn scan<C: RaftTypeConfig>(bytes: &[u8], first: u64, max_entry_bytes: u32) -> Scan<C::Entry> {
    let mut s = Scan { offsets: Vec::new(), entries: Vec::new(), end: 0, defect: None, misplaced: None };
    let mut at = 0usize;
    loop {
        let defect = |reason: String| Some(Defect { offset: at as u64, reason });
        let (payload, len) = match record::decode(&bytes[at..], max_entry_bytes) {
            Decoded::End => return s,
            Decoded::Defect(d) => {
                s.defect = defect(d.to_string());
                return s;
            }
            Decoded::Record { payload, len } => (payload, len),
        };
        let entry: C::Entry = match record::decode_payload(payload) {
            Ok(e) => e,
            Err(e) => {
                s.defect = defect(format!("undecodable payload: {e}"));
                return s;
            }
        };
        let want = first + s.offsets.len() as u64;
        let got = entry.get_log_id().index;
        if got != want {
            s.misplaced = defect(format!("holds index {got}, expected {want}"));
            return s;
        }
        s.offsets.push(at as u64);
        s.entries.push(entry);
        at += len;
        s.end = at as u64;
    }
}

/// Offset of the first intact, decodable record starting at or after `from`, if any. This is
/// what tells a torn tail (nothing valid after the damage) from damage in the middle.
fn valid_record_after<C: RaftTypeConfig>(bytes: &[u8], from: u64, max_entry_bytes: u32) -> Option<u64> {
    (from as usize..bytes.len()).find_map(|at| match record::decode(&bytes[at..], max_entry_bytes) {
        Decoded::Record { payload, .. } if !payload.is_empty() => {
            record::decode_payload::<C::Entry>(payload).ok().map(|_| at as u64)
        }
        _ => None,
    })
}

fn cut_torn_tail(path: &Path, defect: &Defect) -> Result<(), LogStoreError> {
    tracing::warn!(
        file = %path.display(),
        offset = defect.offset,
        reason = %defect.reason,
        "cutting torn record at the tail of the log; it was never acknowledged as durable"
    );
    let f = OpenOptions::new().write(true).open(path).map_err(|e| LogStoreError::io("open", path, e))?;
    f.set_len(defect.offset).map_err(|e| LogStoreError::io("truncate", path, e))?;
    f.sync_all().map_err(|e| LogStoreError::io("fsync", path, e))
}

fn remove(path: &Path, why: &str) -> Result<(), LogStoreError> {
    tracing::info!(file = %path.display(), why, "removing segment at open");
    fs::remove_file(path).map_err(|e| LogStoreError::io("delete segment", path, e))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::super::meta::{self, PURGED_FILE};
    use super::super::test_support::{TestConfig, TestEntry, append_blocking, entries, entry, log_id, open};
    use super::super::{LogStore, LogStoreError};
    use super::*;

    /// Writes `log` through a store and returns the segment files, oldest first.
    fn write(dir: &Path, log: &[TestEntry]) -> Vec<PathBuf> {
        let store = open(dir);
        append_blocking(&store, log.to_vec());
        drop(store);
        segment::list(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    /// Start offsets of the records in a segment file.
    fn record_offsets(path: &Path) -> Vec<usize> {
        let bytes = fs::read(path).unwrap();
        let mut offsets = Vec::new();
        let mut at = 0;
        while let Decoded::Record { len, .. } = record::decode(&bytes[at..], u32::MAX) {
            offsets.push(at);
            at += len;
        }
        offsets
    }

    fn try_open(dir: &Path) -> Result<LogStore<TestConfig>, LogStoreError> {
        LogStore::open(dir, LogStoreConfig::for_test())
    }

    fn expect_corrupt(dir: &Path, file: &Path, offset: u64) {
        match try_open(dir) {
            Err(LogStoreError::Corrupt { file: f, offset: o, .. }) => {
                assert_eq!((f.as_path(), o), (file, offset))
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, opened fine"),
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// Reopens a damaged copy: exactly the first n-1 entries come back, and the log takes a
    /// new last entry that survives another reopen.
    fn check_tail_recovers(template: &Path, log: &[TestEntry], damage: impl FnOnce(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template, dir.path());
        damage(dir.path());
        let n = log.len() as u64;
        let store = open(dir.path());
        assert_eq!(store.entries(..), log[..log.len() - 1]);
        let replacement = entry(2, n - 1, 7);
        append_blocking(&store, vec![replacement.clone()]);
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.entries(n - 1..), vec![replacement]);
        assert_eq!(store.len(), log.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// Every torn or damaged version of the last record is cut, never replayed.
        #[test]
        fn any_damage_to_the_last_record_is_cut(sizes in prop::collection::vec(0usize..160, 2..60)) {
            let log: Vec<_> = sizes.iter().enumerate().map(|(i, s)| entry(1, i as u64, *s)).collect();
            let template = tempfile::tempdir().unwrap();
            let last = write(template.path(), &log).pop().unwrap();
            let name = last.file_name().unwrap().to_owned();
            let start = *record_offsets(&last).last().unwrap();
            let end = fs::metadata(&last).unwrap().len() as usize;
            for at in start..end {
                check_tail_recovers(template.path(), &log, |dir| {
                    let f = OpenOptions::new().write(true).open(dir.join(&name)).unwrap();
                    f.set_len(at as u64).unwrap();
                });
                check_tail_recovers(template.path(), &log, |dir| {
                    let mut bytes = fs::read(dir.join(&name)).unwrap();
                    bytes[at] ^= 0xa5;
                    fs::write(dir.join(&name), bytes).unwrap();
                });
            }
        }
    }

    #[test]
    fn a_torn_first_record_of_the_last_segment_removes_the_segment() {
        let probe = tempfile::tempdir().unwrap();
        let files = write(probe.path(), &entries(1, 0..200, 100));
        let second = segment::list(probe.path()).unwrap()[1].0;
        drop(files);
        // A log whose last record is the only one in its segment.
        let log = entries(1, 0..second + 1, 100);
        let template = tempfile::tempdir().unwrap();
        let last = write(template.path(), &log).pop().unwrap();
        assert_eq!(record_offsets(&last), [0]);
        let name = last.file_name().unwrap().to_owned();
        for at in 0..fs::metadata(&last).unwrap().len() {
            check_tail_recovers(template.path(), &log, |dir| {
                OpenOptions::new().write(true).open(dir.join(&name)).unwrap().set_len(at).unwrap();
            });
        }
    }

    #[test]
    fn a_zero_filled_tail_is_cut() {
        // What a crash can leave when the file size was updated before its data blocks.
        let dir = tempfile::tempdir().unwrap();
        let log = entries(1, 0..10, 20);
        let last = write(dir.path(), &log).pop().unwrap();
        let mut bytes = fs::read(&last).unwrap();
        bytes.extend_from_slice(&[0; 100]);
        fs::write(&last, bytes).unwrap();
        assert_eq!(open(dir.path()).entries(..), log);
    }

    #[test]
    fn a_bad_record_followed_by_valid_ones_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let last = write(dir.path(), &entries(1, 0..10, 20)).pop().unwrap();
        let at = record_offsets(&last)[4];
        let mut bytes = fs::read(&last).unwrap();
        bytes[at + 12] ^= 1;
        fs::write(&last, bytes).unwrap();
        expect_corrupt(dir.path(), &last, at as u64);
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_refused() {
        // The chain of lengths breaks here, so only scanning ahead finds the later records.
        let dir = tempfile::tempdir().unwrap();
        let last = write(dir.path(), &entries(1, 0..10, 20)).pop().unwrap();
        let at = record_offsets(&last)[4];
        let mut bytes = fs::read(&last).unwrap();
        bytes[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
        fs::write(&last, bytes).unwrap();
        expect_corrupt(dir.path(), &last, at as u64);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_refused_even_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &entries(1, 0..200, 100));
        let sealed = &files[0];
        let f = OpenOptions::new().write(true).open(sealed).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1).unwrap();
        let at = *record_offsets(sealed).last().unwrap();
        // The cut record is gone from the offsets; the defect is at the one after the last good.
        let bytes = fs::read(sealed).unwrap();
        let Decoded::Record { len: good, .. } = record::decode(&bytes[at..], u32::MAX) else { panic!() };
        expect_corrupt(dir.path(), sealed, (at + good) as u64);
    }

    #[test]
    fn a_missing_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &entries(1, 0..200, 100));
        fs::remove_file(&files[1]).unwrap();
        expect_corrupt(dir.path(), &files[2], 0);
    }

    #[test]
    fn a_record_with_the_wrong_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &entries(1, 0..5, 10));
        let renamed = dir.path().join(segment::file_name(3));
        fs::rename(&files[0], &renamed).unwrap();
        expect_corrupt(dir.path(), &renamed, 0);
    }

    #[test]
    fn an_interrupted_purge_is_finished_at_open() {
        // The purged id was made durable, then the crash came before segments were deleted.
        let dir = tempfile::tempdir().unwrap();
        let log = entries(1, 0..200, 100);
        let files = write(dir.path(), &log);
        meta::write_durable(dir.path(), PURGED_FILE, &log_id(1, 120)).unwrap();
        let store = open(dir.path());
        assert_eq!(store.entries(..), log[121..]);
        let left = segment::list(dir.path()).unwrap();
        assert!(left.len() < files.len() && left[0].0 <= 121, "{left:?}");
    }

    #[test]
    fn an_empty_last_segment_is_removed() {
        // A crash between creating a segment and writing its first record.
        let dir = tempfile::tempdir().unwrap();
        let log = entries(1, 0..5, 10);
        write(dir.path(), &log);
        let empty = dir.path().join(segment::file_name(5));
        fs::write(&empty, b"").unwrap();
        let store = open(dir.path());
        assert!(!empty.exists());
        append_blocking(&store, entries(1, 5..6, 10));
        assert_eq!(store.len(), 6);
    }
}
