//! Extractors whose rejections are JSON errors like every other failure.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Path parameters.
pub(crate) struct Ids<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Ids<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Ids(t))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON body; the content type is not checked, so `curl -d` works as is.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
    }
}

/// Serializes `body` as a JSON response with `status`.
pub(crate) fn json<T: Serialize>(status: axum::http::StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialization failed: {e}"),
        )
        .into_response(),
    }
}

/// An empty response for a 2xx `code`, the JSON error for anything else.
pub(crate) fn status_only(code: u16, error_text: &str) -> Response {
    match axum::http::StatusCode::from_u16(code) {
        Ok(status) if status.is_success() => status.into_response(),
        Ok(status) => ApiError::new(status, error_text).into_response(),
        Err(_) => ApiError::from_code(500).into_response(),
    }
}
