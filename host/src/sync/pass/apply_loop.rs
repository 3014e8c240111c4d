//! The standby's apply thread: takes the pass's messages in order from the network task and
//! turns them into files (decompress, write, hash check), folders, links and deletions through
//! the [`Applier`], committing every [`COMMIT_FILES`] files or [`COMMIT_BYTES`] bytes. Large
//! files may arrive interleaved (by id); each has its own writer or patcher.
//!
//! Must never: record in the index a file that did not land, or lose what already landed when
//! the pass breaks off: whatever is complete when the messages stop (or this thread fails) is
//! committed and indexed, so the next pass does not send it again. An entry that cannot be
//! applied (a refused link, a path that cannot be deleted) is reported and the pass goes on.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::warn;

use super::pull::{ApplyLock, Progress};
use super::{PassError, PassStats, unexpected};
use crate::sync::apply::{Applier, FileWriter, Staged};
use crate::sync::entry::{Entry, EntryKind};
use crate::sync::index::Index;
use crate::sync::index_store::IndexStore;
use crate::sync::meta::Keep;
use crate::sync::names::RelName;
use crate::sync::patch::Patcher;
use crate::sync::protocol::{self, Since, SmallFile, SyncMsg};
use crate::sync::sparse::MAX_HOLES;
use crate::sync::tree_error::TreeError;

/// Files applied before a commit (bounds temporary files and the work a crash loses).
pub const COMMIT_FILES: u64 = 2_000;
/// Bytes applied before a commit.
pub const COMMIT_BYTES: u64 = 256 << 20;
/// Op messages queued for one patch thread.
const PATCH_QUEUE: usize = 16;
/// Hole maps that may wait for their `DeltaStart` at once.
const PENDING_HOLE_MAPS: usize = 256;

/// What the apply thread hands back.
pub(super) struct Applied {
    pub stats: PassStats,
    pub failed: Vec<RelName>,
    /// `Some` when the primary's `End` arrived: the pass is complete (its `since`, if any).
    pub end: Option<Option<Since>>,
    /// Why the pass broke off, if it did (what landed before is committed and indexed).
    pub broken: Option<PassError>,
    /// The index as saved, for the next pass.
    pub index: Option<(IndexStore, Index)>,
}

struct Loop<'a> {
    applier: Applier,
    index: Index,
    stats: PassStats,
    failed: Vec<RelName>,
    files: HashMap<u32, FileWriter>,
    deltas: HashMap<u32, DeltaJob>,
    /// Holes of delta files announced before their `DeltaStart`.
    holes: HashMap<u32, Vec<(u64, u64)>>,
    /// Finished files waiting for the commit, to be indexed when they land.
    landed: Vec<Entry>,
    since_commit: (u64, u64),
    progress: &'a Progress,
}

/// Runs on its own thread until `End` or until the network task drops the sender, then
/// commits, saves the index into `store` and releases `lock` (the apply lock is held by this
/// thread, so a cancelled pass keeps it until its last commit). An index that tracks its
/// changes is saved as those changes; one that does not (a full pass) as a new base.
pub(super) fn run(
    mut rx: mpsc::Receiver<SyncMsg>,
    root: &Path,
    keep: Keep,
    index: Index,
    mut store: IndexStore,
    progress: Arc<Progress>,
    lock: ApplyLock,
) -> Result<Applied, PassError> {
    let mut l = Loop {
        applier: Applier::open(root)?.with_keep(keep),
        index,
        stats: PassStats::default(),
        failed: Vec::new(),
        files: HashMap::new(),
        deltas: HashMap::new(),
        holes: HashMap::new(),
        landed: Vec::new(),
        since_commit: (0, 0),
        progress: &progress,
    };
    let mut end = None;
    let mut broken = None;
    while let Some(msg) = rx.blocking_recv() {
        if let SyncMsg::End { since, .. } = msg {
            end = Some(since);
            break;
        }
        let applied = l.one(msg).and_then(|()| {
            if l.since_commit.0 >= COMMIT_FILES || l.since_commit.1 >= COMMIT_BYTES {
                l.commit()?;
            }
            Ok(())
        });
        if let Err(e) = applied {
            broken = Some(e);
            break;
        }
    }
    // A folder committed in an earlier batch that receives files in a later one has its mode
    // and mtime restored by that batch's commit (the applier queues the restore when it first
    // writes there): no second pass over the folders.
    if let Err(e) = l.commit() {
        broken.get_or_insert(e);
    }
    let mut index = l.index;
    match index.take_changes() {
        Some(changes) => store.append(&changes, &index)?,
        None => store.rewrite(&index)?,
    }
    drop(lock);
    Ok(Applied { stats: l.stats, failed: l.failed, end, broken, index: Some((store, index)) })
}

enum PatchMsg {
    Ops(Vec<crate::sync::delta::DeltaOp>),
    End { new_len: u64, new_hash: [u8; 32] },
}

/// One delta file being patched on a thread of its own (patching copies most of a large file:
/// several at once use both cores), fed its ops in order.
struct DeltaJob {
    entry: Entry,
    ops: std::sync::mpsc::SyncSender<PatchMsg>,
    thread: std::thread::JoinHandle<Result<FileWriter, TreeError>>,
}

impl DeltaJob {
    fn start(
        entry: Entry,
        base: Option<std::path::PathBuf>,
        staged: Result<Staged, TreeError>,
        block_len: u32,
    ) -> DeltaJob {
        // Bounded: when the disk is slower than the network, the network waits.
        let (ops, rx) = std::sync::mpsc::sync_channel::<PatchMsg>(PATCH_QUEUE);
        let thread = std::thread::spawn(move || {
            let no_base = || TreeError::Delta("no usable base".into());
            let base = File::open(base.ok_or_else(no_base)?).map_err(|_| no_base())?;
            let out = staged?.open_verified_by_caller()?;
            let mut patcher: Patcher<File, FileWriter> =
                Patcher::new(base, block_len, out).map_err(|e| TreeError::Delta(e.to_string()))?;
            for msg in rx {
                match msg {
                    PatchMsg::Ops(ops) => {
                        for op in &ops {
                            patcher.apply(op).map_err(|e| TreeError::Delta(e.to_string()))?;
                        }
                    }
                    PatchMsg::End { new_len, new_hash } => {
                        return patcher
                            .finish(new_len, &new_hash)
                            .map_err(|e| TreeError::Delta(e.to_string()));
                    }
                }
            }
            Err(TreeError::Delta("the delta stopped midway".into()))
        });
        DeltaJob { entry, ops, thread }
    }

    fn finish(self, new_len: u64, new_hash: [u8; 32]) -> Result<FileWriter, TreeError> {
        let _ = self.ops.send(PatchMsg::End { new_len, new_hash });
        drop(self.ops);
        self.thread.join().unwrap_or_else(|_| Err(TreeError::Delta("the patch thread panicked".into())))
    }
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
                    match self.applier.delete(&p) {
                        Ok(()) => {
                            self.index.remove(&p);
                            self.stats.deleted += 1;
                        }
                        Err(err) => self.refuse(&p, &err),
                    }
                }
            }
            SyncMsg::Move { from, entry } => {
                let moved = match self.index.get(&from) {
                    Some(held) => self.applier.adopt(&from, &held.clone(), &entry),
                    None => Err(TreeError::MoveSource { name: from.display(), reason: "not in the index" }),
                };
                match moved {
                    Ok(()) if from == entry.path => {
                        self.stats.meta_only += 1;
                        self.since_commit.0 += 1;
                        self.landed.push(entry);
                    }
                    Ok(()) => {
                        self.stats.moved += 1;
                        self.since_commit.0 += 1;
                        self.landed.push(entry);
                    }
                    Err(err) => self.refuse(&entry.path, &err),
                }
            }
            SyncMsg::Dir(e) => match self.applier.dir(&e) {
                Ok(()) => {
                    self.index.insert(e);
                    self.stats.dirs_links += 1;
                }
                Err(err) => self.refuse(&e.path, &err),
            },
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
                let staged: Vec<_> = files
                    .iter()
                    .map(|f| match f.entry.hash {
                        Some(_) => self.applier.stage(&f.entry),
                        None => Err(TreeError::Delta("a whole file came without its content hash".into())),
                    })
                    .collect();
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
            SyncMsg::Hole { id, len } => {
                if let Some(w) = self.files.get_mut(&id)
                    && let Err(err) = w.hole(len)
                {
                    let w = self.files.remove(&id).expect("present");
                    let path = w.entry().path.clone();
                    self.refuse(&path, &TreeError::io("leave a hole in", path.to_path())(err));
                }
            }
            SyncMsg::Holes { id, holes } => {
                // Sent just before its `DeltaStart`: a few wait at once, one per sending worker.
                if self.holes.len() >= PENDING_HOLE_MAPS && !self.holes.contains_key(&id) {
                    return Err(PassError::Worker(format!(
                        "more than {PENDING_HOLE_MAPS} hole maps announced without their deltas"
                    )));
                }
                if holes.len() <= MAX_HOLES {
                    self.holes.insert(id, holes);
                }
            }
            SyncMsg::HardLink(e) => match self.applier.hard_link(&e) {
                Ok(()) => {
                    self.since_commit.0 += 1;
                    self.landed.push(e);
                }
                Err(err) => self.refuse(&e.path, &err),
            },
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
                let base = self.applier.base_path(&entry.path).ok().flatten();
                let holes = self.holes.remove(&id);
                let staged = self.applier.stage(&entry).map(|s| match holes {
                    Some(h) => s.with_holes(h),
                    None => s,
                });
                self.deltas.insert(id, DeltaJob::start(entry, base, staged, block_len));
            }
            SyncMsg::Ops { id, ops } => {
                if let Some(job) = self.deltas.get(&id) {
                    for op in &ops {
                        if let crate::sync::delta::DeltaOp::Literal(bytes) = op {
                            self.stats.content_bytes += bytes.len() as u64;
                        }
                    }
                    // A patcher that already failed has hung up; its error comes at the end.
                    let _ = job.ops.send(PatchMsg::Ops(ops));
                }
            }
            SyncMsg::DeltaEnd { id, new_len, new_hash } => {
                let Some(job) = self.deltas.remove(&id) else { return Ok(()) };
                let mut entry = job.entry.clone();
                entry.hash = Some(new_hash);
                let finished = job.finish(new_len, new_hash);
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
        self.stats.hard_links += committed.links;
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
