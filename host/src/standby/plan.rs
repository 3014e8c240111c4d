//! Which jobs a host runs, decided from its configuration and its pairing (pure): a standby
//! follows the primary's trees and streams its WAL; a primary (or an unpaired host) watches
//! its trees and serves them. Without a pairing, `tandem.toml` decides as it always did
//! (`sync.primary`, `wal.primary_host`), so a hand-made setup keeps working.

use std::path::PathBuf;

use super::pairing::{Pairing, Role};
use crate::config::Config;
use crate::sync::config::SyncConfig;
use crate::wal::config::WalConfig;

/// Trees left out by `--ignore-vault` (the reports live inside the vault).
pub const VAULT_TREES: &[&str] = &["vault", "reports"];
/// Trees left out by `--ignore-package-updates`.
pub const PACKAGE_TREES: &[&str] = &["pip_req", "rpm_req"];

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The trees this host knows (filtered by the pairing's options).
    pub sync: SyncConfig,
    /// Follow this primary's trees (peer address); else watch our own.
    pub follow: Option<String>,
    /// Stream WAL with these settings.
    pub wal: Option<WalConfig>,
}

impl Plan {
    /// The plan for `config` with `pairing`; `password_file` is where the replication
    /// password is kept for the WAL receiver. A paired standby streams through the database
    /// tunnel's entry socket (`[tunnel]`), never straight from the primary's address.
    pub fn of(config: &Config, pairing: Option<&Pairing>, password_file: PathBuf) -> Plan {
        let Some(p) = pairing else {
            return Plan {
                sync: config.sync.clone(),
                follow: config.sync.primary.clone(),
                wal: config.wal.enabled().then(|| config.wal.clone()),
            };
        };
        let mut sync = config.sync.clone();
        sync.primary = None;
        let mut drop = |names: &[&str]| {
            for n in names {
                sync.trees.remove(*n);
            }
        };
        if p.options.ignore_vault {
            drop(VAULT_TREES);
        }
        if p.options.ignore_package_updates {
            drop(PACKAGE_TREES);
        }
        if p.role == Role::Primary || p.superseded.is_some() {
            return Plan { sync, follow: None, wal: None };
        }
        let wal = (!p.options.ignore_database && config.standby.has_database())
            .then_some(())
            .filter(|()| p.peer.pg.is_some())
            .map(|()| WalConfig {
                primary_host: Some(config.standby.pg_socket_dir.display().to_string()),
                primary_port: config.tunnel.socket_port,
                primary_user: config.standby.replication_user.clone(),
                primary_password_file: p.replication_password.as_ref().map(|_| password_file),
                ..config.wal.clone()
            });
        sync.primary = Some(p.peer.addr.clone());
        Plan { follow: Some(p.peer.addr.clone()), sync, wal }
    }
}

/// `host:port` (`[v6]:port` too) split; `None` when it is not one.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standby::pairing::Options;

    fn config() -> Config {
        let mut c = Config::default();
        c.standby.pg_data = Some("/var/lib/pg".into());
        c
    }

    #[test]
    fn a_standby_follows_and_streams_a_primary_watches() {
        let c = config();
        let mut p = Pairing::new(Role::Standby, "10.0.0.1:7420".into(), Options::default());
        p.peer.pg = Some("10.0.0.1:5432".into());
        p.replication_password = Some("pw".into());
        let plan = Plan::of(&c, Some(&p), "/x/pw".into());
        assert_eq!(plan.follow.as_deref(), Some("10.0.0.1:7420"));
        let wal = plan.wal.unwrap();
        // Through the tunnel's entry socket, never the primary's address.
        assert_eq!(
            (wal.primary_host.as_deref(), wal.primary_port),
            (Some("/var/run/postgresql"), crate::tunnel::config::DEFAULT_SOCKET_PORT)
        );
        assert_eq!(wal.primary_user, "tandem_replicator");
        assert_eq!(wal.primary_password_file, Some("/x/pw".into()));
        assert!(plan.sync.trees.contains_key("vault"));

        p.options = Options {
            ignore_database: true,
            ignore_vault: true,
            ignore_package_updates: true,
            ..Options::default()
        };
        let plan = Plan::of(&c, Some(&p), "/x/pw".into());
        assert!(plan.wal.is_none(), "files only");
        for t in VAULT_TREES.iter().chain(PACKAGE_TREES) {
            assert!(!plan.sync.trees.contains_key(*t), "{t} left out");
        }
        assert!(plan.sync.trees.contains_key("etc"));

        p.role = Role::Primary;
        let plan = Plan::of(&c, Some(&p), "/x/pw".into());
        assert!(plan.follow.is_none() && plan.wal.is_none());
        assert!(Plan::of(&Config::default(), None, "/x".into()).wal.is_none());
    }

    #[test]
    fn addresses_split() {
        assert_eq!(split_host_port("10.0.0.1:5432"), Some(("10.0.0.1".into(), 5432)));
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1".into(), 5432)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":5432"), None);
    }
}
