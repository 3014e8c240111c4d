//! The persistent per-tree index: path -> what tandem last knew of it (kind, size, mtime,
//! mode, owner, link, hash, hard-link group, extended attributes), so an unchanged file is
//! never re-read. Saved durably (temporary file, fsync, rename, fsync of the folder) behind a
//! magic carrying the format version and a BLAKE3 checksum.
//!
//! Must never: trust a damaged index file, or read one format as another. A file that fails
//! its checksum or does not decode loads as an empty index (so the next pass rehashes
//! everything) and says so via [`Index::damaged`]; a stale hash would otherwise make a changed
//! file look unchanged. A file of the previous format (version 1: no owner, links or
//! attributes) is upgraded: its hashes stay good, and what it lacks is read afresh by the
//! next scan.
//!
//! [`refresh`] and [`diff`] live in their own files and are re-exported here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use tracing::warn;

pub use crate::sync::diff::{Diff, diff};
pub use crate::sync::entry::Entry;
use crate::sync::names::RelName;
pub use crate::sync::refresh::{RefreshStats, refresh};
use crate::sync::tree_error::TreeError;

/// First bytes of an index file; the last byte is the format version (2: entries with owner
/// and out-of-line metadata).
const MAGIC: &[u8; 8] = b"TNDMIDX\x02";
/// The magic of format version 1, upgraded on load.
const MAGIC_V1: &[u8; 8] = b"TNDMIDX\x01";
/// Magic, payload length (u64 LE), BLAKE3 of the payload.
const HEADER_LEN: usize = 8 + 8 + 32;

/// Path -> entry for one tree, in [`RelName`] order (every subtree is contiguous).
#[derive(Debug, Default, Clone)]
pub struct Index {
    entries: BTreeMap<RelName, Entry>,
    damaged: bool,
    /// While tracking: every insert and removal since, in order (what a pass changed, for
    /// [`crate::sync::index_store::IndexStore::append`]).
    changes: Option<Vec<Change>>,
}

/// One change to an index; replaying a list of them in order gives the same index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// [`Index::insert`].
    Insert(Entry),
    /// [`Index::remove`]: the path and everything below it.
    Remove(RelName),
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Loads the index at `path`. A missing file is an empty index; a damaged one is an
    /// empty index with [`Index::damaged`] set. Only an I/O failure is an error.
    pub fn load(path: &Path) -> Result<Index, TreeError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Index::from_bytes(&bytes, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::new()),
            Err(e) => Err(TreeError::io("read index", path)(e)),
        }
    }

    /// The index in `bytes` (the saved form of `path`); a damaged one is an empty index with
    /// [`Index::damaged`] set.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Index {
        match decode(bytes) {
            Ok(list) => list.into_iter().collect(),
            Err(reason) => {
                warn!(index = %path.display(), reason, "index file is damaged; every file will be rehashed");
                Index { damaged: true, ..Index::default() }
            }
        }
    }

    /// Saves the index to `path` durably: a crash leaves the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), TreeError> {
        let bytes = self.to_bytes()?;
        crate::durable::write_private(path, &bytes).map_err(TreeError::io("write index", path))
    }

    /// The saved form: magic, payload length, BLAKE3 of the payload, payload.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TreeError> {
        let list: Vec<&Entry> = self.entries.values().collect();
        let payload = postcard::to_stdvec(&list).map_err(|e| TreeError::IndexEncode(e.to_string()))?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        bytes.extend_from_slice(&payload);
        Ok(bytes)
    }

    /// The payload checksum in the header of a saved form (what a change log names its base
    /// by); `None` when `bytes` is not one.
    pub fn checksum_of(bytes: &[u8]) -> Option<[u8; 32]> {
        let sum = bytes.get(16..HEADER_LEN).filter(|_| bytes.starts_with(MAGIC))?;
        sum.try_into().ok()
    }

    /// True when this index was loaded from a damaged file (and so starts empty).
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    /// The entry for `p`.
    pub fn get(&self, p: &RelName) -> Option<&Entry> {
        self.entries.get(p)
    }

    /// Inserts or replaces the entry at `e.path`.
    pub fn insert(&mut self, e: Entry) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push(Change::Insert(e.clone()));
        }
        self.entries.insert(e.path.clone(), e);
    }

    /// Removes `p` and everything below it (a deleted directory takes its subtree along).
    pub fn remove(&mut self, p: &RelName) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push(Change::Remove(p.clone()));
        }
        for k in p.run_within(self.entries.range(p.clone()..).map(|(k, _)| k)) {
            self.entries.remove(&k);
        }
    }

    /// Applies `change` (replaying a log).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Insert(e) => self.insert(e),
            Change::Remove(p) => self.remove(&p),
        }
    }

    /// From now on, every insert and removal is kept, for [`Index::take_changes`].
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes kept since tracking began (tracking stops); `None` when not tracking.
    pub fn take_changes(&mut self) -> Option<Vec<Change>> {
        self.changes.take()
    }

    /// The entries strictly below `p`, in path order.
    pub fn below<'a>(&'a self, p: &'a RelName) -> impl Iterator<Item = &'a Entry> + 'a {
        let mut range = self.entries.range(p.clone()..);
        if range.clone().next().is_some_and(|(k, _)| k == p) {
            range.next();
        }
        range.take_while(move |(k, _)| k.is_within(p)).map(|(_, e)| e)
    }

    /// All entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<Entry> for Index {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Index {
        Index { entries: iter.into_iter().map(|e| (e.path.clone(), e)).collect(), ..Index::default() }
    }
}

/// An entry as format version 1 stored it.
#[derive(serde::Deserialize)]
struct EntryV1 {
    path: RelName,
    kind: crate::sync::entry::EntryKind,
    size: u64,
    mtime_ns: i128,
    mode: u32,
    link: Option<String>,
    hash: Option<[u8; 32]>,
}

impl From<EntryV1> for Entry {
    /// Owner unknown, no link group, no attributes: only the hash is ever reused from an index
    /// (when size, mtime and mode still match), and those did not change meaning.
    fn from(v1: EntryV1) -> Entry {
        let EntryV1 { path, kind, size, mtime_ns, mode, link, hash } = v1;
        Entry { link, hash, ..Entry::new(path, kind, size, mtime_ns, mode) }
    }
}

/// Checks the header and checksum, then decodes the entry list (upgrading version 1).
fn decode(bytes: &[u8]) -> Result<Vec<Entry>, &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("truncated header");
    }
    let v1 = match &bytes[..8] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        _ => return Err("bad magic or an unknown format version"),
    };
    let len = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "bad length")?);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err("length mismatch");
    }
    if blake3::hash(payload).as_bytes() != &bytes[16..HEADER_LEN] {
        return Err("checksum mismatch");
    }
    if v1 {
        let old: Vec<EntryV1> = postcard::from_bytes(payload).map_err(|_| "payload does not decode")?;
        return Ok(old.into_iter().map(Entry::from).collect());
    }
    postcard::from_bytes(payload).map_err(|_| "payload does not decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::entry::EntryKind;

    fn entry(path: &[u8], kind: EntryKind) -> Entry {
        let link = (kind == EntryKind::Symlink).then(|| "t".to_string());
        let hash = (kind == EntryKind::File).then(|| *blake3::hash(path).as_bytes());
        Entry { link, hash, uid: 7, gid: 8, ..Entry::new(RelName::new(path).unwrap(), kind, 7, -5, 0o640) }
    }

    fn sample() -> Index {
        [
            entry(b"a", EntryKind::Dir),
            entry(b"a/f", EntryKind::File),
            entry(b"a/l", EntryKind::Symlink),
            entry(b"a.b", EntryKind::File),
            entry(b"\xff", EntryKind::File),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn save_load_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("tree.idx");
        assert!(Index::load(&path).unwrap().is_empty(), "a missing index is empty");
        let idx = sample();
        idx.save(&path).unwrap();
        idx.save(&path).unwrap();
        let back = Index::load(&path).unwrap();
        assert!(!back.damaged());
        assert_eq!(back.iter().collect::<Vec<_>>(), idx.iter().collect::<Vec<_>>());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn damaged_files_load_empty_and_flagged() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("tree.idx");
        sample().save(&path).unwrap();
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let truncated = good[..good.len() - 3].to_vec();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        for bad in [flipped, truncated, bad_magic, Vec::new()] {
            fs::write(&path, &bad).unwrap();
            let idx = Index::load(&path).unwrap();
            assert!(idx.damaged() && idx.is_empty());
        }
        // A checksummed payload that decodes to an invalid name is damage too, not a crash.
        let payload = postcard::to_stdvec(&vec![b"../x".to_vec()]).unwrap();
        fs::write(&path, framed(MAGIC, &payload)).unwrap();
        assert!(Index::load(&path).unwrap().damaged());
    }

    /// A payload behind `magic`, with a good length and checksum.
    fn framed(magic: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(blake3::hash(payload).as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_version_1_index_is_upgraded_and_never_read_as_version_2() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            path: &'a RelName,
            kind: EntryKind,
            size: u64,
            mtime_ns: i128,
            mode: u32,
            link: Option<String>,
            hash: Option<[u8; 32]>,
        }
        let old = sample();
        let list: Vec<V1> = old
            .iter()
            .map(|e| V1 {
                path: &e.path,
                kind: e.kind,
                size: e.size,
                mtime_ns: e.mtime_ns,
                mode: e.mode,
                link: e.link.clone(),
                hash: e.hash,
            })
            .collect();
        let payload = postcard::to_stdvec(&list).unwrap();
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("tree.idx");
        fs::write(&path, framed(MAGIC_V1, &payload)).unwrap();
        let back = Index::load(&path).unwrap();
        assert!(!back.damaged(), "an old index is upgraded, not thrown away");
        assert_eq!(back.len(), old.len());
        for (b, o) in back.iter().zip(old.iter()) {
            assert_eq!(
                (&b.path, b.kind, b.size, b.mtime_ns, b.mode, &b.link, b.hash),
                (&o.path, o.kind, o.size, o.mtime_ns, o.mode, &o.link, o.hash)
            );
            assert!(b.owner_unknown() && b.extra.is_none(), "{b:?}");
        }
        // Saved again, it is version 2: the magic, not luck in decoding, tells formats apart.
        back.save(&path).unwrap();
        assert_eq!(&fs::read(&path).unwrap()[..8], MAGIC);
        // An unknown future version is not guessed at either.
        fs::write(&path, framed(b"TNDMIDX\x03", &payload)).unwrap();
        assert!(Index::load(&path).unwrap().damaged());
    }

    #[test]
    fn remove_takes_the_subtree_only() {
        let mut idx = sample();
        idx.remove(&RelName::new(b"a").unwrap());
        let left: Vec<_> = idx.iter().map(|e| e.path.display()).collect();
        assert_eq!(left, ["a.b", "\u{fffd}"]);
        idx.remove(&RelName::new(b"missing").unwrap());
        assert_eq!(idx.len(), 2);
    }
}
