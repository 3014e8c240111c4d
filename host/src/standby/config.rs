//! Settings of the warm-standby pair (`[standby]` in tandem.toml): the local PostgreSQL this
//! host pairs (data folder, programs, port, socket, the OS user that runs it), the role the
//! standby side replicates as, and the primary's safety cap on WAL held for slots. The pairing
//! itself (role, peer, options) is not configuration: `tandem standby configure` records it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The role `configure --primary-mode` creates for the standby side.
pub const DEFAULT_REPLICATION_USER: &str = "tandem_replicator";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandbyConfig {
    /// The local PostgreSQL's data folder. Unset: this host pairs files only.
    pub pg_data: Option<PathBuf>,
    /// Folder of `pg_ctl`, `pg_basebackup`, `pg_rewind`. Unset: `TANDEM_PG_BIN`, Debian's
    /// `/usr/lib/postgresql/15/bin`, or where `pg_ctl` on PATH links to.
    pub pg_bin: Option<PathBuf>,
    /// The local PostgreSQL's port.
    pub pg_port: u16,
    /// Its Unix socket folder; tandem connects there as `pg_superuser`.
    pub pg_socket_dir: PathBuf,
    /// The OS user that owns the data folder and runs PostgreSQL's programs when tandem runs
    /// as root (PostgreSQL refuses root). Unset or when not root: tandem's own user.
    pub pg_os_user: Option<String>,
    /// The superuser tandem administers the local PostgreSQL as (over the socket).
    pub pg_superuser: String,
    /// Where the peer reaches this host's PostgreSQL (`host:port`). Unset: the host of this
    /// host's peer address, and `pg_port`.
    pub pg_advertise: Option<String>,
    /// The role the standby side replicates (and rewinds) as; made by `configure
    /// --primary-mode` with a random password.
    pub replication_user: String,
    /// On the primary: `max_slot_wal_keep_size`, the cap on WAL any slot may hold, MiB.
    pub max_slot_wal_keep_size_mib: u64,
    /// Where `pg_ctl` writes the local PostgreSQL's server log. Unset: `<log dir>/postgresql.log`.
    pub pg_log: Option<PathBuf>,
    /// How an old primary's database is fenced when its peer takes over (see `fence`).
    pub fence: FenceMode,
}

/// How an old primary's database stops taking writes when its peer takes over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceMode {
    /// A clean stop, then a start in recovery following nothing: every session is read-only,
    /// reads are still served, and the WAL up to the stop stays streamable.
    #[default]
    Demote,
    /// A clean stop; the database stays down until rejoin or off.
    Stop,
    /// `default_transaction_read_only` only (the seed's fence): a session that asks for a
    /// read-write transaction still writes.
    ReadOnly,
}

impl std::fmt::Display for FenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FenceMode::Demote => "demote",
            FenceMode::Stop => "stop",
            FenceMode::ReadOnly => "read-only",
        })
    }
}

impl Default for StandbyConfig {
    fn default() -> Self {
        Self {
            pg_data: None,
            pg_bin: None,
            pg_port: 5432,
            pg_socket_dir: PathBuf::from("/var/run/postgresql"),
            pg_os_user: Some("postgres".into()),
            pg_superuser: "postgres".into(),
            pg_advertise: None,
            replication_user: DEFAULT_REPLICATION_USER.into(),
            max_slot_wal_keep_size_mib: 65536,
            pg_log: None,
            fence: FenceMode::Demote,
        }
    }
}

impl StandbyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.pg_data.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err("standby.pg_data must be an absolute path".into());
        }
        let role_ok = |r: &str| {
            !r.is_empty() && r.len() < 64 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !role_ok(&self.replication_user) || !role_ok(&self.pg_superuser) {
            return Err(
                "standby.replication_user and standby.pg_superuser: letters, digits and _ only".into()
            );
        }
        if self.max_slot_wal_keep_size_mib < 64 {
            return Err("standby.max_slot_wal_keep_size_mib: at least 64".into());
        }
        if let Some(a) = &self.pg_advertise
            && a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none()
        {
            return Err(format!("standby.pg_advertise = `{a}`: expected host:port"));
        }
        Ok(())
    }

    /// Whether this host pairs a database (else files only).
    pub fn has_database(&self) -> bool {
        self.pg_data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_a_demotion_unless_the_site_chooses_another() {
        assert_eq!(StandbyConfig::default().fence, FenceMode::Demote);
        let parse = |text: &str| toml::from_str::<StandbyConfig>(text);
        assert_eq!(parse("fence = \"stop\"").unwrap().fence, FenceMode::Stop);
        assert_eq!(parse("fence = \"read-only\"").unwrap().fence, FenceMode::ReadOnly);
        let e = parse("fence = \"pause\"").unwrap_err().to_string();
        assert!(e.contains("demote") && e.contains("read-only"), "{e}");
        assert_eq!(FenceMode::ReadOnly.to_string(), "read-only");
    }
}
