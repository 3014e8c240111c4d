//! Cluster routes: status, init, add / remove member, destructive resync, clean, purge now.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::{ApiError, AppState};
use crate::cluster::{ClusterError, ClusterStatus};

pub async fn status(State(s): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(s.node.status().await))
}

pub async fn init(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let id = s.node.init().await?;
    Ok(Json(json!({ "cluster_id": id.cluster_id, "node_id": id.node_id })))
}

#[derive(Deserialize)]
pub struct AddMember {
    peer: String,
}

pub async fn add_member(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<Json<Value>, ApiError> {
    let node_id = s.node.add_member(body.peer).await?;
    Ok(Json(json!({ "node_id": node_id })))
}

pub async fn remove_member(State(s): State<AppState>, Path(id): Path<u64>) -> Result<Json<Value>, ApiError> {
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
    JsonBody(body): JsonBody<Resync>,
) -> Result<Json<Value>, ApiError> {
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
    JsonBody(body): JsonBody<Clean>,
) -> Result<Json<Value>, ApiError> {
    s.node.clean(body.force).await?;
    Ok(Json(json!({ "cleaned": true })))
}

pub async fn purge(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let j = s.node.joined().await.ok_or(ClusterError::NotInCluster)?;
    let n = s.node.purge_once(&j).await?;
    Ok(Json(json!({ "purged": n })))
}
