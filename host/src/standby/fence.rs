//! Fencing the old primary, both sides of it. A standby taking over must first make sure the
//! old primary's database takes no more writes, from any session however it asks, and that
//! every WAL byte it wrote is in this side's archive; only then does it drain and promote.
//!
//! - The converting standby ([`Standby::fence_peer`]): asks the old primary's tandem to fence
//!   (`Request::Fence`, with the pair's id and the epoch it is about to take), then waits until
//!   tandem's archive holds the fenced database's WAL to its end. An old primary whose tandem
//!   does not answer is handled as before fencing existed: the convert refuses while anything
//!   still answers as a primary, and `--force` goes ahead (that old primary fences itself when
//!   it hears of the new epoch).
//! - The old primary ([`Standby::fence_for_peer`], [`Standby::fence_if_superseded`]): records
//!   that it is superseded (before touching the database: a restart applies the fence again),
//!   then applies `[standby] fence`.
//!
//! The fence is a demotion by default (as Patroni's): a fast stop, which is clean, so
//! PostgreSQL's walsender hands every WAL byte up to the shutdown checkpoint to tandem's
//! receiver and waits for it to be confirmed durable; then a start in recovery that follows
//! nothing. Every session is then read-only (`BEGIN READ WRITE` included), reads are still
//! served, tandem's receiver can still stream from it, and a service manager that restarts it
//! finds `standby.signal`. Rejoin needs no rewind when the new primary promoted at that clean
//! end (pg_rewind also accepts a target "shut down in recovery"). `stop` leaves the database
//! down instead (nothing reads from it either; a service manager restarting it gets a writable
//! primary until tandem next starts or hears its peer, so it is not the default); `read-only`
//! is the seed's soft fence (`default_transaction_read_only`), which a session can override.
//!
//! Must never: fence for another pair or for an epoch not above this host's, or lift a fence
//! (rejoin and off do, each in its own way).

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::config::FenceMode;
use super::configure::blocking;
use super::error::StandbyError;
use super::jobs::WalState;
use super::pairing::{Fenced, Pairing, Role};
use super::protocol::{Answer, Request};
use super::service::Standby;
use crate::plugin::now_ms;
use crate::wal::Lsn;

/// What failed, in `LastError::what`, for fencing (resolved by the next fence that works).
const FENCING: &str = "fencing the superseded database";
/// How long the old primary's last WAL may take to reach tandem's archive once it is fenced,
/// while none arrives (a clean stop has normally sent it before it returns).
const FENCE_WAL_WAIT: Duration = Duration::from_secs(10);

/// What [`Standby::fence_peer`] found.
pub(super) enum PeerFence {
    /// The old primary's tandem fenced its database this way; its last WAL is here.
    Fenced(FenceMode),
    /// Its tandem did not fence it: why, and whether it was reached at all (it refused, or
    /// failed after the handshake) or not (no connection or no handshake in time).
    NotFenced { why: String, reached: bool },
}

impl Standby {
    /// The converting standby's side: asks the old primary to fence (taking `epoch`), then
    /// waits for its last WAL. `Err` only when the old primary was fenced but its WAL did not
    /// all arrive and `force` is off (it stays fenced: both sides are then read-only).
    pub(super) async fn fence_peer(
        &self,
        p: &Pairing,
        epoch: u64,
        force: bool,
        steps: &mut Vec<String>,
    ) -> Result<PeerFence, StandbyError> {
        let request = Request::Fence { pair_id: p.pair_id.clone(), epoch };
        let (how, wal_end) = match self.ask(&p.peer.addr, &request).await {
            Ok(Answer::Fenced { how, wal_end }) => (how, wal_end),
            Ok(Answer::Refused { reason }) => {
                return Ok(PeerFence::NotFenced { why: format!("refused: {reason}"), reached: true });
            }
            Ok(other) => {
                return Ok(PeerFence::NotFenced {
                    why: format!("unexpected answer {other:?}"),
                    reached: true,
                });
            }
            Err(e) => {
                let reached = !matches!(e, StandbyError::Unreachable(_));
                return Ok(PeerFence::NotFenced { why: e.to_string(), reached });
            }
        };
        steps.push(format!(
            "old primary fenced ({how}) by its tandem{}",
            wal_end.as_ref().map(|l| format!(", its WAL ends at {l}")).unwrap_or_default()
        ));
        if how == FenceMode::ReadOnly {
            steps.push(
                "WARNING: the old primary's fence is read-only by default only ([standby] fence = \"read-only\" there): a session that asks for read-write still writes".into(),
            );
        }
        let end = wal_end.as_deref().and_then(|l| l.parse::<Lsn>().ok());
        match (end, self.followed_pg(p)) {
            (Some(end), Some(_)) => self.wait_for_wal(end, how, force, steps).await?,
            (None, Some(_)) => steps.push(
                "the old primary's database was not running: its WAL end is unknown, promoting what tandem holds".into(),
            ),
            (_, None) => {}
        }
        Ok(PeerFence::Fenced(how))
    }

    /// Waits until tandem's archive holds the fenced old primary's WAL to `end`: past the
    /// shutdown checkpoint's start (the walsender sends whole flushed records, so any byte past
    /// it means the record is whole), or up to the flushed `end` of a read-only fence.
    async fn wait_for_wal(
        &self,
        end: Lsn,
        how: FenceMode,
        force: bool,
        steps: &mut Vec<String>,
    ) -> Result<(), StandbyError> {
        let reached = |held: Lsn| if how == FenceMode::ReadOnly { held >= end } else { held > end };
        let (mut best, mut deadline) = (Lsn::INVALID, Instant::now() + FENCE_WAL_WAIT);
        loop {
            let held = match &*self.wal().read().expect("not poisoned") {
                WalState::Running(h) => Some(h.reader.flush_point().lsn),
                _ => None,
            };
            let Some(held) = held else {
                if force {
                    steps.push("WARNING: tandem's WAL streaming is not running: the old primary's last WAL may be missing".into());
                    return Ok(());
                }
                return Err(StandbyError::State(
                    "the old primary is fenced but tandem's WAL streaming is not running: its last WAL may be missing; not converting (--force converts anyway; the old primary stays fenced)".into(),
                ));
            };
            if reached(held) {
                steps.push(format!("the old primary's last WAL is in tandem's archive (up to {held})"));
                return Ok(());
            }
            if held > best {
                (best, deadline) = (held, Instant::now() + FENCE_WAL_WAIT);
            }
            if Instant::now() > deadline {
                warn!(%end, %held, "the fenced old primary's last WAL did not reach tandem's archive");
                if force {
                    steps.push(format!(
                        "WARNING: tandem's archive holds WAL up to {held}, the fenced old primary's ends at {end}: promoting without the rest"
                    ));
                    return Ok(());
                }
                return Err(StandbyError::State(format!(
                    "the old primary is fenced, but tandem's archive holds its WAL only up to {held} (it ends at {end}) and none came for {FENCE_WAL_WAIT:?}; not converting (run it again, or --force to promote without it; the old primary stays fenced)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The old primary's side of `Request::Fence`.
    pub(super) async fn fence_for_peer(&self, pair_id: &str, epoch: u64) -> Result<Answer, StandbyError> {
        let _op = self.op.lock().await;
        let mut p = self
            .pairing()
            .filter(|p| p.pair_id == pair_id)
            .ok_or_else(|| StandbyError::State("not paired with you".into()))?;
        if p.role != Role::Primary {
            return Err(StandbyError::State(format!(
                "{} is not the primary of the pair: nothing to fence",
                self.config.node_name
            )));
        }
        if epoch <= p.epoch {
            return Err(StandbyError::State(format!(
                "epoch {epoch} is not above this primary's ({}): a stale convert",
                p.epoch
            )));
        }
        let peer = p.peer.node.clone().unwrap_or_else(|| p.peer.addr.clone());
        warn!(%peer, epoch, "the standby takes over: fencing this database first");
        if p.superseded.is_none() {
            p.superseded = Some(format!(
                "{peer} took over as primary (epoch {epoch}): run `tandem standby rejoin` here"
            ));
            self.save(Some(p.clone()))?;
        }
        let fenced = self.apply_fence(&p, epoch).await?;
        Ok(Answer::Fenced {
            how: fenced.as_ref().map_or(self.config.standby.fence, |f| f.how),
            wal_end: fenced.and_then(|f| f.wal_end),
        })
    }

    /// An old primary whose peer took over fences its database (at start, and when it hears
    /// the peer's higher epoch), so that applications still pointed at it cannot write there
    /// (their writes would be lost at rejoin). `rejoin` or `off` lifts it. Errors are recorded.
    pub(super) async fn fence_if_superseded(&self, p: &Pairing) {
        if p.superseded.is_none() || self.paired_pg(&p.options).is_err() {
            return;
        }
        let epoch = p.fenced.as_ref().map_or(p.epoch + 1, |f| f.epoch);
        match self.apply_fence(p, epoch).await {
            Ok(_) => self.resolve_error(FENCING),
            Err(e) => self.record_error(FENCING, &e.to_string()),
        }
    }

    /// Applies `[standby] fence` to the database (idempotent: a fenced one is left as it is)
    /// and records it in the pairing; `None` for a host without a paired database.
    async fn apply_fence(&self, p: &Pairing, epoch: u64) -> Result<Option<Fenced>, StandbyError> {
        let Ok(pg) = self.paired_pg(&p.options) else { return Ok(None) };
        let how = self.config.standby.fence;
        let running = pg.running().await;
        let writable = running && !pg.in_recovery().await?;
        let wal_end = match how {
            // Already fenced (or stopped): the recorded end, if any.
            FenceMode::Demote if !writable && pg.data_dir.join("standby.signal").exists() => {
                p.fenced.as_ref().and_then(|f| f.wal_end.clone())
            }
            FenceMode::Stop if !running => p.fenced.as_ref().and_then(|f| f.wal_end.clone()),
            FenceMode::Demote => {
                let pg = pg.clone();
                blocking(move || pg.demote()).await??.map(|l| l.to_string())
            }
            FenceMode::Stop => {
                let pg = pg.clone();
                blocking(move || pg.stop_fenced()).await??.map(|l| l.to_string())
            }
            FenceMode::ReadOnly if writable => {
                pg.set_read_only(true).await?;
                Some(pg.current_lsn().await?.to_string())
            }
            FenceMode::ReadOnly => p.fenced.as_ref().and_then(|f| f.wal_end.clone()),
        };
        let fenced = Fenced { how, at_ms: now_ms(), epoch, wal_end };
        if p.fenced.as_ref().map(|f| (f.how, &f.wal_end)) == Some((fenced.how, &fenced.wal_end)) {
            return Ok(p.fenced.clone());
        }
        // Read again: the caller's copy may predate the save of `superseded`.
        let mut now = self.pairing().filter(|q| q.pair_id == p.pair_id).unwrap_or_else(|| p.clone());
        now.fenced = Some(fenced.clone());
        self.save(Some(now))?;
        info!(%how, wal_end = ?fenced.wal_end, "the superseded database is fenced");
        Ok(Some(fenced))
    }
}
