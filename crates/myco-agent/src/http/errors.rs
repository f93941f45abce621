//! Domain errors to HTTP answers: one place decides each status code, and
//! every error body is the [`ApiError`] JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myco_proto::api::ApiError;
use myco_spore::SporeError;

use crate::mesh::{CommandError, WriteError};
use crate::spores::{FetchError, SporeFlowError};

/// An error answer: a status code and a message that says what to do.
#[derive(Debug)]
pub struct HttpError {
    /// The status code.
    pub code: StatusCode,
    /// The message.
    pub message: String,
}

impl HttpError {
    /// An answer with this code and message.
    pub fn new(code: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            code,
            message: message.into(),
        }
    }

    /// 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 with this message.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.code,
            Json(ApiError {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// A refused write is the client's to fix; the others are this node's.
fn write_status(e: &WriteError) -> StatusCode {
    match e {
        WriteError::Refused(myco_core::WriteError::ValueTooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        WriteError::Refused(_) => StatusCode::BAD_REQUEST,
        WriteError::NotDurable(_) | WriteError::Busy | WriteError::Stopped => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl From<WriteError> for HttpError {
    fn from(e: WriteError) -> HttpError {
        HttpError::new(write_status(&e), e.to_string())
    }
}

impl From<CommandError> for HttpError {
    fn from(e: CommandError) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<SporeFlowError> for HttpError {
    fn from(e: SporeFlowError) -> HttpError {
        let code = match &e {
            SporeFlowError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SporeFlowError::Interrupted(_) | SporeFlowError::BadKey => StatusCode::BAD_REQUEST,
            SporeFlowError::NoTrustedPublisher => StatusCode::FORBIDDEN,
            SporeFlowError::Refused { source } => match source {
                SporeError::Untrusted { .. } => StatusCode::FORBIDDEN,
                SporeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                SporeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            SporeFlowError::NotFound(_) => StatusCode::NOT_FOUND,
            SporeFlowError::AnonFetchBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            SporeFlowError::Fetch(FetchError::BadDigest(_)) => StatusCode::BAD_REQUEST,
            SporeFlowError::Fetch(_) => StatusCode::BAD_GATEWAY,
            SporeFlowError::Write(w) => write_status(w),
            SporeFlowError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError::new(code, e.to_string())
    }
}

/// 405 for a path that exists, asked with a method it does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}: the Allow header lists the methods that are",
            uri.path()
        ),
    )
}

/// A query string that did not parse, answered as the API's JSON error
/// (axum's own rejection is plain text, which no client of the API reads).
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, HttpError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| HttpError::bad_request(format!("bad query string: {}", e.body_text())))
}
