//! What the watcher's reader thread hands to the [`TreeWatcher`](super::TreeWatcher): the
//! changed paths gathered since the last batch (or the fact that it lost track), the barrier
//! markers seen, and how far the walk that adds the folders' watches has come.
//!
//! Must never: grow without bound (past a cap the paths collapse into a rescan), or let a
//! waiter miss a wake-up.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::warn;

use super::Changes;

/// State shared between the reader thread (which records) and the watcher (which takes).
pub(super) struct Shared {
    pub root: PathBuf,
    /// Markers of the barrier folder seen so far (the highest number).
    pub barrier_seen: AtomicU64,
    pub barrier_wake: Notify,
    pub path_limit: usize,
    pending: Mutex<Pending>,
    /// Woken (one stored permit) whenever something is recorded, a walk ends or the reader
    /// stops.
    pub wake: Notify,
    /// Tests: the reader leaves the queue alone while set (to make it overflow).
    #[cfg(test)]
    hold: std::sync::atomic::AtomicBool,
}

/// Where the walk that watches every folder stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Walk {
    /// Adding watches: changes in folders not reached yet are not seen.
    Running,
    /// Every folder is watched.
    Done,
    /// The walk could not watch every folder (e.g. the watch limit).
    Failed(String),
}

pub(super) struct Pending {
    paths: HashSet<Vec<u8>>,
    rescan: Option<String>,
    /// When the first and the latest recorded event of the current batch arrived.
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    pub walk: Walk,
    /// The reader thread has ended: nothing more will be recorded.
    pub closed: bool,
}

impl Shared {
    pub fn new(root: PathBuf, path_limit: usize) -> Shared {
        let pending = Pending {
            paths: HashSet::new(),
            rescan: None,
            first: None,
            last: None,
            walk: Walk::Running,
            closed: false,
        };
        Shared {
            root,
            barrier_seen: AtomicU64::new(0),
            barrier_wake: Notify::new(),
            path_limit,
            pending: Mutex::new(pending),
            wake: Notify::new(),
            #[cfg(test)]
            hold: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tests: stops (or lets go on) the reader's reading of the queue.
    #[cfg(test)]
    pub fn hold_reader(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Tests: whether the reader must leave the queue alone.
    #[cfg(test)]
    pub fn reader_held(&self) -> bool {
        self.hold.load(Ordering::SeqCst)
    }

    pub fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records changed paths (relative to the root) or, with `rescan`, that events were lost.
    pub fn record(&self, paths: Vec<Vec<u8>>, rescan: Option<String>) {
        if paths.is_empty() && rescan.is_none() {
            return;
        }
        let now = Instant::now();
        let mut p = self.lock();
        p.first.get_or_insert(now);
        p.last = Some(now);
        if let Some(reason) = rescan {
            p.set_rescan(reason);
        }
        for path in paths {
            p.add_path(path, self.path_limit);
        }
        drop(p);
        self.wake.notify_one();
    }

    /// Marker `n` of the barrier folder was created.
    pub fn barrier_marker(&self, n: u64) {
        self.barrier_seen.fetch_max(n, Ordering::SeqCst);
        self.barrier_wake.notify_waiters();
    }

    /// The walk moved to `walk`.
    pub fn set_walk(&self, walk: Walk) {
        self.lock().walk = walk;
        self.wake.notify_one();
    }

    /// The reader thread ended.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
        self.barrier_wake.notify_waiters();
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

    /// Everything gathered so far, if anything.
    pub fn take(&mut self) -> Option<Changes> {
        self.first = None;
        self.last = None;
        if let Some(reason) = self.rescan.take() {
            self.paths = HashSet::new();
            return Some(Changes::Rescan { reason });
        }
        if self.paths.is_empty() {
            return None;
        }
        Some(Changes::Paths(std::mem::take(&mut self.paths).into_iter().collect()))
    }
}
