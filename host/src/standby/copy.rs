//! Copying the primary's database to this standby and bringing it up: the old WAL archive set
//! aside, streaming started first (tandem's slot then holds all the copy needs), the base
//! backup (or, for `rejoin`, the rewind) with the right endpoints, the recovery location of
//! the previous database, and the start that marks the database ready.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::configure::blocking;
use super::error::StandbyError;
use super::jobs::WalState;
use super::pairing::{Options, Pairing, Role};
use super::service::Standby;
use crate::plugin::now_ms;
use crate::wal::base_backup::{BaseBackup, Endpoint};
use crate::wal::receiver::state::Phase;

/// How long the standby's WAL streaming may take to reach the primary during set-up.
const STREAMING_WAIT: Duration = Duration::from_secs(60);

impl Standby {
    /// WAL first: a fresh archive for `pairing`'s primary, recorded and streaming before any
    /// base backup or rewind, so tandem's slot on the primary already holds everything the
    /// database will need and no WAL in between is missed.
    pub(super) async fn stream_afresh(&self, pairing: &Pairing) -> Result<(), StandbyError> {
        self.jobs.stop_all().await;
        self.set_archive_aside()?;
        self.save(Some(pairing.clone()))?;
        self.replan().await;
        self.wait_streaming().await
    }

    /// The WAL archive of an earlier pairing is set aside (`archive.previous`), with the
    /// identity of the primary it came from: it belongs to another history. It is deleted once
    /// the new copy runs; until then it stays for whoever needs what it held.
    fn set_archive_aside(&self) -> Result<(), StandbyError> {
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
    async fn wait_streaming(&self) -> Result<(), StandbyError> {
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

    /// This host's walsender, which the standby database follows.
    pub(super) fn walsender_endpoint(&self) -> Result<Endpoint, StandbyError> {
        self.config.wal.walsender_endpoint().map_err(StandbyError::Wal)
    }

    /// On a standby whose database follows the pair: its `primary_conninfo` and passfile as
    /// this tandem writes them, the server reloaded when they changed. A standby set up by an
    /// older tandem (a trusting walsender, no passfile) keeps streaming from one that wants a
    /// password.
    pub(super) async fn refresh_standby_config(&self, p: &Pairing) {
        const WHAT: &str = "updating the standby database's primary_conninfo";
        let Some(pg) = self.followed_pg(p).filter(|_| p.role == Role::Standby && p.database_ready) else {
            return;
        };
        let refreshed = async {
            let (walsender, name) = (self.walsender_endpoint()?, self.config.node_name.clone());
            let pg2 = pg.clone();
            if !blocking(move || pg2.write_standby_config(&walsender, &name)).await?? {
                return Ok(false);
            }
            if pg.running().await {
                pg.reload().await?;
            }
            Ok::<_, StandbyError>(true)
        };
        match refreshed.await {
            Ok(changed) => {
                if changed {
                    tracing::info!(
                        "the standby database's primary_conninfo updated for this tandem's walsender"
                    );
                }
                self.resolve_error(WHAT);
            }
            Err(e) => self.record_error(WHAT, &e.to_string()),
        }
    }

    pub(super) fn base_backup(
        &self,
        pairing: &Pairing,
        data_dir: &std::path::Path,
    ) -> Result<BaseBackup, StandbyError> {
        let (primary, walsender) = (self.primary_endpoint(pairing), self.walsender_endpoint()?);
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
}

/// Refuses a recovery location the previous database cannot be renamed into: an existing
/// target, a missing parent, or another filesystem (a rename cannot cross one).
pub(super) fn check_recovery_location(
    data_dir: &std::path::Path,
    to: &std::path::Path,
) -> Result<(), StandbyError> {
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
pub(super) fn recovery_dir(data_dir: &std::path::Path, options: &Options) -> PathBuf {
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
