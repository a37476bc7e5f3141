//! History, the event feed, and the health endpoints.

use std::sync::Arc;

use api::auth::Role;
use chrono::DateTime;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const ENVELOPE_FIELDS: [&str; 10] = [
    "data",
    "event_id",
    "event_type",
    "metadata",
    "occurred_at",
    "position",
    "recorded_at",
    "schema_version",
    "stream_id",
    "stream_version",
];

/// Checks one served event against the envelope that docs/events.md describes.
#[track_caller]
fn assert_envelope(event: &Value) {
    let object = event.as_object().expect("an event is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ENVELOPE_FIELDS, "envelope fields of {event}");
    let metadata = event["metadata"]
        .as_object()
        .expect("metadata is an object");
    let mut keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // What the API writes names the token it was sent with; the harness's own set-up does not.
    let mut expected = vec!["actor", "causation_id", "command_id", "correlation_id"];
    if event["metadata"]["actor"]
        .as_str()
        .is_some_and(|actor| actor.starts_with("api:"))
    {
        expected.push("token_id");
    }
    assert_eq!(keys, expected, "metadata fields of {event}");
    assert!(uuid::Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
    assert!(event["stream_version"].as_i64().unwrap() >= 1);
    assert!(event["position"].as_i64().unwrap() >= 1);
    assert_eq!(event["schema_version"], 1);
    let recorded_at = event["recorded_at"].as_str().unwrap();
    assert!(
        recorded_at.ends_with('Z') && DateTime::parse_from_rfc3339(recorded_at).is_ok(),
        "recorded_at {recorded_at} is RFC 3339 UTC"
    );
    assert_eq!(
        event["occurred_at"], event["recorded_at"],
        "a live event occurred when it was recorded"
    );
    assert!(event["data"].is_object());
}

#[tokio::test]
async fn history_lists_every_event_of_the_deal_oldest_first() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Rep).await;
    let created = app
        .call(Method::POST, "/v1/opportunities")
        .json(&crate::helpers::deal_body())
        .bearer(&alice)
        .header("x-actor", "mallory")
        .send()
        .await
        .command_answer(201);
    let id = created["id"].as_str().unwrap();
    let base = format!("/v1/opportunities/{id}");
    let correlation = uuid::Uuid::now_v7().to_string();
    app.call(Method::POST, &format!("{base}/stage"))
        .json(&json!({"stage": "contacted"}))
        .header("x-correlation-id", &correlation)
        .send()
        .await
        .command_answer(200);
    app.post(
        &format!("{base}/amount"),
        &json!({"amount": 5, "currency": "EUR"}),
    )
    .await
    .command_answer(200);
    let last = app
        .post(&format!("{base}/close"), &json!({"outcome": "won"}))
        .await
        .command_answer(200);

    let reply = app.get(&format!("{base}/history")).await;
    reply.assert_status(200);
    let body = reply.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let events = body["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OpportunityCreated",
            "StageChanged",
            "AmountChanged",
            "OpportunityClosed"
        ]
    );
    for (index, event) in events.iter().enumerate() {
        assert_envelope(event);
        assert_eq!(event["stream_id"], format!("opportunity-{id}"));
        assert_eq!(event["stream_version"], index as i64 + 1);
    }
    for pair in events.windows(2) {
        assert!(pair[0]["position"].as_i64() < pair[1]["position"].as_i64());
        assert!(pair[0]["recorded_at"].as_str() <= pair[1]["recorded_at"].as_str());
    }
    assert_eq!(events[0]["position"], created["position"]);
    assert_eq!(events[3]["position"], last["position"]);
    assert_eq!(events[0]["metadata"]["actor"], "api:alice");
    assert_eq!(events[1]["metadata"]["actor"], "api:tester");
    assert_eq!(
        events[1]["metadata"]["correlation_id"],
        correlation.as_str()
    );
    let metadata = &events[2]["metadata"];
    assert_eq!(metadata["correlation_id"], metadata["command_id"]);
    assert_ne!(
        events[2]["metadata"]["command_id"],
        events[3]["metadata"]["command_id"]
    );
    assert_eq!(events[1]["data"]["from"], "new");
    assert_eq!(events[1]["data"]["to"], "contacted");

    // History is what the store holds.
    let stored = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(serde_json::to_value(&stored).unwrap(), body["events"]);
}

#[tokio::test]
async fn the_feed_pages_through_the_log_and_filters_by_category() {
    let app = TestApp::spawn().await;
    let lead = app.capture_lead().await;
    let deal = app.create_deal().await;
    app.post(
        &format!("/v1/opportunities/{deal}/stage"),
        &json!({"stage": "quoted"}),
    )
    .await
    .command_answer(200);
    app.post(
        &format!("/v1/leads/{lead}/disqualify"),
        &json!({"reason": "spam"}),
    )
    .await
    .command_answer(200);

    // pipeline-default, LeadCaptured, OpportunityCreated, StageChanged, LeadDisqualified.
    let all = app.get("/v1/events").await;
    all.assert_status(200);
    let all = all.json();
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    events.iter().for_each(assert_envelope);
    assert_eq!(events[0]["event_type"], "PipelineDefined");
    assert_eq!(all["next_after"], events[4]["position"]);
    let positions: Vec<i64> = events
        .iter()
        .map(|event| event["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));

    // Paging two at a time visits the same events.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let page = app
            .get(&format!("/v1/events?after={after}&limit=2"))
            .await
            .json();
        let events = page["events"].as_array().unwrap().clone();
        assert!(events.len() <= 2);
        if events.is_empty() {
            assert_eq!(page["next_after"], after, "nothing new keeps the cursor");
            break;
        }
        after = page["next_after"].as_i64().unwrap();
        assert_eq!(after, events.last().unwrap()["position"].as_i64().unwrap());
        paged.extend(events);
    }
    assert_eq!(&paged, events);

    let page = app
        .get(&format!("/v1/events?after={}", positions[1]))
        .await
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    assert_eq!(page["events"][0]["position"], positions[2]);

    let leads = app.get("/v1/events?category=lead").await.json();
    let types: Vec<&str> = leads["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["LeadCaptured", "LeadDisqualified"]);
    let deals = app
        .get(&format!(
            "/v1/events?category=opportunity&after={}&limit=1",
            positions[0]
        ))
        .await
        .json();
    assert_eq!(deals["events"].as_array().unwrap().len(), 1);
    assert_eq!(deals["events"][0]["event_type"], "OpportunityCreated");
    assert_eq!(deals["next_after"], positions[2]);
    let none = app.get("/v1/events?category=nothing").await.json();
    assert_eq!(none, json!({"events": [], "next_after": 0}));
    let beyond = app.get("/v1/events?after=1000000").await.json();
    assert_eq!(beyond, json!({"events": [], "next_after": 1000000}));
    let empty_category = app.get("/v1/events?category=").await.json();
    assert_eq!(empty_category["events"].as_array().unwrap().len(), 5);
    app.get("/v1/events?limit=1000").await.assert_status(200);
}

#[tokio::test]
async fn bad_feed_parameters_are_refused() {
    let app = TestApp::spawn().await;
    for (query, status, named) in [
        ("after=abc", 400, "after"),
        ("after=1.5", 400, "after"),
        ("limit=ten", 400, "limit"),
        ("after=99999999999999999999", 400, "after"),
        ("bogus=1", 400, "bogus"),
        ("after=-1", 422, "after"),
        ("limit=0", 422, "limit"),
        ("limit=-5", 422, "limit"),
        ("limit=1001", 422, "limit"),
    ] {
        app.get(&format!("/v1/events?{query}"))
            .await
            .assert_problem(status, &[named]);
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").await;
    health.assert_status(200);
    assert_eq!(health.json()["status"], "up");
    let ready = app.get("/readyz").await;
    ready.assert_status(200);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["checks"]["database"], "ok");
    app.call(Method::POST, "/healthz")
        .send()
        .await
        .assert_problem(405, &["POST"]);
}

#[tokio::test]
async fn readiness_fails_with_a_problem_when_a_dependency_is_down() {
    let app = TestApp::spawn_with(|state| {
        state.with_readiness_check(api::ReadinessCheck {
            name: "nats",
            probe: Arc::new(|| Box::pin(async { Err("connection refused".to_owned()) })),
        })
    })
    .await;
    let reply = app
        .call(Method::GET, "/readyz")
        .allow_unavailable()
        .send()
        .await;
    reply.assert_problem(503, &["nats", "connection refused"]);
    assert!(reply.headers.contains_key("retry-after"));
    app.get("/healthz").await.assert_status(200);
}
