//! `tandem standby configure`: the primary prepares its PostgreSQL (replication role with a
//! random password, pg_hba entries for the standby only, WAL settings, the slot safety cap)
//! and records the pair; the standby joins it over the peer transport, starts WAL streaming
//! (tandem's slot on the primary is created before the copy, so no WAL in between can be
//! missed), moves its previous database to the recovery location, takes a base backup, and
//! starts its PostgreSQL following tandem. Configuring again with other options says what
//! changed.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::copy::{check_recovery_location, recovery_dir};
use super::error::StandbyError;
use super::pairing::{Options, Pairing, Role};
use super::plan::split_host_port;
use super::postgres::{LocalPg, PrimarySetup, StopMode, random_password};
use super::service::{Standby, host_ip};

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
                self.resolve_error("configure");
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

    /// The local PostgreSQL when this host replicates its database with these options, or
    /// why it does not.
    pub(super) fn paired_pg(&self, options: &Options) -> Result<&LocalPg, &'static str> {
        match &self.pg {
            _ if options.ignore_database => Err("database ignored (--ignore-database): files only"),
            None => Err("no [standby] pg_data in the configuration: files only"),
            Some(pg) => Ok(pg),
        }
    }

    /// On a standby: the local PostgreSQL when it follows the primary's database (both sides
    /// pair one).
    pub(super) fn followed_pg(&self, p: &Pairing) -> Option<LocalPg> {
        self.paired_pg(&p.options).ok().filter(|_| p.peer.pg.is_some()).cloned()
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
        match self.paired_pg(&pairing.options) {
            Ok(pg) => {
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
                    max_slot_wal_keep_size_mib: self.config.standby.max_slot_wal_keep_size_mib,
                };
                let report = pg.prepare_primary(&setup).await?;
                steps.push(format!(
                    "PostgreSQL prepared: replication role {}, pg_hba over the local socket only (the standby at {ip} comes through tandem's encrypted tunnel){}",
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
            Err(why) => steps.push(why.into()),
        }
        self.save(Some(pairing))?;
        self.replan().await;
        steps.push("tree sync: serving the standby".into());
        Ok(())
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
        let pg = match self.paired_pg(&pairing.options) {
            Ok(pg) if pairing.peer.pg.is_some() => pg.clone(),
            other => {
                steps.push(other.err().unwrap_or("the primary pairs no database: files only").into());
                self.save(Some(pairing))?;
                self.replan().await;
                steps.push(format!("tree sync: following {}", req.peer));
                return Ok(());
            }
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
        self.stream_afresh(&pairing).await?;
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
