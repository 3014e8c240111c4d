//! `tandem standby configure`: the primary prepares its PostgreSQL (replication role with a
//! random password, pg_hba entries for the standby only, WAL settings, the slot safety cap)
//! and records the pair; the standby joins it over the peer transport, starts WAL streaming
//! (tandem's slot on the primary is created before the copy, so no WAL in between can be
//! missed), moves its previous database to the recovery location, takes a base backup, and
//! starts its PostgreSQL following tandem. Configuring again with other options says what
//! changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::error::StandbyError;
use super::jobs::WalState;
use super::pairing::{Options, Pairing, PeerRecord, Role};
use super::plan::split_host_port;
use super::postgres::{PrimarySetup, StopMode, random_password};
use super::protocol::{Answer, Presence, Request};
use super::service::{Standby, host_ip};
use crate::plugin::now_ms;
use crate::wal::base_backup::{BaseBackup, Endpoint};
use crate::wal::receiver::state::Phase;

/// How long the standby's WAL streaming may take to reach the primary during set-up.
const STREAMING_WAIT: Duration = Duration::from_secs(60);

/// A configure command, as the CLI and the REST API send it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigureRequest {
    pub mode: Role,
    /// The other host's peer address (`host:port`).
    pub peer: String,
    #[serde(default)]
    pub options: Options,
    /// On the standby: take a fresh base backup even when the database already follows this
    /// pair.
    #[serde(default)]
    pub rebuild: bool,
}

/// What a command did, for the operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub role: Option<Role>,
    pub pair_id: Option<String>,
    /// One line per step taken.
    pub steps: Vec<String>,
    pub seconds: f64,
    /// For convert-to-primary: from the command to a writable primary.
    #[serde(default)]
    pub writable_after_seconds: Option<f64>,
}

impl Standby {
    pub async fn configure(self: &Arc<Self>, req: ConfigureRequest) -> Result<Report, StandbyError> {
        if split_host_port(&req.peer).is_none() {
            return Err(StandbyError::BadRequest(format!("--peer `{}`: expected host:port", req.peer)));
        }
        if req.options.recovery_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(StandbyError::BadRequest("the recovery location must be an absolute path".into()));
        }
        let _op = self.op.lock().await;
        let started = Instant::now();
        let mut steps = Vec::new();
        let result = match req.mode {
            Role::Primary => self.configure_primary(&req, &mut steps).await,
            Role::Standby => self.configure_standby(&req, &mut steps).await,
        };
        match result {
            Ok(()) => {
                let p = self.pairing();
                info!(role = %req.mode, steps = %steps.join("; "), "warm standby configured");
                Ok(Report {
                    role: p.as_ref().map(|p| p.role),
                    pair_id: p.map(|p| p.pair_id),
                    steps,
                    seconds: started.elapsed().as_secs_f64(),
                    writable_after_seconds: None,
                })
            }
            Err(e) => {
                self.record_error(&format!("configure --{}-mode", req.mode), &e.to_string());
                Err(e)
            }
        }
    }

    /// Whether this host replicates its database with these options, and why not.
    pub(super) fn database_reason(&self, options: &Options) -> Result<(), &'static str> {
        if options.ignore_database {
            Err("database ignored (--ignore-database): files only")
        } else if self.pg.is_none() {
            Err("no [standby] pg_data in the configuration: files only")
        } else {
            Ok(())
        }
    }

    async fn configure_primary(
        &self,
        req: &ConfigureRequest,
        steps: &mut Vec<String>,
    ) -> Result<(), StandbyError> {
        let mut pairing = match self.pairing() {
            Some(p) if p.role == Role::Standby => {
                return Err(StandbyError::State(format!(
                    "this host is the standby of pair {} (primary {}): run `tandem standby off` first, or `tandem standby convert-to-primary`",
                    p.pair_id, p.peer.addr
                )));
            }
            Some(p) if p.superseded.is_some() => {
                return Err(StandbyError::State(format!(
                    "{}; or `tandem standby off` on both hosts to start over",
                    p.superseded.unwrap_or_default()
                )));
            }
            Some(mut p) => {
                steps.push(format!("already the primary of pair {}: configuring again", p.pair_id));
                if p.options != req.options {
                    steps.push(format!(
                        "options changed: {} -> {}",
                        describe(&p.options),
                        describe(&req.options)
                    ));
                    p.options = req.options.clone();
                    steps.push("run `tandem standby configure --standby-mode` on the standby for them to apply there".into());
                }
                if p.peer.addr != req.peer {
                    steps.push(format!("standby address changed: {} -> {}", p.peer.addr, req.peer));
                    p.peer.addr = req.peer.clone();
                }
                p
            }
            None => Pairing::new(Role::Primary, req.peer.clone(), req.options.clone()),
        };
        match self.pg.as_ref().filter(|_| self.database_reason(&pairing.options).is_ok()) {
            Some(pg) => {
                let ip = host_ip(&req.peer).await.ok_or_else(|| {
                    StandbyError::State(format!("cannot resolve the standby's address {}", req.peer))
                })?;
                if !pg.running().await {
                    let pg2 = pg.clone();
                    blocking(move || pg2.start()).await??;
                    steps.push("PostgreSQL started".into());
                }
                let password = pairing.replication_password.get_or_insert_with(random_password).clone();
                let setup = PrimarySetup {
                    user: self.config.standby.replication_user.clone(),
                    password,
                    peers: vec![ip],
                    max_slot_wal_keep_size_mib: self.config.standby.max_slot_wal_keep_size_mib,
                };
                let report = pg.prepare_primary(&setup).await?;
                steps.push(format!(
                    "PostgreSQL prepared: replication role {}, pg_hba for {ip} only{}",
                    setup.user,
                    if report.changed.is_empty() {
                        String::new()
                    } else {
                        format!(", set {}", report.changed.join(", "))
                    }
                ));
                if report.restarted {
                    steps.push("PostgreSQL restarted for its new settings".into());
                }
            }
            None => steps.push(why_text(self.database_reason(&pairing.options)).into()),
        }
        self.save(Some(pairing))?;
        self.replan().await;
        steps.push("tree sync: serving the standby".into());
        Ok(())
    }

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
        let database = self.database_reason(&p.options).is_ok();
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

    async fn configure_standby(
        self: &Arc<Self>,
        req: &ConfigureRequest,
        steps: &mut Vec<String>,
    ) -> Result<(), StandbyError> {
        let current = self.pairing();
        if let Some(p) = current.as_ref().filter(|p| p.role == Role::Primary && p.superseded.is_none()) {
            return Err(StandbyError::State(format!(
                "this host is the primary of pair {} (standby {}): run `tandem standby off` first",
                p.pair_id, p.peer.addr
            )));
        }
        let pairing = self.join_primary(&req.peer, &req.options, current.as_ref(), steps).await?;
        let same_pair = current.as_ref().is_some_and(|c| {
            c.pair_id == pairing.pair_id
                && c.role == Role::Standby
                && c.database_ready
                && c.options.ignore_database == pairing.options.ignore_database
        });
        if let Some(c) =
            current.as_ref().filter(|c| c.pair_id == pairing.pair_id && c.options != pairing.options)
        {
            steps.push(format!(
                "options changed: {} -> {}",
                describe(&c.options),
                describe(&pairing.options)
            ));
        }
        let database = self.database_reason(&pairing.options);
        let Some(pg) = self.pg.clone().filter(|_| database.is_ok() && pairing.peer.pg.is_some()) else {
            steps.push(match database {
                Err(why) => why.into(),
                Ok(()) => "the primary pairs no database: files only".into(),
            });
            self.save(Some(pairing))?;
            self.replan().await;
            steps.push(format!("tree sync: following {}", req.peer));
            return Ok(());
        };
        if same_pair && !req.rebuild && pg.running().await && pg.in_recovery().await.unwrap_or(false) {
            steps.push(
                "the database already follows this pair: kept (--rebuild takes a fresh base backup)".into(),
            );
            self.save(Some(Pairing { database_ready: true, ..pairing }))?;
            self.replan().await;
            return Ok(());
        }
        // Nothing is destroyed before the recovery location is known to work.
        let aside = std::fs::read_dir(&pg.data_dir)
            .is_ok_and(|mut d| d.next().is_some())
            .then(|| recovery_dir(&pg.data_dir, &pairing.options));
        if let Some(to) = &aside {
            check_recovery_location(&pg.data_dir, to)?;
        }
        // WAL first: tandem's slot on the primary then holds everything the copy will need.
        self.jobs.stop_all().await;
        self.set_archive_aside()?;
        self.save(Some(pairing.clone()))?;
        self.replan().await;
        self.wait_streaming().await?;
        steps.push("WAL streaming from the primary into tandem's archive".into());

        let pg2 = pg.clone();
        if pg.running().await {
            blocking(move || pg2.stop(StopMode::Fast)).await??;
            steps.push("previous PostgreSQL stopped".into());
        }
        if let Some(to) = aside {
            let (pg2, to2) = (pg.clone(), to.clone());
            blocking(move || pg2.move_aside(&to2)).await??;
            steps.push(format!("previous database moved to {}", to.display()));
        }
        let backup = self.base_backup(&pairing, &pg.data_dir)?;
        let copy_started = Instant::now();
        blocking(move || backup.run()).await?.map_err(|e| StandbyError::Io(format!("base backup: {e}")))?;
        steps.push(format!("base backup taken in {:.1} s", copy_started.elapsed().as_secs_f64()));
        self.after_copy(&pg, &pairing, steps).await
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
        })
    }

    /// The WAL archive of an earlier pairing is set aside (`archive.previous`), with the
    /// identity of the primary it came from: it belongs to another history. It is deleted once
    /// the new copy runs; until then it stays for whoever needs what it held.
    pub(super) fn set_archive_aside(&self) -> Result<(), StandbyError> {
        let dir = self.config.wal.state_dir();
        let io =
            |what: &str, e: std::io::Error| StandbyError::Io(format!("{what} in {}: {e}", dir.display()));
        let (archive, previous) = (dir.join("archive"), dir.join("archive.previous"));
        if archive.exists() {
            if previous.exists() {
                std::fs::remove_dir_all(&previous).map_err(|e| io("removing archive.previous", e))?;
            }
            std::fs::rename(&archive, &previous).map_err(|e| io("setting the old archive aside", e))?;
        }
        match std::fs::remove_file(dir.join(crate::wal::upstream::UPSTREAM_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("removing the old primary's identity", e))
            }
            _ => Ok(()),
        }
    }

    /// Waits until the WAL receiver streams from the primary.
    pub(super) async fn wait_streaming(&self) -> Result<(), StandbyError> {
        let deadline = Instant::now() + STREAMING_WAIT;
        loop {
            let state = self.wal().read().expect("not poisoned").clone();
            let last_error = match state {
                WalState::Running(h) => {
                    let r = h.receiver.borrow().clone();
                    if r.phase == Phase::Streaming && h.reader.flush_point().lsn.is_valid() {
                        return Ok(());
                    }
                    r.last_error
                }
                WalState::Failed(e) => return Err(StandbyError::Wal(e)),
                WalState::Off => {
                    return Err(StandbyError::Wal("not started (is the primary's database paired?)".into()));
                }
                WalState::Starting => None,
            };
            if Instant::now() > deadline {
                return Err(StandbyError::Wal(format!(
                    "no WAL from the primary after {STREAMING_WAIT:?}{}",
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn endpoints(&self, pairing: &Pairing) -> Result<(Endpoint, Endpoint), StandbyError> {
        let pg = pairing.peer.pg.as_deref().unwrap_or_default();
        let (host, port) = split_host_port(pg).ok_or_else(|| {
            StandbyError::State(format!("the primary's database address `{pg}` is not host:port"))
        })?;
        let primary = Endpoint {
            host,
            port,
            user: self.config.standby.replication_user.clone(),
            password: pairing.replication_password.clone(),
        };
        let wal = &self.config.wal;
        let walsender = Endpoint {
            host: if wal.listen.ip().is_unspecified() {
                "127.0.0.1".into()
            } else {
                wal.listen.ip().to_string()
            },
            port: wal.listen.port(),
            user: wal.standby_user.clone(),
            password: wal.standby_password().map_err(StandbyError::Wal)?,
        };
        Ok((primary, walsender))
    }

    fn base_backup(&self, pairing: &Pairing, data_dir: &std::path::Path) -> Result<BaseBackup, StandbyError> {
        let (primary, walsender) = self.endpoints(pairing)?;
        let pg = self.pg.as_ref().expect("checked by the caller");
        Ok(BaseBackup {
            bin_dir: pg.bin_dir.clone(),
            primary,
            walsender,
            data_dir: data_dir.to_path_buf(),
            os_user: pg.os_user.clone(),
            application_name: self.config.node_name.clone(),
        })
    }

    /// After a base backup or a rewind: pg_hba lets the primary in (for the day roles swap),
    /// the database starts and follows tandem.
    pub(super) async fn after_copy(
        &self,
        pg: &super::postgres::LocalPg,
        pairing: &Pairing,
        steps: &mut Vec<String>,
    ) -> Result<(), StandbyError> {
        self.let_peer_in(pairing).await;
        let pg2 = pg.clone();
        blocking(move || pg2.start()).await??;
        if !pg.in_recovery().await? {
            return Err(StandbyError::Io("the database started but is not a standby".into()));
        }
        steps.push("PostgreSQL started as a standby of tandem's walsender".into());
        self.save(Some(Pairing { database_ready: true, ..pairing.clone() }))?;
        let previous = self.config.wal.state_dir().join("archive.previous");
        if previous.exists() && std::fs::remove_dir_all(&previous).is_err() {
            steps.push(format!("WARNING: {} could not be removed", previous.display()));
        }
        Ok(())
    }

    pub(super) fn walsender_endpoint(&self, pairing: &Pairing) -> Result<Endpoint, StandbyError> {
        Ok(self.endpoints(pairing)?.1)
    }

    pub(super) fn primary_endpoint(&self, pairing: &Pairing) -> Result<Endpoint, StandbyError> {
        Ok(self.endpoints(pairing)?.0)
    }
}

/// Refuses a recovery location the previous database cannot be renamed into: an existing
/// target, a missing parent, or another filesystem (a rename cannot cross one).
fn check_recovery_location(data_dir: &std::path::Path, to: &std::path::Path) -> Result<(), StandbyError> {
    use std::os::unix::fs::MetadataExt;
    let parent = to.parent().unwrap_or(std::path::Path::new("/"));
    let bad = |why: String| StandbyError::State(format!("recovery location {}: {why}", to.display()));
    if to.exists() {
        return Err(bad("exists already".into()));
    }
    let there = std::fs::metadata(parent).map_err(|e| bad(format!("{}: {e}", parent.display())))?;
    let here = std::fs::metadata(data_dir).map_err(|e| bad(format!("{}: {e}", data_dir.display())))?;
    if there.dev() != here.dev() {
        return Err(bad(format!(
            "on another filesystem than {}: pick a folder on the same one",
            data_dir.display()
        )));
    }
    Ok(())
}

/// Where the standby's previous database goes.
fn recovery_dir(data_dir: &std::path::Path, options: &Options) -> PathBuf {
    let stamp = now_ms() / 1000;
    match &options.recovery_dir {
        Some(dir) => {
            dir.join(format!("{}-{stamp}", data_dir.file_name().and_then(|n| n.to_str()).unwrap_or("pgdata")))
        }
        None => {
            let mut name = data_dir.as_os_str().to_owned();
            name.push(format!(".tandem-previous-{stamp}"));
            PathBuf::from(name)
        }
    }
}

fn why_text(r: Result<(), &'static str>) -> &'static str {
    r.err().unwrap_or("database replicated")
}

/// The options in words.
pub fn describe(o: &Options) -> String {
    let mut words = Vec::new();
    if o.ignore_database {
        words.push("ignore-database".to_string());
    }
    if o.ignore_vault {
        words.push("ignore-vault".into());
    }
    if o.ignore_package_updates {
        words.push("ignore-package-updates".into());
    }
    if let Some(d) = &o.recovery_dir {
        words.push(format!("recovery-dir {}", d.display()));
    }
    if words.is_empty() { "(defaults)".into() } else { words.join(", ") }
}

/// Runs blocking work (programs, renames) off the runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StandbyError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StandbyError::Io(format!("a blocking task failed: {e}")))
}
