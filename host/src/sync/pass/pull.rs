//! The standby's side of a pass: open with where it stands, send its index when the primary
//! asks for a full comparison, then read the stream: signatures are computed on the side
//! (at most [`SIGNATURES_AT_ONCE`]), everything else goes in order to the apply thread. At the
//! end the index is saved, the new `since` recorded, and the primary told `Done`.
//!
//! Must never: record a `since` the tree has not fully reached, or drop what landed before a
//! pass broke off (the apply thread commits it, and the index is saved either way).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::serve::LONG_POLL;
use super::{PassError, PassStats, apply_loop, recv_counted, recv_within, unexpected, write_all};
use crate::peer::{Frame, PeerConnection};
use crate::sync::confine::Confined;
use crate::sync::index::{Index, refresh};
use crate::sync::index_store::IndexStore;
use crate::sync::meta::{Keep, is_root};
use crate::sync::names::RelName;
use crate::sync::protocol::{self, PassMode, Since, SyncMsg, Unreadable, have_batches};
use crate::sync::scan::{Verdict, scan_with};
use crate::sync::signature::{Signature, block_len_for, signature};
use crate::sync::tree_error::TreeError;

/// Signatures computed at once (each reads a whole file).
const SIGNATURES_AT_ONCE: usize = 4;
/// Messages queued for the apply thread.
const APPLY_QUEUE: usize = 64;

/// How far a pull got, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// What the primary said it will send.
    pub plan_files: AtomicU64,
    pub plan_bytes: AtomicU64,
}

/// Where the standby keeps its state of one tree.
#[derive(Debug, Clone)]
pub struct PullState {
    pub index: PathBuf,
    pub since: PathBuf,
    /// Held while a pass applies: one at a time per standby.
    pub lock_path: PathBuf,
    /// How long the primary may stay silent in the middle of a pass (`sync.idle_timeout_ms`).
    pub idle: Duration,
    /// The index as the last pass left it (equal to what is on disk), so a follower's next
    /// pass does not read the whole index again.
    kept: Arc<std::sync::Mutex<Option<(IndexStore, Index)>>>,
}

impl PullState {
    pub fn new(state_dir: &Path, tree: &str, idle: Duration) -> PullState {
        PullState {
            idle,
            index: state_dir.join(format!("{tree}.standby.index")),
            since: state_dir.join(format!("{tree}.standby.since")),
            lock_path: state_dir.join("apply.lock"),
            kept: Arc::default(),
        }
    }

    /// The index: as the last pass left it, else from disk.
    fn take_index(&self) -> Result<(IndexStore, Index), TreeError> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).take();
        match kept {
            Some(kept) => Ok(kept),
            None => IndexStore::open(&self.index),
        }
    }

    fn keep_index(&self, kept: (IndexStore, Index)) {
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
    }

    /// Where the last complete pass left this standby; `None` when unknown or unreadable.
    pub fn since(&self) -> Option<Since> {
        let text = std::fs::read(&self.since).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn set_since(&self, since: Option<Since>) -> Result<(), TreeError> {
        match since {
            Some(s) => {
                let text = serde_json::to_vec(&s).expect("plain struct");
                crate::durable::write_private(&self.since, &text).map_err(TreeError::io("write", &self.since))
            }
            None => match std::fs::remove_file(&self.since) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(TreeError::io("remove", &self.since)(e))
                }
                _ => Ok(()),
            },
        }
    }
}

/// How a pull is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullMode {
    /// From where the last pass left off (incremental when the primary's journal allows).
    #[default]
    Since,
    /// Like `Since`, but when nothing changed the primary holds the answer until something
    /// does (a few seconds at most): the follow mode's long poll.
    Wait,
    /// Ignore the recorded `since` and compare whole trees (the periodic verify pass).
    Full,
}

/// Pulls `tree` into `root`. Not cancel-safe in one respect: if this future is dropped, the
/// apply thread still commits what arrived, saves the index and only then releases the apply
/// lock; the recorded `since` stays where it was, so the next pass repeats the work.
pub async fn pull_pass(
    conn: &mut PeerConnection,
    tree: &str,
    root: &Path,
    state: &PullState,
    progress: Arc<Progress>,
    how: PullMode,
) -> Result<PassStats, PassError> {
    let since = if how == PullMode::Full { None } else { state.since() };
    let root_here = is_root();
    let open =
        SyncMsg::Open { tree: tree.to_string(), since, wait: how == PullMode::Wait, privileged: root_here };
    conn.writer.write_frame(&protocol::encode(&open)?).await?;
    // A held long poll answers within LONG_POLL; anything much later is a dead connection.
    let (mode, meta) = match recv_within(&mut conn.reader, LONG_POLL + state.idle).await? {
        SyncMsg::Mode { mode, meta } => (mode, meta),
        other => return Err(unexpected(&other, "the pass mode")),
    };
    // What the primary's tree keeps, as far as this standby can apply it.
    let keep = Keep::for_pass(meta, root_here);
    if mode == PassMode::Current {
        return Ok(PassStats { current: true, ..PassStats::default() });
    }
    // One pass at a time applies on this host (trees may nest: etc holds etc/ssl). The apply
    // thread holds the lock until its last commit, even if this future is dropped.
    let lock = state.lock_path.clone();
    let applying_lock = blocking(move || ApplyLock::take(&lock)).await??;
    let (store, index) = match mode {
        PassMode::Current => unreachable!("answered above"),
        PassMode::Incremental => {
            let st = state.clone();
            let (store, mut index) = blocking(move || st.take_index()).await??;
            // What this pass changes goes to the index's log, not into a new copy of it all.
            index.track_changes();
            (store, index)
        }
        PassMode::Full => {
            let (st, top) = (state.clone(), root.to_path_buf());
            let (store, mine) = blocking(move || {
                let (store, old) = st.take_index()?;
                let scanned = scan_with(&top, &keep, &mut |batch| vec![Verdict::Keep; batch.len()])?;
                Ok::<_, TreeError>((store, refresh(&old, scanned.entries, &top)?.0))
            })
            .await??;
            for batch in have_batches(&mine) {
                let msg = SyncMsg::Have { entries: batch.to_vec() };
                conn.writer.write_frame(&protocol::encode(&msg)?).await?;
            }
            conn.writer.write_frame(&protocol::encode(&SyncMsg::HaveEnd)?).await?;
            // Untracked: a full pass writes the whole index as a new base.
            (store, mine.into_iter().collect())
        }
    };

    let (atx, arx) = mpsc::channel::<SyncMsg>(APPLY_QUEUE);
    let (top, shown) = (root.to_path_buf(), progress.clone());
    let applying = tokio::task::spawn_blocking(move || {
        apply_loop::run(arx, &top, keep, index, store, shown, applying_lock)
    });
    let (wtx, wrx) = mpsc::channel::<Frame>(16);
    let PeerConnection { reader, writer, .. } = conn;
    let idle = state.idle;
    let read = async move {
        let sigs = Arc::new(Semaphore::new(SIGNATURES_AT_ONCE));
        let mut wire = 0u64;
        let mut special = 0u64;
        let mut unread = Unreadable::default();
        let ended = loop {
            let msg = match tokio::time::timeout(idle, recv_counted(reader, &mut wire)).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(PassError::Silent(idle)),
            };
            match msg {
                SyncMsg::Plan { files, bytes, special: skipped } => {
                    special = skipped;
                    progress.plan_files.store(files, Ordering::Relaxed);
                    progress.plan_bytes.store(bytes, Ordering::Relaxed);
                }
                SyncMsg::WantSignature { id, path } => {
                    let (wtx, sigs, top) = (wtx.clone(), sigs.clone(), root.to_path_buf());
                    tokio::spawn(async move {
                        let Ok(_permit) = sigs.acquire_owned().await else { return };
                        let sig = blocking(move || base_signature(&top, &path)).await.ok().flatten();
                        if let Ok(frame) = protocol::encode(&SyncMsg::Signature { id, sig }) {
                            let _ = wtx.send(frame).await;
                        }
                    });
                }
                SyncMsg::End { since, unreadable } => {
                    unread = unreadable;
                    let _ = atx.send(SyncMsg::End { since, unreadable: Unreadable::default() }).await;
                    break Ok(since);
                }
                other => {
                    // Inflate here: the apply thread has the disk work, this task time to spare.
                    let other = match other {
                        SyncMsg::Chunk { id, data, compressed: true } => {
                            match protocol::unchunk(data, true) {
                                Ok(data) => SyncMsg::Chunk { id, data, compressed: false },
                                Err(e) => break Err(e.into()),
                            }
                        }
                        SyncMsg::Files { packed, compressed: true } => {
                            match protocol::inflate_files(packed) {
                                Ok(packed) => SyncMsg::Files { packed, compressed: false },
                                Err(e) => break Err(e.into()),
                            }
                        }
                        other => other,
                    };
                    if atx.send(other).await.is_err() {
                        break Err(PassError::Worker("the apply thread stopped".into()));
                    }
                }
            }
        };
        drop(atx);
        let mut applied = applying.await.map_err(|e| PassError::Worker(e.to_string()))??;
        if let Some(kept) = applied.index.take() {
            state.keep_index(kept);
        }
        // The index is saved either way: what landed before a break stays known.
        if let Some(e) = applied.broken {
            return Err(e);
        }
        ended?;
        let since = applied.end.flatten();
        if applied.failed.is_empty() {
            let st = state.clone();
            blocking(move || st.set_since(since)).await??;
        } else {
            warn!(
                failed = applied.failed.len(),
                "some entries did not land; the next pass compares whole trees"
            );
            let st = state.clone();
            blocking(move || st.set_since(None)).await??;
        }
        let mut stats = applied.stats;
        stats.wire_bytes = wire;
        stats.failed = applied.failed.len() as u64;
        stats.full = mode == PassMode::Full;
        stats.skipped_special = special;
        let unread = unread.bounded();
        stats.unreadable = unread.count;
        stats.unreadable_paths = unread.listed;
        let done = SyncMsg::Done {
            files: stats.files_whole + stats.files_delta,
            bytes: stats.content_bytes,
            failed: applied.failed,
        };
        wtx.send(protocol::encode(&done)?).await.map_err(|_| PassError::Worker("writer stopped".into()))?;
        drop(wtx);
        debug!(?stats, "sync pass pulled");
        Ok::<_, PassError>(stats)
    };
    let (_, stats) = tokio::try_join!(write_all(writer, wrx, idle), read)?;
    Ok(stats)
}

/// An exclusive `flock` on the standby's apply lock, released when dropped.
pub(super) struct ApplyLock {
    _held: File,
}

impl ApplyLock {
    fn take(path: &Path) -> Result<ApplyLock, TreeError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(TreeError::io("open", path))?;
        // SAFETY: the descriptor is valid while `file` lives; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(TreeError::io("lock", path)(std::io::Error::last_os_error()));
        }
        Ok(ApplyLock { _held: file })
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, PassError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| PassError::Worker(e.to_string()))
}

/// The signature of the standby's copy of `path`, if it has a regular file there reached
/// without symlinks.
fn base_signature(root: &Path, path: &RelName) -> Option<Signature> {
    let mut confined = Confined::new(root.to_path_buf());
    let dir = confined.dir(path.parent().as_ref(), false).ok()??;
    let full = dir.join(std::ffi::OsStr::from_bytes(path.file_name()));
    let meta = std::fs::symlink_metadata(&full).ok().filter(|m| m.is_file())?;
    let file = File::open(&full).ok()?;
    signature(file, meta.len(), block_len_for(meta.len())).ok()
}
