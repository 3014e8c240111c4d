//! Temporary stub of the local PostgreSQL's administration (replaced by the real module).
#![allow(dead_code, unused_variables)]
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::StandbyConfig;
use crate::wal::base_backup::Endpoint;
use crate::wal::lsn::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Other(String),
}
#[derive(Debug, Clone)]
pub struct LocalPg {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub os_user: Option<String>,
    pub superuser: String,
    pub log_file: PathBuf,
}
pub enum StopMode {
    Fast,
    Immediate,
}
pub struct PrimarySetup {
    pub user: String,
    pub password: String,
    pub peers: Vec<IpAddr>,
    pub max_slot_wal_keep_size_mib: u64,
}
#[derive(Debug)]
pub struct PrepareReport {
    pub changed: Vec<String>,
    pub restarted: bool,
}
#[derive(Debug, Clone)]
pub struct ReplicationRow {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub replay_lsn: Option<Lsn>,
}
#[derive(Debug, Clone)]
pub struct SlotRow {
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    pub wal_status: Option<String>,
}
pub fn random_password() -> String {
    todo!()
}
impl LocalPg {
    pub fn from_config(c: &StandbyConfig, log_dir: &Path) -> Result<Option<LocalPg>, PgError> {
        if c.pg_data.is_none() {
            return Ok(None);
        }
        todo!()
    }
    pub fn is_running(&self) -> bool {
        todo!()
    }
    pub fn start(&self) -> Result<(), PgError> {
        todo!()
    }
    pub fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        todo!()
    }
    pub fn restart(&self) -> Result<(), PgError> {
        todo!()
    }
    pub async fn client(&self) -> Result<tokio_postgres::Client, PgError> {
        todo!()
    }
    pub async fn in_recovery(&self) -> Result<bool, PgError> {
        todo!()
    }
    pub async fn replay_paused(&self) -> Result<bool, PgError> {
        todo!()
    }
    pub async fn receive_lsn(&self) -> Result<Option<Lsn>, PgError> {
        todo!()
    }
    pub async fn replay_lsn(&self) -> Result<Option<Lsn>, PgError> {
        todo!()
    }
    pub async fn current_lsn(&self) -> Result<Lsn, PgError> {
        todo!()
    }
    pub async fn promote(&self, wait_secs: u32) -> Result<(), PgError> {
        todo!()
    }
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        todo!()
    }
    pub async fn drop_slot(&self, name: &str) -> Result<bool, PgError> {
        todo!()
    }
    pub async fn replication(&self) -> Result<Vec<ReplicationRow>, PgError> {
        todo!()
    }
    pub async fn slot(&self, name: &str) -> Result<Option<SlotRow>, PgError> {
        todo!()
    }
    pub async fn prepare_primary(&self, setup: &PrimarySetup) -> Result<PrepareReport, PgError> {
        todo!()
    }
    pub async fn set_hba(&self, user: &str, peers: &[IpAddr]) -> Result<(), PgError> {
        todo!()
    }
    pub fn move_aside(&self, to: &Path) -> Result<(), PgError> {
        todo!()
    }
    pub fn rewind(&self, source: &Endpoint) -> Result<Duration, PgError> {
        todo!()
    }
    pub fn write_standby_config(&self, walsender: &Endpoint, application_name: &str) -> Result<(), PgError> {
        todo!()
    }
}
