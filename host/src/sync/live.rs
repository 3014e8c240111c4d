//! The primary's watch over its trees: one [`TreeWatcher`] per configured tree feeds that
//! tree's [`Journal`] (changed paths by generation) and serves its barrier, so sync passes
//! can be incremental and followers are woken within the debounce of a change.
//!
//! Must never: leave a journal in place that missed events, or offer one before every folder
//! is watched. A rescan (overflow, the root moved) or a failed barrier ends the journal (full
//! passes follow) until the watcher has walked the tree again; a watcher that stops is
//! restarted with a new journal, and one that cannot watch every folder (the watch limit) is
//! retried less and less often.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::SyncConfig;
use super::journal::Journal;
use super::names::RelName;
use super::watch::{Changes, TreeWatcher};

/// Each watched tree's journal, by tree name (shared with the sync server).
pub type Journals = Arc<Mutex<HashMap<String, Arc<Journal>>>>;

/// How long a barrier may take before the journal is distrusted.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry period for a tree whose folder is missing or whose watcher failed to start.
const RETRY: Duration = Duration::from_secs(5);
/// Longest wait before trying again to watch a tree whose folders could not all be watched.
const MAX_RETRY: Duration = Duration::from_secs(600);

/// Watches every configured tree until `shutdown`.
pub async fn watch_trees(
    config: SyncConfig,
    state_dir: PathBuf,
    journals: Journals,
    shutdown: CancellationToken,
) {
    let debounce = Duration::from_millis(config.debounce_ms.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for name in config.trees.keys() {
        let Some(root) = config.tree_root(name) else { continue };
        let barrier = state_dir.join("barrier").join(name);
        let (name, journals, shutdown) = (name.clone(), journals.clone(), shutdown.clone());
        tasks.spawn(async move { watch_tree(&name, &root, &barrier, debounce, &journals, &shutdown).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn watch_tree(
    name: &str,
    root: &Path,
    barrier: &Path,
    debounce: Duration,
    journals: &Journals,
    shutdown: &CancellationToken,
) {
    let set = |j: Option<Arc<Journal>>| {
        let mut map = journals.lock().unwrap_or_else(|p| p.into_inner());
        match j {
            Some(j) => map.insert(name.to_string(), j),
            None => map.remove(name),
        };
    };
    let mut retry = RETRY;
    loop {
        let started = TreeWatcher::start(root, debounce).and_then(|w| w.with_barrier(barrier));
        let mut watcher = match started {
            Ok(w) => w,
            Err(e) => {
                if root.exists() {
                    warn!(tree = name, error = %e, "cannot watch the tree; passes compare whole trees");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        // One journal per complete walk: until every folder is watched, passes compare whole
        // trees (no journal), and a rescan (events lost) ends the journal until the watcher
        // has walked the tree again.
        'walks: loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ready = watcher.ready() => if let Err(e) = ready {
                    // The watch limit or an unwatchable folder: a new watcher tries again later,
                    // less often each time (every try walks the whole tree).
                    warn!(tree = name, error = %e, retry_s = retry.as_secs(), "cannot watch the tree; passes compare whole trees");
                    break 'walks;
                },
            }
            retry = RETRY;
            // What was seen during the walk is covered by the full pass every standby gets next.
            watcher.take();
            let (flush_tx, mut flush_rx) = mpsc::channel(16);
            let journal = Arc::new(Journal::new(Some(flush_tx)));
            set(Some(journal.clone()));
            info!(tree = name, root = %root.display(), "watching the tree for changes");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        set(None);
                        return;
                    }
                    changes = watcher.next() => match changes {
                        Some(Changes::Paths(paths)) => record(&journal, paths),
                        Some(Changes::Rescan { reason }) => {
                            journal.lost(&reason);
                            set(None);
                            continue 'walks;
                        }
                        None => break 'walks,
                    },
                    Some(reply) = flush_rx.recv() => {
                        let complete = watcher.barrier(BARRIER_TIMEOUT).await;
                        let lost = match watcher.take() {
                            Some(Changes::Paths(paths)) => {
                                record(&journal, paths);
                                None
                            }
                            Some(Changes::Rescan { reason }) => Some(reason),
                            None => None,
                        };
                        let lost = lost.or_else(|| (!complete).then(|| "the watcher's barrier was not seen in time".to_string()));
                        if let Some(reason) = &lost {
                            journal.lost(reason);
                        }
                        let _ = reply.send(());
                        if lost.is_some() {
                            set(None);
                            continue 'walks;
                        }
                    }
                }
            }
        }
        // The watcher stopped (its root went) or cannot watch every folder: a new watcher and a
        // new journal (new epoch) later; meanwhile every standby's pass is full.
        set(None);
        drop(watcher);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

fn record(journal: &Journal, paths: Vec<Vec<u8>>) {
    journal.record(paths.iter().filter_map(|p| RelName::new(p).ok()));
}
