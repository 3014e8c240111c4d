//! The local PostgreSQL 15 of one host of a warm-standby pair, administered: start and stop it
//! with `pg_ctl`, ask and tell it things over its Unix socket as the superuser, prepare it to
//! be a primary (replication role, settings, `pg_hba.conf`), and turn a failed primary into a
//! standby again (`pg_rewind`, or moving the data folder aside for a new base backup).
//!
//! - [`ctl`]: the programs (`pg_ctl`, `pg_rewind`) and the data folder (move aside, standby
//!   configuration). Blocking: call them in `spawn_blocking`.
//! - [`sql`]: queries over the socket (recovery state, LSNs, promote, slots, replication).
//! - [`prepare`]: [`LocalPg::prepare_primary`] and [`random_password`]; [`settings`]: the
//!   server settings it wants, as a pure function.
//! - [`hba`]: tandem's block in `pg_hba.conf`.
//! - [`diverged`]: before a rewind, the WAL the old primary wrote after the fork, kept aside.
//! - [`fence`]: an old primary's hard fences (a clean stop, a demotion) and where its WAL ended.
//!
//! Must never: run a PostgreSQL program as root (PostgreSQL refuses; tandem runs them as
//! `os_user`), put a password on a command line, or delete a data folder (it is moved aside).

mod ctl;
mod diverged;
mod error;
mod fence;
mod hba;
mod prepare;
mod settings;
mod sql;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use crate::wal::primary_sql::SlotRow;
pub use ctl::{REWIND_APPLICATION_NAME, StopMode};
pub use diverged::{Divergence, KeptWal};
pub use error::PgError;
pub use hba::{HBA_BEGIN, HBA_END, with_hba_block};
pub use prepare::{PrepareReport, PrimarySetup, ROLE_COMMENT, RoleDrop, random_password};
pub use settings::{Setting, wanted_settings};
pub use sql::ReplicationRow;

use super::config::StandbyConfig;

/// Server log file name under tandem's log folder when `standby.pg_log` is unset.
pub const DEFAULT_LOG_NAME: &str = "postgresql.log";

/// The local PostgreSQL: where its programs, data and socket are, and who runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPg {
    /// Folder of `pg_ctl` and `pg_rewind`.
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    /// The Unix socket folder (`-k`); tandem connects there.
    pub socket_dir: PathBuf,
    /// Run PostgreSQL's programs as this user (`runuser`); `None` when tandem is not root.
    pub os_user: Option<String>,
    /// The role tandem connects as over the socket.
    pub superuser: String,
    /// `pg_ctl -l`: the server's log.
    pub log_file: PathBuf,
}

impl LocalPg {
    /// From the `[standby]` settings; `None` when `pg_data` is unset (a files-only pair).
    /// `os_user` is kept only when tandem runs as root.
    pub fn from_config(c: &StandbyConfig, log_dir: &Path) -> Result<Option<LocalPg>, PgError> {
        let Some(data_dir) = c.pg_data.clone() else {
            return Ok(None);
        };
        let bin_dir = match &c.pg_bin {
            Some(dir) => dir.clone(),
            None => crate::wal::base_backup::default_bin_dir().ok_or(PgError::NoBinaries)?,
        };
        for program in ["pg_ctl", "pg_rewind"] {
            if !bin_dir.join(program).exists() {
                return Err(PgError::Missing { program, dir: bin_dir });
            }
        }
        Ok(Some(LocalPg {
            bin_dir,
            data_dir,
            port: c.pg_port,
            socket_dir: c.pg_socket_dir.clone(),
            os_user: if is_root() { c.pg_os_user.clone() } else { None },
            superuser: c.pg_superuser.clone(),
            log_file: c.pg_log.clone().unwrap_or_else(|| log_dir.join(DEFAULT_LOG_NAME)),
        }))
    }
}

/// Whether tandem runs as root (then PostgreSQL's programs run as `os_user`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
