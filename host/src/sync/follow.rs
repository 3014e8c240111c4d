//! The standby's follow loop: for every configured tree, a connection to the primary on which
//! passes run back to back. Each pass starts from where the last one left off and, when
//! nothing changed, the primary holds its answer until something does, so a change ships
//! within the primary's debounce plus one pass. Every `verify_minutes` a pass compares whole
//! trees instead, which catches anything the primary's watcher missed. A broken connection
//! is dialled again with backoff; what landed before the break stays.
//!
//! Must never: stop following because one pass or one connection failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::lookup_host;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pass::{PassStats, Progress, PullMode, PullState, pull_pass};
use super::status::StatusFiles;
use crate::peer::{ClusterSecret, PeerConnection, PeerIdentity};

/// Everything a follow loop needs.
#[derive(Clone)]
pub struct Follower {
    pub primary: String,
    pub secret: ClusterSecret,
    pub me: PeerIdentity,
    pub max_frame: u64,
    pub state_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub verify: Duration,
    /// How long the primary may stay silent in the middle of a pass.
    pub idle: Duration,
}

const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Pause after a pass that could not wait on the primary's journal and found nothing: first,
/// and at most (doubling in between).
const IDLE_MIN: Duration = Duration::from_millis(500);
const IDLE_MAX: Duration = Duration::from_secs(30);

impl Follower {
    /// Follows every tree in `trees` (name, root) until `shutdown`.
    pub async fn run(self, trees: Vec<(String, PathBuf)>, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for (tree, root) in trees {
            let (me, shutdown) = (self.clone(), shutdown.clone());
            tasks.spawn(async move { me.follow(tree, root, shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn follow(&self, tree: String, root: PathBuf, shutdown: CancellationToken) {
        let pull = PullState::new(&self.state_dir, &tree, self.idle);
        let status = StatusFiles::new(&self.state_dir, self.log_dir.as_deref(), &tree);
        let mut next_verify = Instant::now() + self.verify;
        let mut backoff = Duration::from_millis(250);
        let mut idle_streak = 0u32;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.connect(&root) => c,
            };
            match connected {
                Ok(mut conn) => {
                    info!(%tree, primary = %self.primary, "following the primary's tree");
                    backoff = Duration::from_millis(250);
                    loop {
                        let how = if Instant::now() >= next_verify { PullMode::Full } else { PullMode::Wait };
                        let started = Instant::now();
                        let progress = Arc::new(Progress::default());
                        let passed = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            p = pull_pass(&mut conn, &tree, &root, &pull, progress, how) => p,
                        };
                        match passed {
                            Ok(stats) => {
                                if how == PullMode::Full {
                                    next_verify = Instant::now() + self.verify;
                                }
                                let secs = started.elapsed().as_secs_f64();
                                status.passed(&tree, &self.primary, &stats, secs, true);
                                // A waiting pass that came back full and moved nothing: the
                                // primary has no journal for the tree (not watching it yet, or
                                // cannot), so it could not wait for a change. Pace such passes
                                // instead of scanning its tree back to back.
                                let idle_full = how == PullMode::Wait
                                    && stats
                                        == PassStats {
                                            full: true,
                                            wire_bytes: stats.wire_bytes,
                                            ..PassStats::default()
                                        };
                                // The first such pass is normal (a new journal epoch after a
                                // restart on either side); from the second on, wait.
                                idle_streak = if idle_full { idle_streak + 1 } else { 0 };
                                if idle_streak >= 2 {
                                    let idle =
                                        IDLE_MIN.saturating_mul(1 << (idle_streak - 2).min(8)).min(IDLE_MAX);
                                    tokio::select! {
                                        _ = shutdown.cancelled() => return,
                                        _ = tokio::time::sleep(idle) => {}
                                    }
                                }
                            }
                            Err(e) => {
                                warn!(%tree, error = %e, "sync pass failed; dialling again");
                                status.failed(&tree, &self.primary, &e.to_string(), true);
                                break;
                            }
                        }
                    }
                }
                Err(e) => status.failed(&tree, &self.primary, &format!("{e:#}"), true),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self, root: &std::path::Path) -> anyhow::Result<PeerConnection> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(&self.state_dir)?;
        let addr = lookup_host(&self.primary).await?.next();
        let addr = addr.ok_or_else(|| anyhow::anyhow!("cannot resolve {}", self.primary))?;
        Ok(PeerConnection::connect(addr, &self.secret, &self.me, self.max_frame).await?)
    }
}
