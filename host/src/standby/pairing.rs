//! The pairing record, `<data>/standby/pairing.json` (mode 0600, replaced atomically): this
//! host's role in the pair, the peer (by identity: its node name and the pair's id; its
//! addresses are only where to reach it and are updated when it announces new ones), the
//! options the pair was configured with, and the failover epoch. No file: not configured.
//!
//! Must never: leave a half-written record (a crash keeps the old one or the new one).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::FenceMode;
use crate::plugin::now_ms;

/// This host's part in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Standby,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        })
    }
}

/// The seed's options, chosen at configure time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Files only: no database replication.
    pub ignore_database: bool,
    /// Leave the vault (and the reports inside it) out of tree sync.
    pub ignore_vault: bool,
    /// Leave the package lists (pip_req, rpm_req) out of tree sync.
    pub ignore_package_updates: bool,
    /// On the standby: where its previous database is moved before the base backup. Unset:
    /// next to it, named `<data folder>.tandem-previous-<unix seconds>`.
    pub recovery_dir: Option<PathBuf>,
}

/// The other host, as last heard of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerRecord {
    /// Its node name, learnt when it first answered (its identity, with the pair id).
    pub node: Option<String>,
    /// Its peer-transport address (`host:port`).
    pub addr: String,
    /// Its PostgreSQL as it told us (`host:port`), when it pairs a database.
    pub pg: Option<String>,
    /// When it last answered or announced itself (ms since the epoch).
    pub last_seen_ms: Option<u64>,
}

/// The last failover this host took part in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Failover {
    pub at_ms: u64,
    /// From the command to a writable new primary.
    pub seconds: f64,
    pub forced: bool,
    /// What became of the old primary: fenced at this host's request (and how), or not reached.
    #[serde(default)]
    pub old_primary: Option<String>,
}

/// How and when this host's database was fenced (an old primary whose peer took over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fenced {
    pub how: FenceMode,
    pub at_ms: u64,
    /// The epoch of the peer that took over.
    pub epoch: u64,
    /// Where this database's WAL ended when it was fenced: the shutdown checkpoint of a clean
    /// stop (demote, stop), the flushed WAL (read-only); unknown when it was not running.
    pub wal_end: Option<String>,
}

/// What `tandem standby configure` recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pairing {
    /// Made by the primary's configure; the standby learns it when it joins.
    pub pair_id: String,
    pub role: Role,
    pub peer: PeerRecord,
    #[serde(default)]
    pub options: Options,
    /// Raised by each convert-to-primary; the side with the higher epoch is the primary.
    pub epoch: u64,
    pub configured_at_ms: u64,
    /// The replication role's password (the primary made it; the standby streams and rewinds
    /// with it).
    #[serde(default)]
    pub replication_password: Option<String>,
    /// Set on an old primary whose peer took over: it must rejoin before it is paired again.
    #[serde(default)]
    pub superseded: Option<String>,
    #[serde(default)]
    pub last_failover: Option<Failover>,
    /// On a standby: its database was copied (base backup or rewind) for this pair and started
    /// following. Until then a configure or rejoin that failed half-way may be run again.
    #[serde(default)]
    pub database_ready: bool,
    /// Set on an old primary once its database is fenced (see `fence`).
    #[serde(default)]
    pub fenced: Option<Fenced>,
}

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a pairing record ({source}); move it away to start over")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where the record lives.
#[derive(Debug, Clone)]
pub struct PairingFile {
    path: PathBuf,
}

impl PairingFile {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("standby").join("pairing.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, or `None` when this host is not paired.
    pub fn load(&self) -> Result<Option<Pairing>, PairingError> {
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PairingError::Read { path: self.path.clone(), source }),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| PairingError::Corrupt { path: self.path.clone(), source }),
        }
    }

    pub fn save(&self, pairing: &Pairing) -> Result<(), PairingError> {
        let write = |source| PairingError::Write { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let text = serde_json::to_vec_pretty(pairing).expect("plain struct");
        crate::durable::write_private(&self.path, &text).map_err(write)
    }

    /// Unpairs: the record goes, kept as `pairing.json.off` for the curious without the
    /// replication password (no secret outlives the pair). A record that does not parse is
    /// moved there as it is.
    pub fn remove(&self) -> Result<(), PairingError> {
        let off = self.path.with_extension("json.off");
        let write = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PairingError::Write { path, source }
        };
        let record = match self.load() {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(PairingError::Corrupt { .. }) => {
                return std::fs::rename(&self.path, &off).map_err(write(&self.path));
            }
            Err(e) => return Err(e),
        };
        let kept = Pairing { replication_password: None, ..record };
        let text = serde_json::to_vec_pretty(&kept).expect("plain struct");
        crate::durable::write_private(&off, &text).map_err(write(&off))?;
        std::fs::remove_file(&self.path).map_err(write(&self.path))
    }
}

impl Pairing {
    /// A new pair, as the primary's configure makes it.
    pub fn new(role: Role, peer_addr: String, options: Options) -> Pairing {
        Pairing {
            pair_id: new_pair_id(),
            role,
            peer: PeerRecord { addr: peer_addr, ..PeerRecord::default() },
            options,
            epoch: 1,
            configured_at_ms: now_ms(),
            replication_password: None,
            superseded: None,
            last_failover: None,
            database_ready: false,
            fenced: None,
        }
    }
}

fn new_pair_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_garbage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = PairingFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let mut p = Pairing::new(Role::Primary, "10.0.0.2:7420".into(), Options::default());
        p.options.ignore_vault = true;
        p.replication_password = Some("s3cret-replication".into());
        file.save(&p).unwrap();
        assert_eq!(file.load().unwrap(), Some(p.clone()));
        assert_eq!(p.pair_id.len(), 16);
        file.remove().unwrap();
        assert_eq!(file.load().unwrap(), None);
        // Regression: the password outlived the pair in pairing.json.off.
        let off = std::fs::read_to_string(file.path().with_extension("json.off")).unwrap();
        assert!(off.contains(&p.pair_id) && !off.contains("s3cret"), "{off}");
        file.remove().unwrap();
        std::fs::write(file.path(), b"{\"role\":").unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("not a pairing record"), "{e}");
    }
}
