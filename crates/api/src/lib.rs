//! The HTTP API (docs/api.md and the OpenAPI document): command endpoints that go through the command handler, query
//! endpoints over the aggregates and the event store, and queries over the read models that the
//! `projector` crate keeps (`read_routes`).
//!
//! This is the only crate that knows HTTP. It owns parsing and validation of requests into domain
//! values, the mapping of outcomes to status codes (`problem`), idempotency keys and `If-Match`
//! (`extract`). It never writes to the store itself. Start with [`router`]; the public contract is
//! `openapi.json` beside this crate, served at `/openapi.json`.

mod analytics_routes;
pub mod auth;
mod command_bodies;
mod command_routes;
mod extract;
mod problem;
mod query_routes;
mod read_routes;
mod time_travel;
mod web;

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

pub use command_bodies::{Command, Fresh, imported};
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
    /// A request still running after this answers 503 with `Retry-After`
    /// (`DEALSTREAM_HTTP_REQUEST_TIMEOUT`, see `platform::Settings`).
    request_timeout: std::time::Duration,
    /// `k` of the historical win rates: the rules file's `[forecast] prior_weight`.
    prior_weight: u32,
    /// Bearer tokens, unless turned off for local experiments.
    authentication: auth::Authentication,
    /// Requests per second per token (`DEALSTREAM_RATE_LIMIT`); none when unset.
    rate_limit: Option<auth::RateLimit>,
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
        let authentication =
            auth::Authentication::Tokens(auth::TokenVerifier::new(handler.store().pool().clone()));
        Self {
            handler,
            default_owner,
            authentication,
            rate_limit: None,
            in_flight: Default::default(),
            readiness: vec![database],
            read_models_migrated: Default::default(),
            read_your_writes_wait: read_routes::READ_YOUR_WRITES_WAIT,
            metrics: None,
            request_timeout: platform::DEFAULT_HTTP_REQUEST_TIMEOUT,
            prior_weight: projector::analytics::DEFAULT_PRIOR_WEIGHT,
        }
    }

    /// Lets anyone do anything as the actor named in `X-Actor`, for local experiments;
    /// `/readyz` says so.
    pub fn with_authentication_off(mut self) -> Self {
        self.authentication = auth::Authentication::Off;
        self
    }

    /// At most `per_second` requests per second per token; more are answered 429.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(auth::RateLimit::new(per_second));
        self
    }

    /// The prior weight of historical win rates, instead of the default 5.
    pub fn with_prior_weight(mut self, prior_weight: u32) -> Self {
        self.prior_weight = prior_weight;
        self
    }

    /// How win rates are computed when a query does not say otherwise.
    fn calibration(&self) -> projector::analytics::Calibration {
        projector::analytics::Calibration {
            prior_weight: self.prior_weight,
            ..Default::default()
        }
    }

    /// Bounds every request's time instead of the default.
    pub fn with_request_timeout(mut self, limit: std::time::Duration) -> Self {
        self.request_timeout = limit;
        self
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

/// Declares the routes once: [`routes`] lists them for the OpenAPI test and `routed` mounts them.
/// Each line is `method "path" => handler`, with the method in lower case as OpenAPI writes it.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:expr,)*) => {
        /// Every `(method, path)` the router serves, the method in lower case and the path in the
        /// router's (and OpenAPI's) `{param}` syntax. `openapi.json` must describe exactly these.
        pub fn routes() -> &'static [(&'static str, &'static str)] {
            &[$((stringify!($method), $path)),*]
        }

        /// Mounts the table; a path listed again with another method joins the earlier one.
        fn routed(router: Router<AppState>) -> Router<AppState> {
            router$(.route($path, $method($handler)))*
        }
    };
}

route_table! {
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
    get "/openapi.json" => openapi,
    post "/v1/leads" => command_routes::capture_lead,
    get "/v1/leads/{id}" => query_routes::lead,
    post "/v1/leads/{id}/qualify" => command_routes::qualify_lead,
    post "/v1/leads/{id}/disqualify" => command_routes::disqualify_lead,
    get "/v1/opportunities" => read_routes::opportunities,
    post "/v1/opportunities" => command_routes::create_opportunity,
    get "/v1/opportunities/{id}" => read_routes::opportunity,
    get "/v1/opportunities/{id}/history" => query_routes::history,
    post "/v1/opportunities/{id}/stage" => command_routes::change_stage,
    post "/v1/opportunities/{id}/probability" => command_routes::override_probability,
    post "/v1/opportunities/{id}/amount" => command_routes::change_amount,
    post "/v1/opportunities/{id}/close-date" => command_routes::change_close_date,
    post "/v1/opportunities/{id}/owner" => command_routes::change_owner,
    post "/v1/opportunities/{id}/activities" => command_routes::log_activity,
    post "/v1/opportunities/{id}/close" => command_routes::close,
    post "/v1/opportunities/{id}/reopen" => command_routes::reopen,
    post "/v1/opportunities/{id}/follow-ups/{follow_up_id}/complete" => command_routes::complete_follow_up,
    put "/v1/pipelines/{slug}" => command_routes::define_pipeline,
    get "/v1/pipelines/{slug}/board" => read_routes::board,
    get "/v1/forecast" => read_routes::forecast,
    get "/v1/forecast/trend" => time_travel::trend,
    get "/v1/follow-ups" => read_routes::follow_ups,
    get "/v1/events" => query_routes::feed,
    get "/v1/analytics/win-rates" => analytics_routes::win_rates,
    get "/v1/analytics/forecast-accuracy" => analytics_routes::forecast_accuracy,
    get "/v1/analytics/slippage" => analytics_routes::slippage,
    get "/v1/analytics/funnel" => analytics_routes::funnel,
    get "/v1/work-queue" => analytics_routes::work_queue,
}

pub fn router(state: AppState) -> Router {
    let limit = state.request_timeout;
    routed(Router::new())
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(limit, time_limit))
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
    serve_wrapped(listener, state, |router| router, shutdown).await
}

/// As [`serve`], with `wrap` applied to the router first: the binary adds its HTTP request
/// metrics there, with `route_layer` so that they see each route's pattern.
pub async fn serve_wrapped(
    listener: TcpListener,
    state: AppState,
    wrap: impl FnOnce(Router) -> Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, request_timeout = ?state.request_timeout, "api listening");
    if matches!(state.authentication, auth::Authentication::Off) {
        tracing::warn!(
            "authentication is OFF (DEALSTREAM_AUTH=off): anyone who reaches this port may send \
             any command as any actor; never run it like this where others can connect"
        );
    }
    axum::serve(listener, wrap(router(state)))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Answers 503 with `Retry-After` when a request outlives `limit`, so that a stuck dependency (a
/// frozen writer holding the append lock, a database that stopped answering) never leaves a
/// client hanging. Dropping the handler does not undo a command the store already accepted:
/// a retry with the same `Idempotency-Key` gets its answer.
async fn time_limit(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, ?limit, "request timed out");
            problem_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {limit:?}; retry later"),
            )
        }
    }
}

/// The OpenAPI 3.1 document of this API, kept by hand beside the code; the `openapi` integration
/// test holds it to [`routes`], the request body structs and the answers the server gives.
const OPENAPI_DOCUMENT: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_DOCUMENT,
    )
        .into_response()
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
    let authentication = match app.authentication {
        auth::Authentication::Tokens(_) => "on",
        auth::Authentication::Off => "off",
    };
    if failures.is_empty() {
        axum::Json(json!({ "status": "ready", "checks": checks, "authentication": authentication }))
            .into_response()
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
