//! Cluster routes: status, init, add / remove member, destructive resync, clean, purge now.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Role;
use super::{ApiError, AppState};
use crate::cluster::{ClusterError, ClusterStatus};

pub async fn status(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<ClusterStatus>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Read)?;
    Ok(Json(s.node.status().await))
}

pub async fn init(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    let id = s.node.init().await?;
    Ok(Json(json!({ "cluster_id": id.cluster_id, "node_id": id.node_id })))
}

#[derive(Deserialize)]
pub struct AddMember {
    peer: String,
}

pub async fn add_member(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<AddMember>,
) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    let node_id = s.node.add_member(body.peer).await?;
    Ok(Json(json!({ "node_id": node_id })))
}

pub async fn remove_member(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    s.node.remove_member(id).await?;
    Ok(Json(json!({ "removed": id })))
}

#[derive(Deserialize)]
pub struct Resync {
    #[serde(default)]
    destructive: bool,
}

pub async fn resync(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Resync>,
) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    if !body.destructive {
        return Err(ApiError::BadRequest(
            "a resync replaces this member's replicated configuration and discards its pending changes; ask for it with \"destructive\": true".into(),
        ));
    }
    let discarded = s.node.resync_destructive().await?;
    Ok(Json(json!({ "discarded_pending_batches": discarded })))
}

#[derive(Deserialize)]
pub struct Clean {
    #[serde(default)]
    force: bool,
}

pub async fn clean(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Clean>,
) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    s.node.clean(body.force).await?;
    Ok(Json(json!({ "cleaned": true })))
}

pub async fn purge(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    ApiError::need(s.tokens.role(&headers), Role::Admin)?;
    let j = s.node.joined().await.ok_or(ClusterError::NotInCluster)?;
    let n = s.node.purge_once(&j).await?;
    Ok(Json(json!({ "purged": n })))
}
