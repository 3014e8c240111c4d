//! Warm-standby routes: `GET /v1/standby/status`, `POST /v1/standby/configure`,
//! `/convert-to-primary`, `/rejoin`, `/off`, and the load balancers' health check `GET /health`
//! (no token: 200 `primary` or `unpaired`, 503 `standby` — a standby must not take traffic).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::body::JsonBody;
use super::{ApiError, AppState};
use crate::standby::{ConfigureRequest, Report, StandbyError, StandbyStatus};

pub async fn status(State(s): State<AppState>) -> Result<Json<StandbyStatus>, ApiError> {
    Ok(Json(s.standby.status().await))
}

pub async fn configure(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<ConfigureRequest>,
) -> Result<Json<Report>, ApiError> {
    let standby = s.standby.clone();
    Ok(Json(detached(async move { standby.configure(body).await }).await?))
}

#[derive(Debug, Default, Deserialize)]
pub struct ConvertRequest {
    #[serde(default)]
    force: bool,
}

pub async fn convert(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<ConvertRequest>,
) -> Result<Json<Report>, ApiError> {
    let standby = s.standby.clone();
    Ok(Json(detached(async move { standby.convert_to_primary(body.force).await }).await?))
}

#[derive(Debug, Default, Deserialize)]
pub struct RejoinRequest {
    #[serde(default)]
    peer: Option<String>,
}

pub async fn rejoin(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<RejoinRequest>,
) -> Result<Json<Report>, ApiError> {
    let standby = s.standby.clone();
    Ok(Json(detached(async move { standby.rejoin(body.peer).await }).await?))
}

pub async fn off(State(s): State<AppState>) -> Result<Json<Report>, ApiError> {
    let standby = s.standby.clone();
    Ok(Json(detached(async move { standby.off(None).await }).await?))
}

/// Runs a command on its own task: a client that goes away (timeout, Ctrl-C) must not cancel
/// it half-way (after its jobs stopped, before its record is saved).
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, StandbyError>> + Send + 'static,
) -> Result<T, StandbyError> {
    tokio::spawn(work).await.map_err(|e| StandbyError::Io(format!("the command's task failed: {e}")))?
}

/// The health check: no token, plain text.
pub async fn health(State(s): State<AppState>) -> (StatusCode, String) {
    let st = s.standby.status().await;
    let what = match (st.role, st.superseded.is_some()) {
        (_, true) => "superseded: the peer took over as primary",
        (Some(crate::standby::Role::Standby), _) => "standby",
        (Some(crate::standby::Role::Primary), _) if st.healthy => "primary",
        (Some(crate::standby::Role::Primary), _) => "primary, but its database is down or in recovery",
        (None, _) if st.healthy => "unpaired",
        (None, _) => "unpaired, but its database is in recovery",
    };
    let code = if st.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let disk_full = st.wal.as_ref().is_some_and(|w| w.archive_disk_full);
    let mut note = if disk_full { "; WAL archive disk full: tandem takes no WAL" } else { "" }.to_owned();
    if let Some(f) = &st.fenced {
        note.push_str(&format!("; its database is fenced ({})", f.how));
    }
    let stall = match s.node.shared().apply_stall() {
        Some(stall) => format!("; conf changes cannot be applied here: {}", stall.error),
        None => String::new(),
    };
    (code, format!("{what}{note}{stall}\n"))
}
