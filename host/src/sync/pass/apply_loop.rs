//! The standby's apply thread: takes the pass's messages in order from the network task and
//! turns them into files (decompress, write, hash check), folders, links and deletions through
//! the [`Applier`], committing every [`COMMIT_FILES`] files or [`COMMIT_BYTES`] bytes. Large
//! files may arrive interleaved (by id); each has its own writer or patcher.
//!
//! Must never: record in the index a file that did not land, or lose what already landed when
//! the pass breaks off: whatever is complete when the messages stop is committed and indexed,
//! so the next pass does not send it again.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::warn;

use super::pull::Progress;
use super::{PassError, PassStats, unexpected};
use crate::sync::apply::{Applier, FileWriter, Staged};
use crate::sync::entry::{Entry, EntryKind};
use crate::sync::index::Index;
use crate::sync::names::RelName;
use crate::sync::patch::Patcher;
use crate::sync::protocol::{self, Since, SmallFile, SyncMsg};
use crate::sync::tree_error::TreeError;

/// Files applied before a commit (bounds temporary files and the work a crash loses).
pub const COMMIT_FILES: u64 = 2_000;
/// Bytes applied before a commit.
pub const COMMIT_BYTES: u64 = 256 << 20;

/// What the apply thread hands back.
pub(super) struct Applied {
    pub index: Index,
    pub stats: PassStats,
    pub failed: Vec<RelName>,
    /// `Some` when the primary's `End` arrived: the pass is complete (its `since`, if any).
    pub end: Option<Option<Since>>,
}

struct Loop<'a> {
    applier: Applier,
    index: Index,
    stats: PassStats,
    failed: Vec<RelName>,
    files: HashMap<u32, FileWriter>,
    deltas: HashMap<u32, (Entry, Option<Patcher<File, FileWriter>>)>,
    /// Finished files waiting for the commit, to be indexed when they land.
    landed: Vec<Entry>,
    folders: Vec<Entry>,
    since_commit: (u64, u64),
    progress: &'a Progress,
}

/// Runs on its own thread until `End` or until the network task drops the sender.
pub(super) fn run(
    mut rx: mpsc::Receiver<SyncMsg>,
    root: &Path,
    index: Index,
    progress: Arc<Progress>,
) -> Result<Applied, PassError> {
    let mut l = Loop {
        applier: Applier::open(root)?,
        index,
        stats: PassStats::default(),
        failed: Vec::new(),
        files: HashMap::new(),
        deltas: HashMap::new(),
        landed: Vec::new(),
        folders: Vec::new(),
        since_commit: (0, 0),
        progress: &progress,
    };
    let mut end = None;
    let mut broken = None;
    while let Some(msg) = rx.blocking_recv() {
        if let SyncMsg::End { since } = msg {
            end = Some(since);
            break;
        }
        if let Err(e) = l.one(msg) {
            broken = Some(e);
            break;
        }
        if l.since_commit.0 >= COMMIT_FILES || l.since_commit.1 >= COMMIT_BYTES {
            l.commit()?;
        }
    }
    // A folder committed in an earlier batch may have received files since, which moved its
    // mtime: set the folders' times once more with the last batch.
    for folder in std::mem::take(&mut l.folders) {
        l.applier.dir(&folder)?;
    }
    l.commit()?;
    if let Some(e) = broken {
        return Err(e);
    }
    Ok(Applied { index: l.index, stats: l.stats, failed: l.failed, end })
}

/// Writes staged small files, half on a second thread.
fn write_parallel(
    staged: Vec<Result<Staged, TreeError>>,
    files: &[SmallFile],
) -> Vec<Result<FileWriter, TreeError>> {
    let write = |part: Vec<Result<Staged, TreeError>>, files: &[SmallFile]| -> Vec<_> {
        part.into_iter().zip(files).map(|(s, f)| s.and_then(|s| s.write_whole(&f.data))).collect()
    };
    if staged.len() < 8 {
        return write(staged, files);
    }
    let mut first = staged;
    let second = first.split_off(first.len() / 2);
    let (head, tail) = files.split_at(first.len());
    std::thread::scope(|scope| {
        let other = scope.spawn(|| write(second, tail));
        let mut out = write(first, head);
        match other.join() {
            Ok(rest) => out.extend(rest),
            Err(_) => out.extend(tail.iter().map(|f| {
                Err(TreeError::io("write", f.entry.path.to_path())(std::io::Error::other(
                    "writer thread panicked",
                )))
            })),
        }
        out
    })
}

impl Loop<'_> {
    fn one(&mut self, msg: SyncMsg) -> Result<(), PassError> {
        match msg {
            SyncMsg::Delete { paths } => {
                for p in paths {
                    self.applier.delete(&p)?;
                    self.index.remove(&p);
                    self.stats.deleted += 1;
                }
            }
            SyncMsg::Dir(e) => {
                self.applier.dir(&e)?;
                self.folders.push(e.clone());
                self.index.insert(e);
                self.stats.dirs_links += 1;
            }
            SyncMsg::Symlink(e) => match self.applier.symlink(&e) {
                Ok(()) => {
                    self.index.remove(&e.path);
                    self.index.insert(e);
                    self.stats.dirs_links += 1;
                }
                Err(err) => self.refuse(&e.path, &err),
            },
            SyncMsg::Files { packed, compressed } => {
                let files = protocol::unpack(packed, compressed)?;
                let staged: Vec<_> = files.iter().map(|f| self.applier.stage(&f.entry)).collect();
                // Creating and writing files is the slow part: two threads share the batch.
                let written = write_parallel(staged, &files);
                for (w, f) in written.into_iter().zip(files) {
                    self.stats.content_bytes += f.data.len() as u64;
                    self.finish(w, f.entry, false);
                }
            }
            SyncMsg::FileStart { id, entry } => match self.applier.begin_file(&entry) {
                Ok(w) => {
                    self.files.insert(id, w);
                }
                Err(err) => self.refuse(&entry.path, &err),
            },
            SyncMsg::Chunk { id, data, compressed } => {
                let data = protocol::unchunk(data, compressed)?;
                self.stats.content_bytes += data.len() as u64;
                self.progress.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(w) = self.files.get_mut(&id)
                    && let Err(err) = w.write_all(&data)
                {
                    let w = self.files.remove(&id).expect("present");
                    let path = w.entry().path.clone();
                    self.refuse(&path, &TreeError::io("write", path.to_path())(err));
                }
            }
            SyncMsg::FileEnd { id, hash } => {
                if let Some(mut w) = self.files.remove(&id) {
                    w.expect_hash(hash);
                    let mut entry = w.entry().clone();
                    entry.hash = Some(hash);
                    self.finish(Ok(w), entry, false);
                }
            }
            SyncMsg::FileAbort { id } => {
                self.files.remove(&id);
                self.deltas.remove(&id);
            }
            SyncMsg::DeltaStart { id, entry, block_len } => {
                let base =
                    self.applier.base_path(&entry.path).ok().flatten().and_then(|p| File::open(p).ok());
                let patcher = match (base, self.applier.begin_file(&entry)) {
                    (Some(base), Ok(w)) => Patcher::new(base, block_len, w).ok(),
                    _ => None,
                };
                self.deltas.insert(id, (entry, patcher));
            }
            SyncMsg::Ops { id, ops } => {
                let Some((_, slot)) = self.deltas.get_mut(&id) else { return Ok(()) };
                for op in &ops {
                    if let crate::sync::delta::DeltaOp::Literal(bytes) = op {
                        self.stats.content_bytes += bytes.len() as u64;
                    }
                    if let Some(p) = slot.as_mut()
                        && p.apply(op).is_err()
                    {
                        *slot = None;
                    }
                }
            }
            SyncMsg::DeltaEnd { id, new_len, new_hash } => {
                let Some((mut entry, patcher)) = self.deltas.remove(&id) else { return Ok(()) };
                entry.hash = Some(new_hash);
                let finished = match patcher {
                    Some(p) => p.finish(new_len, &new_hash).map_err(|e| TreeError::Delta(e.to_string())),
                    None => Err(TreeError::Delta("no usable base or a bad op".into())),
                };
                self.finish(finished, entry, true);
            }
            other => return Err(unexpected(&other, "a tree entry or the end of the pass")),
        }
        Ok(())
    }

    /// Queues a received file for the commit, or notes why it could not land.
    fn finish(&mut self, written: Result<FileWriter, TreeError>, entry: Entry, delta: bool) {
        let size = entry.size;
        match written.and_then(|w| self.applier.finish_file(w)) {
            Ok(()) => {
                if delta {
                    self.stats.files_delta += 1;
                } else {
                    self.stats.files_whole += 1;
                }
                self.since_commit.0 += 1;
                self.since_commit.1 += size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                if size < protocol::CHUNK_BYTES as u64 {
                    self.progress.bytes.fetch_add(size, Ordering::Relaxed);
                }
                self.landed.push(entry);
            }
            Err(err) => self.refuse(&entry.path, &err),
        }
    }

    fn refuse(&mut self, path: &RelName, err: &TreeError) {
        warn!(path = %path.display(), error = %err, "entry not applied");
        self.failed.push(path.clone());
    }

    fn commit(&mut self) -> Result<(), PassError> {
        let committed = self.applier.commit()?;
        let failed: std::collections::HashSet<&RelName> = committed.failed.iter().map(|(p, _)| p).collect();
        for e in std::mem::take(&mut self.landed) {
            if failed.contains(&e.path) {
                continue;
            }
            if e.kind != EntryKind::Dir {
                self.index.remove(&e.path);
            }
            self.index.insert(e);
        }
        self.failed.extend(committed.failed.into_iter().map(|(p, _)| p));
        self.since_commit = (0, 0);
        Ok(())
    }
}
