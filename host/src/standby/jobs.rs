//! The running jobs of a role, replaced as a whole when the pairing changes: tree following
//! or watching, and WAL streaming. Each set runs under its own cancellation token (a child of
//! the daemon's), so a new role first stops the old jobs and waits for them (ports freed,
//! files closed) before it starts its own.
//!
//! Must never: run two sets at once (two followers writing one tree, two walsenders).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::plan::Plan;
use crate::peer::{ClusterSecret, PeerIdentity};
use crate::sync::follow::Follower;
use crate::sync::live::{Journals, watch_trees};
use crate::wal::service::WalHandle;

/// WAL streaming as the status sees it.
#[derive(Clone, Default)]
pub enum WalState {
    /// This host streams no WAL.
    #[default]
    Off,
    /// Configured, not yet in touch with its primary.
    Starting,
    Running(Box<WalHandle>),
    Failed(String),
}

/// Shared view of WAL streaming.
pub type WalSlot = Arc<RwLock<WalState>>;

/// What the jobs need from the daemon.
#[derive(Clone)]
pub struct JobContext {
    pub secret: ClusterSecret,
    pub me: PeerIdentity,
    pub max_frame: u64,
    pub sync_state: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub verify_minutes: u64,
    pub journals: Journals,
}

struct Running {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    plan: Plan,
}

/// The supervisor.
pub struct Jobs {
    ctx: JobContext,
    wal: WalSlot,
    running: tokio::sync::Mutex<Option<Running>>,
    shutdown: CancellationToken,
}

impl Jobs {
    pub fn new(ctx: JobContext, shutdown: CancellationToken) -> Self {
        Self { ctx, wal: WalSlot::default(), running: Default::default(), shutdown }
    }

    pub fn wal(&self) -> WalSlot {
        self.wal.clone()
    }

    /// The plan running now.
    pub async fn plan(&self) -> Option<Plan> {
        self.running.lock().await.as_ref().map(|r| r.plan.clone())
    }

    /// Runs `plan`, stopping the jobs of the previous one first (nothing happens when the
    /// plan is the same and WAL streaming has not failed).
    pub async fn run(&self, plan: Plan) {
        let mut running = self.running.lock().await;
        let failed = matches!(*self.wal.read().expect("not poisoned"), WalState::Failed(_));
        if running.as_ref().is_some_and(|r| r.plan == plan) && !failed {
            return;
        }
        if let Some(old) = running.take() {
            stop(old).await;
        }
        *self.wal.write().expect("not poisoned") = WalState::Off;
        if self.shutdown.is_cancelled() {
            return;
        }
        let stop = self.shutdown.child_token();
        let mut tasks = JoinSet::new();
        info!(follow = ?plan.follow, wal = plan.wal.is_some(), "starting the jobs of this host's role");
        match &plan.follow {
            Some(primary) => {
                let follower = Follower {
                    primary: primary.clone(),
                    secret: self.ctx.secret.clone(),
                    me: self.ctx.me.clone(),
                    max_frame: self.ctx.max_frame,
                    state_dir: self.ctx.sync_state.clone(),
                    log_dir: self.ctx.log_dir.clone(),
                    verify: Duration::from_secs(self.ctx.verify_minutes.max(1) * 60),
                    idle: plan.sync.idle(),
                };
                let trees: Vec<_> = plan
                    .sync
                    .trees
                    .keys()
                    .filter_map(|t| Some((t.clone(), plan.sync.tree_root(t)?)))
                    .collect();
                tasks.spawn(follower.run(trees, stop.clone()));
            }
            None => {
                let (sync, dir, journals) =
                    (plan.sync.clone(), self.ctx.sync_state.clone(), self.ctx.journals.clone());
                tasks.spawn(watch_trees(sync, dir, journals, stop.clone()));
            }
        }
        if let Some(wal_config) = plan.wal.clone() {
            *self.wal.write().expect("not poisoned") = WalState::Starting;
            let (slot, stop) = (self.wal.clone(), stop.clone());
            tasks.spawn(async move {
                let mut wal_tasks = JoinSet::new();
                let state = match crate::wal::service::start(wal_config, stop.clone(), &mut wal_tasks).await {
                    Ok(Some(handle)) => WalState::Running(Box::new(handle)),
                    Ok(None) => WalState::Off,
                    Err(e) => {
                        // The rest of the host keeps serving; status shows why WAL did not start.
                        error!(error = %e, "WAL streaming could not start");
                        WalState::Failed(e.to_string())
                    }
                };
                if !stop.is_cancelled() {
                    *slot.write().expect("not poisoned") = state;
                }
                while wal_tasks.join_next().await.is_some() {}
            });
        }
        *running = Some(Running { stop, tasks, plan });
    }

    /// Stops every job (daemon shutdown, or before a role change that must not race them).
    pub async fn stop_all(&self) {
        if let Some(old) = self.running.lock().await.take() {
            stop(old).await;
        }
        *self.wal.write().expect("not poisoned") = WalState::Off;
    }
}

async fn stop(mut old: Running) {
    old.stop.cancel();
    while old.tasks.join_next().await.is_some() {}
}
