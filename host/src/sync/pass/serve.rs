//! The primary's side of a pass, after the standby's `Open`: decide the mode (from the
//! journal when it covers the standby's `since`, else a full comparison), then send
//! deletions, folders and links in order, request every delta signature up front, and let the
//! file workers stream the files while this task reads the signatures; hard-link members go
//! last, as links to leaders that have landed by then; then the final `Done`.
//!
//! Must never: delete at the standby a path the scan did not cover (unreadable, special,
//! excluded), or report a generation the standby has not fully reached.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::workers::{self, Job, Workers};
use super::{PassError, PassStats, recv_within, unexpected, write_all};
use crate::peer::{Frame, PeerConnection, PeerReader};
use crate::sync::config::TreeMeta;
use crate::sync::entry::{Entry, EntryKind};
use crate::sync::hardlink::still_linked;
use crate::sync::index::{Index, diff};
use crate::sync::journal::{Journal, Plan};
use crate::sync::meta::Keep;
use crate::sync::names::RelName;
use crate::sync::protocol::{self, DELTA_MIN_BYTES, HAVE_BATCH, PassMode, Since, SyncMsg, Unreadable};
use crate::sync::scan::{ScanResult, Verdict, scan_with};
use crate::sync::tree_error::TreeError;

/// How long a current standby's `Open { wait: true }` is held before the answer `Current`.
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Unreadable paths a journal keeps to try again in the next incremental pass; past this, the
/// next pass is a full comparison.
const UNREAD_RETRIED: usize = 10_000;

/// Frames queued between the workers and the connection's writer.
const FRAME_QUEUE: usize = 32;

/// The path filter (the path-filter plugin in the daemon).
pub type Filter = Box<dyn FnMut(&[Entry]) -> Vec<Verdict> + Send>;

/// The tree a pass serves.
pub struct ServeTree {
    pub root: PathBuf,
    pub filter: Filter,
    /// The tree's change journal, when the primary watches it.
    pub journal: Option<std::sync::Arc<Journal>>,
    /// File worker threads (one per core is right).
    pub workers: usize,
    /// Paths a full pass never deletes at the standby, present here or not: the roots of the
    /// trees nested in this one, which their own passes own.
    pub keep: Vec<RelName>,
    /// The metadata this tree keeps (told to the standby in `Mode`).
    pub meta: TreeMeta,
    /// The standby runs as root (its `Open` says): owners and privileged attributes are kept.
    pub standby_root: bool,
    /// How long the standby may stay silent, or not take a frame, in the middle of the pass.
    pub idle: std::time::Duration,
}

/// Serves one pass on `conn` for a standby that opened with `since`. Returns the filter for
/// the next pass along with the figures.
pub async fn serve_pass(
    conn: &mut PeerConnection,
    since: Option<Since>,
    wait: bool,
    tree: ServeTree,
) -> Result<(PassStats, Filter), PassError> {
    let ServeTree { root, filter, journal, workers, keep, meta, standby_root, idle } = tree;
    let kept = Keep::for_pass(meta, standby_root);
    let PeerConnection { reader, writer, peer, .. } = conn;
    let standby = peer.node.clone();
    let mut planned = match &journal {
        Some(j) => j.plan(&standby, since).await,
        None => Plan::Full { since: None },
    };
    if let (Plan::Current, Some(j), Some(s), true) = (&planned, &journal, since, wait) {
        j.wait_change(s.generation, LONG_POLL).await;
        planned = j.plan(&standby, since).await;
    }
    if let Plan::Current = planned {
        writer.write_frame(&protocol::encode(&SyncMsg::Mode { mode: PassMode::Current, meta })?).await?;
        return Ok((PassStats::default(), filter));
    }
    let (tx, rx) = mpsc::channel::<Frame>(FRAME_QUEUE);
    let drive = drive((reader, idle), tx, root, filter, planned, workers, keep, (meta, kept));
    let (wire, driven) = tokio::try_join!(write_all(writer, rx, idle), drive)?;
    let (mut stats, filter, outcome) = driven;
    stats.wire_bytes = wire;
    if let (Some(j), Some(outcome)) = (&journal, outcome) {
        j.confirm(&standby, outcome);
    }
    debug!(?stats, "sync pass served");
    Ok((stats, filter))
}

async fn send(tx: &mpsc::Sender<Frame>, msg: &SyncMsg) -> Result<(), PassError> {
    let frame = protocol::encode(msg)?;
    tx.send(frame).await.map_err(|_| PassError::Worker("the connection writer stopped".into()))
}

/// What the standby holds after a successful pass, for the journal.
pub struct Outcome {
    pub since: Since,
    pub holds: Index,
    /// Paths this pass could not read (held as they were): the next pass tries them again.
    pub unread: Vec<RelName>,
}

/// The pass itself: everything but the writing. `metadata`: what the tree keeps, and what
/// this pass keeps of it.
#[allow(clippy::too_many_arguments)]
async fn drive(
    (reader, idle): (&mut PeerReader, std::time::Duration),
    tx: mpsc::Sender<Frame>,
    root: PathBuf,
    filter: Filter,
    planned: Plan,
    workers: usize,
    keep: Vec<RelName>,
    (meta, kept): (TreeMeta, Keep),
) -> Result<(PassStats, Filter, Option<Outcome>), PassError> {
    let mut stats = PassStats::default();
    // Something this pass could not cover: it must not count as complete.
    let mut incomplete = false;
    // What could not be read: said, left as the standby has it, tried again next pass.
    let mut unread: Vec<(RelName, String)> = Vec::new();
    let (theirs, upserts, deletes, filter, since) = match planned {
        Plan::Current => unreachable!("answered before"),
        Plan::Full { since } => {
            stats.full = true;
            send(&tx, &SyncMsg::Mode { mode: PassMode::Full, meta }).await?;
            let scanning = spawn_scan(root.clone(), filter, kept);
            let theirs = receive_index(reader, idle).await?;
            let (scanned, filter) = scanning.await.map_err(|e| PassError::Worker(e.to_string()))?;
            let (upserts, deletes, special) = diff_scanned(scanned?, &theirs, keep, &mut unread);
            stats.skipped_special = special;
            (theirs, upserts, deletes, filter, since)
        }
        Plan::Incremental { since, holds, dirty } => {
            send(&tx, &SyncMsg::Mode { mode: PassMode::Incremental, meta }).await?;
            let scan_root = root.clone();
            let held = holds.clone();
            let diffed = tokio::task::spawn_blocking(move || {
                let mut filter = filter;
                let d = crate::sync::journal::diff_dirty(&scan_root, &held, &dirty, &kept, &mut filter);
                (d, filter)
            });
            let (d, filter) = diffed.await.map_err(|e| PassError::Worker(e.to_string()))?;
            let crate::sync::journal::DirtyDiff { diff: d, unreadable, special } = d?;
            if d.upserts.iter().any(|e| e.hardlink().is_some()) {
                // A changed file with several names: its group's other members and leader may
                // lie anywhere in the tree, and the journal names only the path it was changed
                // through. One scan of the primary's tree finds the group; the standby's index is
                // still not needed (the journal knows what it holds).
                debug!("a changed file has hard links: this pass scans the whole tree");
                let scanning = spawn_scan(root.clone(), filter, kept);
                let (scanned, filter) = scanning.await.map_err(|e| PassError::Worker(e.to_string()))?;
                let (upserts, deletes, special) = diff_scanned(scanned?, &holds, keep, &mut unread);
                stats.skipped_special = special;
                (holds, upserts, deletes, filter, Some(since))
            } else {
                unread = unreadable;
                stats.skipped_special = special;
                (holds, d.upserts, d.deletes, filter, Some(since))
            }
        }
    };
    // Renames first: the standby takes its own files before any deletion could.
    let (scan_root, held) = (root.clone(), theirs);
    let paired = tokio::task::spawn_blocking(move || {
        let mut upserts = upserts;
        let paired = super::moves::pair(&scan_root, &held, &mut upserts, &deletes);
        (paired, upserts, held, deletes)
    });
    let (mut paired, mut upserts, theirs, deletes) =
        paired.await.map_err(|e| PassError::Worker(e.to_string()))?;
    // Only the metadata changed (a chmod, a new owner, a new hard link to it): the standby
    // keeps its file and takes the new metadata, as a rename onto its own path.
    let mut meta_only: Vec<Entry> = Vec::new();
    upserts.retain(|e| match same_content(e, &e.path, &theirs) {
        Some(hash) => {
            meta_only.push(Entry { hash: Some(hash), ..e.clone() });
            false
        }
        None => true,
    });
    // A new name that leads a hard-link group whose other name the standby holds unchanged:
    // that file becomes the leader (a rename), and its old name is linked to it again.
    let mut relinked: Vec<(RelName, Entry)> = Vec::new();
    let member_of: HashMap<&RelName, &RelName> =
        upserts.iter().filter_map(|m| Some((m.link_leader()?, &m.path))).collect();
    for e in upserts.iter().filter(|e| e.hardlink().is_some() && theirs.get(&e.path).is_none()) {
        if let Some(member) = member_of.get(&e.path)
            && let Some(hash) = same_content(e, member, &theirs)
        {
            relinked.push(((*member).clone(), Entry { hash: Some(hash), ..e.clone() }));
        }
    }
    let taken: HashSet<&RelName> = relinked.iter().map(|(_, e)| &e.path).collect();
    upserts.retain(|e| !taken.contains(&e.path));
    paired.moves.extend(relinked);
    let files: Vec<&Entry> =
        upserts.iter().filter(|e| e.kind == EntryKind::File && e.link_leader().is_none()).collect();
    let plan_bytes = files.iter().map(|e| e.size).sum();
    let (plan_files, special) = (files.len() as u64, stats.skipped_special);
    send(&tx, &SyncMsg::Plan { files: plan_files, bytes: plan_bytes, special }).await?;
    for (from, entry) in &paired.moves {
        send(&tx, &SyncMsg::Move { from: from.clone(), entry: entry.clone() }).await?;
    }
    for entry in &meta_only {
        send(&tx, &SyncMsg::Move { from: entry.path.clone(), entry: entry.clone() }).await?;
    }
    stats.moved = paired.moves.len() as u64;
    stats.meta_only = meta_only.len() as u64;
    let moved: Vec<Entry> = paired.moves.into_iter().map(|(_, e)| e).chain(meta_only).collect();
    for paths in deletes.chunks(HAVE_BATCH) {
        stats.deleted += paths.len() as u64;
        send(&tx, &SyncMsg::Delete { paths: paths.to_vec() }).await?;
    }
    let mut wanted: HashMap<u32, Entry> = HashMap::new();
    let mut whole = Vec::new();
    let mut members = Vec::new();
    for entry in &upserts {
        match entry.kind {
            EntryKind::Dir => send(&tx, &SyncMsg::Dir(entry.clone())).await?,
            EntryKind::Symlink => send(&tx, &SyncMsg::Symlink(entry.clone())).await?,
            // Content goes once, with the leader; members follow it once it has landed.
            EntryKind::File if entry.link_leader().is_some() => {
                members.push(entry);
                continue;
            }
            EntryKind::File => {
                let base = theirs
                    .get(&entry.path)
                    .filter(|b| b.kind == EntryKind::File && b.size >= DELTA_MIN_BYTES);
                if base.is_some() && entry.size >= DELTA_MIN_BYTES {
                    let id = wanted.len() as u32;
                    send(&tx, &SyncMsg::WantSignature { id, path: entry.path.clone() }).await?;
                    let (top, path) = (root.clone(), entry.path.clone());
                    tokio::task::spawn_blocking(move || workers::prefetch(&top, &path));
                    wanted.insert(id, entry.clone());
                } else {
                    whole.push(entry.clone());
                }
                continue;
            }
        }
        stats.dirs_links += 1;
    }
    let pool = Workers::start(workers, &root, tx.clone());
    whole.into_iter().for_each(|e| pool.push(Job::Whole(e)));
    while !wanted.is_empty() {
        match recv_within(reader, idle).await? {
            SyncMsg::Signature { id, sig } => {
                let entry =
                    wanted.remove(&id).ok_or_else(|| PassError::Worker(format!("unasked signature {id}")))?;
                match sig {
                    Some(sig) if sig.validate().is_ok() => pool.push(Job::Delta { entry, sig }),
                    _ => pool.push(Job::Whole(entry)),
                }
            }
            other => return Err(unexpected(&other, "a signature")),
        }
    }
    let done = pool.finish().await.map_err(PassError::Worker)?;
    let sent_hashes: HashMap<RelName, [u8; 32]> = done.hashes.into_iter().collect();
    stats.files_whole = done.whole;
    stats.files_delta = done.delta;
    stats.content_bytes = done.content_bytes;
    incomplete |= !done.changed.is_empty();
    // A file the workers could not read stays as the standby has it: never recorded as held.
    let unread_files: HashSet<RelName> = done.unreadable.iter().map(|(p, _)| p.clone()).collect();
    unread.extend(done.unreadable);
    let unsent: HashSet<RelName> = done.changed.into_iter().chain(unread_files.iter().cloned()).collect();
    let members: Vec<Entry> = members.into_iter().cloned().collect();
    let checked_root = root.clone();
    let checked = tokio::task::spawn_blocking(move || {
        members.into_iter().map(|m| (still_linked(&checked_root, &m), m)).collect::<Vec<_>>()
    });
    for (linked, member) in checked.await.map_err(|e| PassError::Worker(e.to_string()))? {
        if !linked || member.link_leader().is_some_and(|l| unsent.contains(l)) {
            // Its leader did not go, or it changed since the scan: the next pass sends it.
            debug!(path = %member.path, "hard-link member changed or its leader was not sent; left for the next pass");
            incomplete = true;
            continue;
        }
        stats.hard_links += 1;
        send(&tx, &SyncMsg::HardLink(member)).await?;
    }
    // Past this many, the next pass compares whole trees rather than keep a list to try again.
    incomplete |= unread.len() > UNREAD_RETRIED;
    let mut unreadable = Unreadable::default();
    unread.iter().for_each(|(p, reason)| unreadable.add(p, reason));
    if let Some(first) = unreadable.listed.first() {
        warn!(
            count = unreadable.count,
            first = %first.path,
            reason = %first.reason,
            "paths of the tree cannot be read; the standby keeps its copies"
        );
    }
    stats.unreadable = unreadable.count;
    stats.unreadable_paths = unreadable.listed.clone();
    send(&tx, &SyncMsg::End { since: if incomplete { None } else { since }, unreadable }).await?;
    drop(tx);
    let failed = match recv_within(reader, idle).await? {
        SyncMsg::Done { failed, .. } => failed,
        other => return Err(unexpected(&other, "the standby's done")),
    };
    stats.failed = failed.len() as u64;
    let outcome = match since {
        Some(since) if !incomplete && failed.is_empty() => {
            // What was sent is held with its hash (the scan had none to give).
            let upserts = upserts.into_iter().filter(|e| !unread_files.contains(&e.path)).map(|mut e| {
                if let Some(hash) = sent_hashes.get(&e.path) {
                    e.hash = Some(*hash);
                }
                e
            });
            let holds = holds_after(theirs, upserts.chain(moved), &deletes);
            Some(Outcome { since, holds, unread: unread.into_iter().map(|(p, _)| p).collect() })
        }
        _ => None,
    };
    Ok((stats, filter, outcome))
}

/// The content hash the standby holds at `at` (`e`'s path, or another name of `e`'s inode)
/// when only `e`'s metadata differs from that file:
/// a file both sides have with the same size and mtime (the test a pass with no change
/// trusts), and whose hash the standby's index knows.
fn same_content(e: &Entry, at: &RelName, theirs: &Index) -> Option<[u8; 32]> {
    if e.kind != EntryKind::File || e.link_leader().is_some() {
        return None;
    }
    let held = theirs.get(at)?;
    (held.kind == EntryKind::File && held.size == e.size && held.mtime_ns == e.mtime_ns).then_some(held.hash?)
}

/// Scans the whole tree at `root` on a blocking thread, keeping what `kept` says.
fn spawn_scan(
    root: PathBuf,
    filter: Filter,
    kept: Keep,
) -> tokio::task::JoinHandle<(Result<ScanResult, TreeError>, Filter)> {
    tokio::task::spawn_blocking(move || {
        let mut filter = filter;
        let scanned = scan_with(&root, &kept, &mut filter);
        (scanned, filter)
    })
}

/// A whole scan against what the standby holds: upserts, deletes (never of what the scan did
/// not cover, nor of `nested` trees' roots) and the special files skipped; what the scan
/// could not read goes to `unread`.
fn diff_scanned(
    scanned: ScanResult,
    theirs: &Index,
    nested: Vec<RelName>,
    unread: &mut Vec<(RelName, String)>,
) -> (Vec<Entry>, Vec<RelName>, u64) {
    let mut protected = scanned.protected();
    protected.extend(nested);
    let d = diff(&scanned.entries, theirs, &protected);
    unread.extend(scanned.unreadable);
    (d.upserts, d.deletes, scanned.skipped_special.len() as u64)
}

/// The standby's index, sent in batches.
async fn receive_index(reader: &mut PeerReader, idle: std::time::Duration) -> Result<Index, PassError> {
    let mut theirs = Index::new();
    loop {
        match recv_within(reader, idle).await? {
            SyncMsg::Have { entries } => entries.into_iter().for_each(|e| theirs.insert(e)),
            SyncMsg::HaveEnd => return Ok(theirs),
            other => return Err(unexpected(&other, "the standby's index")),
        }
    }
}

/// What the standby holds once a pass landed: its old state with the deletions and upserts.
fn holds_after(mut theirs: Index, upserts: impl Iterator<Item = Entry>, deletes: &[RelName]) -> Index {
    deletes.iter().for_each(|p| theirs.remove(p));
    for e in upserts {
        if e.kind != EntryKind::Dir {
            // A file or link replacing a folder takes the folder's subtree with it.
            theirs.remove(&e.path);
        }
        theirs.insert(e);
    }
    theirs
}
