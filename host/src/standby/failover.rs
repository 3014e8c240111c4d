//! Failover: `convert-to-primary` on the standby and `rejoin` on the old primary.
//!
//! Convert first has the old primary fence its database when its tandem answers (see `fence`:
//! forced or not, nothing commits there any more and its last WAL is in tandem's archive before
//! the standby promotes); when it does not, convert refuses while the old primary still answers
//! as a primary (its PostgreSQL accepts connections) unless forced; refuses while replay is
//! paused; lets the standby
//! PostgreSQL take everything tandem's archive holds before promoting, so nothing the standby
//! side acknowledged to the primary is lost; stops pulling trees; promotes; makes tandem's slot
//! (it keeps the WAL from before the promotion on for the old primary's rejoin); checkpoints.
//! Rejoin brings the old primary back as the new standby with `pg_rewind` from the new
//! primary (configure set `wal_log_hints`), not a new base backup; the WAL the old primary
//! wrote after the fork is copied to `<data_dir>/standby/diverged/` first, and the rewind does
//! not run when it could not be. An old primary fenced by a clean stop where the new primary's
//! timeline begins wrote nothing after the fork: no rewind runs at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::configure::{Report, blocking};
use super::error::StandbyError;
use super::fence::PeerFence;
use super::jobs::WalState;
use super::pairing::{Failover, Pairing, Role};
use super::postgres::{PgError, StopMode};
use super::protocol::{Answer, Request};
use super::service::Standby;
use crate::plugin::now_ms;
use crate::wal::Lsn;

/// How long the check of an old primary that was not fenced waits for its tandem, and the
/// probe for its database.
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
                self.resolve_error("convert-to-primary");
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
        let pg = self.followed_pg(&p);
        let epoch = p.epoch + 1;
        // Its database, where it listens on the network (for its applications), is probed at
        // the same time: a silent host costs one wait, not two.
        let endpoint = if pg.is_some() { p.peer.pg.clone() } else { None };
        let (fenced, db) = tokio::join!(self.fence_peer(&p, epoch, force, steps), probe_within(&endpoint));
        let old_primary = match fenced? {
            PeerFence::Fenced(how) => format!("fenced ({how}) at this host's request before the promotion"),
            PeerFence::NotFenced { why, reached } => {
                steps.push(format!("the old primary's tandem did not fence it ({why})"));
                if force {
                    warn!("convert-to-primary forced: the old primary was not fenced");
                    steps.push(format!(
                        "fencing check skipped (--force): make sure the old primary stays down; it fences itself when it hears of epoch {epoch}"
                    ));
                } else {
                    self.refuse_if_primary(&p, reached, db, endpoint.as_deref(), steps).await?;
                }
                format!("not fenced by this host ({why}); it fences itself when it hears of epoch {epoch}")
            }
        };
        if let Some(pg) = &pg {
            if !pg.running().await {
                let pg2 = pg.clone();
                blocking(move || pg2.start()).await??;
                steps.push("PostgreSQL started".into());
            }
            let state = pg.overview(&self.config.wal.slot).await?;
            if state.in_recovery {
                if state.replay_paused == Some(true) {
                    return Err(StandbyError::State(
                        "WAL replay is paused on this standby: resume it (SELECT pg_wal_replay_resume()) or find out who paused it first".into(),
                    ));
                }
                self.drain(force, steps).await?;
                // tandem's walsender keeps serving until the promotion is done: stopped first, the
                // standby may wait out wal_retrieve_retry_interval (5 s) before it promotes.
                pg.promote(60).await?;
            } else {
                steps.push("the database already accepts writes (an earlier convert promoted it)".into());
            }
        }
        let writable = started.elapsed().as_secs_f64();
        // The new role is recorded before anything else can fail: the database takes writes.
        p.role = Role::Primary;
        p.epoch = epoch;
        p.superseded = None;
        p.fenced = None;
        p.last_failover = Some(Failover {
            at_ms: now_ms(),
            seconds: writable,
            forced: force,
            old_primary: Some(old_primary),
        });
        self.save(Some(p.clone()))?;
        if pg.is_some() {
            steps.push(format!("PostgreSQL promoted: writable after {writable:.2} s"));
        }
        self.replan().await;
        steps.push("tree sync: no longer pulling, serving; WAL streaming stopped".into());
        if let Some(pg) = &pg {
            let slot = &self.config.wal.slot;
            match pg.create_slot(slot).await {
                Ok(true) => steps.push(format!(
                    "replication slot `{slot}` made: it keeps the WAL from before the promotion for the old primary's rejoin"
                )),
                Ok(false) => {}
                Err(e) => steps.push(format!(
                    "WARNING: replication slot `{slot}` not made ({e}): the old primary's rejoin may need the WAL it would have kept"
                )),
            }
            match pg.checkpoint().await {
                Ok(()) => steps.push("checkpoint done".into()),
                Err(e) => {
                    steps.push(format!("WARNING: checkpoint failed ({e}); PostgreSQL makes one by itself"))
                }
            }
            // The old primary comes back as standby through pg_hba here.
            if let Err(e) = self.try_let_peer_in(&p).await {
                steps.push(format!("WARNING: pg_hba for the old primary not written ({e}): rejoin needs it"));
            }
        }
        steps.push("the old primary rejoins with `tandem standby rejoin`".into());
        Ok(writable)
    }

    /// Refuses while an old primary its tandem did not fence answers as a primary: its tandem
    /// (when `reached`: it refused the fence, or is a tandem that predates fencing) says so or
    /// says its database accepts writes, or its PostgreSQL answered the probe at its advertised
    /// address (asked without logging in: see [`probe`]). Each question waits at most
    /// [`FENCE_WAIT`]: a dead host does not refuse connections, it just never answers, and that
    /// silence must not eat the failover's time. A database that listens on no network address
    /// (only its socket, reached through tandem) cannot be seen once its tandem is down: the
    /// step says so.
    async fn refuse_if_primary(
        &self,
        p: &Pairing,
        reached: bool,
        db: Probe,
        endpoint: Option<&str>,
        steps: &mut Vec<String>,
    ) -> Result<(), StandbyError> {
        let hint = "not converting (pass --force to convert anyway, after making sure it is down)";
        let tandem = match reached {
            true => {
                let announce = Request::Announce { me: self.presence().await };
                tokio::time::timeout(FENCE_WAIT, self.ask(&p.peer.addr, &announce)).await.ok()
            }
            false => None,
        };
        match tandem {
            Some(Ok(Answer::Presence { me }))
                if me.pg_primary == Some(true)
                    || (me.role == Some(Role::Primary) && me.pg_primary.is_none()) =>
            {
                return Err(StandbyError::Fenced(format!(
                    "`{}` at {} still answers as a primary: {hint}",
                    me.node, p.peer.addr
                )));
            }
            Some(Ok(Answer::Presence { me })) => steps.push(format!(
                "old primary's tandem answers ({}), its database does not accept writes",
                me.role.map_or("unpaired".to_string(), |r| r.to_string())
            )),
            _ => steps.push(format!("old primary's tandem at {} does not answer", p.peer.addr)),
        }
        if let Some(addr) = endpoint {
            match db {
                Probe::Answers => {
                    return Err(StandbyError::Fenced(format!(
                        "the old primary's PostgreSQL at {addr} still answers: {hint}"
                    )));
                }
                Probe::Silent => steps.push(format!(
                    "old primary's database does not answer at {addr} (one that listens on its socket only cannot be seen once its tandem is down)"
                )),
            }
        }
        Ok(())
    }

    /// Lets the standby database receive all the WAL tandem's archive holds: waits while it
    /// makes progress; refuses (unless forced) when it stops short, since promoting then would
    /// drop WAL tandem acknowledged to the old primary.
    async fn drain(&self, force: bool, steps: &mut Vec<String>) -> Result<(), StandbyError> {
        let state = self.wal().read().expect("not poisoned").clone();
        let h = match state {
            WalState::Running(h) => h,
            other => {
                let what = match other {
                    WalState::Failed(e) => format!("failed ({e})"),
                    WalState::Starting => "starting".into(),
                    _ => "off".into(),
                };
                if force {
                    steps.push(format!(
                        "WARNING: tandem's WAL streaming is {what}: promoting what the database has"
                    ));
                    return Ok(());
                }
                return Err(StandbyError::State(format!(
                    "tandem's WAL streaming is {what}: the database may lack WAL tandem holds; not converting (--force converts anyway)"
                )));
            }
        };
        let pg = self.pg.as_ref().expect("database checked");
        let (mut best, mut deadline) = (Lsn::INVALID, Instant::now() + DRAIN_WAIT);
        loop {
            let target = h.reader.flush_point().lsn;
            // Both positions over one session: this polls every 20 ms.
            let now = pg.overview(&self.config.wal.slot).await?;
            let got = now.receive_lsn.unwrap_or_default().max(now.replay_lsn.unwrap_or_default());
            if got >= target {
                steps.push(format!("the database has all WAL tandem held (up to {target})"));
                return Ok(());
            }
            if got > best {
                (best, deadline) = (got, Instant::now() + DRAIN_WAIT);
            }
            if Instant::now() > deadline {
                let missing = target.bytes_since(got);
                warn!(%target, %got, missing, "the standby database stopped short of the WAL tandem held");
                if force {
                    steps.push(format!("WARNING: the database has WAL up to {got} of {target} tandem held ({missing} bytes lost)"));
                    return Ok(());
                }
                return Err(StandbyError::State(format!(
                    "the database received WAL up to {got} but tandem holds up to {target} ({missing} bytes) and it made no progress for {DRAIN_WAIT:?}; not converting (--force converts anyway, losing them)"
                )));
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
                self.resolve_error("rejoin");
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
        if current.role == Role::Standby && current.database_ready {
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
        let Some(pg) = self.followed_pg(&pairing) else {
            self.save(Some(pairing))?;
            self.replan().await;
            steps.push(format!("tree sync: following {addr}"));
            return Ok(());
        };
        self.stream_afresh(&pairing).await?;
        steps.push("WAL streaming from the new primary into tandem's archive".into());
        let pg2 = pg.clone();
        if pg.running().await {
            blocking(move || pg2.stop(StopMode::Fast)).await??;
        }
        let source = self.primary_endpoint(&pairing);
        // pg_rewind discards what this host wrote after the fork: keep that WAL first, and do
        // not rewind when it could not be kept.
        let (pg2, src) = (pg.clone(), source.clone());
        let under = self.config.data_dir.join("standby").join("diverged");
        let keeping = Instant::now();
        let kept = blocking(move || match pg2.divergence(&src)? {
            Some(d) => pg2.keep_wal_after(d, &under, now_ms() / 1000).map(Some),
            None => Ok::<_, PgError>(None),
        })
        .await??;
        let rewind = kept.is_some();
        steps.push(match kept {
            Some(k) => format!(
                "kept this host's WAL from the fork at {} (timeline {}) on, {} segment(s), {} MiB, in {} \
                 ({:.1} s with the dry run)",
                k.divergence.lsn,
                k.divergence.timeline,
                k.files,
                k.bytes >> 20,
                k.dir.display(),
                keeping.elapsed().as_secs_f64()
            ),
            None => "nothing written here after the fork: no rewind needed, none run".into(),
        });
        if rewind {
            let pg2 = pg.clone();
            let took = blocking(move || pg2.rewind(&source)).await??;
            steps.push(format!("pg_rewind from the new primary in {:.1} s", took.as_secs_f64()));
        }
        let walsender = self.walsender_endpoint()?;
        let (pg2, name) = (pg.clone(), self.config.node_name.clone());
        blocking(move || pg2.write_standby_config(&walsender, &name)).await??;
        self.after_copy(&pg, &pairing, steps).await
    }
}

/// What the old primary's PostgreSQL address said.
enum Probe {
    /// A PostgreSQL answered there: it is up.
    Answers,
    /// No answer: connection refused, unreachable, or silent.
    Silent,
}

/// [`probe`] of `endpoint` for at most [`FENCE_WAIT`]; no endpoint: silent.
async fn probe_within(endpoint: &Option<String>) -> Probe {
    match endpoint {
        Some(addr) => tokio::time::timeout(FENCE_WAIT, probe(addr)).await.unwrap_or(Probe::Silent),
        None => Probe::Silent,
    }
}

/// Whether a PostgreSQL answers at `addr` (`host:port`), without logging in: an `SSLRequest`,
/// which every PostgreSQL answers with one byte (`S` or `N`) before any authentication. No
/// credential and no database byte crosses the network (the pair's own connections go through
/// tandem's tunnel); the probe only tells whether the server is up.
async fn probe(addr: &str) -> Probe {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&crate::tunnel::startup::SSL_REQUEST.to_be_bytes());
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return Probe::Silent };
    let mut answer = [0u8; 1];
    let asked = async {
        stream.write_all(&request).await?;
        stream.read_exact(&mut answer).await
    };
    match asked.await {
        Ok(_) if matches!(answer[0], b'S' | b'N' | b'E') => Probe::Answers,
        _ => Probe::Silent,
    }
}
