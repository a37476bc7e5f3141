//! Request shape errors for every command endpoint (400), conditional requests (409), body limits
//! (413), routing (404/405), and the guarantee that none of them appends anything.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, deal_body, qualify_body};

/// One command endpoint: its method and path, a valid body, a required field (if any) and a
/// field with a value of the wrong JSON type, given as a pointer into the body.
struct Endpoint {
    method: Method,
    path: String,
    body: Value,
    required: Option<&'static str>,
    wrong_type: (&'static str, Value),
}

fn endpoint(
    method: Method,
    path: String,
    body: Value,
    required: Option<&'static str>,
    wrong_type: (&'static str, Value),
) -> Endpoint {
    Endpoint {
        method,
        path,
        body,
        required,
        wrong_type,
    }
}

/// Every command endpoint, aimed at a live lead and a live deal.
async fn endpoints(app: &TestApp) -> Vec<Endpoint> {
    let lead = app.capture_lead().await;
    let deal = app.create_deal().await;
    let on = |path: &str| format!("/v1/opportunities/{deal}/{path}");
    vec![
        endpoint(
            Method::POST,
            "/v1/leads".to_owned(),
            json!({"name": "Ada"}),
            Some("name"),
            ("/name", json!(42)),
        ),
        endpoint(
            Method::POST,
            format!("/v1/leads/{lead}/qualify"),
            qualify_body(true, true, true, true),
            Some("criteria"),
            ("/criteria/budget", json!("yes")),
        ),
        endpoint(
            Method::POST,
            format!("/v1/leads/{lead}/disqualify"),
            json!({"reason": "spam"}),
            Some("reason"),
            ("/reason", json!([1])),
        ),
        endpoint(
            Method::POST,
            "/v1/opportunities".to_owned(),
            deal_body(),
            Some("currency"),
            ("/amount", json!("lots")),
        ),
        endpoint(
            Method::POST,
            on("stage"),
            json!({"stage": "quoted"}),
            Some("stage"),
            ("/stage", json!(3)),
        ),
        endpoint(
            Method::POST,
            on("probability"),
            json!({"probability": 30}),
            None,
            ("/probability", json!("thirty")),
        ),
        endpoint(
            Method::POST,
            on("amount"),
            json!({"amount": 5, "currency": "EUR"}),
            Some("currency"),
            ("/amount", json!(true)),
        ),
        endpoint(
            Method::POST,
            on("close-date"),
            json!({"expected_close_date": "2027-01-31"}),
            Some("expected_close_date"),
            ("/expected_close_date", json!(20_270_131)),
        ),
        endpoint(
            Method::POST,
            on("owner"),
            json!({"owner": "bruno"}),
            Some("owner"),
            ("/owner", Value::Null),
        ),
        endpoint(
            Method::POST,
            on("activities"),
            json!({"kind": "call", "summary": "hello"}),
            Some("summary"),
            ("/kind", json!(1)),
        ),
        endpoint(
            Method::POST,
            on("close"),
            json!({"outcome": "won"}),
            Some("outcome"),
            ("/outcome", json!(false)),
        ),
        endpoint(
            Method::POST,
            on("reopen"),
            json!({"stage": "new"}),
            None,
            ("/stage", json!(1)),
        ),
        endpoint(
            Method::POST,
            on(&format!("follow-ups/{}/complete", uuid::Uuid::now_v7())),
            json!({}),
            None,
            ("", json!([])),
        ),
        endpoint(
            Method::PUT,
            "/v1/pipelines/custom".to_owned(),
            json!({"name": "P", "stages": [
                {"name": "a", "probability": 10, "forecast_category": "pipeline"}
            ]}),
            Some("stages"),
            ("/stages/0/probability", json!("ten")),
        ),
    ]
}

fn field_name(pointer: &str) -> &str {
    pointer.rsplit('/').next().unwrap_or(pointer)
}

#[tokio::test]
async fn malformed_requests_are_bad_requests_and_append_nothing() {
    let app = TestApp::spawn().await;
    let endpoints = endpoints(&app).await;
    let before = app.event_count().await;
    for endpoint in &endpoints {
        let send = |body: String| {
            app.call(endpoint.method.clone(), &endpoint.path)
                .raw(body)
                .send()
        };
        let context = format!("{} {}", endpoint.method, endpoint.path);

        let deeply_nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for malformed in [
            "{",
            "{\"name\": }",
            "not json",
            "[1,2",
            "{\"a\":1}}",
            "\u{0}",
            "{\"name\": \"\\ud800\"}",
            "\u{feff}{}",
            deeply_nested.as_str(),
        ] {
            let reply = send(malformed.to_owned()).await;
            assert_eq!(reply.status, 400, "{context} {malformed:?}: {}", reply.text);
            reply.assert_problem(400, &["JSON"]);
        }

        let mut unknown = endpoint.body.clone();
        unknown["bogus_field"] = json!(1);
        send(unknown.to_string())
            .await
            .assert_problem(400, &["bogus_field"]);

        let (pointer, value) = &endpoint.wrong_type;
        let wrong = if pointer.is_empty() {
            value.clone()
        } else {
            let mut wrong = endpoint.body.clone();
            *wrong.pointer_mut(pointer).expect("the field exists") = value.clone();
            wrong
        };
        let reply = send(wrong.to_string()).await;
        assert_eq!(reply.status, 400, "{context} wrong type: {}", reply.text);
        reply.assert_problem(400, &[field_name(pointer), "invalid type"]);

        if let Some(required) = endpoint.required {
            let mut missing = endpoint.body.clone();
            missing.as_object_mut().unwrap().remove(required);
            let reply = send(missing.to_string()).await;
            assert_eq!(reply.status, 400, "{context} missing: {}", reply.text);
            reply.assert_problem(400, &["missing field", required]);
            // An empty body is an empty object, so it misses the same field.
            send(String::new())
                .await
                .assert_problem(400, &["missing field"]);
        }

        for not_an_object in [
            "[]",
            "[1]",
            "[\"Ada\", null, null, null, null]",
            "42",
            "\"text\"",
            "null",
        ] {
            let reply = send(not_an_object.to_owned()).await;
            assert_eq!(
                reply.status, 400,
                "{context} {not_an_object}: {}",
                reply.text
            );
            reply.assert_problem(400, &["object"]);
        }
    }
    // A nested unknown field is refused as well.
    let lead = app.capture_lead().await;
    let mut body = qualify_body(true, true, true, true);
    body["criteria"]["money"] = json!(true);
    app.post(&format!("/v1/leads/{lead}/qualify"), &body)
        .await
        .assert_problem(400, &["money"]);
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_too_large() {
    let app = TestApp::spawn().await;
    let endpoints = endpoints(&app).await;
    let before = app.event_count().await;
    // Valid JSON padded with white space past the limit.
    for endpoint in &endpoints {
        let mut body = endpoint.body.to_string();
        body.push_str(&" ".repeat(api::MAX_BODY_BYTES));
        let reply = app
            .call(endpoint.method.clone(), &endpoint.path)
            .raw(body)
            .send()
            .await;
        reply.assert_problem(413, &["larger than"]);
    }
    // A name of more than 1 MiB, without a declared length (chunked).
    let huge = format!(r#"{{"name": "{}"}}"#, "n".repeat(api::MAX_BODY_BYTES + 10));
    let (status, head, body) = app.chunked_post("/v1/leads", huge.as_bytes()).await;
    assert_eq!(status, 413, "{head}\n{body}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(&body).expect("a JSON problem");
    assert_eq!(problem["status"], 413);
    assert!(problem["detail"].as_str().unwrap().contains("larger than"));

    // Exactly at the limit is still read (and then judged on its content).
    let mut body = json!({"name": "Ada"}).to_string();
    body.push_str(&" ".repeat(api::MAX_BODY_BYTES - body.len()));
    app.post_raw("/v1/leads", body).await.command_answer(201);
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn stale_if_match_is_a_conflict_naming_both_versions() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let base = format!("/v1/opportunities/{deal}");
    let commands = [
        ("stage", json!({"stage": "quoted"})),
        ("probability", json!({"probability": 30})),
        ("amount", json!({"amount": 7, "currency": "EUR"})),
        ("close-date", json!({"expected_close_date": "2027-01-31"})),
        ("owner", json!({"owner": "bruno"})),
        ("activities", json!({"kind": "call", "summary": "hello"})),
        ("close", json!({"outcome": "won"})),
    ];
    for (path, body) in &commands {
        for stale in [0, 2, 99] {
            app.call(Method::POST, &format!("{base}/{path}"))
                .json(body)
                .if_match(stale)
                .send()
                .await
                .assert_version_conflict(1, stale);
        }
    }
    for header in ["\"5\"", "W/\"5\""] {
        app.call(Method::POST, &format!("{base}/owner"))
            .json(&json!({"owner": "bruno"}))
            .header("if-match", header)
            .send()
            .await
            .assert_version_conflict(1, 5);
    }
    for bad in ["abc", "-1", "1.0", "99999999999999999999", "*"] {
        app.call(Method::POST, &format!("{base}/owner"))
            .json(&json!({"owner": "bruno"}))
            .header("if-match", bad)
            .send()
            .await
            .assert_problem(400, &["If-Match"]);
    }
    assert_eq!(app.deal_version(&deal).await, 1);

    // The current version is accepted, command after command.
    for (expected, (path, body)) in commands.iter().enumerate() {
        let reply = app
            .call(Method::POST, &format!("{base}/{path}"))
            .json(body)
            .if_match(expected as i64 + 1)
            .send()
            .await;
        let answer = reply.json();
        assert!(reply.status.is_success(), "{path}: {}", reply.text);
        assert_eq!(answer["version"], expected as i64 + 2);
    }

    // A closed deal: a stale If-Match is reported before the closed-deal rule, the current one
    // reaches the rule.
    let version = app.deal_version(&deal).await;
    assert_eq!(app.deal(&deal).await["status"], "won");
    for (path, body) in &commands[..5] {
        app.call(Method::POST, &format!("{base}/{path}"))
            .json(body)
            .if_match(version - 1)
            .send()
            .await
            .assert_version_conflict(version, version - 1);
        app.call(Method::POST, &format!("{base}/{path}"))
            .json(body)
            .if_match(version)
            .send()
            .await
            .assert_problem(422, &["closed"]);
    }
    app.call(Method::POST, &format!("{base}/reopen"))
        .json(&json!({}))
        .if_match(version + 1)
        .send()
        .await
        .assert_version_conflict(version, version + 1);
    app.call(Method::POST, &format!("{base}/reopen"))
        .json(&json!({}))
        .if_match(version)
        .send()
        .await
        .command_answer(200);

    // Creation with If-Match 0 means "must not exist yet"; anything else conflicts.
    app.call(Method::POST, "/v1/opportunities")
        .json(&deal_body())
        .if_match(0)
        .send()
        .await
        .command_answer(201);
    app.call(Method::POST, "/v1/opportunities")
        .json(&deal_body())
        .if_match(1)
        .send()
        .await
        .assert_version_conflict(0, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    for path in ["/v1", "/v2/leads", "/v1/unknown", "/v1/opportunities/x/y/z"] {
        app.get(path).await.assert_problem(404, &[path]);
        app.post(path, &json!({})).await.assert_problem(404, &[]);
    }
    let deal = app.create_deal().await;
    for (method, path) in [
        (Method::GET, "/v1/leads".to_owned()),
        (Method::DELETE, format!("/v1/opportunities/{deal}")),
        (Method::PUT, format!("/v1/opportunities/{deal}")),
        (Method::GET, format!("/v1/opportunities/{deal}/stage")),
        (Method::POST, "/v1/pipelines/default".to_owned()),
        (Method::POST, "/v1/events".to_owned()),
        (Method::PATCH, format!("/v1/opportunities/{deal}/amount")),
    ] {
        app.call(method.clone(), &path)
            .send()
            .await
            .assert_problem(405, &[method.as_str()]);
    }
    assert_eq!(app.deal_version(&deal).await, 1);
}

#[tokio::test]
async fn unreadable_headers_are_bad_requests() {
    let app = TestApp::spawn().await;
    let long_actor = "a".repeat(201);
    let long_key = "k".repeat(256);
    // X-Actor is ignored while tokens are on, but still held to its documented form.
    for (name, value) in [
        ("x-actor", long_actor.as_str()),
        ("x-correlation-id", "not-a-uuid"),
        ("idempotency-key", long_key.as_str()),
        ("idempotency-key", ""),
    ] {
        app.call(Method::POST, "/v1/leads")
            .json(&json!({"name": "Ada"}))
            .header(name, value)
            .send()
            .await
            .assert_problem(400, &[name]);
    }
    // Not visible ASCII (sent as raw bytes).
    let reply = app
        .call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .header_bytes("x-correlation-id", b"J\xf6rg")
        .send()
        .await;
    reply.assert_problem(400, &["x-correlation-id"]);
    let reply = app
        .call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .header_bytes("x-actor", b"J\xf6rg")
        .send()
        .await;
    reply.assert_problem(400, &["x-actor"]);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn if_match_is_checked_before_the_body() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let before = app.event_count().await;
    // A stale version with an out-of-range value and with a malformed body: the conflict wins.
    app.call(Method::POST, &format!("/v1/opportunities/{id}/amount"))
        .json(&json!({ "amount": -1, "currency": "EUR" }))
        .if_match(7)
        .send()
        .await
        .assert_problem(409, &["version 1", "expected 7"]);
    app.call(Method::POST, &format!("/v1/opportunities/{id}/stage"))
        .raw("{not json")
        .if_match(7)
        .send()
        .await
        .assert_problem(409, &["version 1", "expected 7"]);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn years_postgresql_cannot_store_are_refused() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    app.post(
        &format!("/v1/opportunities/{id}/close-date"),
        &json!({ "expected_close_date": "0000-01-01" }),
    )
    .await
    .assert_problem(422, &["expected_close_date"]);
    app.post(
        &format!("/v1/opportunities/{id}/activities"),
        &json!({ "kind": "call", "summary": "old", "occurred_at": "0000-06-01T00:00:00Z" }),
    )
    .await
    .assert_problem(422, &["occurred_at"]);
}

#[tokio::test]
async fn nul_in_a_query_string_is_a_bad_request() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/events?category=%00",
        "/v1/opportunities?owner=a%00b",
        "/v1/forecast?currency=%00",
        "/v1/follow-ups?owner=%00",
    ] {
        app.get(path).await.assert_problem(400, &["NUL"]);
    }
}
