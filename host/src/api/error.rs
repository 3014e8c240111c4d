//! API errors as HTTP answers: a status code and `{"error": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::Role;
use crate::clip::clip_message;
use crate::cluster::ClusterError;
use crate::standby::StandbyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown token (send `Authorization: Bearer <token>`)")]
    Unauthorized,
    #[error("this token's role may only read")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    /// A body the route cannot take (not JSON, wrong shape, too large), with its status.
    #[error("{}", clip_message(message))]
    Body { status: StatusCode, message: String },
    /// A failure of the member itself, not of the request.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Standby(#[from] StandbyError),
}

impl ApiError {
    pub fn need(have: Option<Role>, need: Role) -> Result<(), ApiError> {
        match have {
            None => Err(ApiError::Unauthorized),
            Some(r) if r < need => Err(ApiError::Forbidden),
            Some(_) => Ok(()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Body { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Cluster(ClusterError::Conf(_) | ClusterError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Cluster(ClusterError::NotInCluster | ClusterError::AlreadyMember { .. }) => {
                StatusCode::CONFLICT
            }
            ApiError::Cluster(ClusterError::Refused(_)) => StatusCode::CONFLICT,
            ApiError::Cluster(ClusterError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Cluster(ClusterError::NoCaptain) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Cluster(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Standby(StandbyError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            ApiError::Standby(e) if e.is_refusal() => StatusCode::CONFLICT,
            ApiError::Standby(StandbyError::Shutdown) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Standby(StandbyError::Peer(_) | StandbyError::Unreachable(_)) => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::Standby(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}
