//! `Idempotency-Key`: a repeat returns the first answer and appends nothing, a reused key with a
//! different request is refused, and concurrent repeats never append twice.

use std::sync::Arc;

use api::auth::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, deal_body, qualify_body};

async fn keyed(app: &TestApp, method: Method, path: &str, body: &Value, key: &str) -> Reply {
    app.call(method, path)
        .json(body)
        .idempotency_key(key)
        .send()
        .await
}

#[tokio::test]
async fn a_repeat_returns_the_first_answer_and_appends_nothing() {
    let app = TestApp::spawn().await;

    let first = keyed(
        &app,
        Method::POST,
        "/v1/opportunities",
        &deal_body(),
        "create-1",
    )
    .await;
    first.command_answer(201);
    let count = app.event_count().await;
    let repeat = keyed(
        &app,
        Method::POST,
        "/v1/opportunities",
        &deal_body(),
        "create-1",
    )
    .await;
    assert_eq!(repeat.status, first.status);
    assert_eq!(repeat.json(), first.json());
    assert_eq!(app.event_count().await, count);
    // The same JSON with other spacing and member order is the same request.
    let reordered = r#"{ "owner":"alice", "expected_close_date":"2026-12-15",
        "currency":"EUR","amount":120000, "name":"Acme renewal" }"#;
    let repeat = app
        .call(Method::POST, "/v1/opportunities")
        .raw(reordered)
        .idempotency_key("create-1")
        .send()
        .await;
    assert_eq!(repeat.json(), first.json());
    assert_eq!(app.event_count().await, count);

    // A repeat after later changes still answers as the first time, and does not move the deal
    // back.
    let id = first.id();
    let stage = format!("/v1/opportunities/{id}/stage");
    let moved = keyed(
        &app,
        Method::POST,
        &stage,
        &json!({"stage": "quoted"}),
        "stage-1",
    )
    .await;
    assert_eq!(moved.json()["version"], 2);
    app.post(&stage, &json!({"stage": "negotiation"}))
        .await
        .command_answer(200);
    let repeat = keyed(
        &app,
        Method::POST,
        &stage,
        &json!({"stage": "quoted"}),
        "stage-1",
    )
    .await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.json(), moved.json());
    assert_eq!(app.deal(&id).await["stage"], "negotiation");
    assert_eq!(app.deal_version(&id).await, 3);

    // The same holds for a command that appended nothing the first time.
    let noop = keyed(
        &app,
        Method::POST,
        &stage,
        &json!({"stage": "negotiation"}),
        "noop",
    )
    .await;
    assert_eq!(noop.json()["version"], 3);
    app.post(&stage, &json!({"stage": "new"}))
        .await
        .command_answer(200);
    let repeat = keyed(
        &app,
        Method::POST,
        &stage,
        &json!({"stage": "negotiation"}),
        "noop",
    )
    .await;
    assert_eq!(repeat.json(), noop.json());
    assert_eq!(app.deal(&id).await["stage"], "new");
    assert_eq!(app.deal_version(&id).await, 4);

    // Keyed events carry the key-derived command id as metadata, the same on both tries.
    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(
        events[1].metadata["command_id"],
        events[1].metadata["correlation_id"]
    );

    // A keyed close is not closed twice (which would be refused the second time).
    let close = format!("/v1/opportunities/{id}/close");
    let closed = keyed(
        &app,
        Method::POST,
        &close,
        &json!({"outcome": "won"}),
        "close",
    )
    .await;
    closed.command_answer(200);
    let repeat = keyed(
        &app,
        Method::POST,
        &close,
        &json!({"outcome": "won"}),
        "close",
    )
    .await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.json(), closed.json());
}

#[tokio::test]
async fn repeated_qualification_returns_the_same_opportunity() {
    let app = TestApp::spawn().await;
    let lead = app.capture_lead().await;
    let path = format!("/v1/leads/{lead}/qualify");
    let body = qualify_body(true, true, true, false);
    let first = keyed(&app, Method::POST, &path, &body, "qualify").await;
    first.assert_status(200);
    let count = app.event_count().await;
    let repeat = keyed(&app, Method::POST, &path, &body, "qualify").await;
    repeat.assert_status(200);
    assert_eq!(repeat.json(), first.json());
    assert!(first.json()["opportunity_id"].is_string());
    assert_eq!(app.event_count().await, count);

    let lead_two = app.capture_lead().await;
    let first = keyed(
        &app,
        Method::POST,
        "/v1/leads",
        &json!({"name": "Grace"}),
        "capture",
    )
    .await;
    first.command_answer(201);
    let repeat = keyed(
        &app,
        Method::POST,
        "/v1/leads",
        &json!({"name": "Grace"}),
        "capture",
    )
    .await;
    assert_eq!(repeat.json(), first.json());
    assert_ne!(first.id(), lead_two);
    assert_eq!(app.event_count().await, count + 2);
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_refused() {
    let app = TestApp::spawn().await;
    let first = keyed(&app, Method::POST, "/v1/opportunities", &deal_body(), "key").await;
    first.command_answer(201);
    let id = first.id();
    let count = app.event_count().await;

    let mut other = deal_body();
    other["amount"] = json!(1);
    keyed(&app, Method::POST, "/v1/opportunities", &other, "key")
        .await
        .assert_problem(422, &["Idempotency-Key"]);
    // The same key on another endpoint is another request too.
    keyed(
        &app,
        Method::POST,
        &format!("/v1/opportunities/{id}/owner"),
        &json!({"owner": "bruno"}),
        "key",
    )
    .await
    .assert_problem(422, &["Idempotency-Key"]);
    keyed(
        &app,
        Method::PUT,
        "/v1/pipelines/custom",
        &json!({"name": "P", "stages": [
        {"name": "a", "probability": 1, "forecast_category": "pipeline"}]}),
        "key",
    )
    .await
    .assert_problem(422, &["Idempotency-Key"]);
    assert_eq!(app.event_count().await, count);
    // The first request still gets its answer.
    let repeat = keyed(&app, Method::POST, "/v1/opportunities", &deal_body(), "key").await;
    assert_eq!(repeat.json(), first.json());

    // A refused request is not remembered: the same key and body are judged again.
    let close = format!("/v1/opportunities/{id}/close");
    for _ in 0..2 {
        keyed(
            &app,
            Method::POST,
            &close,
            &json!({"outcome": "lost"}),
            "lost",
        )
        .await
        .assert_problem(422, &["reason"]);
    }
    assert_eq!(app.event_count().await, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_append_once() {
    let app = Arc::new(TestApp::spawn().await);
    let deal = app.create_deal().await;
    let before = app.event_count().await;
    let rounds = 10;
    for round in 0..rounds {
        let key = format!("race-{round}");
        let amount = json!({"amount": 1000 + round, "currency": "EUR"});
        let path = format!("/v1/opportunities/{deal}/amount");
        let requests = (0..4).map(|_| {
            let app = app.clone();
            let (path, amount, key) = (path.clone(), amount.clone(), key.clone());
            tokio::spawn(async move { keyed(&app, Method::POST, &path, &amount, &key).await })
        });
        let replies: Vec<Reply> = futures::future::join_all(requests)
            .await
            .into_iter()
            .map(|joined| joined.expect("request task"))
            .collect();
        let successes: Vec<Value> = replies
            .iter()
            .filter(|reply| reply.status == 200)
            .map(Reply::json)
            .collect();
        assert!(!successes.is_empty(), "round {round}: {replies:?}");
        assert!(
            successes.windows(2).all(|pair| pair[0] == pair[1]),
            "round {round}: different answers {successes:?}"
        );
        for reply in replies.iter().filter(|reply| reply.status != 200) {
            reply.assert_problem(409, &["Idempotency-Key"]);
        }
    }
    assert_eq!(app.event_count().await, before + rounds as usize);
    assert_eq!(app.deal_version(&deal).await, 1 + rounds);

    // Concurrent keyed creations: one deal per key.
    let requests = (0..4).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            keyed(
                &app,
                Method::POST,
                "/v1/opportunities",
                &deal_body(),
                "create",
            )
            .await
        })
    });
    let replies: Vec<Reply> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|joined| joined.expect("request task"))
        .collect();
    let created: Vec<Value> = replies
        .iter()
        .filter(|reply| reply.status == 201)
        .map(Reply::json)
        .collect();
    assert!(!created.is_empty(), "{replies:?}");
    assert!(created.windows(2).all(|pair| pair[0] == pair[1]));
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        reply.assert_problem(409, &["Idempotency-Key"]);
    }
    let opportunities = app
        .store
        .read_all(0, 1000, Some("opportunity"))
        .await
        .unwrap();
    let created_events = opportunities
        .iter()
        .filter(|event| event.event_type == "OpportunityCreated")
        .count();
    assert_eq!(created_events, 2);
}

#[tokio::test]
async fn keys_are_scoped_by_actor() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Ada" });
    let (alice, bob) = (
        app.token("alice", Role::Rep).await,
        app.token("bob", Role::Rep).await,
    );
    let first = app
        .call(Method::POST, "/v1/leads")
        .json(&body)
        .bearer(&alice)
        .idempotency_key("1")
        .send()
        .await
        .command_answer(201);
    let second = app
        .call(Method::POST, "/v1/leads")
        .json(&body)
        .bearer(&bob)
        .idempotency_key("1")
        .send()
        .await
        .command_answer(201);
    assert_ne!(
        first["id"], second["id"],
        "bob's request must not get alice's answer"
    );
}
