//! `tandem standby off`: unpairs both sides and leaves each host as a user expects of a pair
//! that no longer exists. The peer is told (best effort: an unreachable peer is named so the
//! operator runs `off` there too); the jobs stop; then, on each host:
//!
//! - a primary takes the standby out of pg_hba, drops tandem's slot (it no longer holds WAL
//!   for nobody) and the replication role tandem made (its grants with it; a role of the
//!   site's own is kept), and takes writes again if it was fenced read-only; an old primary
//!   fenced by a demotion stays a read-only standby following nothing, one fenced by a stop
//!   stays stopped (the peer took over with what it wrote: promoting or starting it is the
//!   operator's call);
//! - a standby takes the old primary out of pg_hba and its database off tandem's walsender:
//!   `primary_conninfo` and the passfile go, so it stops retrying a walsender that is gone,
//!   but `standby.signal` stays: it remains a read-only copy of what it replayed, never a
//!   second writable primary by surprise (promoting it is the operator's call);
//! - tandem's WAL state goes: the walsender's password always, the archive too unless the
//!   standby database had not replayed all of it (then it is the only copy of that WAL: kept,
//!   and named);
//! - no secret outlives the pair (`pairing.json.off` keeps no password), and the last errors,
//!   restarts and peer facts of the pair are forgotten.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::config::{DEFAULT_REPLICATION_USER, FenceMode};
use super::configure::Report;
use super::error::StandbyError;
use super::jobs::WalState;
use super::pairing::{Pairing, Role};
use super::postgres::{LocalPg, RoleDrop};
use super::protocol::{Answer, Request};
use super::service::{PeerView, Standby};
use crate::wal::Lsn;
use crate::wal::archive::ArchiveReader;
use crate::wal::base_backup::remove_standby_config;
use crate::wal::config::WalConfig;

/// How long a primary waits for the standby's stream to let go of the slot.
const SLOT_WAIT: Duration = Duration::from_secs(15);
/// How long a standby's database may take to replay what tandem's archive holds at off.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

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
        let wal = match &*self.wal().read().expect("not poisoned") {
            WalState::Running(h) => Some(h.reader.clone()),
            _ => None,
        };
        if let (Role::Standby, Some(pg), Some(reader)) = (p.role, self.paired_pg(&p.options).ok(), &wal) {
            catch_up(pg, reader).await;
        }
        self.jobs.stop_all().await;
        // What the archive holds once no more comes in: the database may still need it.
        let archived = wal.map(|r| r.flush_point().lsn);
        let user = &self.config.standby.replication_user;
        let mut keep_archive = false;
        match self.paired_pg(&p.options).ok() {
            Some(pg) if p.role == Role::Primary => self.primary_off(pg, &p, user, &mut steps).await,
            Some(pg) => keep_archive = standby_off(pg, user, archived, &mut steps).await,
            None => {}
        }
        forget_wal(&self.config.wal, keep_archive, &mut steps);
        *self.last_error.write().expect("not poisoned") = None;
        *self.peer_view.write().expect("not poisoned") = PeerView::default();
        self.keeper.reset();
        self.save(None)?;
        self.replan().await;
        steps.push("unpaired (pairing.json.off keeps the record, without its password)".into());
        info!(pair = %p.pair_id, "warm standby off");
        Ok(Report {
            role: None,
            pair_id: Some(p.pair_id),
            steps,
            seconds: started.elapsed().as_secs_f64(),
            writable_after_seconds: None,
        })
    }

    /// A primary's database: pg_hba, the slot, the fence, the role (see the module doc).
    async fn primary_off(&self, pg: &LocalPg, p: &Pairing, user: &str, steps: &mut Vec<String>) {
        match pg.set_hba(user, false).await {
            Ok(()) => steps.push("pg_hba: the standby's entries removed".into()),
            Err(e) => steps.push(format!("WARNING: pg_hba not cleaned ({e}): remove tandem's block by hand")),
        }
        if !pg.running().await {
            if p.fenced.as_ref().is_some_and(|f| f.how == FenceMode::Stop) {
                steps.push(
                    "the database stays stopped, as its fence left it: start it (pg_ctl start) only if this host is to be a primary of its own"
                        .into(),
                );
            }
            steps.push(format!(
                "WARNING: PostgreSQL is not running: drop the replication slot `{}` and the role `{user}` once it runs",
                self.config.wal.slot
            ));
            return;
        }
        let slot = &self.config.wal.slot;
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            match pg.drop_slot(slot).await {
                Ok(true) => {
                    steps.push(format!("replication slot `{slot}` dropped"));
                    break;
                }
                Ok(false) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    steps.push(format!(
                        "WARNING: replication slot `{slot}` not dropped ({e}): drop it once the standby stopped streaming"
                    ));
                    break;
                }
            }
        }
        if p.superseded.is_some() && !pg.in_recovery().await.unwrap_or(true) {
            match pg.set_read_only(false).await {
                Ok(()) => steps.push("the database takes writes again (no longer fenced)".into()),
                Err(e) => steps.push(format!("WARNING: default_transaction_read_only not lifted ({e})")),
            }
        }
        if pg.in_recovery().await.unwrap_or(false) {
            // Demoted by its fence: the peer took over with everything it wrote. It stays a
            // read-only copy, never a second writable primary by surprise.
            steps.push(format!(
                "the database stays fenced: a read-only standby of its own WAL following nothing (standby.signal): \
                 `pg_ctl promote` makes it a primary of its own; then drop the role `{user}`"
            ));
            return;
        }
        match pg.drop_replication_role(user, DEFAULT_REPLICATION_USER).await {
            Ok(RoleDrop::Dropped) => steps.push(format!("replication role `{user}` dropped")),
            Ok(RoleDrop::Kept) => {
                steps.push(format!("replication role `{user}` kept: tandem did not make it"))
            }
            Ok(RoleDrop::Absent) => {}
            Err(e) => {
                steps.push(format!("WARNING: replication role `{user}` not dropped ({e}): drop it by hand"))
            }
        }
        // From its days as a standby, if it had them: a secret and a conninfo to nowhere.
        if pg.data_dir.join(crate::wal::base_backup::PASSFILE).exists() {
            let _ = remove_standby_config(&pg.data_dir);
        }
    }
}

/// A standby's database: pg_hba, and off tandem's walsender (see the module doc). Returns
/// whether tandem's archive must be kept: the database had not replayed all it holds.
async fn standby_off(pg: &LocalPg, user: &str, archived: Option<Lsn>, steps: &mut Vec<String>) -> bool {
    match pg.set_hba(user, false).await {
        Ok(()) => steps.push("pg_hba: the primary's entries removed".into()),
        Err(e) => steps.push(format!("WARNING: pg_hba not cleaned ({e}): remove tandem's block by hand")),
    }
    let running = pg.running().await;
    let replayed = match running {
        true => pg.overview("").await.ok().and_then(|o| o.replay_lsn),
        false => None,
    };
    match remove_standby_config(&pg.data_dir) {
        Ok(changed) => {
            if changed
                && running
                && let Err(e) = pg.reload().await
            {
                steps.push(format!(
                    "WARNING: PostgreSQL not reloaded ({e}): it retries tandem's walsender until it is"
                ));
            }
            steps.push(
                "the database stays a read-only standby of the WAL it replayed, following nothing \
                 (primary_conninfo and its passfile removed, standby.signal kept): `pg_ctl promote` makes \
                 it a primary of its own"
                    .into(),
            );
        }
        Err(e) => steps.push(format!("WARNING: the standby configuration not removed ({e})")),
    }
    match (archived, replayed) {
        (Some(held), Some(replayed)) if replayed >= held => false,
        (None, _) => false,
        (Some(held), replayed) => {
            let replayed =
                replayed.map_or("(unknown: the database is not running)".into(), |l| l.to_string());
            steps.push(format!(
                "WARNING: tandem's WAL archive is kept: it holds WAL up to {held} and the database replayed up to \
                 {replayed}; remove it once that WAL is not needed"
            ));
            true
        }
    }
}

/// Lets a running standby database take what tandem's archive holds before the walsender
/// stops (a healthy pair then leaves it complete, and the archive can go), for up to
/// [`CATCH_UP_WAIT`].
async fn catch_up(pg: &LocalPg, archive: &ArchiveReader) {
    let deadline = Instant::now() + CATCH_UP_WAIT;
    while Instant::now() < deadline && pg.running().await {
        let replayed = pg.overview("").await.ok().and_then(|o| o.replay_lsn);
        if replayed.is_some_and(|r| r >= archive.flush_point().lsn) {
            return;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// tandem's WAL state: the walsender's password always goes; the archive (and the primary's
/// identity, and an archive set aside) unless `keep_archive`.
fn forget_wal(wal: &WalConfig, keep_archive: bool, steps: &mut Vec<String>) {
    let dir = wal.state_dir();
    let mut gone = vec![wal.walsender_password_file()];
    if !keep_archive {
        gone.extend([
            dir.join("archive"),
            dir.join("archive.previous"),
            dir.join(crate::wal::upstream::UPSTREAM_FILE),
        ]);
    }
    let mut freed = 0;
    for path in gone {
        freed += size_of(&path);
        let removed =
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                steps.push(format!("WARNING: {} not removed ({e})", path.display()))
            }
            _ => {}
        }
    }
    if !keep_archive && freed > 0 {
        steps.push(format!("tandem's WAL archive removed ({} MiB)", freed >> 20));
    }
}

/// Bytes under `path` (a file, or a folder of files as the archive is).
fn size_of(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| size_of(&e.path())).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}
