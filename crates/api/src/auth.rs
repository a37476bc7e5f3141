//! Who is calling: bearer tokens, their roles, and the rules each role's commands must follow.
//!
//! A token is 256 random bits, shown once when it is created; the store keeps only its SHA-256
//! (`api_tokens.token_hash`). A slow password hash would protect guessable secrets; nobody can
//! guess 256 random bits, and a fast hash lets every request be checked with one index lookup.
//! Verified tokens are remembered for [`CACHE_TTL`], so a revocation reaches every API instance
//! within that time without a query per request.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use domain::values::parse_owner;
use eventstore::StoreError;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::command_bodies::Command;
use crate::problem::{ApiError, Refusal};

/// How long a verified token is trusted without asking the store again: the longest a revoked
/// token keeps working on an instance that has just seen it.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Every token starts with this, so that one found in a file or a log is recognisable.
const TOKEN_PREFIX: &str = "dst_";

const TOKEN_RANDOM_BYTES: usize = 32;

/// Length of a token: the prefix and 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + (TOKEN_RANDOM_BYTES * 4).div_ceil(3);

/// Beyond this many remembered tokens the cache starts over, so that it stays small.
const MAX_CACHED_TOKENS: usize = 10_000;

/// What a token lets its holder do. Every role reads everything; they differ in what they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads, never writes.
    Viewer,
    /// Captures and qualifies leads and sends commands to the leads and deals it owns.
    Rep,
    /// Sends any command to any lead or deal.
    Manager,
    /// A manager who also defines pipelines and may import.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Rep, Role::Manager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Rep => "rep",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role {text:?}: expected viewer, rep, manager or admin"))
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name events record as `api:<actor>`; for a rep, also the owner it may act for.
    pub actor: String,
    pub role: Role,
    /// The token presented; `None` when authentication is off.
    pub token_id: Option<Uuid>,
}

/// A token as `dealstream tokens list` shows it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: Uuid,
    pub actor: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: its id and the secret, which exists nowhere else.
pub struct NewToken {
    pub id: Uuid,
    pub token: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NewToken")
            .field("id", &self.id)
            .field("token", &"<secret>")
            .finish()
    }
}

/// Why a token could not be created or listed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid actor: {0}")]
    InvalidActor(String),
    #[error("the operating system gave no random bytes: {0}")]
    Random(String),
    #[error("a stored token is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a token for `actor` with `role`, valid for `expires_in` (forever when `None`), in the
/// schema `pool` connects to. The secret is returned once and stored only as its hash.
pub async fn create_token(
    pool: &Pool,
    actor: &str,
    role: Role,
    expires_in: Option<Duration>,
) -> Result<NewToken, TokenError> {
    parse_owner(actor).map_err(|invalid| TokenError::InvalidActor(invalid.to_string()))?;
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|error| TokenError::Random(error.to_string()))?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let id = Uuid::now_v7();
    let seconds = expires_in.map(|duration| duration.as_secs_f64());
    let client = pool.get().await.map_err(StoreError::from)?;
    client
        .execute(
            "insert into api_tokens (id, actor, role, token_hash, expires_at) \
             values ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            &[
                &id,
                &actor,
                &role.as_str(),
                &token_hash(&token).to_vec(),
                &seconds,
            ],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(NewToken { id, token })
}

/// Every token, oldest first.
pub async fn list_tokens(pool: &Pool) -> Result<Vec<TokenInfo>, TokenError> {
    let client = pool.get().await.map_err(StoreError::from)?;
    let rows = client
        .query(
            "select id, actor, role, created_at, expires_at, revoked_at from api_tokens \
             order by created_at, id",
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    rows.iter()
        .map(|row| {
            let role: String = row.get("role");
            Ok(TokenInfo {
                id: row.get("id"),
                actor: row.get("actor"),
                role: role.parse().map_err(TokenError::Corrupt)?,
                created_at: row.get("created_at"),
                expires_at: row.get("expires_at"),
                revoked_at: row.get("revoked_at"),
            })
        })
        .collect()
}

/// Revokes a token; false when no token has this id. Revoking twice keeps the first time.
pub async fn revoke_token(pool: &Pool, id: Uuid) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let found = client
        .execute(
            "update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1",
            &[&id],
        )
        .await?;
    Ok(found == 1)
}

fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// How the API learns who calls.
#[derive(Clone)]
pub enum Authentication {
    /// Every `/v1` request needs a bearer token from `api_tokens`.
    Tokens(TokenVerifier),
    /// Anyone may do anything, as the actor named in `X-Actor`: for local experiments only.
    Off,
}

/// Checks bearer tokens against the store, remembering the answers for [`CACHE_TTL`].
#[derive(Clone)]
pub struct TokenVerifier {
    pool: Pool,
    cache: Arc<Mutex<HashMap<TokenHash, (Instant, Stored)>>>,
}

type TokenHash = [u8; 32];

#[derive(Clone)]
struct Stored {
    identity: Identity,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

impl TokenVerifier {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            cache: Default::default(),
        }
    }

    async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let hash = token_hash(token);
        let cached = {
            let cache = self
                .cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cache
                .get(&hash)
                .filter(|(fetched, _)| fetched.elapsed() < CACHE_TTL)
                .map(|(_, stored)| stored.clone())
        };
        let stored = match cached {
            Some(stored) => stored,
            None => {
                let stored = self.fetch(&hash).await?.ok_or_else(|| {
                    ApiError::Unauthorized("the bearer token is not known".to_owned())
                })?;
                let mut cache = self
                    .cache
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if cache.len() >= MAX_CACHED_TOKENS {
                    cache.clear();
                }
                cache.insert(hash, (Instant::now(), stored.clone()));
                stored
            }
        };
        if stored.revoked {
            return Err(ApiError::Unauthorized(
                "the bearer token was revoked".to_owned(),
            ));
        }
        if stored
            .expires_at
            .is_some_and(|expires| expires <= Utc::now())
        {
            return Err(ApiError::Unauthorized(
                "the bearer token has expired".to_owned(),
            ));
        }
        Ok(stored.identity)
    }

    async fn fetch(&self, hash: &TokenHash) -> Result<Option<Stored>, ApiError> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let row = client
            .query_opt(
                "select id, actor, role, expires_at, revoked_at is not null as revoked \
                 from api_tokens where token_hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(StoreError::from)?;
        row.map(|row| {
            let role: String = row.get("role");
            Ok(Stored {
                identity: Identity {
                    actor: row.get("actor"),
                    role: role
                        .parse()
                        .map_err(|error: String| ApiError::Internal(error.into()))?,
                    token_id: Some(row.get("id")),
                },
                expires_at: row.get("expires_at"),
                revoked: row.get("revoked"),
            })
        })
        .transpose()
    }
}

/// The token of `Authorization: Bearer <token>`, or why the header is not one. Only the exact
/// form a token is issued in is looked up, so that nothing else reaches the store.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("this request needs an Authorization: Bearer token".to_owned())
    })?;
    let malformed = || {
        ApiError::Unauthorized(
            "the Authorization header must be \"Bearer \" followed by a dealstream token"
                .to_owned(),
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let well_formed = token.len() == TOKEN_CHARS
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if well_formed {
        Ok(token)
    } else {
        Err(malformed())
    }
}

/// The caller when authentication is off: the `X-Actor` header, anonymous when absent.
fn declared_actor(headers: &HeaderMap) -> Result<Identity, ApiError> {
    let actor = match headers.get("x-actor").map(|value| value.to_str()) {
        None => "anonymous".to_owned(),
        Some(Err(_)) => {
            return Err(ApiError::BadRequest(
                "header x-actor is not visible ASCII".to_owned(),
            ));
        }
        Some(Ok(name)) => match name.trim() {
            "" => "anonymous".to_owned(),
            name if name.len() <= 200 => name.to_owned(),
            _ => {
                return Err(ApiError::BadRequest(
                    "header X-Actor is longer than 200 bytes".to_owned(),
                ));
            }
        },
    };
    Ok(Identity {
        actor,
        role: Role::Admin,
        token_id: None,
    })
}

/// Puts the caller's [`Identity`] into every `/v1` request, refuses one without a valid token
/// (401), and refuses writes the caller's role never allows (403) before the body is read.
/// Everything outside `/v1` (health, readiness, metrics, the OpenAPI document, the web page)
/// is public.
pub async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let identity = match &app.authentication {
        Authentication::Off => declared_actor(request.headers()),
        Authentication::Tokens(verifier) => match bearer_token(request.headers()) {
            // X-Actor is ignored, yet held to the form the API document gives it either way,
            // so that what the document refuses is refused whether tokens are on or off.
            Ok(token) => match declared_actor(request.headers()) {
                Ok(_) => verifier.verify(token).await,
                Err(refusal) => Err(refusal),
            },
            Err(refusal) => Err(refusal),
        },
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = check_role(&identity, request.method(), request.uri().path()) {
        return refusal.into_response();
    }
    if let Some(limiter) = &app.rate_limit {
        if let Err(refusal) = limiter.check(&identity) {
            return refusal.into_response();
        }
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The rules that depend on the role alone: a viewer sends no command, and only an admin
/// defines pipelines.
fn check_role(identity: &Identity, method: &Method, path: &str) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if identity.role == Role::Viewer {
        return Err(ApiError::Forbidden {
            rule: Refusal::Role,
            detail: format!(
                "refused by the role rule: a viewer reads only; {method} {path} needs role rep, \
                 manager or admin"
            ),
        });
    }
    if path.starts_with("/v1/pipelines/") && identity.role < Role::Admin {
        return Err(ApiError::Forbidden {
            rule: Refusal::Role,
            detail: format!(
                "refused by the role rule: defining pipelines needs role admin; this token's \
                 role is {}",
                identity.role
            ),
        });
    }
    Ok(())
}

/// The rules that depend on what a rep's command touches: a lead that is its own or nobody's
/// yet, a deal that is its own, and a new deal owned by itself. A qualification that names no
/// owner gives the deal to the rep. A target that does not exist is left to the command, which
/// answers 404.
pub async fn check_ownership(
    app: &AppState,
    identity: &Identity,
    command: &mut Command,
) -> Result<(), ApiError> {
    if identity.role != Role::Rep {
        return Ok(());
    }
    let actor = identity.actor.as_str();
    let not_own_deal = |what: String| ApiError::Forbidden {
        rule: Refusal::Ownership,
        detail: format!(
            "refused by the ownership rule: a rep sends commands only to its own leads and \
             deals; {what}"
        ),
    };
    match command {
        Command::CaptureLead { .. } => Ok(()),
        Command::QualifyLead { id, draft, .. } => {
            check_lead_owner(app, *id, actor).await?;
            match &draft.owner {
                Some(owner) if owner.as_str() != actor => Err(not_own_deal(format!(
                    "the new deal would be owned by {:?}, not by {actor:?}",
                    owner.as_str()
                ))),
                Some(_) => Ok(()),
                None => {
                    draft.owner = Some(parse_owner(actor)?);
                    Ok(())
                }
            }
        }
        Command::DisqualifyLead { id, .. } => check_lead_owner(app, *id, actor).await,
        Command::CreateOpportunity { opportunity, .. } => {
            if opportunity.owner.as_str() == actor {
                Ok(())
            } else {
                Err(not_own_deal(format!(
                    "the new deal would be owned by {:?}, not by {actor:?}",
                    opportunity.owner.as_str()
                )))
            }
        }
        Command::Opportunity { id, .. } => {
            let loaded = app.handler.load_opportunity(*id).await?;
            match loaded.state {
                Some(deal) if deal.owner.as_str() != actor => Err(not_own_deal(format!(
                    "deal {} is owned by {:?}",
                    id.0,
                    deal.owner.as_str()
                ))),
                _ => Ok(()),
            }
        }
        Command::DefinePipeline { .. } => Err(ApiError::Forbidden {
            rule: Refusal::Role,
            detail: "refused by the role rule: defining pipelines needs role admin; this token's \
                     role is rep"
                .to_owned(),
        }),
    }
}

async fn check_lead_owner(
    app: &AppState,
    id: domain::values::LeadId,
    actor: &str,
) -> Result<(), ApiError> {
    let loaded = app.handler.load_lead(id).await?;
    match loaded.state.and_then(|lead| lead.owner) {
        Some(owner) if owner.as_str() != actor => Err(ApiError::Forbidden {
            rule: Refusal::Ownership,
            detail: format!(
                "refused by the ownership rule: a rep sends commands only to its own leads and \
                 deals; lead {} is owned by {:?}",
                id.0,
                owner.as_str()
            ),
        }),
        _ => Ok(()),
    }
}

/// Requests per second each token may send, with a burst of one second's worth.
#[derive(Clone)]
pub struct RateLimit {
    per_second: u32,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

/// A token bucket: `tokens` left as of `updated`.
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            buckets: Default::default(),
        }
    }

    fn check(&self, identity: &Identity) -> Result<(), ApiError> {
        self.check_at(identity, Instant::now())
    }

    /// Takes one request from the caller's bucket at `now`, or says how long until one is
    /// there.
    fn check_at(&self, identity: &Identity, now: Instant) -> Result<(), ApiError> {
        let key = identity
            .token_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| format!("actor:{}", identity.actor));
        let rate = f64::from(self.per_second);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_CACHED_TOKENS && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < Duration::from_secs(1));
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(ApiError::TooManyRequests {
                retry_after_seconds: wait.ceil().max(1.0) as u32,
                per_second: self.per_second,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_bytes(value).expect("a header value"),
        );
        headers
    }

    fn a_token() -> String {
        format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode([7u8; TOKEN_RANDOM_BYTES])
        )
    }

    #[test]
    fn a_token_in_the_issued_form_is_taken() {
        let token = a_token();
        assert_eq!(token.len(), TOKEN_CHARS);
        let headers = headers(format!("Bearer {token}").as_bytes());
        assert_eq!(bearer_token(&headers).ok(), Some(token.as_str()));
    }

    #[test]
    fn anything_else_is_refused_as_unauthorized() {
        let token = a_token();
        let cases = [
            String::new(),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            format!("Bearer  {token}"),
            format!("Bearer {token} "),
            format!("Basic {token}"),
            format!("Bearer {token}{token}"),
            format!("Bearer {}", &token[..TOKEN_CHARS - 1]),
            format!("Bearer {}=", &token[..TOKEN_CHARS - 1]),
            format!("Bearer {}", token.replace("dst_", "xyz_")),
            format!("Bearer {}", "a".repeat(100_000)),
        ];
        for case in cases {
            let headers = headers(case.as_bytes());
            let refused = bearer_token(&headers);
            assert!(
                matches!(refused, Err(ApiError::Unauthorized(_))),
                "{case:.60?} was {refused:?}"
            );
        }
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            bearer_token(&headers(b"Bearer \xff\xfe")),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_rate_limit_refuses_the_request_past_one_seconds_worth() {
        let limit = RateLimit::new(3);
        let identity = Identity {
            actor: "ada".to_owned(),
            role: Role::Rep,
            token_id: Some(Uuid::now_v7()),
        };
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limit.check_at(&identity, start).is_ok());
        }
        match limit.check_at(&identity, start) {
            Err(ApiError::TooManyRequests {
                retry_after_seconds,
                ..
            }) => assert_eq!(retry_after_seconds, 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let other = Identity {
            token_id: Some(Uuid::now_v7()),
            ..identity.clone()
        };
        assert!(
            limit.check_at(&other, start).is_ok(),
            "buckets are per token"
        );
        let later = start + Duration::from_millis(400);
        assert!(
            limit.check_at(&identity, later).is_ok(),
            "a third of a second refills one"
        );
    }
}
