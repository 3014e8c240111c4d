//! Watches one file tree (the primary's side of tree sync) and reports which paths may have
//! changed, debounced, so a sync pass ships only those instead of rescanning the tree.
//!
//! Owns: one inotify instance per tree with a watch per folder (`reader`: our own mask, which
//! asks for changes only, never for opens or reads), the folders' tree by watch descriptor
//! (`dirs`), and the changed paths gathered since the last batch (`pending`). Must never:
//! follow a symlink out of the tree, report a path outside the root or one of our own
//! `.tandem-tmp.` files, lose a change silently (when it cannot vouch for its list it says
//! [`Changes::Rescan`]), grow without bound (past a cap the list collapses into a rescan), or
//! read or write the tree's files.
//!
//! What a caller must know:
//! - [`TreeWatcher::start`] returns at once; the folders' watches are added by a walk in the
//!   background. Until [`TreeWatcher::ready`] says the walk is done, a change in a folder not
//!   reached yet is not seen: trust the reported paths only from then on (and after a
//!   [`Changes::Rescan`], only once `ready` says so again: the watcher walks again by itself).
//! - A path in [`Changes::Paths`] may now be a file, a link, a directory or gone; the caller
//!   looks (without following links). A directory path means "this whole subtree": a directory
//!   that was just created or moved in may hold entries made before its watch was added, which
//!   inotify never reports, so the caller rescans that subtree.
//! - Keep the persistent index and any other file tandem writes outside the root (or name it
//!   `.tandem-tmp.*`), or every pass wakes the next one.
//! - Only changes are reported, and only changes are queued in the kernel: opening or reading
//!   a file (as a sync pass, a backup or rsync does) costs nothing.
//!
//! Linux only (inotify). Each directory in the tree costs one inotify watch
//! (`fs.inotify.max_user_watches`); running out makes [`TreeWatcher::ready`] fail with
//! [`WatchError::WatchLimit`].
//!
//! Why inotify and not fanotify: a fanotify filesystem mark (one mark instead of one watch per
//! folder) reports every change on the whole filesystem, which on a real primary includes
//! PostgreSQL's WAL and data files and tandem's own state; each event then has to be mapped
//! from a file handle to a path to be filtered, and a busy database floods the queue that the
//! tree's few changes share. One inotify watch per folder costs a few hundred bytes of kernel
//! memory and sees only the tree.

mod dirs;
mod pending;
mod reader;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use tracing::debug;

use pending::{Shared, Walk};
use reader::{Reader, folder_mask, signal_stop, stop_pair};

/// Distinct paths gathered before the list collapses into a [`Changes::Rescan`].
const PATH_LIMIT: usize = 100_000;
/// [`TreeWatcher::next`] returns at most this many debounce periods after a batch's first event.
const MAX_DELAY_FACTOR: u32 = 4;

/// Why a tree could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The root does not exist or cannot be resolved.
    #[error("cannot watch {}: {source}", path.display())]
    Root { path: PathBuf, source: std::io::Error },

    /// The root exists but is not a directory.
    #[error("cannot watch {}: not a directory", .0.display())]
    NotADirectory(PathBuf),

    /// The tree has more directories than inotify watches are left for this user.
    #[error("cannot watch {}: inotify watch limit reached (fs.inotify.max_user_watches)", .0.display())]
    WatchLimit(PathBuf),

    /// inotify could not be set up, or a folder could not be watched.
    #[error("cannot watch {}: {reason}", path.display())]
    Inotify { path: PathBuf, reason: String },

    /// The watcher stopped (its root went).
    #[error("stopped watching {}", .0.display())]
    Closed(PathBuf),
}

/// One batch of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Paths (relative to the root, as raw bytes, no leading '/') that may have changed:
    /// created, modified, removed, renamed (both names), attribute change. Order does not
    /// matter; deduplicated. A directory path means its whole subtree (see the module doc).
    Paths(Vec<Vec<u8>>),
    /// The watcher lost events (inotify queue overflow, the root moved or was removed, an
    /// error): the caller must rescan the whole tree once the watcher is [ready] again (it
    /// walks the tree again by itself; if the root went, it stops and `next` returns None).
    ///
    /// [ready]: TreeWatcher::ready
    Rescan { reason: String },
}

/// Watches one tree; dropping it stops watching.
pub struct TreeWatcher {
    shared: Arc<Shared>,
    inotify_watches: inotify::Watches,
    barrier_tx: std::sync::mpsc::Sender<inotify::WatchDescriptor>,
    barrier_dir: Option<PathBuf>,
    barrier_next: AtomicU64,
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
    debounce: Duration,
    max_delay: Duration,
}

impl TreeWatcher {
    /// Starts watching `root` (an existing directory) and every folder below it, without
    /// following symlinks: a symlinked directory inside the tree is NOT watched through (its
    /// link entry changing is reported as a path). Returns once the root is watched; the rest
    /// is walked in the background (see [`TreeWatcher::ready`]). Batches end after `debounce`
    /// of quiet, or at most 4 × `debounce` after their first event.
    pub fn start(root: &Path, debounce: Duration) -> Result<TreeWatcher, WatchError> {
        Self::start_with(root, debounce, debounce * MAX_DELAY_FACTOR, PATH_LIMIT)
    }

    fn start_with(
        root: &Path,
        debounce: Duration,
        max_delay: Duration,
        path_limit: usize,
    ) -> Result<TreeWatcher, WatchError> {
        let root_err = |source| WatchError::Root { path: root.to_owned(), source };
        // Resolved once (the configured root may be a symlink) so every event path is below it.
        let root = std::fs::canonicalize(root).map_err(root_err)?;
        if !std::fs::metadata(&root).map_err(root_err)?.is_dir() {
            return Err(WatchError::NotADirectory(root));
        }
        let failed = |e: std::io::Error| WatchError::Inotify { path: root.clone(), reason: e.to_string() };
        let inotify = Inotify::init().map_err(failed)?;
        let root_wd = inotify.watches().add(&root, folder_mask()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                WatchError::WatchLimit(root.clone())
            } else {
                failed(e)
            }
        })?;
        let (stop_reader, stop) = stop_pair().map_err(failed)?;
        let shared = Arc::new(Shared::new(root.clone(), path_limit));
        let (barrier_tx, barrier_rx) = std::sync::mpsc::channel();
        let inotify_watches = inotify.watches();
        let reader = Reader::new(inotify, root_wd, Arc::clone(&shared), stop_reader, barrier_rx);
        let thread = std::thread::Builder::new()
            .name("tree-watch".into())
            .spawn(move || reader.run())
            .map_err(failed)?;
        debug!(root = %root.display(), "watching tree");
        Ok(TreeWatcher {
            shared,
            inotify_watches,
            barrier_tx,
            barrier_dir: None,
            barrier_next: AtomicU64::new(0),
            stop,
            thread: Some(thread),
            debounce,
            max_delay: max_delay.max(debounce),
        })
    }

    /// Adds `dir` (outside the tree, empty, private to this watcher) as the barrier folder of
    /// [`TreeWatcher::barrier`].
    pub fn with_barrier(mut self, dir: &Path) -> Result<TreeWatcher, WatchError> {
        let err = |source| WatchError::Root { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(err)?;
        let dir = std::fs::canonicalize(dir).map_err(err)?;
        for old in std::fs::read_dir(&dir).map_err(err)?.flatten() {
            let _ = std::fs::remove_file(old.path());
        }
        let wd = self
            .inotify_watches
            .add(&dir, WatchMask::CREATE | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW)
            .map_err(|e| WatchError::Inotify { path: dir.clone(), reason: e.to_string() })?;
        let _ = self.barrier_tx.send(wd);
        self.barrier_dir = Some(dir);
        Ok(self)
    }

    /// Waits until every folder of the tree is watched (the walk after start, or after a
    /// rescan, is done). From then on, every change is reported. Not to be awaited while
    /// [`TreeWatcher::next`] is (they share one wake-up).
    pub async fn ready(&self) -> Result<(), WatchError> {
        loop {
            let woken = self.shared.wake.notified();
            {
                let p = self.shared.lock();
                match &p.walk {
                    Walk::Done => return Ok(()),
                    Walk::Failed(why) if why.contains("watch limit") => {
                        return Err(WatchError::WatchLimit(self.shared.root.clone()));
                    }
                    Walk::Failed(why) => {
                        return Err(WatchError::Inotify {
                            path: self.shared.root.clone(),
                            reason: why.clone(),
                        });
                    }
                    Walk::Running if p.closed => return Err(WatchError::Closed(self.shared.root.clone())),
                    Walk::Running => {}
                }
            }
            woken.await;
        }
    }

    /// Returns once every event that happened before the call has been recorded: it writes a
    /// marker in the barrier folder and waits for the marker's own event, which inotify
    /// delivers after all earlier ones. Without a barrier folder, or when the marker cannot
    /// be written or is not seen within `timeout`, returns false: the caller must not trust
    /// the recorded paths to be complete.
    pub async fn barrier(&self, timeout: Duration) -> bool {
        let Some(dir) = self.barrier_dir.as_ref() else { return false };
        let n = self.barrier_next.fetch_add(1, Ordering::SeqCst) + 1;
        let marker = dir.join(format!("b-{n}"));
        let seen = async {
            loop {
                let notified = self.shared.barrier_wake.notified();
                if self.shared.barrier_seen.load(Ordering::SeqCst) >= n {
                    return true;
                }
                if self.shared.lock().closed {
                    return false;
                }
                notified.await;
            }
        };
        if std::fs::write(&marker, b"").is_err() {
            return false;
        }
        let ok = tokio::time::timeout(timeout, seen).await.unwrap_or(false);
        let _ = std::fs::remove_file(&marker);
        ok
    }

    /// Waits for the next batch: returns once at least one event arrived and then `debounce`
    /// passed with no new event, or at most `max_delay` (4 × `debounce`) after the first event
    /// even if events keep coming (so a busy tree still ships). Returns None when the watcher
    /// has stopped. Cancel-safe: nothing gathered is lost if it is dropped.
    pub async fn next(&mut self) -> Option<Changes> {
        loop {
            let woken = self.shared.wake.notified();
            let deadline = {
                let p = self.shared.lock();
                match (p.first, p.last) {
                    (Some(first), Some(last)) => Some((last + self.debounce).min(first + self.max_delay)),
                    _ if p.closed => return None,
                    _ => None,
                }
            };
            match deadline {
                None => woken.await,
                Some(d) if Instant::now() >= d => {
                    if let Some(changes) = self.shared.lock().take() {
                        return Some(changes);
                    }
                }
                Some(d) => tokio::time::sleep_until(d.into()).await,
            }
        }
    }

    /// Non-blocking: everything gathered so far (None if nothing).
    pub fn take(&mut self) -> Option<Changes> {
        self.shared.lock().take()
    }
}

impl Drop for TreeWatcher {
    fn drop(&mut self) {
        signal_stop(&self.stop);
        if let Some(thread) = self.thread.take() {
            // The thread wakes at once on the signal; a walk slice in progress ends first.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
