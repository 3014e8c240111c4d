//! Failover: `convert-to-primary` on the standby and `rejoin` on the old primary.
//!
//! Convert refuses while the old primary still answers as a primary (its tandem says so, or its
//! PostgreSQL accepts writes) unless forced; refuses while replay is paused; lets the standby
//! PostgreSQL take everything tandem's archive holds before promoting, so nothing the standby
//! side acknowledged to the primary is lost; stops pulling trees; promotes; checkpoints.
//! Rejoin brings the old primary back as the new standby with `pg_rewind` from the new
//! primary (configure set `wal_log_hints`), not a new base backup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::configure::{Report, blocking};
use super::error::StandbyError;
use super::jobs::WalState;
use super::pairing::{Failover, Pairing, Role};
use super::postgres::StopMode;
use super::protocol::{Answer, Request};
use super::service::Standby;
use crate::plugin::now_ms;

/// How long the fencing check waits for the old primary (its tandem and its database, at once).
const FENCE_WAIT: Duration = Duration::from_secs(2);
/// How long the standby database may take to receive what tandem holds before promotion.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

impl Standby {
    pub async fn convert_to_primary(self: &Arc<Self>, force: bool) -> Result<Report, StandbyError> {
        let _op = self.op.lock().await;
        let started = Instant::now();
        let mut steps = Vec::new();
        let result = self.convert(force, started, &mut steps).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(writable) => {
                info!(seconds, writable, steps = %steps.join("; "), "converted to primary");
                let p = self.pairing();
                Ok(Report {
                    role: Some(Role::Primary),
                    pair_id: p.map(|p| p.pair_id),
                    steps,
                    seconds,
                    writable_after_seconds: Some(writable),
                })
            }
            Err(e) => {
                self.record_error("convert-to-primary", &e.to_string());
                Err(e)
            }
        }
    }

    async fn convert(
        &self,
        force: bool,
        started: Instant,
        steps: &mut Vec<String>,
    ) -> Result<f64, StandbyError> {
        let mut p = self
            .pairing()
            .ok_or_else(|| StandbyError::State("warm standby is not configured on this host".into()))?;
        if p.role != Role::Standby {
            return Err(StandbyError::State("this host is already the primary of its pair".into()));
        }
        let database = self.database_reason(&p.options).is_ok() && p.peer.pg.is_some();
        if force {
            warn!("convert-to-primary forced: the old primary was not checked");
            steps.push("fencing check skipped (--force): make sure the old primary stays down".into());
        } else {
            self.fence(&p, database, steps).await?;
        }
        if let (true, Some(pg)) = (database, &self.pg) {
            if !pg.is_running() {
                let pg2 = pg.clone();
                blocking(move || pg2.start()).await??;
                steps.push("PostgreSQL started".into());
            }
            if pg.replay_paused().await? {
                return Err(StandbyError::State(
                    "WAL replay is paused on this standby: resume it (SELECT pg_wal_replay_resume()) or find out who paused it first".into(),
                ));
            }
            self.drain(steps).await?;
        }
        // Stop pulling trees and WAL before the database takes writes.
        self.jobs.stop_all().await;
        steps.push("tree sync and WAL streaming stopped".into());
        let mut writable = started.elapsed().as_secs_f64();
        if let (true, Some(pg)) = (database, &self.pg) {
            pg.promote(60).await?;
            writable = started.elapsed().as_secs_f64();
            steps.push(format!("PostgreSQL promoted: writable after {writable:.2} s"));
            pg.checkpoint().await?;
            steps.push("checkpoint done".into());
        }
        p.role = Role::Primary;
        p.epoch += 1;
        p.superseded = None;
        p.last_failover =
            Some(Failover { at_ms: now_ms(), seconds: started.elapsed().as_secs_f64(), forced: force });
        self.save(Some(p))?;
        self.replan().await;
        steps.push("tree sync: serving; the old primary rejoins with `tandem standby rejoin`".into());
        Ok(writable)
    }

    /// Refuses while the old primary answers as a primary: its tandem says so, or its
    /// PostgreSQL accepts writes. Both are asked at once, each for at most [`FENCE_WAIT`]: a
    /// dead host does not refuse connections, it just never answers, and that silence must not
    /// eat the failover's time.
    async fn fence(&self, p: &Pairing, database: bool, steps: &mut Vec<String>) -> Result<(), StandbyError> {
        let hint = "not converting (pass --force to convert anyway, after making sure it is down)";
        let announce = Request::Announce { me: self.presence().await };
        let endpoint = if database { Some(self.primary_endpoint(p)?) } else { None };
        let (tandem, writes) =
            tokio::join!(tokio::time::timeout(FENCE_WAIT, self.ask(&p.peer.addr, &announce)), async {
                match &endpoint {
                    Some(e) => {
                        tokio::time::timeout(FENCE_WAIT, accepts_writes(e)).await.ok().and_then(Result::ok)
                    }
                    None => None,
                }
            });
        match tandem {
            Ok(Ok(Answer::Presence { me }))
                if me.role == Some(Role::Primary) && me.pg_primary != Some(false) =>
            {
                return Err(StandbyError::Fenced(format!(
                    "the primary `{}` at {} still answers as a primary: {hint}",
                    me.node, p.peer.addr
                )));
            }
            Ok(Ok(Answer::Presence { me })) => steps.push(format!(
                "old primary's tandem answers ({}), its database does not accept writes",
                me.role.map_or("unpaired".to_string(), |r| r.to_string())
            )),
            _ => steps.push(format!("old primary's tandem at {} does not answer", p.peer.addr)),
        }
        if let Some(e) = &endpoint {
            if writes == Some(true) {
                return Err(StandbyError::Fenced(format!(
                    "the old primary's PostgreSQL at {}:{} still accepts writes: {hint}",
                    e.host, e.port
                )));
            }
            steps.push("old primary's database does not answer as a primary".into());
        }
        Ok(())
    }

    /// Lets the standby database receive all the WAL tandem's archive holds.
    async fn drain(&self, steps: &mut Vec<String>) -> Result<(), StandbyError> {
        let WalState::Running(h) = self.wal().read().expect("not poisoned").clone() else {
            steps.push("WAL streaming was not running: promoting what the database has".into());
            return Ok(());
        };
        let target = h.reader.flush_point().lsn;
        let pg = self.pg.as_ref().expect("database checked");
        let deadline = Instant::now() + DRAIN_WAIT;
        loop {
            let got =
                pg.receive_lsn().await?.unwrap_or_default().max(pg.replay_lsn().await?.unwrap_or_default());
            if got >= target {
                steps.push(format!("the database has all WAL tandem held (up to {target})"));
                return Ok(());
            }
            if Instant::now() > deadline {
                let missing = target.bytes_since(got);
                warn!(%target, %got, missing, "the standby database did not receive all WAL tandem held");
                steps.push(format!(
                    "WARNING: the database received up to {got} of {target} that tandem held ({missing} bytes not applied)"
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn rejoin(self: &Arc<Self>, peer: Option<String>) -> Result<Report, StandbyError> {
        let _op = self.op.lock().await;
        let started = Instant::now();
        let mut steps = Vec::new();
        let result = self.rejoin_inner(peer, &mut steps).await;
        match result {
            Ok(()) => {
                let seconds = started.elapsed().as_secs_f64();
                info!(seconds, steps = %steps.join("; "), "rejoined as standby");
                Ok(Report {
                    role: Some(Role::Standby),
                    pair_id: self.pairing().map(|p| p.pair_id),
                    steps,
                    seconds,
                    writable_after_seconds: None,
                })
            }
            Err(e) => {
                self.record_error("rejoin", &e.to_string());
                Err(e)
            }
        }
    }

    async fn rejoin_inner(&self, peer: Option<String>, steps: &mut Vec<String>) -> Result<(), StandbyError> {
        let current = self.pairing().ok_or_else(|| {
            StandbyError::State(
                "warm standby is not configured on this host: use `tandem standby configure --standby-mode`"
                    .into(),
            )
        })?;
        if current.role == Role::Standby {
            return Err(StandbyError::State("this host is already the standby of its pair".into()));
        }
        let addr = peer.unwrap_or_else(|| current.peer.addr.clone());
        match self.ask(&addr, &Request::Announce { me: self.presence().await }).await? {
            Answer::Presence { me }
                if me.role == Some(Role::Primary) && me.pair_id.as_ref() == Some(&current.pair_id) => {}
            Answer::Presence { me } => {
                return Err(StandbyError::State(format!(
                    "`{}` at {addr} is not the primary of this pair: nothing to rejoin (convert-to-primary runs there first)",
                    me.node
                )));
            }
            other => return Err(StandbyError::Peer(format!("{addr}: unexpected answer {other:?}"))),
        }
        let pairing = self.join_primary(&addr, &current.options, Some(&current), steps).await?;
        let database = self.database_reason(&pairing.options).is_ok() && pairing.peer.pg.is_some();
        self.jobs.stop_all().await;
        let Some(pg) = self.pg.clone().filter(|_| database) else {
            self.save(Some(pairing))?;
            self.replan().await;
            steps.push(format!("tree sync: following {addr}"));
            return Ok(());
        };
        // tandem's slot on the new primary first, then the rewind: no WAL in between is missed.
        self.fresh_archive()?;
        self.save(Some(pairing.clone()))?;
        self.replan().await;
        self.wait_streaming().await?;
        steps.push("WAL streaming from the new primary into tandem's archive".into());
        let pg2 = pg.clone();
        blocking(move || pg2.stop(StopMode::Fast)).await??;
        let source = self.primary_endpoint(&pairing)?;
        let pg2 = pg.clone();
        let took = blocking(move || pg2.rewind(&source)).await??;
        steps.push(format!("pg_rewind from the new primary in {:.1} s", took.as_secs_f64()));
        let walsender = self.walsender_endpoint(&pairing)?;
        let (pg2, name) = (pg.clone(), self.config.node_name.clone());
        blocking(move || pg2.write_standby_config(&walsender, &name)).await??;
        self.after_copy(&pg, &pairing, steps).await
    }
}

/// Whether the PostgreSQL at `e` answers and is not in recovery.
async fn accepts_writes(e: &crate::wal::base_backup::Endpoint) -> Result<bool, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host(&e.host).port(e.port).user(&e.user).dbname("postgres").connect_timeout(FENCE_WAIT);
    if let Some(pw) = &e.password {
        config.password(pw);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT NOT pg_is_in_recovery()", &[]).await?;
    Ok(row.get(0))
}
