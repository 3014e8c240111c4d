//! Conf routes: submit changes, read the layered view of a conf type, list the replicable
//! files, and push a file's current content on purpose (`tandem conf push`).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::JsonBody;
use super::{ApiError, AppState};
use crate::clip::clip;
use crate::cluster::ChangeReport;
use crate::conf::{ConfChange, Op, RelPath, Scope, Target, TargetKind};

#[derive(Deserialize)]
pub struct Changes {
    changes: Vec<ConfChange>,
}

pub async fn changes(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<Changes>,
) -> Result<Json<Vec<ChangeReport>>, ApiError> {
    if body.changes.is_empty() {
        return Err(ApiError::BadRequest("no changes".into()));
    }
    Ok(Json(s.node.submit(body.changes).await?))
}

#[derive(Deserialize)]
pub struct ScopeQuery {
    /// `system`, `app:NAME` or `user:APP:USER`.
    scope: Option<String>,
}

/// Parses the compact scope form the CLI and query strings use.
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["system"] => Ok(Scope::System),
        ["app", app] => Ok(Scope::App(app.to_string())),
        ["user", app, user] => Ok(Scope::User { app: app.to_string(), user: user.to_string() }),
        _ => Err(format!("{}: a scope is `system`, `app:NAME` or `user:APP:USER`", clip(text))),
    }
}

pub async fn layered(
    State(s): State<AppState>,
    Path(conf_type): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = parse_scope(q.scope.as_deref().unwrap_or("system")).map_err(ApiError::BadRequest)?;
    let tree = s.node.tree().clone();
    let view = tokio::task::spawn_blocking(move || tree.layered(&conf_type, &scope))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?))
}

#[derive(Serialize)]
pub struct FileEntry {
    path: String,
    conf_type: String,
    scope: Scope,
    kind: TargetKind,
}

pub async fn files(State(s): State<AppState>) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let tree = s.node.tree().clone();
    let files = tokio::task::spawn_blocking(move || tree.replicable_files())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        files
            .into_iter()
            .map(|(p, k)| FileEntry {
                path: p.to_string(),
                conf_type: k.conf_type,
                scope: k.scope,
                kind: k.target_kind,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct Push {
    /// A path relative to the conf root, e.g. `apps/search/local/macros.conf`.
    path: String,
}

/// Replicates a file's current content: every stanza and key of a `.conf` file (stanzas
/// replaced whole), or a whole lookup / data file.
pub async fn push(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<Push>,
) -> Result<Json<Vec<ChangeReport>>, ApiError> {
    let tree = s.node.tree().clone();
    let changes = tokio::task::spawn_blocking(move || -> Result<Vec<ConfChange>, String> {
        let files = tree.replicable_files().map_err(|e| e.to_string())?;
        let (rel, key) = files
            .into_iter()
            .find(|(p, _)| p.to_string() == body.path)
            .ok_or_else(|| format!("{} is not a replicable file under the conf root", clip(&body.path)))?;
        changes_for_file(&tree, &rel, key.conf_type, key.scope, key.target_kind)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::BadRequest)?;
    Ok(Json(s.node.submit(changes).await?))
}

fn changes_for_file(
    tree: &crate::conf::ConfTree,
    rel: &RelPath,
    conf_type: String,
    scope: Scope,
    kind: TargetKind,
) -> Result<Vec<ConfChange>, String> {
    let change = |target: Target, op: Op| ConfChange {
        conf_type: conf_type.clone(),
        scope: scope.clone(),
        target,
        op,
    };
    match kind {
        TargetKind::File => {
            let name =
                rel.as_path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let content = tree.read_file(rel).map_err(|e| e.to_string())?.unwrap_or_default();
            Ok(vec![change(Target::File { name }, Op::PutFile { content })])
        }
        TargetKind::Conf | TargetKind::Meta => {
            let target = if kind == TargetKind::Meta { Target::Meta } else { Target::Conf };
            let doc = tree.read_doc(rel).map_err(|e| e.to_string())?.ok_or("the file is gone")?;
            let mut out = Vec::new();
            for (stanza, keys) in doc.semantic() {
                if stanza.is_empty() {
                    continue;
                }
                if kind == TargetKind::Meta {
                    // A meta stanza names its type: `[savedsearches/x]`.
                    let ty = stanza.split('/').next().unwrap_or_default().to_string();
                    let mk = |op| ConfChange {
                        conf_type: ty.clone(),
                        scope: scope.clone(),
                        target: Target::Meta,
                        op,
                    };
                    out.push(mk(Op::RemoveStanza { stanza: stanza.clone() }));
                    out.push(mk(Op::AddStanza { stanza: stanza.clone() }));
                    for (key, value) in keys {
                        out.push(mk(Op::SetKey { stanza: stanza.clone(), key, value }));
                    }
                    continue;
                }
                out.push(change(target.clone(), Op::RemoveStanza { stanza: stanza.clone() }));
                out.push(change(target.clone(), Op::AddStanza { stanza: stanza.clone() }));
                for (key, value) in keys {
                    out.push(change(target.clone(), Op::SetKey { stanza: stanza.clone(), key, value }));
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_bad_ones_say_the_form() {
        assert_eq!(parse_scope("system").unwrap(), Scope::System);
        assert_eq!(parse_scope("app:search").unwrap(), Scope::App("search".into()));
        assert_eq!(
            parse_scope("user:search:admin").unwrap(),
            Scope::User { app: "search".into(), user: "admin".into() }
        );
        assert!(parse_scope("apps:x").unwrap_err().contains("app:NAME"));
        assert!(parse_scope(&"x".repeat(1 << 20)).unwrap_err().contains("(1048576 bytes)"));
    }
}
