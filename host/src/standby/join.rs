//! Joining a pair: the primary's side (`Join` from a standby: identity and address checks,
//! pg_hba for the standby, the pair's id and the replication credentials in the answer) and
//! the standby's side (asking, and turning the answer into its pairing record). Used by
//! `configure --standby-mode` and by `rejoin`.

use tracing::info;

use super::error::StandbyError;
use super::pairing::{Options, Pairing, PeerRecord, Role};
use super::protocol::{Answer, Presence, Request};
use super::service::{Standby, host_ip};
use crate::plugin::now_ms;

impl Standby {
    /// The primary's side of a standby's configure.
    pub(super) async fn join(&self, standby: Presence) -> Result<Answer, StandbyError> {
        let _op = self.op.lock().await;
        let Some(mut p) = self.pairing() else {
            return Err(StandbyError::State(
                "this host is not configured as a primary: run `tandem standby configure --primary-mode --peer <standby>` on it first".into(),
            ));
        };
        if p.role != Role::Primary || p.superseded.is_some() {
            return Err(StandbyError::State(format!(
                "{} is not the primary of its pair",
                self.config.node_name
            )));
        }
        if let Some(node) = p.peer.node.as_ref().filter(|n| **n != standby.node) {
            return Err(StandbyError::State(format!(
                "this primary is paired with `{node}`; run `tandem standby off` on it before pairing `{}`",
                standby.node
            )));
        }
        let old_ip = host_ip(&p.peer.addr).await;
        // The first standby to join must come from the address the primary was configured with.
        if p.peer.node.is_none() && host_ip(&standby.peer_addr).await != old_ip {
            return Err(StandbyError::State(format!(
                "this primary was configured for a standby at {}, not {}: configure it again with --peer {}",
                p.peer.addr, standby.peer_addr, standby.peer_addr
            )));
        }
        p.peer = PeerRecord {
            node: Some(standby.node.clone()),
            addr: standby.peer_addr.clone(),
            pg: standby.pg.clone(),
            last_seen_ms: Some(now_ms()),
        };
        self.save(Some(p.clone()))?;
        let database = self.paired_pg(&p.options).is_ok();
        self.let_peer_in(&p).await;
        info!(standby = %standby.node, addr = %standby.peer_addr, "a standby joined");
        Ok(Answer::Joined {
            primary: self.presence().await,
            pair_id: p.pair_id,
            epoch: p.epoch,
            replication_user: self.config.standby.replication_user.clone(),
            replication_password: if database { p.replication_password } else { None },
            options: p.options,
        })
    }

    /// Joins the primary at `addr`: the pairing the answer describes.
    pub(super) async fn join_primary(
        &self,
        addr: &str,
        mine: &Options,
        current: Option<&Pairing>,
        steps: &mut Vec<String>,
    ) -> Result<Pairing, StandbyError> {
        let answer = self.ask(addr, &Request::Join { standby: self.presence().await }).await?;
        let (primary, pair_id, epoch, replication_password, theirs) = match answer {
            Answer::Joined { primary, pair_id, epoch, replication_password, options, .. } => {
                (primary, pair_id, epoch, replication_password, options)
            }
            Answer::Refused { reason } => {
                return Err(StandbyError::State(format!("{addr} refused: {reason}")));
            }
            other => return Err(StandbyError::Peer(format!("{addr}: unexpected answer {other:?}"))),
        };
        steps.push(format!("joined pair {pair_id}: primary `{}` at {addr}", primary.node));
        let options = Options {
            ignore_database: mine.ignore_database || theirs.ignore_database,
            ignore_vault: mine.ignore_vault || theirs.ignore_vault,
            ignore_package_updates: mine.ignore_package_updates || theirs.ignore_package_updates,
            recovery_dir: mine.recovery_dir.clone(),
        };
        Ok(Pairing {
            pair_id,
            role: Role::Standby,
            peer: PeerRecord {
                node: Some(primary.node),
                addr: addr.to_string(),
                pg: primary.pg,
                last_seen_ms: Some(now_ms()),
            },
            options,
            epoch,
            configured_at_ms: now_ms(),
            replication_password,
            superseded: None,
            last_failover: current.and_then(|c| c.last_failover.clone()),
            database_ready: false,
            fenced: None,
        })
    }
}
