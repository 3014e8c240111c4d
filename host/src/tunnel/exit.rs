//! The primary side of the tunnel: a peer connection whose first frame is OPEN. Admitted only
//! when the gate says so (this host pairs a database, and the caller is the pair's peer), and
//! only for the replication role: the startup packet's `user` is read before anything reaches
//! PostgreSQL (encryption requests are answered `N` here; a cancel request, which names no
//! role and needs the session's secret key, passes). Then the local PostgreSQL's socket is
//! connected and the bytes pumped. A refusal is told to the client as a PostgreSQL error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::codec;
use super::config::TunnelConfig;
use super::error::TunnelError;
use super::pump::Tunnel;
use super::startup::{self, First, MAX_STARTUP_LEN, NO_ENCRYPTION};
use super::stats::{LinkStats, StreamKind};
use crate::peer::{Frame, PeerConnection, PeerError, PeerIdentity};

/// Where an admitted tunnel goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The local PostgreSQL's socket file.
    pub socket: PathBuf,
    /// The only role a tunnel may log in as.
    pub user: String,
}

/// Whether `peer` may open a tunnel now, and to where.
pub type GateFn = Arc<dyn Fn(&PeerIdentity) -> Result<Target, String> + Send + Sync>;

/// The primary side.
pub struct Exit {
    pub gate: GateFn,
    pub config: TunnelConfig,
    pub stats: Arc<LinkStats>,
}

impl Exit {
    /// Serves one tunnel; its failure is logged here and never fails the peer listener.
    pub async fn serve(
        &self,
        conn: PeerConnection,
        open: Frame,
        shutdown: CancellationToken,
    ) -> Result<(), PeerError> {
        let node = conn.peer.node.clone();
        match self.handle(conn, open, &shutdown).await {
            Ok(()) => debug!(%node, "tunnel closed"),
            Err(e) => debug!(%node, error = %e, "tunnel ended"),
        }
        Ok(())
    }

    async fn handle(
        &self,
        conn: PeerConnection,
        open: Frame,
        shutdown: &CancellationToken,
    ) -> Result<(), TunnelError> {
        let peer = conn.peer.clone();
        let mut tunnel = Tunnel::new(conn, &self.config, self.stats.clone());
        let target = match codec::check_open(&open).and_then(|()| (self.gate)(&peer)) {
            Ok(target) => target,
            Err(why) => return self.refuse(tunnel, &peer, &why).await,
        };
        let (first, kind) = match read_startup(&mut tunnel, &target.user).await {
            Ok(read) => read,
            Err(TunnelError::Refused(why)) => return self.refuse(tunnel, &peer, &why).await,
            Err(e) => return Err(e),
        };
        tunnel.set_kind(kind);
        let local = match UnixStream::connect(&target.socket).await {
            Ok(s) => s,
            Err(e) => {
                let why =
                    format!("this host's PostgreSQL does not answer at {}: {e}", target.socket.display());
                return self.refuse(tunnel, &peer, &why).await;
            }
        };
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let result = tunnel.run(local, &[], &first, shutdown).await;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn refuse(&self, tunnel: Tunnel, peer: &PeerIdentity, why: &str) -> Result<(), TunnelError> {
        warn!(node = %peer.node, %why, "database tunnel refused");
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        tunnel.refuse(&format!("tandem tunnel at the peer: {why}")).await
    }
}

/// Reads the client's first message through the tunnel; refuses a startup packet for any
/// role but `user`. The bytes to hand PostgreSQL and the kind of stream.
async fn read_startup(tunnel: &mut Tunnel, user: &str) -> Result<(Vec<u8>, StreamKind), TunnelError> {
    let mut buf = Vec::new();
    loop {
        match startup::parse(&buf).map_err(TunnelError::Refused)? {
            Some((First::EncryptionRequest, len)) => {
                tunnel.outbound.send(NO_ENCRYPTION).await?;
                buf.drain(..len);
                continue;
            }
            Some((First::Cancel, _)) => return Ok((buf, StreamKind::Other)),
            Some((First::Startup(params), _)) => {
                let theirs = params.get("user").map(String::as_str).unwrap_or("");
                if theirs != user {
                    return Err(TunnelError::Refused(format!(
                        "only the replication role `{user}` may use the tunnel, not `{theirs}`"
                    )));
                }
                return Ok((buf, StreamKind::of(params.get("application_name").map(String::as_str))));
            }
            None => {}
        }
        let Some(bytes) = tunnel.inbound.next().await? else {
            return Err(TunnelError::Startup("the client left before it".into()));
        };
        buf.extend_from_slice(bytes);
        if buf.len() > 2 * MAX_STARTUP_LEN {
            return Err(TunnelError::Refused("a startup packet over PostgreSQL's limit".into()));
        }
    }
}
