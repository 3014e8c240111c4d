//! The pair as one running service: the pairing record and the jobs it implies, the local
//! PostgreSQL, what was last heard from the peer, and the peer-facing side (answers to `Join`,
//! `Announce`, `Unpair`, `Fence`). An announcer tells the peer every few seconds who and where this
//! host is, so an address change on either side reaches the other without re-pairing.
//!
//! Owns: the in-memory copy of the pairing (always saved before it is used) and the one-at-a-
//! time lock of operator commands. Must never: let a peer's announcement change the pair
//! unless it carries the pair's id.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::lookup_host;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::error::StandbyError;
use super::jobs::{JobContext, Jobs, WalSlot};
use super::keeper::Keeper;
use super::pairing::{Pairing, PairingFile, Role};
use super::plan::{Plan, split_host_port};
use super::postgres::LocalPg;
use super::protocol::{Answer, Presence, Request, ask};
use crate::config::Config;
use crate::peer::{ClusterSecret, PeerConnection, PeerIdentity};
use crate::plugin::now_ms;
use crate::tunnel::LinkStats;

/// What failed, in [`LastError::what`], for the steps that resolve their own errors.
const PEER_ADDRESS: &str = "recording the peer's new address";
const LETTING_PEER_IN: &str = "letting the peer into pg_hba";

/// How often each side announces itself to the other.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// How long a question to the peer may take (connect and answer).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a join may wait for the primary.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fence may take at the old primary, once its tandem answered the handshake (a
/// fast stop under load, then a start: each may take pg_ctl's minute).
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(150);
/// How long [`Standby::stop`] waits for tasks a peer's message started (an unpairing stops
/// jobs and edits pg_hba) before stopping the jobs anyway.
const TASKS_GRACE: Duration = Duration::from_secs(15);

/// What was last heard from the peer.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    pub presence: Option<Presence>,
    pub answered_ms: Option<u64>,
    pub error: Option<String>,
    pub error_ms: Option<u64>,
}

/// The last failure of an operator command or a job set-up (the seed's setup log).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LastError {
    pub at_ms: u64,
    pub what: String,
    pub error: String,
    /// When the same thing worked again: the error is history, kept for context.
    #[serde(default)]
    pub resolved_at_ms: Option<u64>,
}

pub struct Standby {
    pub config: Config,
    pub pg: Option<LocalPg>,
    /// This host's peer address as it advertises it.
    pub peer_addr: String,
    file: PairingFile,
    pairing: RwLock<Option<Pairing>>,
    pub(super) jobs: Jobs,
    /// Operator commands run one at a time.
    pub(super) op: tokio::sync::Mutex<()>,
    pub(super) peer_view: RwLock<PeerView>,
    pub(super) last_error: RwLock<Option<LastError>>,
    /// Restarts a standby's PostgreSQL whose postmaster died.
    pub(super) keeper: Keeper,
    /// Wakes the announcer at once (a new pairing should be heard of now, not in 3 s).
    announce_now: tokio::sync::Notify,
    pub(super) secret: ClusterSecret,
    pub(super) me: PeerIdentity,
    pub(super) shutdown: CancellationToken,
    /// What the database tunnel carried, both ends.
    pub tunnel_stats: Arc<LinkStats>,
    /// The announcer and the work a peer's message starts (a re-plan, an unpairing): waited
    /// for at shutdown, so none of it re-starts jobs after [`Standby::stop`] stopped them.
    pub(super) tasks: TaskTracker,
}

impl Standby {
    /// Loads the pairing; nothing runs until [`Standby::start`].
    pub fn open(
        config: Config,
        ctx: JobContext,
        peer_addr: String,
        shutdown: CancellationToken,
    ) -> Result<Arc<Standby>, StandbyError> {
        let log_dir = config.log.dir.clone().unwrap_or_else(|| config.data_dir.join("logs"));
        let pg = LocalPg::from_config(&config.standby, &log_dir)?;
        let file = PairingFile::new(&config.data_dir);
        let pairing = file.load()?;
        Ok(Arc::new(Standby {
            pg,
            peer_addr,
            file,
            pairing: RwLock::new(pairing),
            jobs: Jobs::new(ctx.clone(), shutdown.clone()),
            op: Default::default(),
            peer_view: Default::default(),
            last_error: Default::default(),
            keeper: Keeper::default(),
            announce_now: tokio::sync::Notify::new(),
            secret: ctx.secret,
            me: ctx.me,
            config,
            shutdown,
            tunnel_stats: Arc::default(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Starts the role's jobs, the announcer and the keeper of a standby's database.
    pub async fn start(self: &Arc<Self>) {
        if let Some(p) = self.pairing() {
            // A superseded database restarted by its service manager comes back writable.
            self.fence_if_superseded(&p).await;
            self.refresh_standby_config(&p).await;
        }
        self.start_tunnel_entry();
        self.replan().await;
        let me = self.clone();
        self.tasks.spawn(async move { me.announce_loop().await });
        self.tasks.spawn(Keeper::run(self.clone(), self.shutdown.clone()));
    }

    /// Stops every job (daemon shutdown, after the shutdown token fired): first waits (up to
    /// [`TASKS_GRACE`]) for the announcer, the keeper and the tasks peers' messages started,
    /// then stops the jobs.
    pub async fn stop(&self) {
        self.tasks.close();
        if tokio::time::timeout(TASKS_GRACE, self.tasks.wait()).await.is_err() {
            warn!(left = self.tasks.len(), "standby tasks still running at shutdown");
        }
        self.jobs.stop_all().await;
    }

    /// Runs `work` as a tracked task, unless the daemon is shutting down (then it is dropped:
    /// a peer's announcement or unpairing is sent again, or handled at the next start).
    fn spawn_tracked(&self, work: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        if self.shutdown.is_cancelled() || self.tasks.is_closed() {
            return false;
        }
        self.tasks.spawn(work);
        true
    }

    pub fn pairing(&self) -> Option<Pairing> {
        self.pairing.read().expect("not poisoned").clone()
    }

    pub fn wal(&self) -> WalSlot {
        self.jobs.wal()
    }

    /// Records a new pairing (or none), durably, before anything acts on it.
    pub(super) fn save(&self, pairing: Option<Pairing>) -> Result<(), StandbyError> {
        match &pairing {
            Some(p) => {
                self.file.save(p)?;
                self.write_password(p)?;
            }
            None => {
                self.file.remove()?;
                let _ = std::fs::remove_file(self.password_file());
            }
        }
        *self.pairing.write().expect("not poisoned") = pairing;
        self.announce_now.notify_one();
        Ok(())
    }

    /// Where the WAL receiver reads the replication password.
    pub fn password_file(&self) -> PathBuf {
        self.config.data_dir.join("standby").join("replication.password")
    }

    fn write_password(&self, p: &Pairing) -> Result<(), StandbyError> {
        if let Some(pw) = &p.replication_password {
            crate::durable::write_private(&self.password_file(), pw.as_bytes())
                .map_err(|e| StandbyError::Io(format!("writing {}: {e}", self.password_file().display())))?;
        }
        Ok(())
    }

    /// The jobs for the pairing as recorded now.
    pub(super) fn plan(&self) -> Plan {
        Plan::of(&self.config, self.pairing().as_ref(), self.password_file())
    }

    pub(super) async fn replan(&self) {
        self.jobs.run(self.plan()).await;
    }

    pub(super) fn record_error(&self, what: &str, error: &str) {
        warn!(%what, %error, "warm standby");
        *self.last_error.write().expect("not poisoned") = Some(LastError {
            at_ms: now_ms(),
            what: what.to_string(),
            error: error.to_string(),
            resolved_at_ms: None,
        });
    }

    /// `what` worked: a last error of it (its name starts so) no longer applies.
    pub(super) fn resolve_error(&self, what: &str) {
        let mut last = self.last_error.write().expect("not poisoned");
        if let Some(e) = last.as_mut().filter(|e| e.what.starts_with(what) && e.resolved_at_ms.is_none()) {
            info!(what = %e.what, "warm standby: the last error no longer applies");
            e.resolved_at_ms = Some(now_ms());
        }
    }

    /// Who and where this host is, for the peer.
    pub async fn presence(&self) -> Presence {
        let pairing = self.pairing();
        let pg_primary = match &self.pg {
            Some(pg) if pg.running().await => pg.in_recovery().await.ok().map(|r| !r),
            Some(_) => Some(false),
            None => None,
        };
        Presence {
            node: self.config.node_name.clone(),
            peer_addr: self.peer_addr.clone(),
            pg: self.pg_advertise(),
            role: pairing.as_ref().map(|p| p.role),
            pair_id: pairing.as_ref().map(|p| p.pair_id.clone()),
            epoch: pairing.as_ref().map_or(0, |p| p.epoch),
            pg_primary,
            fenced: pairing.as_ref().and_then(|p| p.fenced.as_ref()).map(|f| f.how),
        }
    }

    /// Where the peer reaches our PostgreSQL.
    pub fn pg_advertise(&self) -> Option<String> {
        self.pg.as_ref()?;
        if let Some(a) = &self.config.standby.pg_advertise {
            return Some(a.clone());
        }
        let (host, _) = split_host_port(&self.peer_addr)?;
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        Some(format!("{host}:{}", self.config.standby.pg_port))
    }

    /// Dials `addr` and asks one question: the connection (with its handshake) within
    /// [`ASK_TIMEOUT`], the answer within [`ASK_TIMEOUT`] too, or longer where the peer has work
    /// to do first (a `Join` may wait for a command of its own, a `Fence` stops its database).
    /// A peer that is frozen or gone fails the handshake, so it costs [`ASK_TIMEOUT`] whatever
    /// the request.
    pub async fn ask(&self, addr: &str, request: &Request) -> Result<Answer, StandbyError> {
        let limit = match request {
            Request::Join { .. } => JOIN_TIMEOUT,
            Request::Fence { .. } => FENCE_TIMEOUT,
            _ => ASK_TIMEOUT,
        };
        let connect = async {
            let target = lookup_host(addr)
                .await
                .map_err(|e| StandbyError::Unreachable(format!("cannot resolve {addr}: {e}")))?
                .next()
                .ok_or_else(|| StandbyError::Unreachable(format!("cannot resolve {addr}")))?;
            PeerConnection::connect(target, &self.secret, &self.me, self.config.peer.max_frame_bytes)
                .await
                .map_err(|e| StandbyError::Unreachable(format!("{addr}: {e}")))
        };
        let mut conn = tokio::time::timeout(ASK_TIMEOUT, connect).await.map_err(|_| {
            StandbyError::Unreachable(format!("{addr} did not answer within {ASK_TIMEOUT:?}"))
        })??;
        tokio::time::timeout(limit, ask(&mut conn, request))
            .await
            .map_err(|_| StandbyError::Peer(format!("{addr} did not answer within {limit:?}")))?
            .map_err(|e| StandbyError::Peer(format!("{addr}: {e}")))
    }

    async fn announce_loop(self: Arc<Self>) {
        loop {
            if let Some(p) = self.pairing() {
                let answer = self.ask(&p.peer.addr, &Request::Announce { me: self.presence().await }).await;
                match answer {
                    Ok(Answer::Presence { me: theirs }) => self.heard(theirs).await,
                    Ok(Answer::Refused { reason }) => self.unheard(reason),
                    Ok(other) => self.unheard(format!("unexpected answer {other:?}")),
                    Err(e) => self.unheard(e.to_string()),
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                _ = self.announce_now.notified() => {}
            }
        }
    }

    fn unheard(&self, error: String) {
        let mut v = self.peer_view.write().expect("not poisoned");
        v.error = Some(error);
        v.error_ms = Some(now_ms());
    }

    /// The peer said who and where it is: keep the record current (its addresses move, its
    /// identity does not), and notice when it took over as primary.
    pub(super) async fn heard(&self, theirs: Presence) {
        {
            let mut v = self.peer_view.write().expect("not poisoned");
            v.presence = Some(theirs.clone());
            v.answered_ms = Some(now_ms());
            v.error = None;
        }
        // An operator command in progress owns the pairing and the jobs; the next
        // announcement comes within seconds.
        let Ok(_op) = self.op.try_lock() else { return };
        // Read under the lock: an `off` and a new `configure` may have run meanwhile.
        let Some(mut p) = self.pairing().filter(|p| theirs.pair_id.as_deref() == Some(&p.pair_id)) else {
            return;
        };
        // The pair's identity: its id and, once joined, the peer's node name.
        if let Some(node) = p.peer.node.as_ref().filter(|n| **n != theirs.node) {
            warn!(expected = %node, announced = %theirs.node, "an announcement for this pair from another node: ignored");
            return;
        }
        let mut changed = false;
        if p.peer.addr != theirs.peer_addr {
            info!(from = %p.peer.addr, to = %theirs.peer_addr, node = %theirs.node, "the peer moved; following it there");
            p.peer.addr = theirs.peer_addr.clone();
            changed = true;
        }
        if p.peer.pg != theirs.pg || p.peer.node.as_deref() != Some(&theirs.node) {
            p.peer.pg = theirs.pg.clone();
            p.peer.node = Some(theirs.node.clone());
            changed = true;
        }
        if p.role == Role::Primary
            && theirs.role == Some(Role::Primary)
            && theirs.epoch > p.epoch
            && p.superseded.is_none()
        {
            warn!(peer = %theirs.node, epoch = theirs.epoch, "the peer took over as primary: this host must rejoin");
            p.superseded = Some(format!(
                "{} took over as primary (epoch {}): run `tandem standby rejoin` here",
                theirs.node, theirs.epoch
            ));
            changed = true;
        }
        p.peer.last_seen_ms = Some(now_ms());
        if !changed {
            // Only the time: kept in memory, not worth a disk write every few seconds.
            *self.pairing.write().expect("not poisoned") = Some(p);
            return;
        }
        if let Err(e) = self.save(Some(p.clone())) {
            return self.record_error(PEER_ADDRESS, &e.to_string());
        }
        self.resolve_error(PEER_ADDRESS);
        self.let_peer_in(&p).await;
        self.fence_if_superseded(&p).await;
        self.replan().await;
    }

    /// Our PostgreSQL lets the pair's replication role in over its socket, where the peer's
    /// tunnel arrives (the primary: for its standby; the standby: for its primary, the day
    /// roles swap). Idempotent: an unchanged pg_hba is not rewritten, so it is safe to call on
    /// every change and after a failed attempt.
    pub(super) async fn let_peer_in(&self, p: &Pairing) {
        match self.try_let_peer_in(p).await {
            Ok(()) => self.resolve_error(LETTING_PEER_IN),
            Err(e) => self.record_error(LETTING_PEER_IN, &e),
        }
    }

    /// [`Standby::let_peer_in`], saying what went wrong instead of recording it.
    pub(super) async fn try_let_peer_in(&self, p: &Pairing) -> Result<(), String> {
        let Ok(pg) = self.paired_pg(&p.options) else { return Ok(()) };
        pg.set_hba(&self.config.standby.replication_user, true).await.map_err(|e| e.to_string())
    }

    /// Answers the peer.
    pub async fn answer(self: &Arc<Self>, request: Request) -> Answer {
        match request {
            Request::Announce { me: theirs } => {
                let mine = self.pairing().map(|p| p.pair_id);
                if theirs.pair_id.is_some() && theirs.pair_id == mine {
                    // Not inline: a re-plan may stop the jobs, which must not wait on us.
                    let (me, t) = (self.clone(), theirs);
                    self.spawn_tracked(async move { me.heard(t).await });
                }
                Answer::Presence { me: self.presence().await }
            }
            Request::Join { standby } => match self.join(standby).await {
                Ok(answer) => answer,
                Err(e) => Answer::Refused { reason: e.to_string() },
            },
            Request::Unpair { pair_id, epoch } => match self.pairing() {
                Some(p) if p.pair_id == pair_id && epoch >= p.epoch => {
                    let me = self.clone();
                    let started = self.spawn_tracked(async move {
                        if let Err(e) = me.off(Some((pair_id, epoch))).await {
                            me.record_error("unpairing at the peer's request", &e.to_string());
                        }
                    });
                    if started {
                        Answer::Done
                    } else {
                        Answer::Refused { reason: "shutting down; ask again once this host is back".into() }
                    }
                }
                Some(p) if p.pair_id == pair_id => Answer::Refused {
                    reason: format!(
                        "this host took over as primary (epoch {}): run `tandem standby rejoin` on yours, or `off` here",
                        p.epoch
                    ),
                },
                _ => Answer::Refused { reason: "not paired with you".into() },
            },
            Request::Fence { pair_id, epoch } => match self.fence_for_peer(&pair_id, epoch).await {
                Ok(answer) => answer,
                Err(e) => Answer::Refused { reason: e.to_string() },
            },
        }
    }
}

/// The IP address of a `host:port` (resolved when it is a name).
pub async fn host_ip(addr: &str) -> Option<IpAddr> {
    let (host, port) = split_host_port(addr)?;
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    lookup_host((host.as_str(), port)).await.ok()?.next().map(|a| a.ip())
}
