//! A request never hangs: one held up by a stuck dependency answers 503 with `Retry-After`
//! (issue 9, defect 5).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::TestApp;

/// A writer frozen in the middle of an append holds the store's append lock; a command behind it
/// must get a 503 with `Retry-After` within the request timeout, and go through once the lock
/// is released.
#[tokio::test]
async fn a_command_behind_a_frozen_writer_answers_503_with_retry_after() {
    let limit = Duration::from_millis(300);
    let app = TestApp::spawn_with(|state| state.with_request_timeout(limit)).await;
    app.capture_lead().await;

    let mut frozen = app.store.pool().get().await.expect("a connection");
    let writer = frozen.transaction().await.expect("a transaction");
    writer
        .batch_execute("select pg_advisory_xact_lock(hashtext(current_schema() || '.append'))")
        .await
        .expect("taking the append lock");

    let started = Instant::now();
    let reply = app
        .call(reqwest::Method::POST, "/v1/leads")
        .json(&json!({"name": "Grace Hopper"}))
        .allow_unavailable()
        .send()
        .await;
    let waited = started.elapsed();
    reply.assert_problem(503, &["took longer than", "retry later"]);
    assert_eq!(
        reply
            .headers
            .get("retry-after")
            .map(|value| value.as_bytes()),
        Some(&b"1"[..]),
        "Retry-After"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");

    writer.rollback().await.expect("releasing the lock");
    app.post("/v1/leads", &json!({"name": "Grace Hopper"}))
        .await
        .command_answer(201);
}
