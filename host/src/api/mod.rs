//! The REST API every member serves (`/v1/...`, JSON): runtime conf changes and reads,
//! cluster membership, resync and status, WAL and warm-standby status and commands. Every
//! route but `/v1/health` (liveness), `/health` (the load balancers' check: 200 on a primary or
//! an unpaired host, 503 on a standby), Patroni's role checks (`/primary`, `/replica`, ...: see
//! `checks`) and `/metrics` (Prometheus) needs a bearer token: the
//! admin role may change things, the read-only role may only read.
//!
//! Owns: HTTP in and out. Must never: change anything for a request without the admin role,
//! read a body before the token is checked, let a handler's failure take the listener down,
//! or hold more connections than it was given (see `server`).

mod auth;
mod body;
mod checks;
mod cluster;
mod conf;
mod config;
mod error;
mod metrics;
mod server;
mod standby;
pub mod tls;
mod wal;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Role, TokenError, Tokens, client_token};
pub use conf::parse_scope;
pub use config::{ApiConfig, ApiTls, REDACTED};
pub use error::ApiError;
pub use server::ServeLimits;

use crate::cluster::ClusterNode;

/// Largest request body: a change request may carry whole lookup files (as JSON byte arrays),
/// derived from the commit log's entry limit (see [`crate::cluster::limits`]).
pub const MAX_BODY_BYTES: usize = crate::cluster::limits::MAX_BODY_BYTES;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<ClusterNode>,
    pub tokens: Tokens,
    /// The warm-standby pair (its jobs include WAL streaming).
    pub standby: Arc<crate::standby::Standby>,
}

pub fn router(state: AppState) -> Router {
    // Every route here needs a token, checked before a handler reads anything of the body.
    let guarded = Router::new()
        .route("/v1/conf/changes", post(conf::changes))
        .route("/v1/conf/push", post(conf::push))
        .route("/v1/conf/files", get(conf::files))
        .route("/v1/conf/{conf_type}", get(conf::layered))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/cluster/init", post(cluster::init))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/cluster/resync", post(cluster::resync))
        .route("/v1/cluster/clean", post(cluster::clean))
        .route("/v1/cluster/purge", post(cluster::purge))
        .route("/v1/wal/status", get(wal::status))
        .route("/v1/standby/status", get(standby::status))
        .route("/v1/standby/configure", post(standby::configure))
        .route("/v1/standby/convert-to-primary", post(standby::convert))
        .route("/v1/standby/rejoin", post(standby::rejoin))
        .route("/v1/standby/off", post(standby::off))
        .route_layer(from_fn_with_state(state.tokens.clone(), auth::guard));
    Router::new()
        .route("/v1/health", get(|| async { "ok\n" }))
        .route("/health", get(standby::health))
        // Patroni's role checks (GET also answers HEAD).
        .route("/primary", get(checks::primary).options(checks::primary))
        .route("/read-write", get(checks::primary).options(checks::primary))
        .route("/leader", get(checks::primary).options(checks::primary))
        .route("/master", get(checks::primary).options(checks::primary))
        .route("/replica", get(checks::replica).options(checks::replica))
        .route("/read-only", get(checks::read_only).options(checks::read_only))
        .route("/liveness", get(checks::liveness).options(checks::liveness))
        .route("/readiness", get(checks::readiness).options(checks::readiness))
        .route("/metrics", get(metrics::metrics))
        .merge(guarded)
        // Whole files (lookup tables) travel in change requests.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API until `shutdown`, within `limits`, over TLS with `tls` (see [`tls`]), else
/// plain HTTP; see `server`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    server::serve(listener, router(state), limits, tls.map(tokio_rustls::TlsAcceptor::from), shutdown).await
}
