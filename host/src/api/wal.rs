//! WAL streaming route: `GET /v1/wal/status`, the service's [`WalStatus`], or
//! `{"configured": false}` on a host that streams no WAL, `{"configured": true, "state":
//! "starting"}` before it first reached its primary.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::standby::jobs::WalState;
use crate::wal::status::WalStatus;

pub async fn status(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let wal = s.standby.wal().read().expect("not poisoned").clone();
    Ok(Json(match wal {
        WalState::Failed(e) => json!({ "configured": true, "state": "failed", "last_error": e }),
        WalState::Running(h) => {
            let mut v = serde_json::to_value(WalStatus::of(&h)).unwrap_or(Value::Null);
            v["configured"] = Value::Bool(true);
            v
        }
        WalState::Starting => json!({ "configured": true, "state": "starting" }),
        WalState::Off => json!({ "configured": false }),
    }))
}
