//! The primary's side of tree sync in the daemon: a connection whose first frame opens a sync
//! pass is served here, one pass after another, each with the path-filter plugin.
//!
//! Must never: serve a tree that is not configured, or a path outside `app_home`.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::SyncConfig;
use super::entry::Entry;
use super::filter::plugin_filter;
use super::live::Journals;
use super::names::RelName;
use super::pass::{Filter, PassStats, ServeTree, serve_pass};
use super::protocol::{self, SyncMsg};
use super::scan::Verdict;
use crate::peer::{Frame, PeerConnection, PeerError};
use crate::plugin::Plugins;

/// What serving sync needs.
#[derive(Clone)]
pub struct SyncServer {
    pub config: SyncConfig,
    /// Where the primary keeps its per-tree indexes.
    pub state_dir: PathBuf,
    pub plugins: Plugins,
    /// Each watched tree's change journal, by tree name.
    pub journals: Journals,
}

impl SyncServer {
    /// Serves passes on `conn`, starting with `first` (an `Open`), until the peer leaves.
    pub async fn serve(
        &self,
        mut conn: PeerConnection,
        first: Frame,
        shutdown: CancellationToken,
    ) -> Result<(), PeerError> {
        let mut next = Some(first);
        loop {
            let frame = match next.take() {
                Some(f) => Some(f),
                // The standby opens its next pass at once, or after a pause far shorter than
                // the idle limit; a connection silent longer is dead (half-open) and goes.
                None => tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    f = tokio::time::timeout(self.config.idle(), conn.read_frame()) => match f {
                        Ok(f) => f?,
                        Err(_) => {
                            debug!("the standby opened no pass within the idle limit: closing");
                            return Ok(());
                        }
                    },
                },
            };
            let Some(frame) = frame else { return Ok(()) };
            let (tree, since, wait, standby_root) = match protocol::decode(Some(frame)) {
                Ok(SyncMsg::Open { tree, since, wait, privileged }) => (tree, since, wait, privileged),
                _ => return Err(PeerError::Malformed("a sync pass must start with Open")),
            };
            let Some(root) = self.config.tree_root(&tree) else {
                let msg = SyncMsg::Error { message: format!("no tree `{tree}` is configured here") };
                if let Ok(f) = protocol::encode(&msg) {
                    conn.write_frame(&f).await?;
                }
                continue;
            };
            std::fs::create_dir_all(&root).map_err(PeerError::Io)?;
            std::fs::create_dir_all(&self.state_dir).map_err(PeerError::Io)?;
            let mut plugin = plugin_filter(self.plugins.clone(), tree.clone());
            let nested = self.config.nested_in(&tree);
            // Trees inside this one are synced on their own: left out here, like an exclude.
            let filter: Filter = Box::new(move |batch: &[Entry]| {
                let mut verdicts = plugin(batch);
                for (v, e) in verdicts.iter_mut().zip(batch) {
                    if nested.iter().any(|n| n.as_bytes() == e.path.as_bytes()) {
                        *v = Verdict::Prune;
                    }
                }
                verdicts
            });
            let journal = self.journals.lock().unwrap_or_else(|p| p.into_inner()).get(&tree).cloned();
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            let keep =
                self.config.nested_in(&tree).iter().filter_map(|n| RelName::new(n.as_bytes()).ok()).collect();
            let meta = self.config.meta_of(&tree);
            let idle = self.config.idle();
            let served = ServeTree { root, filter, journal, workers, keep, meta, standby_root, idle };
            // A shutdown drops the pass where it stands (the standby keeps what landed and
            // starts over from its last complete pass): stopping must not wait on a standby.
            let pass = tokio::select! {
                _ = shutdown.cancelled() => {
                    info!(%tree, "shutting down: the pass in progress is dropped");
                    return Ok(());
                }
                pass = serve_pass(&mut conn, since, wait, served) => pass,
            };
            match pass {
                Ok((stats, _)) if stats == PassStats::default() => debug!(%tree, "standby is current"),
                Ok((stats, _)) => info!(%tree, ?stats, "sync pass served"),
                Err(e) => {
                    warn!(%tree, error = %e, "sync pass failed");
                    return Ok(());
                }
            }
        }
    }
}
