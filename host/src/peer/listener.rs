//! The accept loop: authenticates each connection within the handshake timeout, then hands it
//! to a handler task. A failed connection is logged with its address and cause and never takes
//! the loop down; accept errors back off and retry.

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

const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the accept loop needs to authenticate connections.
#[derive(Clone)]
pub struct Acceptor {
    pub secret: ClusterSecret,
    pub me: Arc<PeerIdentity>,
    pub max_frame: u64,
    pub handshake_timeout: Duration,
    /// Connections served at once, handshakes included; more are closed on arrival.
    pub max_connections: usize,
}

/// Accepts connections until `shutdown`, then waits for the handlers to finish.
pub async fn serve<H, F>(listener: TcpListener, acceptor: Acceptor, handler: H, shutdown: CancellationToken)
where
    H: Fn(PeerConnection, CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), PeerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(acceptor.max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => { backoff = Duration::from_millis(10); pair }
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%remote, limit = acceptor.max_connections, "too many peer connections; closing this one");
            continue;
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("peer", %remote);
        tasks.spawn(
            async move {
                let _slot = slot;
                let accepted = tokio::time::timeout(
                    acceptor.handshake_timeout,
                    PeerConnection::accept(stream, &acceptor.secret, &acceptor.me, acceptor.max_frame),
                )
                .await
                .unwrap_or(Err(PeerError::HandshakeTimeout(acceptor.handshake_timeout.as_millis() as u64)));
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(error = %e, "peer refused");
                        return;
                    }
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
