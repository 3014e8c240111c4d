//! The truth about the pair in one value, for `tandem standby status` (text and JSON), the
//! REST twin, the load balancers' health check and the Prometheus metrics: role (as recorded,
//! and as the local database looks), the peer and when it last answered, the database's
//! replication (configured, streaming, last WAL, segments in use and configured, lag in bytes
//! and seconds), each tree's sync, and the last error of each job.
//!
//! Must never: report "streaming" from a stale record: every fact is read when asked.

use serde::{Deserialize, Serialize};

use crate::tunnel::stats::LinkSnapshot;

use super::config::FenceMode;
use super::jobs::WalState;
use super::keeper::KeeperView;
use super::pairing::{Failover, Fenced, Options, Role};
use super::service::{LastError, Standby};
use crate::plugin::now_ms;
use crate::sync::status::{StatusFiles, TreeStatus};
use crate::wal::status::WalStatus;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StandbyStatus {
    pub configured: bool,
    pub role: Option<Role>,
    /// "Primary", "Standby" or "Not configured": the recorded role, checked against the
    /// database (a promoted database looks like a primary whatever the record says).
    pub looks_like: String,
    /// What the health check answers: true on a primary or an unpaired host.
    pub healthy: bool,
    pub node: String,
    pub pair_id: Option<String>,
    pub epoch: u64,
    /// On an old primary whose peer took over.
    pub superseded: Option<String>,
    /// On an old primary: its database is fenced, how (demote, stop, read-only) and since when.
    #[serde(default)]
    pub fenced: Option<Fenced>,
    pub options: Option<Options>,
    pub peer: Option<PeerStatus>,
    pub database: DatabaseStatus,
    /// WAL streaming on the standby side (tandem's receiver, archive and walsender).
    pub wal: Option<WalStatus>,
    pub trees: TreesStatus,
    /// What the database tunnel carried (this host's ends): bytes per kind of stream, before
    /// compression and on the link.
    #[serde(default)]
    pub link: LinkSnapshot,
    pub last_failover: Option<Failover>,
    /// The last failed command or set-up step.
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: Option<String>,
    pub addr: String,
    pub pg: Option<String>,
    /// Its role as it last said.
    pub role: Option<Role>,
    pub answered_ms: Option<u64>,
    pub reachable: bool,
    pub last_error: Option<String>,
    /// Its database is fenced (an old primary whose peer took over), as it last said.
    #[serde(default)]
    pub fenced: Option<FenceMode>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// Database replication is part of this pairing.
    pub configured: bool,
    /// Why not, when it is not.
    pub not_configured_because: Option<String>,
    pub running: bool,
    pub in_recovery: Option<bool>,
    /// Primary: tandem's slot is in use by the standby side. Standby: tandem streams from the
    /// primary and the database streams from tandem.
    pub streaming: bool,
    /// Primary: where the standby side streams from (pg_stat_replication).
    pub standby_client: Option<String>,
    pub replay_paused: Option<bool>,
    pub receive_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Standby: when WAL last came in (the seed's "DB last updated").
    pub last_updated_ms: Option<u64>,
    pub wal_segments_in_use: Option<u64>,
    pub wal_segments_configured: u64,
    /// Standby: WAL its database has not replayed. Primary: WAL the standby side (tandem) has
    /// not reported durable.
    pub lag_bytes: Option<u64>,
    /// Standby: age of the oldest WAL its database has not replayed. Primary: PostgreSQL's
    /// `flush_lag` of the standby side.
    pub lag_seconds: Option<f64>,
    /// Primary: tandem's slot.
    pub slot_active: Option<bool>,
    pub slot_restart_lsn: Option<String>,
    pub slot_wal_status: Option<String>,
    pub last_error: Option<String>,
    /// Standby: tandem restarts its PostgreSQL when the postmaster dies; what it did.
    #[serde(default)]
    pub keeper: KeeperView,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreesStatus {
    /// "following" (standby), "serving" (primary or unpaired).
    pub mode: String,
    pub primary: Option<String>,
    pub trees: Vec<TreeStatus>,
}

impl Standby {
    /// Reads every fact now.
    pub async fn status(&self) -> StandbyStatus {
        let pairing = self.pairing();
        let view = self.peer_view.read().expect("not poisoned").clone();
        // What runs, not what the record would start: a failed command may have stopped jobs.
        let plan = self.jobs.plan().await.unwrap_or_else(|| self.plan());
        let mut s = StandbyStatus {
            configured: pairing.is_some(),
            role: pairing.as_ref().map(|p| p.role),
            node: self.config.node_name.clone(),
            pair_id: pairing.as_ref().map(|p| p.pair_id.clone()),
            epoch: pairing.as_ref().map_or(0, |p| p.epoch),
            superseded: pairing.as_ref().and_then(|p| p.superseded.clone()),
            fenced: pairing.as_ref().and_then(|p| p.fenced.clone()),
            options: pairing.as_ref().map(|p| p.options.clone()),
            last_failover: pairing.as_ref().and_then(|p| p.last_failover.clone()),
            last_error: self.last_error.read().expect("not poisoned").clone(),
            link: self.tunnel_stats.snapshot(),
            ..StandbyStatus::default()
        };
        s.peer = pairing.as_ref().map(|p| {
            let fresh = view.answered_ms.is_some_and(|t| now_ms().saturating_sub(t) < 15_000);
            PeerStatus {
                node: p.peer.node.clone(),
                addr: p.peer.addr.clone(),
                pg: p.peer.pg.clone(),
                role: view.presence.as_ref().and_then(|pr| pr.role),
                answered_ms: view.answered_ms,
                reachable: fresh && view.error.is_none(),
                last_error: view.error.clone(),
                fenced: view.presence.as_ref().and_then(|pr| pr.fenced),
            }
        });
        s.wal = match self.wal().read().expect("not poisoned").clone() {
            WalState::Running(h) => Some(WalStatus::of(&h)),
            WalState::Failed(e) => {
                Some(WalStatus { state: "failed".into(), last_error: Some(e), ..Default::default() })
            }
            WalState::Starting => Some(WalStatus { state: "starting".into(), ..Default::default() }),
            WalState::Off => None,
        };
        s.database = self.database_status(&s).await;
        s.trees = TreesStatus {
            mode: if plan.follow.is_some() { "following" } else { "serving" }.into(),
            primary: plan.follow.clone(),
            trees: plan
                .sync
                .trees
                .iter()
                .filter(|(_, path)| !path.is_empty())
                .map(|(tree, _)| StatusFiles::new(&self.config.data_dir.join("sync"), None, tree).load(tree))
                .collect(),
        };
        s.looks_like = match (s.role, s.database.in_recovery) {
            (_, Some(true)) => "Standby",
            (_, Some(false)) => "Primary",
            (Some(Role::Primary), None) => "Primary",
            (Some(Role::Standby), None) => "Standby",
            (None, None) => "Not configured",
        }
        .into();
        // A load balancer's question: does this host take the application's writes? Not a
        // standby, not a superseded primary, not one whose paired database is down.
        let db_down = s.database.configured && s.database.in_recovery.is_none();
        s.healthy = s.role != Some(Role::Standby)
            && s.superseded.is_none()
            && s.database.in_recovery != Some(true)
            && !db_down;
        s
    }

    async fn database_status(&self, s: &StandbyStatus) -> DatabaseStatus {
        let options = s.options.clone().unwrap_or_default();
        let mut d = DatabaseStatus {
            wal_segments_configured: self.config.wal.reserve_segments,
            ..DatabaseStatus::default()
        };
        match self.paired_pg(&options) {
            Err(why) => d.not_configured_because = Some(why.into()),
            // A standby whose primary pairs no database replicates files only.
            Ok(_) => {
                let primary_has_one = s.peer.as_ref().is_some_and(|p| p.pg.is_some());
                d.configured = s.configured && (s.role != Some(Role::Standby) || primary_has_one);
            }
        }
        let Some(pg) = self.pg.as_ref() else { return d };
        d.running = pg.running().await;
        // One session for everything below (health checks ask often).
        let overview = if d.running {
            pg.overview(&self.config.wal.slot).await.map_err(|e| d.last_error = Some(e.to_string())).ok()
        } else {
            None
        };
        if let Some(o) = &overview {
            d.in_recovery = Some(o.in_recovery);
            if o.in_recovery {
                d.replay_paused = o.replay_paused;
                d.receive_lsn = o.receive_lsn.map(|l| l.to_string());
                d.replay_lsn = o.replay_lsn.map(|l| l.to_string());
            }
        }
        match s.role {
            Some(Role::Standby) => {
                d.keeper = self.keeper.view();
                if let Some(w) = &s.wal {
                    d.streaming = w.state == "streaming" && w.standby.as_ref().is_some_and(|v| v.streaming);
                    d.last_updated_ms = w.last_wal_at_ms;
                    d.wal_segments_in_use = Some(w.segments_in_use);
                    d.lag_bytes = w.replay_lag_bytes;
                    d.lag_seconds = w.replay_lag_seconds;
                    // Only an error that still applies: a resolved one is in the WAL status.
                    if d.last_error.is_none() && w.last_error_resolved_at_ms.is_none() {
                        d.last_error = w.last_error.clone();
                    }
                }
            }
            Some(Role::Primary) if let Some(o) = overview.filter(|o| !o.in_recovery) => {
                if let Some(slot) = o.slot {
                    d.slot_active = Some(slot.active);
                    d.slot_restart_lsn = slot.restart_lsn.map(|l| l.to_string());
                    d.slot_wal_status = slot.wal_status;
                    d.streaming = slot.active;
                }
                let tandem = crate::wal::client::DEFAULT_APPLICATION_NAME;
                if let Some(row) = o.replication.iter().find(|r| r.application_name == tandem) {
                    d.standby_client = row.client_addr.map(|a| a.to_string());
                    // PostgreSQL leaves flush_lag empty once nothing is in flight: caught up.
                    d.lag_seconds = Some(row.flush_lag_seconds.unwrap_or(0.0));
                    // What the standby side has durably (tandem's flush reports).
                    if let (Some(now), Some(durable)) = (o.current_lsn, row.flush_lsn) {
                        d.lag_bytes = Some(now.bytes_since(durable));
                    }
                }
            }
            _ => {}
        }
        d
    }
}
