//! Request bodies as JSON. The guard in [`super::auth`] has checked the token before any
//! handler runs, so a body is only ever read for a caller with a role. A body that is not
//! what the route expects is refused with its HTTP status and a message cut to
//! [`crate::clip::MAX_MESSAGE`] bytes (serde's messages quote the offending input).

use axum::Json;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body of type `T`; see the module doc.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::Body {
                    status: rejection.status(),
                    message: format!(
                        "the request body is over the API's {} byte limit (one replicated change holds at most {} bytes)",
                        super::MAX_BODY_BYTES,
                        crate::cluster::limits::MAX_ENTRY_BYTES
                    ),
                })
            }
            Err(rejection) => {
                Err(ApiError::Body { status: rejection.status(), message: rejection.body_text() })
            }
        }
    }
}
