//! Requests that `openapi.json` allows are never a 400, and requests it refuses are never
//! accepted: one test per disagreement schemathesis found between the document and the product.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestApp;

/// A position beyond the last committed one can never be reached, so it is a 422
/// at once rather than a 503 after the read-your-writes wait.
#[tokio::test]
async fn min_position_beyond_the_store_is_422_at_once() {
    let app = TestApp::spawn().await;
    let head = app.store.head_position().await.expect("the head position");
    let deal = app.create_deal().await;
    for path in [
        format!("/v1/opportunities?min_position={}", head + 1_000),
        format!("/v1/opportunities/{deal}?min_position={}", i64::MAX),
        format!("/v1/pipelines/default/board?min_position={}", head + 2),
        format!("/v1/forecast?min_position={}", head + 2),
        format!("/v1/follow-ups?min_position={}", head + 2),
    ] {
        let started = Instant::now();
        app.get(&path)
            .await
            .assert_problem(422, &["min_position", "beyond the last committed position"]);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} waited {:?} before refusing",
            started.elapsed()
        );
    }
}

/// The document's `IfMatch` pattern: a version of 1 to 18 digits, bare, quoted or weakly quoted.
#[tokio::test]
async fn if_match_is_read_exactly_as_documented() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let path = format!("/v1/opportunities/{deal}/owner");
    let eighteen = "9".repeat(18);
    for allowed in [
        eighteen.clone(),
        format!("\"{eighteen}\""),
        format!("W/\"{eighteen}\""),
        "007".to_owned(),
    ] {
        app.call(Method::POST, &path)
            .json(&json!({"owner": "bruno"}))
            .header("if-match", &allowed)
            .send()
            .await
            .assert_problem(409, &["expected"]);
    }
    for refused in [
        "9".repeat(19),
        "\"5".to_owned(),
        "5\"".to_owned(),
        "W/5".to_owned(),
        "W/\"5".to_owned(),
        "\"\"".to_owned(),
    ] {
        app.call(Method::POST, &path)
            .json(&json!({"owner": "bruno"}))
            .header("if-match", &refused)
            .send()
            .await
            .assert_problem(400, &["If-Match"]);
    }
    assert_eq!(app.deal_version(&deal).await, 1);
}

/// `stage` is a stage name (a slug of at most 64 characters): anything else is refused, not
/// silently matched against nothing.
#[tokio::test]
async fn a_stage_filter_that_is_no_stage_name_is_refused() {
    let app = TestApp::spawn().await;
    for stage in ["0".repeat(65), "Quoted".to_owned(), "-new".to_owned()] {
        app.get(&format!("/v1/opportunities?stage={stage}"))
            .await
            .assert_problem(422, &["stage"]);
    }
    let reply = app
        .get(&format!("/v1/opportunities?stage={}", "0".repeat(64)))
        .await;
    reply.assert_status(200);
    let reply = app.get("/v1/opportunities?stage=").await;
    reply.assert_status(200);
}

/// A cursor of the documented shape is a position in the list, whether or not this server
/// handed it out; another shape is a 400.
#[tokio::test]
async fn cursors_of_the_documented_shape_are_accepted() {
    let app = TestApp::spawn().await;
    app.create_deal().await;
    let cursor = format!("o1{}", uuid::Uuid::nil().simple());
    app.get(&format!("/v1/opportunities?cursor={cursor}"))
        .await
        .assert_status(200);
    app.get("/v1/opportunities?cursor=o1xyz")
        .await
        .assert_problem(400, &["cursor"]);
}
