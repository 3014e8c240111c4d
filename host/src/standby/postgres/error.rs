//! [`PgError`]: what can go wrong administering the local PostgreSQL, worded for an operator
//! (the program's stderr, the server's own error message, the path involved).

use std::path::PathBuf;

use crate::wal::base_backup::BaseBackupError;
use crate::wal::lsn::ParseLsnError;

/// Errors of the local PostgreSQL's administration.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL's programs (pg_ctl, pg_rewind) not found: set standby.pg_bin or TANDEM_PG_BIN, \
         or install PostgreSQL 15"
    )]
    NoBinaries,
    #[error("{program} not found in {dir}")]
    Missing { program: &'static str, dir: PathBuf },
    #[error("running {program}: {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("{program} {action} failed ({status}): {detail}")]
    Failed { program: &'static str, action: &'static str, status: String, detail: String },
    #[error("connecting to the local PostgreSQL (socket {socket_dir}, port {port}, user {user}): {detail}")]
    Connect { socket_dir: PathBuf, port: u16, user: String, detail: String, source: tokio_postgres::Error },
    #[error("{what}: {detail}")]
    Sql { what: String, detail: String, source: tokio_postgres::Error },
    #[error("{what} returned {value:?}, not an LSN: {source}")]
    BadLsn { what: &'static str, value: String, source: ParseLsnError },
    #[error("{0} returned NULL")]
    Null(&'static str),
    #[error("pg_promote did not finish within {0} s (the server stays a standby; see its log)")]
    PromoteTimedOut(u32),
    #[error("replication slot {slot} is in use (active_pid {pid}); not dropped")]
    SlotActive { slot: String, pid: i32 },
    #[error("the local PostgreSQL in {0} is running; stop it first")]
    Running(PathBuf),
    #[error("cannot move {from} aside: {to} exists already")]
    AsideExists { from: PathBuf, to: PathBuf },
    #[error("cannot move {from} aside to {to}: another filesystem (a rename must not copy a database)")]
    AsideCrossDevice { from: PathBuf, to: PathBuf },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("PostgreSQL rejected {path} (it keeps its previous rules): {errors}")]
    HbaRejected { path: PathBuf, errors: String },
    #[error("writing the standby configuration: {0}")]
    StandbyConfig(#[from] BaseBackupError),
    #[error(transparent)]
    AutoConf(#[from] crate::wal::auto_conf::AutoConfError),
}

impl PgError {
    /// A failed SQL statement, with the server's message (tokio-postgres's own `Display` says
    /// only "db error").
    pub(crate) fn sql(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PgError::Sql { what: what.into(), detail: describe(&source), source }
    }
}

/// The server's error with its detail and hint, or the client error and its causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; HINT: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}
