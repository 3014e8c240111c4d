//! One sync pass over an established peer connection: the standby pulls ([`pull_pass`]): it
//! sends its refreshed index, then applies what the primary sends; the primary
//! ([`serve_pass`]) refreshes its own index, diffs, and sends deletions, folders, links and
//! files (whole, or as a delta against the standby's copy).
//!
//! This first version is sequential: one signature round trip per delta file, and file I/O on
//! the calling task. Pipelining (signatures requested ahead, disk and network in separate
//! tasks) and the continuous watch mode come next.
//!
//! Must never: delete at the standby what the primary could not read, or leave a half-written
//! file under its real name (the applier's temp files and batch commit see to that).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use tracing::{debug, warn};

use super::apply::Applier;
use super::delta::{DeltaOp, delta_each};
use super::entry::{Entry, EntryKind};
use super::error::SyncError;
use super::index::{Index, diff, refresh};
use super::patch::Patcher;
use super::protocol::{self, CHUNK_BYTES, DELTA_MIN_BYTES, HAVE_BATCH, ProtocolError, SyncMsg};
use super::scan::{Verdict, scan};
use super::signature::{block_len_for, signature};
use super::tree_error::TreeError;
use crate::peer::{PeerConnection, PeerError};

/// Files the standby applies before committing a batch (bounds temp files and memory).
const COMMIT_EVERY: u64 = 2_000;
/// Delta ops per message.
const OPS_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Delta(#[from] SyncError),
}

/// What a pass moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassStats {
    pub files_whole: u64,
    pub files_delta: u64,
    /// Bytes of file content the pass carried (whole files and delta literals, uncompressed).
    pub content_bytes: u64,
    /// Bytes of sync messages the primary sent (after compression, before encryption).
    pub wire_bytes: u64,
    pub deleted: u64,
    pub dirs_links: u64,
    /// Files the standby could not apply (reported, the rest of the pass went on).
    pub failed: u64,
}

async fn send(conn: &mut PeerConnection, msg: &SyncMsg) -> Result<u64, PassError> {
    let frame = protocol::encode(msg)?;
    conn.write_frame(&frame).await?;
    Ok(frame.body.len() as u64)
}

async fn recv(conn: &mut PeerConnection) -> Result<SyncMsg, PassError> {
    Ok(protocol::decode(conn.read_frame().await?)?)
}

fn unexpected(got: &SyncMsg, wanted: &'static str) -> PassError {
    let got = format!("{got:?}").chars().take(80).collect();
    PassError::Protocol(ProtocolError::Unexpected { got, wanted })
}

/// The standby's side: pulls `tree` into `root`, keeping its index at `index_path`.
pub async fn pull_pass(
    conn: &mut PeerConnection,
    tree: &str,
    root: &Path,
    index_path: &Path,
) -> Result<PassStats, PassError> {
    send(conn, &SyncMsg::Open { tree: tree.to_string() }).await?;
    let old = Index::load(index_path)?;
    let scanned = scan(root, &mut |batch| vec![Verdict::Keep; batch.len()])?;
    let (mine, _) = refresh(&old, scanned.entries, root)?;
    for batch in mine.chunks(HAVE_BATCH) {
        send(conn, &SyncMsg::Have { entries: batch.to_vec() }).await?;
    }
    send(conn, &SyncMsg::HaveEnd).await?;
    let mut index: Index = mine.into_iter().collect();
    let mut applier = Applier::open(root)?;
    let mut stats = PassStats::default();
    let mut since_commit = 0u64;
    let mut folders = Vec::new();
    loop {
        match recv(conn).await? {
            SyncMsg::Delete { paths } => {
                for p in paths {
                    applier.delete(&p)?;
                    index.remove(&p);
                    stats.deleted += 1;
                }
            }
            SyncMsg::Dir(e) => {
                applier.dir(&e)?;
                folders.push(e.clone());
                index.insert(e);
                stats.dirs_links += 1;
            }
            SyncMsg::Symlink(e) => match applier.symlink(&e) {
                Ok(()) => {
                    index.insert(e);
                    stats.dirs_links += 1;
                }
                Err(err) => {
                    warn!(path = %e.path.display(), error = %err, "link refused");
                    stats.failed += 1;
                }
            },
            SyncMsg::File { entry } => {
                let mut w = applier.begin_file(&entry)?;
                let mut written = Ok(());
                loop {
                    match recv(conn).await? {
                        SyncMsg::Chunk { data, compressed } => {
                            let data = protocol::unchunk(data, compressed)?;
                            stats.content_bytes += data.len() as u64;
                            if written.is_ok() {
                                written = w.write_all(&data);
                            }
                        }
                        SyncMsg::FileEnd => break,
                        other => return Err(unexpected(&other, "a chunk or the file's end")),
                    }
                }
                let applied = written
                    .map_err(TreeError::io("write", entry.path.to_path()))
                    .and_then(|()| applier.finish_file(w));
                match applied {
                    Ok(()) => {
                        index.insert(entry);
                        stats.files_whole += 1;
                        since_commit += 1;
                    }
                    Err(err) => {
                        warn!(path = %entry.path.display(), error = %err, "file not applied");
                        stats.failed += 1;
                    }
                }
            }
            SyncMsg::WantSignature { path } => {
                let sig = match applier.base_path(&path) {
                    Ok(Some(base)) => File::open(&base).ok().and_then(|f| {
                        let len = f.metadata().ok()?.len();
                        signature(f, len, block_len_for(len)).ok()
                    }),
                    _ => None,
                };
                send(conn, &SyncMsg::Signature { sig }).await?;
            }
            SyncMsg::DeltaFile { entry, block_len } => {
                let applied = receive_delta(conn, &mut applier, &entry, block_len, &mut stats).await?;
                if applied {
                    index.insert(entry);
                    stats.files_delta += 1;
                    since_commit += 1;
                } else {
                    stats.failed += 1;
                }
            }
            SyncMsg::End => break,
            other => return Err(unexpected(&other, "a tree entry or the end of the pass")),
        }
        if since_commit >= COMMIT_EVERY {
            applier.commit()?;
            since_commit = 0;
        }
    }
    // A folder committed in an earlier batch may have received files since, which moved its
    // mtime: set the folders' times once more with the last batch.
    for folder in &folders {
        applier.dir(folder)?;
    }
    let committed = applier.commit()?;
    stats.failed += committed.failed.len() as u64;
    index.save(index_path)?;
    let files = stats.files_whole + stats.files_delta;
    send(conn, &SyncMsg::Done { files, bytes: stats.content_bytes, failed: stats.failed }).await?;
    Ok(stats)
}

/// Receives one delta file; false when it could not be applied (the pass goes on).
async fn receive_delta(
    conn: &mut PeerConnection,
    applier: &mut Applier,
    entry: &Entry,
    block_len: u32,
    stats: &mut PassStats,
) -> Result<bool, PassError> {
    let base = applier.base_path(&entry.path).ok().flatten().and_then(|p| File::open(p).ok());
    let mut patcher = match (base, applier.begin_file(entry)) {
        (Some(base), Ok(w)) => Patcher::new(base, block_len, w).ok(),
        _ => None,
    };
    loop {
        match recv(conn).await? {
            SyncMsg::Ops { ops } => {
                for op in &ops {
                    if let DeltaOp::Literal(bytes) = op {
                        stats.content_bytes += bytes.len() as u64;
                    }
                    if let Some(p) = patcher.as_mut()
                        && p.apply(op).is_err()
                    {
                        patcher = None;
                    }
                }
            }
            SyncMsg::DeltaEnd { new_len, new_hash } => {
                let Some(p) = patcher else { return Ok(false) };
                let finished = p.finish(new_len, &new_hash).map_err(PassError::from);
                return match finished.and_then(|w| Ok(applier.finish_file(w)?)) {
                    Ok(()) => Ok(true),
                    Err(err) => {
                        warn!(path = %entry.path.display(), error = %err, "delta not applied");
                        Ok(false)
                    }
                };
            }
            other => return Err(unexpected(&other, "delta ops or their end")),
        }
    }
}

/// The primary's side, after the standby's `Open { tree }`: sends `root` (its index at
/// `index_path`), with `filter` deciding per entry.
pub async fn serve_pass(
    conn: &mut PeerConnection,
    root: &Path,
    index_path: &Path,
    filter: &mut (dyn FnMut(&[Entry]) -> Vec<Verdict> + Send),
) -> Result<PassStats, PassError> {
    let mut theirs = Index::new();
    loop {
        match recv(conn).await? {
            SyncMsg::Have { entries } => entries.into_iter().for_each(|e| theirs.insert(e)),
            SyncMsg::HaveEnd => break,
            other => return Err(unexpected(&other, "the standby's index")),
        }
    }
    let old = Index::load(index_path)?;
    let scanned = scan(root, filter)?;
    let mut protected = scanned.protected();
    let (mine, refreshed) = refresh(&old, scanned.entries, root)?;
    protected.extend(refreshed.unreadable.iter().map(|(p, _)| p.clone()));
    let plan = diff(&mine, &theirs, &protected);
    let own: Index = mine.into_iter().collect();
    own.save(index_path)?;
    let mut stats = PassStats::default();
    for paths in plan.deletes.chunks(HAVE_BATCH) {
        stats.deleted += paths.len() as u64;
        send(conn, &SyncMsg::Delete { paths: paths.to_vec() }).await?;
    }
    for entry in plan.upserts {
        match entry.kind {
            EntryKind::Dir => {
                send(conn, &SyncMsg::Dir(entry)).await?;
                stats.dirs_links += 1;
            }
            EntryKind::Symlink => {
                send(conn, &SyncMsg::Symlink(entry)).await?;
                stats.dirs_links += 1;
            }
            EntryKind::File => {
                let base = theirs
                    .get(&entry.path)
                    .filter(|b| b.kind == EntryKind::File && b.size >= DELTA_MIN_BYTES);
                if base.is_some() && entry.size >= DELTA_MIN_BYTES {
                    send(conn, &SyncMsg::WantSignature { path: entry.path.clone() }).await?;
                    match recv(conn).await? {
                        SyncMsg::Signature { sig: Some(sig) } => {
                            stats.wire_bytes += send_delta(conn, root, &entry, &sig).await?;
                            stats.files_delta += 1;
                            continue;
                        }
                        SyncMsg::Signature { sig: None } => {}
                        other => return Err(unexpected(&other, "a signature")),
                    }
                }
                stats.wire_bytes += send_whole(conn, root, &entry).await?;
                stats.files_whole += 1;
            }
        }
    }
    send(conn, &SyncMsg::End).await?;
    match recv(conn).await? {
        SyncMsg::Done { failed, .. } => stats.failed = failed,
        other => return Err(unexpected(&other, "the standby's done")),
    }
    debug!(?stats, "sync pass served");
    Ok(stats)
}

async fn send_whole(conn: &mut PeerConnection, root: &Path, entry: &Entry) -> Result<u64, PassError> {
    let path = root.join(entry.path.to_path());
    let mut file = File::open(&path).map_err(TreeError::io("open", &path))?;
    send(conn, &SyncMsg::File { entry: entry.clone() }).await?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut sent = 0;
    loop {
        let n = read_full(&mut file, &mut buf).map_err(TreeError::io("read", &path))?;
        if n == 0 {
            break;
        }
        sent += send(conn, &protocol::chunk(&buf[..n])).await?;
    }
    send(conn, &SyncMsg::FileEnd).await?;
    Ok(sent)
}

async fn send_delta(
    conn: &mut PeerConnection,
    root: &Path,
    entry: &Entry,
    sig: &super::signature::Signature,
) -> Result<u64, PassError> {
    let path = root.join(entry.path.to_path());
    let file = File::open(&path).map_err(TreeError::io("open", &path))?;
    // The delta is computed on a blocking thread and streamed here in batches of ops.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<DeltaOp>>(4);
    let block_len = sig.block_len;
    let sig = sig.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(OPS_BATCH);
        let end = delta_each(&sig, file, |op| {
            batch.push(op);
            if batch.len() >= OPS_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(OPS_BATCH));
                tx.blocking_send(full).map_err(|_| SyncError::Io(std::io::Error::other("sender gone")))?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok::<_, SyncError>(end)
    });
    send(conn, &SyncMsg::DeltaFile { entry: entry.clone(), block_len }).await?;
    let mut sent = 0;
    while let Some(ops) = rx.recv().await {
        sent += send(conn, &SyncMsg::Ops { ops }).await?;
    }
    let (new_len, new_hash) =
        worker.await.map_err(|e| SyncError::Io(std::io::Error::other(e.to_string())))??;
    send(conn, &SyncMsg::DeltaEnd { new_len, new_hash }).await?;
    Ok(sent)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
