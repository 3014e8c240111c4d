//! The accept loop: authenticates each connection within the handshake timeout, then hands it
//! to a handler task. A failed connection is logged with its address and cause and never takes
//! the loop down; accept errors back off and retry (`crate::listen`).
//!
//! Two pools, so that connections without the secret cannot crowd out the cluster's own:
//! - handshakes in progress hold one of `max_handshakes` slots ([`Admission`]). Every new
//!   connection is admitted; when the slots are full, one is evicted: one that has not proved
//!   the secret before one that has; of those, one from the address holding the most slots;
//!   of those, the oldest. A genuine peer sends its greeting and first message in one flight
//!   and has proved the secret as soon as they are read; from then on it outranks every silent
//!   or stalled socket, even one from its own address (on loopback or behind NAT a
//!   per-address limit would refuse it with the attacker). Before that it is the youngest of
//!   the unproved, evicted last. What still wins: a connection flood fast enough to cycle all
//!   `max_handshakes` slots in the moment between a peer's connect and the read of its first
//!   bytes.
//! - authenticated connections hold one of `max_connections` slots. A connection that arrives
//!   while all are taken is closed on arrival, one that authenticates while all are taken is
//!   closed then. Only holders of the secret get this far.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::connection::PeerConnection;
use super::error::PeerError;
use super::handshake::PeerIdentity;
use super::secret::ClusterSecret;
use crate::admission::Admission;
use crate::listen::Accepter;

/// What the accept loop needs to authenticate connections.
#[derive(Clone)]
pub struct Acceptor {
    pub secret: ClusterSecret,
    pub me: Arc<PeerIdentity>,
    pub max_frame: u64,
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; a newcomer past it evicts the one that showed least.
    pub max_handshakes: usize,
    /// Authenticated connections served at once; more are closed.
    pub max_connections: usize,
}

/// Accepts connections until `shutdown`, then waits for the handlers to finish.
pub async fn serve<H, F>(listener: TcpListener, acceptor: Acceptor, handler: H, shutdown: CancellationToken)
where
    H: Fn(PeerConnection, CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), PeerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let handshakes = Admission::new(acceptor.max_handshakes);
    let authenticated = Arc::new(Semaphore::new(acceptor.max_connections));
    let mut tasks = JoinSet::new();
    let mut accepter = Accepter::new(listener, "peer");
    while let Some((stream, remote)) = accepter.next(&shutdown).await {
        if authenticated.available_permits() == 0 {
            warn!(%remote, limit = acceptor.max_connections, "too many peer connections; closing this one");
            continue;
        }
        let Some(slot) = handshakes.admit(remote.ip()) else {
            // Handshake slots are never pinned, so this does not happen; close all the same.
            continue;
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let authenticated = authenticated.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("peer", %remote);
        tasks.spawn(
            async move {
                let progress = |standing| slot.set_standing(standing);
                let handshake = PeerConnection::accept_reporting(
                    stream,
                    &acceptor.secret,
                    &acceptor.me,
                    acceptor.max_frame,
                    &progress,
                );
                let accepted = tokio::select! {
                    // Many silent sockets make many evictions: not worth a warning each.
                    _ = slot.evicted().cancelled() => {
                        debug!("handshake evicted to make room for a newer connection");
                        return;
                    }
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(acceptor.handshake_timeout, handshake) => r.unwrap_or(Err(
                        PeerError::HandshakeTimeout(acceptor.handshake_timeout.as_millis() as u64),
                    )),
                };
                drop(slot);
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(error = %e, "peer refused");
                        return;
                    }
                };
                let Ok(_permit) = authenticated.try_acquire_owned() else {
                    warn!(node = %conn.peer.node, limit = acceptor.max_connections, "too many peer connections; closing this one");
                    return;
                };
                debug!(node = %conn.peer.node, "peer authenticated");
                if let Err(e) = handler(conn, shutdown).await {
                    warn!(error = %e, "peer connection ended with an error");
                }
            }
            .instrument(span),
        );
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
