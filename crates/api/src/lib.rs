//! The HTTP API of SPEC section 6: command endpoints that go through the command handler, query
//! endpoints over the aggregates and the event store, and queries over the read models that the
//! `projector` crate keeps (`read_routes`).
//!
//! This is the only crate that knows HTTP. It owns parsing and validation of requests into domain
//! values, the mapping of outcomes to status codes (`problem`), idempotency keys and `If-Match`
//! (`extract`). It never writes to the store itself. Start with [`router`].

mod command_routes;
mod extract;
mod problem;
mod query_routes;
mod read_routes;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use commands::CommandHandler;
use domain::values::Owner;
use platform::CancellationToken;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use extract::MAX_BODY_BYTES;
pub use problem::ApiError;

use problem::problem_response;

/// A dependency `/readyz` checks: a name and a probe that fails with a reason.
#[derive(Clone)]
pub struct ReadinessCheck {
    pub name: &'static str,
    pub probe: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dependency that does not answer within this time counts as down, so that a load balancer's
/// probe gets an answer instead of a hung connection.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    handler: CommandHandler,
    /// Owner of a deal from an unrouted lead when the request names none.
    default_owner: Owner,
    in_flight: extract::InFlightSet,
    readiness: Vec<ReadinessCheck>,
    /// Set once the read-model tables are known to exist in this process.
    read_models_migrated: Arc<tokio::sync::OnceCell<()>>,
    /// How long a query with `min_position` waits for its read model.
    read_your_writes_wait: std::time::Duration,
    /// Renders the process's metrics in the Prometheus text format; the binary owns the recorder.
    metrics: Option<MetricsRenderer>,
}

pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

impl AppState {
    pub fn new(handler: CommandHandler, default_owner: Owner) -> Self {
        let database = {
            let pool = handler.store().pool().clone();
            ReadinessCheck {
                name: "database",
                probe: Arc::new(move || {
                    let pool = pool.clone();
                    Box::pin(async move {
                        let client = pool.get().await.map_err(|error| error.to_string())?;
                        client
                            .simple_query("SELECT 1")
                            .await
                            .map(drop)
                            .map_err(|error| error.to_string())
                    })
                }),
            }
        };
        Self {
            handler,
            default_owner,
            in_flight: Default::default(),
            readiness: vec![database],
            read_models_migrated: Default::default(),
            read_your_writes_wait: read_routes::READ_YOUR_WRITES_WAIT,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, render: MetricsRenderer) -> Self {
        self.metrics = Some(render);
        self
    }

    /// How long a query with `min_position` waits before answering 503 (5 s by default).
    pub fn with_read_your_writes_wait(mut self, wait: std::time::Duration) -> Self {
        self.read_your_writes_wait = wait;
        self
    }

    pub fn with_readiness_check(mut self, check: ReadinessCheck) -> Self {
        self.readiness.push(check);
        self
    }
}

pub fn router(state: AppState) -> Router {
    use command_routes as c;
    use query_routes as q;
    use read_routes as r;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/leads", post(c::capture_lead))
        .route("/v1/leads/{id}", get(q::lead))
        .route("/v1/leads/{id}/qualify", post(c::qualify_lead))
        .route("/v1/leads/{id}/disqualify", post(c::disqualify_lead))
        .route(
            "/v1/opportunities",
            post(c::create_opportunity).get(r::opportunities),
        )
        .route("/v1/opportunities/{id}", get(r::opportunity))
        .route("/v1/opportunities/{id}/history", get(q::history))
        .route("/v1/opportunities/{id}/stage", post(c::change_stage))
        .route(
            "/v1/opportunities/{id}/probability",
            post(c::override_probability),
        )
        .route("/v1/opportunities/{id}/amount", post(c::change_amount))
        .route(
            "/v1/opportunities/{id}/close-date",
            post(c::change_close_date),
        )
        .route("/v1/opportunities/{id}/owner", post(c::change_owner))
        .route("/v1/opportunities/{id}/activities", post(c::log_activity))
        .route("/v1/opportunities/{id}/close", post(c::close))
        .route("/v1/opportunities/{id}/reopen", post(c::reopen))
        .route(
            "/v1/opportunities/{id}/follow-ups/{follow_up_id}/complete",
            post(c::complete_follow_up),
        )
        .route("/v1/pipelines/{slug}", put(c::define_pipeline))
        .route("/v1/pipelines/{slug}/board", get(r::board))
        .route("/v1/forecast", get(r::forecast))
        .route("/v1/follow-ups", get(r::follow_ups))
        .route("/v1/events", get(q::feed))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
            )
        }))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, "api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "up" }))
}

async fn metrics(State(app): State<AppState>) -> Response {
    let body = app
        .metrics
        .as_ref()
        .map(|render| render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut failures = Vec::new();
    for check in &app.readiness {
        let outcome = tokio::time::timeout(READINESS_TIMEOUT, (check.probe)())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {READINESS_TIMEOUT:?}")));
        match outcome {
            Ok(()) => {
                checks.insert(check.name.to_owned(), json!("ok"));
            }
            Err(reason) => {
                checks.insert(check.name.to_owned(), json!(reason));
                failures.push(format!("{}: {reason}", check.name));
            }
        }
    }
    if failures.is_empty() {
        axum::Json(json!({ "status": "ready", "checks": checks })).into_response()
    } else {
        problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("not ready: {}", failures.join("; ")),
        )
    }
}

async fn not_found(uri: Uri) -> Response {
    ApiError::NotFound(format!("no resource at {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path())).into_response()
}
