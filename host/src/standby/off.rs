//! `tandem standby off`: unpairs both sides. The peer is told (best effort: an unreachable
//! peer is named so the operator runs `off` there too); the jobs stop; a primary takes the
//! standby out of pg_hba and drops tandem's slot, so it no longer holds WAL for nobody. The
//! standby's database is left as it is (a read-only copy that no longer follows).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::configure::Report;
use super::error::StandbyError;
use super::pairing::Role;
use super::protocol::{Answer, Request};
use super::service::Standby;

/// How long a primary waits for the standby's stream to let go of the slot.
const SLOT_WAIT: Duration = Duration::from_secs(15);

impl Standby {
    /// Unpairs this host. `asked_by`: the peer's request (pair id, epoch), checked again under
    /// the lock; `None`: the operator's command, which also asks the peer to unpair. Once the
    /// peer was told, nothing stops this side from unpairing too (what is left is named).
    pub async fn off(self: &Arc<Self>, asked_by: Option<(String, u64)>) -> Result<Report, StandbyError> {
        let _op = self.op.lock().await;
        let started = Instant::now();
        let p = self
            .pairing()
            .ok_or_else(|| StandbyError::State("warm standby is not configured on this host".into()))?;
        if let Some((pair_id, epoch)) = &asked_by
            && (*pair_id != p.pair_id || *epoch < p.epoch)
        {
            return Err(StandbyError::State(
                "the peer's unpair request no longer matches this pairing".into(),
            ));
        }
        let mut steps = Vec::new();
        if asked_by.is_none() {
            let unpair = Request::Unpair { pair_id: p.pair_id.clone(), epoch: p.epoch };
            match self.ask(&p.peer.addr, &unpair).await {
                Ok(Answer::Done) => steps.push(format!("the peer at {} unpairs too", p.peer.addr)),
                Ok(other) => steps.push(format!(
                    "the peer at {} did not unpair ({other:?}): run `tandem standby off` there",
                    p.peer.addr
                )),
                Err(e) => {
                    steps.push(format!("the peer did not answer ({e}): run `tandem standby off` there"))
                }
            }
        }
        self.jobs.stop_all().await;
        let pg = self.paired_pg(&p.options).ok();
        if let (Role::Primary, Some(pg)) = (p.role, pg)
            && pg.running().await
        {
            match pg.set_hba(&self.config.standby.replication_user, &[]).await {
                Ok(()) => steps.push("pg_hba: the standby's entries removed".into()),
                Err(e) => {
                    steps.push(format!("WARNING: pg_hba not cleaned ({e}): remove tandem's block by hand"))
                }
            }
            let deadline = Instant::now() + SLOT_WAIT;
            loop {
                match pg.drop_slot(&self.config.wal.slot).await {
                    Ok(true) => {
                        steps.push(format!("replication slot `{}` dropped", self.config.wal.slot));
                        break;
                    }
                    Ok(false) => break,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => {
                        steps.push(format!(
                            "WARNING: replication slot `{}` not dropped ({e}): drop it once the standby stopped streaming",
                            self.config.wal.slot
                        ));
                        break;
                    }
                }
            }
        }
        if let (Some(_), Some(pg)) = (&p.superseded, pg)
            && pg.running().await
            && !pg.in_recovery().await.unwrap_or(true)
        {
            match pg.set_read_only(false).await {
                Ok(()) => steps.push("the database takes writes again (no longer fenced)".into()),
                Err(e) => steps.push(format!("WARNING: default_transaction_read_only not lifted ({e})")),
            }
        }
        if p.role == Role::Standby && pg.is_some() {
            steps.push("the standby database is left as it is (read-only, no longer following)".into());
        }
        self.save(None)?;
        self.replan().await;
        steps.push("unpaired".into());
        info!(pair = %p.pair_id, "warm standby off");
        Ok(Report {
            role: None,
            pair_id: Some(p.pair_id),
            steps,
            seconds: started.elapsed().as_secs_f64(),
            writable_after_seconds: None,
        })
    }
}
