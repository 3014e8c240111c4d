//! The pair's side of the database tunnel ([`crate::tunnel`]): every host that pairs a database
//! offers the entry socket (its clients reach the peer's PostgreSQL through it: the WAL
//! receiver, the status SQL, `pg_basebackup`, `pg_rewind`), routed to the pair's peer as the
//! pairing records it now; and answers the peer's tunnels (the exit) while paired with it.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::error;

use super::pairing::Pairing;
use super::service::Standby;
use crate::peer::PeerIdentity;
use crate::tunnel::{Entry, Exit, Route, Target, entry::socket_path};
use crate::wal::base_backup::Endpoint;

impl Standby {
    /// Starts the entry socket when this host pairs a database (a files-only host has nothing
    /// to tunnel). A socket that cannot be bound is recorded as the last error.
    pub(super) fn start_tunnel_entry(self: &Arc<Self>) {
        let Some(pg) = self.pg.as_ref() else { return };
        let me = self.clone();
        let entry = Arc::new(Entry {
            path: self.tunnel_socket(),
            owner: pg.os_user.clone(),
            route: Arc::new(move || me.tunnel_route()),
            secret: self.secret.clone(),
            me: self.me.clone(),
            max_frame: self.config.peer.max_frame_bytes,
            config: self.config.tunnel.clone(),
            stats: self.tunnel_stats.clone(),
        });
        match entry.bind() {
            Ok((listener, uids)) => {
                self.tasks.spawn(entry.serve(listener, uids, self.shutdown.clone()));
            }
            Err(e) => {
                error!(error = %e, "the database tunnel's entry socket could not be opened");
                self.record_error("opening the database tunnel's entry socket", &e.to_string());
            }
        }
    }

    /// The entry socket file.
    pub fn tunnel_socket(&self) -> PathBuf {
        socket_path(&self.config.standby.pg_socket_dir, self.config.tunnel.socket_port)
    }

    fn tunnel_route(&self) -> Result<Route, String> {
        let p = self.pairing().ok_or("this host is not paired (tandem standby configure)")?;
        Ok(Route { addr: p.peer.addr, node: p.peer.node })
    }

    /// The exit: tunnels from the pair's peer reach this host's PostgreSQL.
    pub fn tunnel_exit(self: &Arc<Self>) -> Exit {
        let me = self.clone();
        Exit {
            gate: Arc::new(move |peer| me.tunnel_target(peer)),
            config: self.config.tunnel.clone(),
            stats: self.tunnel_stats.clone(),
        }
    }

    fn tunnel_target(&self, peer: &PeerIdentity) -> Result<Target, String> {
        let p = self.pairing().ok_or("this host is not paired")?;
        let pg = self.paired_pg(&p.options)?;
        if p.peer.node.as_deref() != Some(peer.node.as_str()) {
            return Err(format!(
                "`{}` is not this pair's peer ({})",
                peer.node,
                p.peer.node.as_deref().unwrap_or("not joined yet")
            ));
        }
        Ok(Target {
            socket: socket_path(&pg.socket_dir, pg.port),
            user: self.config.standby.replication_user.clone(),
        })
    }

    /// The peer's PostgreSQL as the replication role of `pairing` reaches it: through the
    /// entry socket (libpq's `host=<folder> port=<n>`).
    pub(super) fn primary_endpoint(&self, pairing: &Pairing) -> Endpoint {
        Endpoint {
            host: self.config.standby.pg_socket_dir.display().to_string(),
            port: self.config.tunnel.socket_port,
            user: self.config.standby.replication_user.clone(),
            password: pairing.replication_password.clone(),
        }
    }
}
