//! The one error type of the HTTP API and its RFC 9457 `application/problem+json` rendering.
//!
//! `IntoResponse` only picks a status and a body that is safe to show; the full cause chain of an
//! infrastructure failure is logged once here and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commands::{CommandError, RejectionKind};
use domain::values::InvalidValue;
use platform::error_chain;
use serde::Serialize;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, unknown or missing fields, wrong types, unreadable headers.
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed value out of range, or a broken domain rule.
    #[error("{detail}")]
    Unprocessable { rule: &'static str, detail: String },
    /// No valid bearer token: missing, malformed, unknown, expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's role, or a rep's ownership, does not allow this command; `rule` says which.
    #[error("{detail}")]
    Forbidden { rule: Refusal, detail: String },
    #[error("more than {per_second} requests per second with this token; retry later")]
    TooManyRequests {
        retry_after_seconds: u32,
        per_second: u32,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A dependency (the database) cannot be reached; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours, not of the request. The detail is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Which rule refused a command with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The role never allows it (a viewer writing, a non-admin defining a pipeline).
    Role,
    /// A rep acting on a lead or deal that is not its own.
    Ownership,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "malformed-request"),
            ApiError::Unprocessable { rule, .. } => (StatusCode::UNPROCESSABLE_ENTITY, rule),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden {
                rule: Refusal::Role,
                ..
            } => (StatusCode::FORBIDDEN, "forbidden-role"),
            ApiError::Forbidden {
                rule: Refusal::Ownership,
                ..
            } => (StatusCode::FORBIDDEN, "forbidden-ownership"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, problem_type) = self.status_and_type();
        match &self {
            ApiError::Internal(_) => {
                tracing::error!(error = %error_chain(&self), status = status.as_u16(), "request failed")
            }
            _ => tracing::debug!(error = %self, status = status.as_u16(), "request refused"),
        }
        let mut response = problem_response(status, problem_type, self.to_string());
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"dealstream\""),
                );
            }
            ApiError::TooManyRequests {
                retry_after_seconds,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}

/// A problem+json response; also used by the fallbacks and the panic handler.
pub fn problem_response(status: StatusCode, problem_type: &str, detail: String) -> Response {
    let body = Problem {
        problem_type: format!("https://dealstream.dev/problems/{problem_type}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
    };
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

impl From<InvalidValue> for ApiError {
    fn from(invalid: InvalidValue) -> Self {
        ApiError::Unprocessable {
            rule: "invalid-value",
            detail: invalid.to_string(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(rejection) => match rejection.kind {
                RejectionKind::NotFound => ApiError::NotFound(rejection.detail),
                RejectionKind::BrokenRule => ApiError::Unprocessable {
                    rule: rejection.rule,
                    detail: rejection.detail,
                },
            },
            CommandError::Conflict { .. } => ApiError::Conflict(error.to_string()),
            CommandError::IdempotencyKeyReused => ApiError::Unprocessable {
                rule: "idempotency-key-reused",
                detail: "this Idempotency-Key was already used with a different request".to_owned(),
            },
            CommandError::Unavailable(_) => {
                tracing::warn!(error = %error_chain(&error), "command not handled");
                ApiError::Unavailable("the event store is unavailable, retry later".to_owned())
            }
            CommandError::Corrupt(_) | CommandError::Unexpected(_) => {
                ApiError::Internal(Box::new(error))
            }
        }
    }
}

impl From<eventstore::StoreError> for ApiError {
    fn from(error: eventstore::StoreError) -> Self {
        CommandError::from(error).into()
    }
}
