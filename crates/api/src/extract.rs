//! Request extractors that turn every malformed input into a problem response instead of axum's
//! plain-text rejections: command bodies with their headers, path ids and query strings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use commands::{CommandContext, CommandError};
use domain::values::{LeadId, OpportunityId, PipelineSlug};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Identity;
use crate::problem::ApiError;

/// Bodies above this size are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Idempotency keys are opaque to us but bounded, so that a key cannot be used to store data.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// Namespace for turning a client's `Idempotency-Key` into a command id.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x1c1f_5f5e_8a8b_4b3e_9d0c_4d2e_7f6a_5b01);

/// A command request: its parsed body and the context built from its headers. While it lives, its
/// idempotency key is registered as in flight, so that a concurrent repeat is told to wait.
pub struct CommandRequest<T> {
    pub identity: Identity,
    pub context: CommandContext,
    pub body: T,
    _in_flight: Option<InFlight>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CommandRequest<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // The authentication layer puts it into every /v1 request; the actor comes from it,
        // never from a header the client chose.
        let identity =
            parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
                ApiError::Internal("a command request without an identity".into())
            })?;
        let mut context = CommandContext::new(format!("api:{}", identity.actor));
        context.token_id = identity.token_id;
        context.expected_version = if_match(&parts.headers)?;
        let correlation_id = header_uuid(&parts.headers, "x-correlation-id")?;
        let key = idempotency_key(&parts.headers)?;
        // If-Match comes before anything else, the body included, so a stale write is refused before it costs anything. A repeat of
        // an idempotent request is the exception: it must get its first answer even though the
        // stream has moved on since, so the command handler checks it after that lookup.
        if let (Some(expected), None) = (context.expected_version, &key) {
            check_if_match(state, parts.uri.path(), expected).await?;
        }
        let too_large = ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        };
        let declared_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large);
        }
        let bytes = to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large)?;
        let json: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("malformed JSON: {error}")))?
        };
        if !json.is_object() {
            return Err(not_an_object());
        }
        let mut in_flight = None;
        if let Some(key) = key {
            // Keys are chosen by clients, so two clients may well pick the same one; scoping it
            // by actor keeps one client's key from answering another's request.
            let scoped = format!("{}\n{key}", context.actor);
            context.command_id = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, scoped.as_bytes());
            context.correlation_id = context.command_id;
            context.causation_id = context.command_id;
            context.repeatable = true;
            // `serde_json::Value` keeps object members sorted, so the same JSON with different
            // spacing or member order has the same fingerprint.
            let canonical = format!("{} {}\n{json}", parts.method, parts.uri.path());
            context.fingerprint = Some(Sha256::digest(canonical.as_bytes()).to_vec());
            in_flight = Some(InFlight::register(&state.in_flight, context.command_id)?);
        }
        if let Some(correlation_id) = correlation_id {
            context.correlation_id = correlation_id;
        }
        let body = parse_body(json)?;
        Ok(CommandRequest {
            identity,
            context,
            body,
            _in_flight: in_flight,
        })
    }
}

/// Reads a command body from its JSON: 400 for anything but an object of the body's fields
/// (unknown fields, wrong types, missing fields), with the path of the offending member. The HTTP
/// extractor and `dealstream import` both read bodies here, so they accept the same documents.
pub fn parse_body<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, ApiError> {
    if !json.is_object() {
        return Err(not_an_object());
    }
    serde_path_to_error::deserialize(json).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            ApiError::BadRequest(inner.to_string())
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// Every command body is an object. Serde would otherwise also read a struct from an array of
/// its fields in order, so `["Ada", null, null, null, null]` would capture a lead.
fn not_an_object() -> ApiError {
    ApiError::BadRequest("invalid type: the request body must be a JSON object".to_owned())
}

/// The stream a command path addresses: `/v1/leads/{id}/...`, `/v1/opportunities/{id}/...` or
/// `/v1/pipelines/{slug}`. Paths that name no valid id are left to the route, which answers 404.
fn stream_of_path(path: &str) -> Option<String> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some("v1"), Some(collection), Some(id)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    match collection {
        "leads" => Uuid::parse_str(id).ok().map(|id| LeadId(id).stream_id()),
        "opportunities" => Uuid::parse_str(id)
            .ok()
            .map(|id| OpportunityId(id).stream_id()),
        "pipelines" => PipelineSlug::parse(id).ok().map(|slug| slug.stream_id()),
        _ => None,
    }
}

async fn check_if_match(state: &AppState, path: &str, expected: i64) -> Result<(), ApiError> {
    let Some(stream_id) = stream_of_path(path) else {
        return Ok(());
    };
    let actual = state.handler.store().stream_version(&stream_id).await?;
    if actual == expected {
        return Ok(());
    }
    Err(CommandError::Conflict {
        stream_id,
        expected: Some(expected),
        actual,
    }
    .into())
}

/// Command ids currently being handled by this process.
pub type InFlightSet = Arc<Mutex<HashSet<Uuid>>>;

struct InFlight {
    set: InFlightSet,
    command_id: Uuid,
}

impl InFlight {
    fn register(set: &InFlightSet, command_id: Uuid) -> Result<Self, ApiError> {
        let mut running = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !running.insert(command_id) {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed".to_owned(),
            ));
        }
        Ok(InFlight {
            set: set.clone(),
            command_id,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut running = self
            .set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        running.remove(&self.command_id);
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| ApiError::BadRequest(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

fn header_uuid(headers: &HeaderMap, name: &str) -> Result<Option<Uuid>, ApiError> {
    header_text(headers, name)?
        .map(|text| {
            Uuid::parse_str(text)
                .map_err(|_| ApiError::BadRequest(format!("header {name} is not a UUID")))
        })
        .transpose()
}

/// Digits of a stream version in `If-Match`: 18 always fit an `i64`, and no stream comes near.
const MAX_VERSION_DIGITS: usize = 18;

/// `If-Match: 3`, also accepted as an entity tag: `"3"` or `W/"3"`. Exactly the
/// `IfMatch` pattern of `openapi.json`, so that what the document allows is never a 400.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(text) = header_text(headers, "if-match")? else {
        return Ok(None);
    };
    let digits = text
        .strip_prefix("W/")
        .unwrap_or(text)
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .or_else(|| Some(text).filter(|bare| !bare.contains('"')))
        .unwrap_or_default();
    let is_version = (1..=MAX_VERSION_DIGITS).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit());
    is_version
        .then(|| digits.parse::<i64>().ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "header If-Match must be a stream version (up to {MAX_VERSION_DIGITS} digits, \
                 optionally quoted as \"3\" or W/\"3\"), got {text:?}"
            ))
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match header_text(headers, "idempotency-key")? {
        None => Ok(None),
        Some(key) if !key.is_empty() && key.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS => {
            Ok(Some(key.to_owned()))
        }
        Some(_) => Err(ApiError::BadRequest(format!(
            "header Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        ))),
    }
}

/// Query strings, with the problem response of a bad request when they do not parse.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL cannot hold NUL in text, so a filter carrying one could only fail later,
        // as a server error; it is a malformed request.
        if parts
            .uri
            .query()
            .is_some_and(|query| query.to_ascii_lowercase().contains("%00"))
        {
            return Err(ApiError::BadRequest(
                "query parameters must not contain NUL characters".to_owned(),
            ));
        }
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// Parses the UUID in a path. Something that is not a UUID names no entity, hence 404.
pub fn path_uuid(kind: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(format!("{kind} {text:?} not found")))
}
