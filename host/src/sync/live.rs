//! The primary's watch over its trees: one [`TreeWatcher`] per configured tree feeds that
//! tree's [`Journal`] (changed paths by generation) and serves its barrier, so sync passes
//! can be incremental and followers are woken within the debounce of a change.
//!
//! Must never: leave a journal in place that missed events. A rescan (overflow, watch limit,
//! the root moved) or a failed barrier resets the journal (full passes follow), and a watcher
//! that stops is restarted with a new journal.

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
                        break;
                    }
                    None => break,
                },
                Some(reply) = flush_rx.recv() => {
                    let complete = watcher.barrier(BARRIER_TIMEOUT).await;
                    let restart = match watcher.take() {
                        Some(Changes::Paths(paths)) => {
                            record(&journal, paths);
                            false
                        }
                        Some(Changes::Rescan { reason }) => {
                            journal.lost(&reason);
                            true
                        }
                        None => false,
                    };
                    if !complete {
                        journal.lost("the watcher's barrier was not seen in time");
                    }
                    let _ = reply.send(());
                    if restart {
                        // A rescan can mean a watch is missing (limit, moved root): start over.
                        break;
                    }
                }
            }
        }
        // A new watcher and a new journal (new epoch): every standby's next pass is full.
        set(None);
    }
}

fn record(journal: &Journal, paths: Vec<Vec<u8>>) {
    journal.record(paths.iter().filter_map(|p| RelName::new(p).ok()));
}
