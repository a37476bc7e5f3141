//! Authentication and authorization: bearer tokens (401 for anything but a valid one), the actor
//! taken from the token, the role and ownership rules (403 naming the rule), the public
//! endpoints, `DEALSTREAM_AUTH=off`, the per-token rate limit, and the authorization matrix.

use std::time::{Duration, Instant};

use api::auth::Role;
use commands::CommandContext;
use domain::values::{LeadId, Text, parse_owner};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ACTOR, Reply, TestApp, deal_body, qualify_body};
use crate::node::Node;

#[track_caller]
fn assert_unauthorized(reply: &Reply, fragments: &[&str]) {
    reply.assert_problem(401, fragments);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge:?}"
    );
}

#[tokio::test]
async fn every_v1_route_refuses_a_request_without_a_token() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let before = app.event_count().await;
    for (method, path) in api::routes() {
        if !path.starts_with("/v1") {
            continue;
        }
        let concrete = path
            .replace("{id}", &deal)
            .replace("{follow_up_id}", &Uuid::now_v7().to_string())
            .replace("{slug}", "default");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let reply = app
            .call(method.clone(), &concrete)
            .json(&json!({}))
            .authorization(None)
            .send()
            .await;
        assert_unauthorized(&reply, &["bearer"]);
    }
    // A path no route serves is refused the same way, so that probing learns nothing.
    let reply = app
        .call(Method::GET, "/v1/nothing-here")
        .authorization(None)
        .send()
        .await;
    assert_unauthorized(&reply, &[]);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn malformed_tokens_are_unauthorized_never_a_server_error() {
    let app = TestApp::spawn().await;
    let token = app.admin_token.clone();
    let unknown = format!("dst_{}", "A".repeat(token.len() - 4));
    let cases = [
        String::new(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer  {token}"),
        format!("Bearer {token} x"),
        format!("Bearer\t{token}"),
        format!("Basic {token}"),
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Bearer {token}{token}"),
        format!("Bearer {}", "x".repeat(8 * 1024)),
        format!("Bearer {}", token.replace('_', "%")),
        format!("Bearer {}!", &token[..token.len() - 1]),
        format!("Token {token}"),
        format!("Bearer {unknown}"),
    ];
    // Spaces around a header's value are not part of it (RFC 9110), so only spaces inside count.
    for case in &cases {
        let reply = app
            .call(Method::POST, "/v1/leads")
            .json(&json!({"name": "Ada"}))
            .authorization(Some(case))
            .send()
            .await;
        assert_unauthorized(&reply, &[]);
        assert!(!reply.text.contains(&token), "the answer repeats the token");
    }
    // Any capitalisation of the scheme is the same scheme (RFC 9110).
    app.call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .authorization(Some(&format!("bearer {token}")))
        .send()
        .await
        .command_answer(201);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn an_expired_token_is_unauthorized() {
    let app = TestApp::spawn().await;
    let expired = api::auth::create_token(app.pool(), "ada", Role::Manager, Some(Duration::ZERO))
        .await
        .expect("creating a token")
        .token;
    let reply = app
        .call(Method::GET, "/v1/opportunities")
        .bearer(&expired)
        .send()
        .await;
    assert_unauthorized(&reply, &["expired"]);
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_five_seconds() {
    let app = TestApp::spawn().await;
    let token = app.token("ada", Role::Manager).await;
    let listed = api::auth::list_tokens(app.pool()).await.expect("listing");
    let id = listed
        .iter()
        .find(|info| info.actor == "ada")
        .expect("the new token is listed")
        .id;
    app.call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .bearer(&token)
        .send()
        .await
        .command_answer(201);
    assert!(api::auth::revoke_token(app.pool(), id).await.unwrap());
    let revoked_at = Instant::now();
    let refusal = loop {
        let reply = app
            .call(Method::GET, "/v1/opportunities")
            .bearer(&token)
            .send()
            .await;
        if reply.status == 401 {
            break reply;
        }
        reply.assert_status(200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the revoked token still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_unauthorized(&refusal, &["revoked"]);
    let listed = api::auth::list_tokens(app.pool()).await.expect("listing");
    assert!(
        listed
            .iter()
            .any(|info| info.id == id && info.revoked_at.is_some())
    );
    assert!(
        !api::auth::revoke_token(app.pool(), Uuid::now_v7())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn health_readiness_metrics_and_the_document_need_no_token() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        app.call(Method::GET, path)
            .authorization(None)
            .send()
            .await
            .assert_status(200);
    }
    let ready = app.call(Method::GET, "/readyz").send().await.json();
    assert_eq!(ready["authentication"], "on");
}

#[tokio::test]
async fn the_actor_is_the_tokens_and_x_actor_is_ignored() {
    let app = TestApp::spawn().await;
    let token = app.token("rita", Role::Rep).await;
    let id = app
        .call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .bearer(&token)
        .header("x-actor", "mallory")
        .send()
        .await
        .command_answer(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = app.stream(&format!("lead-{id}")).await;
    let token_id = api::auth::list_tokens(app.pool())
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.actor == "rita")
        .unwrap()
        .id;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata["actor"], "api:rita");
    assert_eq!(events[0].metadata["token_id"], json!(token_id));
}

#[tokio::test]
async fn every_event_the_harness_writes_through_the_api_has_an_authenticated_actor() {
    let app = TestApp::spawn().await;
    let deal = app.create_won_deal().await;
    app.post(&format!("/v1/opportunities/{deal}/reopen"), &json!({}))
        .await
        .assert_status(200);
    let lead = app.capture_lead().await;
    app.post(
        &format!("/v1/leads/{lead}/qualify"),
        &qualify_body(true, true, true, true),
    )
    .await
    .assert_status(200);
    let events = app.all_events().await;
    let from_api: Vec<_> = events
        .iter()
        .filter(|event| {
            event.metadata["actor"]
                .as_str()
                .unwrap()
                .starts_with("api:")
        })
        .collect();
    assert!(from_api.len() >= 6, "{events:?}");
    for event in from_api {
        assert_eq!(event.metadata["actor"], format!("api:{ACTOR}"));
        assert!(
            event.metadata["token_id"].is_string(),
            "{:?}",
            event.metadata
        );
    }
}

#[tokio::test]
async fn with_authentication_off_the_actor_comes_from_x_actor() {
    let app = TestApp::spawn_with(|state| state.with_authentication_off()).await;
    let ready = app
        .call(Method::GET, "/readyz")
        .authorization(None)
        .send()
        .await
        .json();
    assert_eq!(ready["authentication"], "off");
    let id = app
        .call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .authorization(None)
        .header("x-actor", "alice")
        .send()
        .await
        .command_answer(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anonymous = app
        .call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .authorization(None)
        .send()
        .await
        .id();
    let events = app.all_events().await;
    let actor_of = |id: &str| {
        events
            .iter()
            .find(|event| event.stream_id == format!("lead-{id}"))
            .map(|event| event.metadata["actor"].clone())
    };
    assert_eq!(actor_of(&id), Some(json!("api:alice")));
    assert_eq!(actor_of(&anonymous), Some(json!("api:anonymous")));
    let long_actor = "a".repeat(201);
    app.call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .authorization(None)
        .header("x-actor", &long_actor)
        .send()
        .await
        .assert_problem(400, &["x-actor"]);
    app.call(Method::POST, "/v1/leads")
        .json(&json!({"name": "Ada"}))
        .authorization(None)
        .header_bytes("x-actor", b"J\xf6rg")
        .send()
        .await
        .assert_problem(400, &["x-actor"]);
}

#[tokio::test]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(|state| state.with_rate_limit(1)).await;
    let other = app.token("otto", Role::Viewer).await;
    let mut refused = None;
    for _ in 0..20 {
        let reply = app.get("/v1/events").await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        reply.assert_status(200);
    }
    let refused = refused.expect("20 requests at once, and none refused at 1 per second");
    refused.assert_problem(429, &["requests per second"]);
    let retry_after: u32 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 1,
        "one request per second frees one within a second"
    );
    // Another token has a bucket of its own.
    app.call(Method::GET, "/v1/events")
        .bearer(&other)
        .send()
        .await
        .assert_status(200);
}

/// Which side of the rep a case is on: a lead or deal the rep owns, or one someone else owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Own,
    Other,
}

const REP: &str = "rita";
const SOMEONE_ELSE: &str = "otto";

/// Expected statuses for viewer, rep, manager and admin, in that order.
type Expected = [u16; 4];

/// Every command route with what each role gets on the rep's own target and on someone else's.
/// A 403 for a viewer or a non-admin on pipelines is the role rule; for a rep on someone else's
/// lead or deal, the ownership rule.
const COMMANDS: [(&str, &str, Expected, Expected); 15] = [
    (
        "post",
        "/v1/leads",
        [403, 201, 201, 201],
        [403, 201, 201, 201],
    ),
    (
        "post",
        "/v1/leads/{id}/qualify",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/leads/{id}/disqualify",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities",
        [403, 201, 201, 201],
        [403, 403, 201, 201],
    ),
    (
        "post",
        "/v1/opportunities/{id}/stage",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/probability",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/amount",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/close-date",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/owner",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/activities",
        [403, 201, 201, 201],
        [403, 403, 201, 201],
    ),
    (
        "post",
        "/v1/opportunities/{id}/close",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/reopen",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "post",
        "/v1/opportunities/{id}/follow-ups/{follow_up_id}/complete",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
    (
        "put",
        "/v1/pipelines/{slug}",
        [403, 403, 403, 200],
        [403, 403, 403, 200],
    ),
    // A lead qualified by a rep who names someone else as the deal's owner.
    (
        "post",
        "/v1/leads/{id}/qualify#owner",
        [403, 200, 200, 200],
        [403, 403, 200, 200],
    ),
];

/// Every query route: every role reads everything, its own deals and everyone else's.
const QUERIES: [(&str, Expected, Expected); 18] = [
    (
        "/v1/leads/{lead}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/opportunities?min_position={head}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/opportunities/{id}?min_position={head}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/opportunities/{id}/history",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/pipelines/default/board?min_position={head}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/forecast?min_position={head}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/forecast/trend?period=2026-Q4&currency=EUR&from=2026-10-01&to=2026-10-15",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/follow-ups?min_position={head}",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    ("/v1/events", [200, 200, 200, 200], [200, 200, 200, 200]),
    (
        "/v1/analytics/win-rates?pipeline=default",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/analytics/forecast-accuracy?period=2026-Q1&currency=EUR",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/analytics/slippage?period=2026-Q1",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    (
        "/v1/analytics/funnel?pipeline=default&from=2026-01-01&to=2026-12-31",
        [200, 200, 200, 200],
        [200, 200, 200, 200],
    ),
    ("/v1/work-queue", [200, 200, 200, 200], [200, 200, 200, 200]),
    ("/healthz", [200, 200, 200, 200], [200, 200, 200, 200]),
    ("/readyz", [200, 200, 200, 200], [200, 200, 200, 200]),
    ("/metrics", [200, 200, 200, 200], [200, 200, 200, 200]),
    ("/openapi.json", [200, 200, 200, 200], [200, 200, 200, 200]),
];

fn owner_of(side: Side) -> &'static str {
    match side {
        Side::Own => REP,
        Side::Other => SOMEONE_ELSE,
    }
}

/// A lead routed to the side's owner, as the workflow's routing would.
async fn routed_lead(app: &TestApp, side: Side) -> String {
    let lead = app.capture_lead().await;
    app.handler
        .route_lead(
            &CommandContext::new("workflow:routing"),
            LeadId(Uuid::parse_str(&lead).unwrap()),
            parse_owner(owner_of(side)).unwrap(),
            Text::parse("rule", "routing", Text::SHORT).unwrap(),
        )
        .await
        .expect("routing a lead");
    lead
}

async fn owned_deal(app: &TestApp, side: Side) -> String {
    let mut body = deal_body();
    body["owner"] = json!(owner_of(side));
    app.create_deal_with(body).await
}

/// A concrete request for a command route on the side's target, fresh for every case, that
/// succeeds whenever the caller may send it.
async fn command_case(app: &TestApp, route: &str, side: Side) -> (String, Value) {
    let pipeline = json!({"name": "Custom", "stages": [
        {"name": "new", "probability": 10, "forecast_category": "pipeline"},
        {"name": "won-soon", "probability": 90, "forecast_category": "commit"},
    ]});
    match route {
        "/v1/leads" => (route.to_owned(), json!({"name": "Ada"})),
        "/v1/leads/{id}/qualify" | "/v1/leads/{id}/qualify#owner" => {
            let lead = routed_lead(app, side).await;
            let mut body = qualify_body(true, true, true, true);
            if route.ends_with("#owner") {
                body["opportunity"]["owner"] = json!(owner_of(side));
            }
            (format!("/v1/leads/{lead}/qualify"), body)
        }
        "/v1/leads/{id}/disqualify" => {
            let lead = routed_lead(app, side).await;
            (
                format!("/v1/leads/{lead}/disqualify"),
                json!({"reason": "no budget"}),
            )
        }
        "/v1/opportunities" => {
            let mut body = deal_body();
            body["owner"] = json!(owner_of(side));
            (route.to_owned(), body)
        }
        "/v1/pipelines/{slug}" => (
            format!("/v1/pipelines/p{}", Uuid::now_v7().simple()),
            pipeline,
        ),
        _ => {
            let deal = owned_deal(app, side).await;
            let follow_up = app.schedule_follow_up(&deal).await;
            if route.ends_with("/reopen") {
                app.post(
                    &format!("/v1/opportunities/{deal}/close"),
                    &json!({"outcome": "won"}),
                )
                .await
                .assert_status(200);
            }
            let body = match route.rsplit('/').next().unwrap() {
                "stage" => json!({"stage": "contacted"}),
                "probability" => json!({"probability": 55}),
                "amount" => json!({"amount": 99_000, "currency": "EUR"}),
                "close-date" => json!({"expected_close_date": "2027-01-31"}),
                "owner" => json!({"owner": "paul"}),
                "activities" => json!({"kind": "call", "summary": "Called"}),
                "close" => json!({"outcome": "won"}),
                "reopen" | "complete" => json!({}),
                other => panic!("no body for {other}"),
            };
            let path = route
                .replace("{id}", &deal)
                .replace("{follow_up_id}", &follow_up.to_string());
            (path, body)
        }
    }
}

/// Every route × every role × the rep's own or someone else's lead or deal, against a whole
/// node (API, relay, projectors), each expected status written out in [`COMMANDS`] and
/// [`QUERIES`]. A refusal says which rule refused; a rep's qualification gives it the deal.
#[tokio::test(flavor = "multi_thread")]
async fn the_authorization_matrix_holds_for_every_route_role_and_owner() {
    let node = Node::spawn().await;
    let app = &node.app;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let actor = if role == Role::Rep {
            REP
        } else {
            role.as_str()
        };
        tokens.push((role, app.token(actor, role).await));
    }
    let documented: Vec<_> = api::routes()
        .iter()
        .filter(|(_, path)| path.starts_with("/v1"))
        .collect();
    for (method, path) in &documented {
        let covered = if *method == "get" {
            QUERIES.iter().any(|(query, ..)| {
                query.split('?').next().unwrap().replace("{lead}", "{id}")
                    == path.replace("{slug}", "default")
            })
        } else {
            COMMANDS
                .iter()
                .any(|(m, route, ..)| m == method && route == path)
        };
        assert!(covered, "{method} {path} is missing from the matrix");
    }
    let mut failures = Vec::new();
    for (method, route, own, other) in COMMANDS {
        for (side, expected) in [(Side::Own, own), (Side::Other, other)] {
            for ((role, token), expected) in tokens.iter().zip(expected) {
                let (path, body) = command_case(app, route, side).await;
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let before = app.event_count().await;
                let reply = app
                    .call(method.clone(), &path)
                    .json(&body)
                    .bearer(token)
                    .send()
                    .await;
                if reply.status.as_u16() != expected {
                    failures.push(format!(
                        "{method} {route} as {role} on {side:?}: {} instead of {expected}: {}",
                        reply.status, reply.text
                    ));
                    continue;
                }
                if expected == 403 {
                    let rule = if *role == Role::Rep
                        && side == Side::Other
                        && !route.starts_with("/v1/pipelines")
                    {
                        "ownership"
                    } else {
                        "role"
                    };
                    let problem = reply.json();
                    assert!(
                        problem["type"]
                            .as_str()
                            .unwrap()
                            .ends_with(&format!("forbidden-{rule}")),
                        "{method} {route} as {role}: {problem}"
                    );
                    assert!(
                        problem["detail"].as_str().unwrap().contains(rule),
                        "{method} {route} as {role}: {problem}"
                    );
                    assert_eq!(app.event_count().await, before, "a refusal wrote events");
                }
                if route.starts_with("/v1/leads/{id}/qualify") && expected == 200 {
                    let deal = reply.json()["opportunity_id"].as_str().unwrap().to_owned();
                    let created = app.stream(&format!("opportunity-{deal}")).await;
                    let owner = &created[0].data["owner"];
                    if *role == Role::Rep {
                        assert_eq!(owner, REP, "a rep's qualification gives it the deal");
                    }
                }
            }
        }
    }
    for side in [Side::Own, Side::Other] {
        let lead = routed_lead(app, side).await;
        let deal = owned_deal(app, side).await;
        // Positions are gapless from 1, so the count is the last one.
        let head = app.event_count().await;
        for (query, own, other) in QUERIES {
            let expected = if side == Side::Own { own } else { other };
            let path = query
                .replace("{lead}", &lead)
                .replace("{id}", &deal)
                .replace("{head}", &head.to_string());
            for ((role, token), expected) in tokens.iter().zip(expected) {
                let reply = app.call(Method::GET, &path).bearer(token).send().await;
                if reply.status.as_u16() != expected {
                    failures.push(format!(
                        "GET {path} as {role} on {side:?}: {} instead of {expected}: {}",
                        reply.status, reply.text
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    node.finish().await;
}
