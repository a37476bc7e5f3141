//! The admin server every process runs on `DEALSTREAM_ADMIN_ADDR`: `/healthz` (the process is
//! up), `/readyz` (its dependencies answer; with what each service reports about itself: the
//! relay whether it is the active publisher and its lag, the projector and the workflow the
//! messages their durable consumers have not acknowledged yet) and `/metrics` (Prometheus text).
//!
//! One function for every process, so that probes, dashboards and alerts look the same whatever
//! runs behind the address. It is apart from the API's address so that an operator can expose it
//! to the monitoring network only, and so that a relay, a projector or a workflow, which serve no
//! HTTP otherwise, can be probed at all.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use platform::CancellationToken;
use serde_json::{Value, json};

/// A check that takes longer counts as failed, so a probe gets an answer instead of a hang.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP requests the API answered, by method, route and status.
pub const HTTP_REQUESTS_TOTAL: &str = "dealstream_http_requests_total";
/// How long the API took to answer, by method and route.
pub const HTTP_REQUEST_DURATION: &str = "dealstream_http_request_duration_seconds";

/// Bucket bounds of every `*_seconds` histogram: from a fast query to the API's request timeout
/// and a late timer.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// Installs the process's Prometheus recorder, with histograms rendered as histograms (the
/// exporter's default is a summary, which cannot be aggregated across instances).
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("could not install the metrics recorder")?;
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests the API answered, by method, route and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time the API took to answer a request, by method and route"
    );
    Ok(handle)
}

/// Records [`HTTP_REQUESTS_TOTAL`] and [`HTTP_REQUEST_DURATION`]; mounted with `route_layer`, so
/// the route label is the route's pattern (`/v1/opportunities/{id}`), never a raw path whose ids
/// would make a series per deal.
pub async fn track_http(
    route: MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = route.as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// What one check found: whether the process may take work, and what it reports.
pub struct Outcome {
    pub ready: bool,
    pub detail: Value,
}

impl Outcome {
    pub fn ok(detail: Value) -> Outcome {
        Outcome {
            ready: true,
            detail,
        }
    }

    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            ready: false,
            detail: Value::String(reason.into()),
        }
    }
}

pub type CheckFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One entry of `/readyz`.
#[derive(Clone)]
pub struct Check {
    pub name: &'static str,
    pub probe: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Check {
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Check {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }
}

#[derive(Clone)]
struct Admin {
    checks: Arc<Vec<Check>>,
    metrics: PrometheusHandle,
}

/// Binds `address` now (so a taken port stops the process at start) and serves until
/// `shutdown`.
pub async fn serve(
    address: SocketAddr,
    checks: Vec<Check>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("could not listen on DEALSTREAM_ADMIN_ADDR={address}"))?;
    tracing::info!(%address, "admin server listening");
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(Admin {
            checks: Arc::new(checks),
            metrics,
        });
    Ok(tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("admin server failed")
    }))
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "up" })).into_response()
}

async fn render_metrics(State(admin): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let outcomes = futures::future::join_all(admin.checks.iter().map(|check| async {
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, (check.probe)())
            .await
            .unwrap_or_else(|_| Outcome::failed(format!("no answer within {CHECK_TIMEOUT:?}")));
        (check.name, outcome)
    }))
    .await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|(_, outcome)| !outcome.ready)
        .map(|(name, outcome)| format!("{name}: {}", outcome.detail))
        .collect();
    let checks: serde_json::Map<String, Value> = outcomes
        .into_iter()
        .map(|(name, outcome)| (name.to_owned(), outcome.detail))
        .collect();
    if failures.is_empty() {
        axum::Json(json!({ "status": "ready", "checks": checks })).into_response()
    } else {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("not ready: {}", failures.join("; ")),
            Some(checks),
        )
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "no resource at {}; the admin server serves /healthz, /readyz and /metrics",
            uri.path()
        ),
        None,
    )
}

/// The same problem+json shape the API answers with.
fn problem(
    status: StatusCode,
    kind: &str,
    detail: String,
    checks: Option<serde_json::Map<String, Value>>,
) -> Response {
    let mut body = json!({
        "type": format!("https://dealstream.dev/problems/{kind}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(checks) = checks {
        body["checks"] = Value::Object(checks);
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
    }
    response
}
