//! Watches one file tree (the primary's side of tree sync) and reports which paths may have
//! changed, debounced, so a sync pass ships only those instead of rescanning the tree.
//!
//! Owns: one recursive inotify watch (through `notify`) on a root directory, and the set of
//! changed paths gathered since the last batch. Must never: follow a symlink out of the tree,
//! report a path outside the root or one of our own `.tandem-tmp.` files, lose a change
//! silently (when it cannot vouch for its list it says [`Changes::Rescan`]), grow without bound
//! (past a cap the list collapses into a rescan), or read or write the tree's files.
//!
//! What a caller must know:
//! - A path in [`Changes::Paths`] may now be a file, a link, a directory or gone; the caller
//!   looks (without following links). A directory path means "this whole subtree": a directory
//!   that was just created or moved in may hold entries made before its watch was added, which
//!   inotify never reports, so the caller rescans that subtree.
//! - Start the watcher before the first full scan, so that nothing between the two is lost.
//! - Keep the persistent index and any other file tandem writes outside the root (or name it
//!   `.tandem-tmp.*`), or every pass wakes the next one.
//! - Only changes are reported: opening or reading a file (as a sync pass does) is not.
//!
//! Linux only (inotify). Each directory in the tree costs one inotify watch
//! (`fs.inotify.max_user_watches`); running out is reported as a rescan, or as
//! [`WatchError::WatchLimit`] from [`TreeWatcher::start`].

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, Event, EventKind, ModifyKind};
use notify::{Config, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::sync::names::TEMP_PREFIX;
/// Distinct paths gathered before the list collapses into a [`Changes::Rescan`].
const PATH_LIMIT: usize = 100_000;
/// [`TreeWatcher::next`] returns at most this many debounce periods after a batch's first event.
const MAX_DELAY_FACTOR: u32 = 4;
/// How often [`TreeWatcher::start`] retries when a subdirectory vanishes during the first walk.
const START_ATTEMPTS: usize = 3;

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

    /// notify could not set up inotify or add a watch.
    #[error("cannot watch {}: {source}", path.display())]
    Notify { path: PathBuf, source: notify::Error },
}

/// One batch of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Paths (relative to the root, as raw bytes, no leading '/') that may have changed:
    /// created, modified, removed, renamed (both names), attribute change. Order does not
    /// matter; deduplicated. A directory path means its whole subtree (see the module doc).
    Paths(Vec<Vec<u8>>),
    /// The watcher lost events (inotify queue overflow, a watch could not be added e.g. watch
    /// limit, the root itself moved/removed/changed, notify error): the caller must rescan the
    /// whole tree. If the root moved or was removed, the caller should also restart the watcher.
    Rescan { reason: String },
}

/// Watches one tree; dropping it stops watching.
pub struct TreeWatcher {
    watcher: RecommendedWatcher,
    shared: Arc<Shared>,
    debounce: Duration,
    max_delay: Duration,
}

impl TreeWatcher {
    /// Starts watching `root` recursively (must be an existing directory). Does not follow
    /// symlinks: a symlinked directory inside the tree is NOT watched through (its link entry
    /// changing is reported as a path). Batches end after `debounce` of quiet, or at most
    /// 4 × `debounce` after their first event.
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
        // Events carry the path notify was given; resolve it once so prefixes always match.
        let root = std::fs::canonicalize(root).map_err(root_err)?;
        if !std::fs::metadata(&root).map_err(root_err)?.is_dir() {
            return Err(WatchError::NotADirectory(root));
        }
        let shared = Arc::new(Shared {
            root: root.clone(),
            barrier_dir: Mutex::new(None),
            barrier_next: AtomicU64::new(0),
            barrier_seen: AtomicU64::new(0),
            barrier_wake: Notify::new(),
            path_limit,
            pending: Mutex::default(),
            wake: Notify::new(),
        });
        let handler = Handler { shared: Arc::clone(&shared) };
        let config = Config::default().with_follow_symlinks(false);
        let mut watcher = RecommendedWatcher::new(handler, config)
            .map_err(|source| WatchError::Notify { path: root.clone(), source })?;
        let mut attempt = 1;
        while let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
            match e.kind {
                notify::ErrorKind::MaxFilesWatch => return Err(WatchError::WatchLimit(root)),
                // A subdirectory removed while notify walked the tree: walk again.
                notify::ErrorKind::PathNotFound if attempt < START_ATTEMPTS && root.is_dir() => {
                    debug!(root = %root.display(), error = %e, "tree changed during first walk; retrying");
                    attempt += 1;
                }
                _ => return Err(WatchError::Notify { path: root, source: e }),
            }
        }
        debug!(root = %root.display(), "watching tree");
        Ok(TreeWatcher { watcher, shared, debounce, max_delay: max_delay.max(debounce) })
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
        self.watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify { path: dir.clone(), source })?;
        *self.shared.barrier_dir.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir);
        Ok(self)
    }

    /// Returns once every event that happened before the call has been recorded: it writes a
    /// marker in the barrier folder and waits for the marker's own event, which inotify
    /// delivers after all earlier ones. Without a barrier folder, or when the marker cannot
    /// be written or is not seen within `timeout`, returns false: the caller must not trust
    /// the recorded paths to be complete.
    pub async fn barrier(&self, timeout: Duration) -> bool {
        let Some(dir) = self.shared.barrier_dir.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return false;
        };
        let n = self.shared.barrier_next.fetch_add(1, Ordering::SeqCst) + 1;
        let marker = dir.join(format!("b-{n}"));
        let seen = async {
            loop {
                let notified = self.shared.barrier_wake.notified();
                if self.shared.barrier_seen.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        };
        if std::fs::write(&marker, b"").is_err() {
            return false;
        }
        let ok = tokio::time::timeout(timeout, seen).await.is_ok();
        let _ = std::fs::remove_file(&marker);
        ok
    }

    /// Waits for the next batch: returns once at least one event arrived and then `debounce`
    /// passed with no new event, or at most `max_delay` (4 × `debounce`) after the first event
    /// even if events keep coming (so a busy tree still ships). Returns None when the watcher
    /// is gone (notify's thread ended). Cancel-safe: nothing gathered is lost if it is dropped.
    pub async fn next(&mut self) -> Option<Changes> {
        loop {
            let deadline = {
                let p = self.shared.lock();
                match (p.first, p.last) {
                    (Some(first), Some(last)) => Some((last + self.debounce).min(first + self.max_delay)),
                    _ if p.closed => return None,
                    _ => None,
                }
            };
            match deadline {
                None => self.shared.wake.notified().await,
                Some(d) if Instant::now() >= d => {
                    if let Some(changes) = self.take() {
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

/// State shared between notify's thread (which records) and the [`TreeWatcher`] (which takes).
struct Shared {
    root: PathBuf,
    /// The barrier folder, its markers' numbers handed out and seen.
    barrier_dir: Mutex<Option<PathBuf>>,
    barrier_next: AtomicU64,
    barrier_seen: AtomicU64,
    barrier_wake: Notify,
    path_limit: usize,
    pending: Mutex<Pending>,
    /// Woken (one stored permit) whenever something is recorded or the watcher closes.
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    paths: HashSet<Vec<u8>>,
    rescan: Option<String>,
    /// When the first and the latest recorded event of the current batch arrived.
    first: Option<Instant>,
    last: Option<Instant>,
    closed: bool,
}

/// What one event path amounts to.
enum Seen {
    Path(Vec<u8>),
    Rescan(String),
    Ignored,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs on notify's thread for every event.
    fn record(&self, event: notify::Result<Event>) {
        let seen: Vec<Seen> = match event {
            Err(e) => {
                warn!(root = %self.root.display(), error = %e, "tree watcher error; rescan needed");
                vec![Seen::Rescan(format!("watcher error: {e}"))]
            }
            Ok(ev) if ev.need_rescan() => vec![Seen::Rescan("inotify event queue overflowed".into())],
            Ok(ev) if self.is_barrier(&ev) => return,
            Ok(ev) if !is_change(&ev.kind) => return,
            Ok(ev) => ev.paths.iter().map(|p| self.classify(p, &ev.kind)).collect(),
        };
        if seen.iter().all(|s| matches!(s, Seen::Ignored)) {
            return;
        }
        let now = Instant::now();
        let mut p = self.lock();
        p.first.get_or_insert(now);
        p.last = Some(now);
        for s in seen {
            match s {
                Seen::Path(path) => p.add_path(path, self.path_limit),
                Seen::Rescan(reason) => p.set_rescan(reason),
                Seen::Ignored => {}
            }
        }
        drop(p);
        self.wake.notify_one();
    }

    /// True for an event in the barrier folder; a marker's creation is noted as seen.
    fn is_barrier(&self, ev: &Event) -> bool {
        let dir = self.barrier_dir.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(dir) = dir.as_ref() else { return false };
        let mut any = false;
        for p in ev.paths.iter().filter(|p| p.parent() == Some(dir.as_path())) {
            any = true;
            let n = p.file_name().and_then(|n| n.to_str()?.strip_prefix("b-")?.parse::<u64>().ok());
            if let (Some(n), EventKind::Create(_)) = (n, &ev.kind) {
                self.barrier_seen.fetch_max(n, Ordering::SeqCst);
                self.barrier_wake.notify_waiters();
            }
        }
        any
    }

    fn classify(&self, path: &Path, kind: &EventKind) -> Seen {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            debug!(path = %path.display(), "event outside the watched tree dropped");
            return Seen::Ignored;
        };
        let rel = rel.as_os_str().as_bytes();
        if rel.is_empty() {
            return match kind {
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                    Seen::Rescan("the watched root was moved or removed".into())
                }
                _ => Seen::Rescan("the watched root's own metadata changed".into()),
            };
        }
        let last = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
        if last.starts_with(TEMP_PREFIX) {
            return Seen::Ignored;
        }
        Seen::Path(rel.to_vec())
    }
}

/// Whether an event kind can mean a change of content, metadata or names. Opening and
/// reading are not (a sync pass reading the tree must not wake the next pass); closing a file
/// that was open for writing is (it covers writes through mmap, which inotify does not see).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

impl Pending {
    fn add_path(&mut self, path: Vec<u8>, limit: usize) {
        if self.rescan.is_some() {
            return; // a rescan covers it
        }
        self.paths.insert(path);
        if self.paths.len() > limit {
            self.set_rescan(format!("more than {limit} changed paths"));
        }
    }

    fn set_rescan(&mut self, reason: String) {
        if self.rescan.is_none() {
            warn!(%reason, "tree watcher lost track of changes; full rescan needed");
            self.rescan = Some(reason);
            self.paths = HashSet::new(); // frees the memory, not just the entries
        }
    }

    fn take(&mut self) -> Option<Changes> {
        self.first = None;
        self.last = None;
        if let Some(reason) = self.rescan.take() {
            return Some(Changes::Rescan { reason });
        }
        if self.paths.is_empty() {
            return None;
        }
        Some(Changes::Paths(std::mem::take(&mut self.paths).into_iter().collect()))
    }
}

/// notify's callback; dropped when notify's thread ends, which closes the watcher.
struct Handler {
    shared: Arc<Shared>,
}

impl notify::EventHandler for Handler {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        self.shared.record(event);
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
