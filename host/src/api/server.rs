//! The REST API's accept loop and connections: the router served on hyper's HTTP/1
//! connections, with what an unauthenticated client could otherwise use to take the member's
//! file descriptors (issue 14: ~20,000 idle connections left it unable to apply a change,
//! checkpoint, read its plugin folder or answer peers):
//!
//! - a cap on connections (`max_connections`, sized by the daemon from its descriptor
//!   budget). When all are taken, a newcomer evicts an idle connection: of the address holding
//!   the most, the oldest (`crate::admission`). A connection serving a request is never
//!   evicted; a newcomer finding only such connections is closed on arrival.
//! - a header timeout: a connection must deliver a request's headers within
//!   `header_timeout` of opening or of its previous answer, so idle and slow (slowloris)
//!   connections end on their own.
//! - the token is checked before a body is read (`super::auth::guard`), so only a caller with
//!   a role can hold a connection open by sending a body slowly.
//!
//! Errors stop at their connection; accept errors back off and retry (`crate::listen`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use super::tls::HANDSHAKE_TIMEOUT;
use crate::admission::{Admission, FRESH, PINNED, Slot};
use crate::listen::Accepter;

/// How many connections the API serves and how long one may sit without a request.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then lets the open connections finish the
/// request they are serving. With `tls`, each connection's handshake runs in its admitted slot
/// (a stalled one is evictable like an idle one) within [`HANDSHAKE_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let slots = Admission::new(limits.max_connections);
    let mut connections = JoinSet::new();
    let mut accepter = Accepter::new(listener, "api");
    while let Some((stream, remote)) = accepter.next(&shutdown).await {
        let Some(slot) = slots.admit(remote.ip()) else {
            debug!(%remote, limit = slots.capacity(), "every API connection is serving a request; closing this one");
            continue;
        };
        let span = info_span!("api", %remote);
        let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
        let served = async move {
            let Some(acceptor) = tls else {
                return connection(stream, remote, slot, router, limits, shutdown).await;
            };
            tokio::select! {
                shook = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match shook {
                    Ok(Ok(stream)) => connection(stream, remote, slot, router, limits, shutdown).await,
                    Ok(Err(e)) => debug!(%remote, error = %e, "API TLS handshake failed"),
                    Err(_) => debug!(%remote, "API TLS handshake timed out"),
                },
                _ = slot.evicted().cancelled() => debug!(%remote, "API TLS handshake cut to make room"),
            }
        };
        connections.spawn(served.instrument(span));
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// One connection, until the client leaves, its header timeout, its eviction or `shutdown`
/// (the last two let a request in progress finish).
async fn connection<S>(
    stream: S,
    remote: SocketAddr,
    slot: Slot,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::new(slot);
    let hyper_router = TowerToHyperService::new(router);
    let in_service = slot.clone();
    // Pinned while a request is being answered: an eviction would only wait for it.
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        in_service.set_standing(PINNED);
        let answer = hyper::service::Service::call(&hyper_router, request);
        let slot = in_service.clone();
        async move {
            let answer = answer.await;
            slot.set_standing(FRESH);
            answer
        }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    debug!(%remote, error = %e, "API connection ended");
                }
                return;
            }
            _ = slot.evicted().cancelled(), if !closing => {
                debug!(%remote, "idle API connection closed to make room for a newer one");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
