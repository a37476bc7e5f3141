//! Opportunities: the success path of every command and the domain rules behind them.

use chrono::{Duration, Utc};
use commands::{CommandContext, OpportunityRequest};
use domain::opportunity::OpportunityCommand;
use domain::values::{FollowUpId, FollowUpKind, OpportunityId, Text};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, deal_body, event_types, unknown_id};

#[tokio::test]
async fn a_created_opportunity_can_be_read_back() {
    let app = TestApp::spawn().await;
    let reply = app.post("/v1/opportunities", &deal_body()).await;
    let answer = reply.command_answer(201);
    assert_eq!(answer["version"], 1);
    let id = answer["id"].as_str().unwrap();
    assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 7);

    let deal = app.deal(id).await;
    assert_eq!(deal["id"], id);
    assert_eq!(deal["name"], "Acme renewal");
    assert_eq!(deal["pipeline"], "default");
    assert_eq!(deal["stage"], "new");
    assert_eq!(deal["status"], "open");
    assert_eq!(deal["amount"], 120_000);
    assert_eq!(deal["currency"], "EUR");
    assert_eq!(deal["probability"], 10);
    assert_eq!(deal["weighted_amount"], 12_000);
    assert_eq!(deal["forecast_category"], "pipeline");
    assert_eq!(deal["owner"], "alice");
    assert_eq!(deal["expected_close_date"], "2026-12-15");
    assert_eq!(deal["lead_id"], Value::Null);
    assert_eq!(deal["version"], 1);
    assert!(deal.get("closed_at").is_none());

    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(event_types(&events), ["OpportunityCreated"]);
    assert_eq!(
        events[0].data,
        json!({
            "name": "Acme renewal", "lead_id": null, "pipeline": "default", "stage": "new",
            "probability": 10, "forecast_category": "pipeline", "amount": 120_000,
            "currency": "EUR", "expected_close_date": "2026-12-15", "owner": "alice",
        })
    );

    // A starting stage may be named.
    let mut body = deal_body();
    body["stage"] = json!("quoted");
    body["amount"] = json!(0);
    let id = app.create_deal_with(body).await;
    let deal = app.deal(&id).await;
    assert_eq!(deal["stage"], "quoted");
    assert_eq!(deal["probability"], 50);
    assert_eq!(deal["amount"], 0);
}

#[tokio::test]
async fn stage_changes_move_the_deal_and_repeats_are_no_ops() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let path = format!("/v1/opportunities/{id}/stage");

    let answer = app
        .post(&path, &json!({"stage": "quoted", "reason": "pricing sent"}))
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 2);
    let deal = app.deal(&id).await;
    assert_eq!(deal["stage"], "quoted");
    assert_eq!(deal["probability"], 50);
    assert_eq!(deal["forecast_category"], "best_case");
    assert_eq!(deal["weighted_amount"], 60_000);

    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(
        events[1].data,
        json!({"from": "new", "to": "quoted", "probability": 50,
               "forecast_category": "best_case", "reason": "pricing sent"})
    );

    // Moving to the current stage appends nothing and still answers 200.
    let repeat = app
        .post(&path, &json!({"stage": "quoted"}))
        .await
        .command_answer(200);
    assert_eq!(repeat["version"], 2);
    assert_eq!(app.deal_version(&id).await, 2);
    assert_eq!(app.stream(&format!("opportunity-{id}")).await.len(), 2);

    for stage in ["nowhere", "Quoted", "", "quo\u{0}ted"] {
        app.post(&path, &json!({"stage": stage}))
            .await
            .assert_problem(422, &["stage"]);
    }
    app.post(&path, &json!({"stage": "nowhere"}))
        .await
        .assert_problem(422, &["nowhere", "default"]);
    app.post(&path, &json!({"stage": "negotiation", "reason": ""}))
        .await
        .assert_problem(422, &["reason"]);
    assert_eq!(app.deal_version(&id).await, 2);
}

#[tokio::test]
async fn probability_overrides_stand_until_the_next_stage_change() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let path = format!("/v1/opportunities/{id}/probability");

    app.post(&path, &json!({"probability": 40}))
        .await
        .command_answer(200);
    let deal = app.deal(&id).await;
    assert_eq!(deal["probability"], 40);
    assert_eq!(deal["forecast_category"], "pipeline");
    assert_eq!(deal["weighted_amount"], 48_000);

    let answer = app
        .post(&path, &json!({"forecast_category": "commit"}))
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 3);
    let deal = app.deal(&id).await;
    assert_eq!(deal["probability"], 40, "an absent field keeps its value");
    assert_eq!(deal["forecast_category"], "commit");

    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(events[1].event_type, "ProbabilityOverridden");
    assert_eq!(events[1].data["probability"], 40);

    for (body, named) in [
        (json!({"probability": 101}), "probability"),
        (json!({"probability": -1}), "probability"),
        (json!({"probability": 12.5}), "probability"),
        (json!({"forecast_category": "closed"}), "forecast_category"),
        (json!({"forecast_category": "omitted"}), "forecast_category"),
        (json!({"forecast_category": "maybe"}), "forecast_category"),
        (json!({}), "probability"),
    ] {
        app.post(&path, &body).await.assert_problem(422, &[named]);
    }
    // An empty body is the empty object.
    app.post_raw(&path, "")
        .await
        .assert_problem(422, &["probability"]);

    app.post(
        &format!("/v1/opportunities/{id}/stage"),
        &json!({"stage": "negotiation"}),
    )
    .await
    .command_answer(200);
    let deal = app.deal(&id).await;
    assert_eq!(deal["probability"], 75);
    assert_eq!(deal["forecast_category"], "commit");
    assert_eq!(deal["version"], 4);
}

#[tokio::test]
async fn amount_close_date_and_owner_changes_are_recorded() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let base = format!("/v1/opportunities/{id}");

    app.post(
        &format!("{base}/amount"),
        &json!({"amount": 9_223_372_036_854_775_807_i64, "currency": "USD"}),
    )
    .await
    .command_answer(200);
    app.post(
        &format!("{base}/close-date"),
        &json!({"expected_close_date": "2028-02-29"}),
    )
    .await
    .command_answer(200);
    let answer = app
        .post(&format!("{base}/owner"), &json!({"owner": "bruno"}))
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 4);

    let deal = app.deal(&id).await;
    assert_eq!(deal["amount"], 9_223_372_036_854_775_807_i64);
    assert_eq!(deal["currency"], "USD");
    assert_eq!(deal["weighted_amount"], 922_337_203_685_477_581_i64);
    assert_eq!(deal["expected_close_date"], "2028-02-29");
    assert_eq!(deal["owner"], "bruno");

    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(
        event_types(&events),
        [
            "OpportunityCreated",
            "AmountChanged",
            "CloseDateChanged",
            "OwnerChanged"
        ]
    );
    assert_eq!(
        events[1].data,
        json!({"amount": 9_223_372_036_854_775_807_i64, "currency": "USD"})
    );
    assert_eq!(
        events[2].data,
        json!({"expected_close_date": "2028-02-29", "previous": "2026-12-15"})
    );
    assert_eq!(
        events[3].data,
        json!({"owner": "bruno", "previous": "alice"})
    );

    // Unchanged values append nothing.
    for (path, body) in [
        ("owner", json!({"owner": "bruno"})),
        ("close-date", json!({"expected_close_date": "2028-02-29"})),
    ] {
        let answer = app
            .post(&format!("{base}/{path}"), &body)
            .await
            .command_answer(200);
        assert_eq!(answer["version"], 4);
    }
    assert_eq!(app.deal_version(&id).await, 4);
}

#[tokio::test]
async fn activities_are_logged_with_a_validated_kind() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let path = format!("/v1/opportunities/{id}/activities");

    for kind in ["call", "email", "meeting", "note", "quote_sent"] {
        app.post(
            &path,
            &json!({"kind": kind, "summary": format!("a {kind}")}),
        )
        .await
        .command_answer(201);
    }
    app.post(
        &path,
        &json!({"kind": "call", "summary": "earlier", "occurred_at": "2026-11-26T10:00:00+01:00"}),
    )
    .await
    .command_answer(201);
    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(events.len(), 7);
    assert!(
        events[1..]
            .iter()
            .all(|event| event.event_type == "ActivityLogged")
    );
    assert_eq!(events[5].data["kind"], "quote_sent");
    assert_eq!(events[6].data["summary"], "earlier");
    assert_eq!(events[6].data["occurred_at"], "2026-11-26T09:00:00Z");
    assert!(events[6].data["activity_id"].is_string());
    assert!(app.deal(&id).await["last_activity_at"].is_string());

    let long = "y".repeat(10_001);
    for (body, named) in [
        (json!({"kind": "fax", "summary": "s"}), "kind"),
        (json!({"kind": "Call", "summary": "s"}), "kind"),
        (json!({"kind": "", "summary": "s"}), "kind"),
        (json!({"kind": "call", "summary": ""}), "summary"),
        (json!({"kind": "call", "summary": " \n "}), "summary"),
        (json!({"kind": "call", "summary": long}), "summary"),
        (json!({"kind": "call", "summary": "a\u{0}b"}), "summary"),
        (
            json!({"kind": "call", "summary": "s", "occurred_at": "yesterday"}),
            "occurred_at",
        ),
        (
            json!({"kind": "call", "summary": "s", "occurred_at": "2026-02-30T10:00:00Z"}),
            "occurred_at",
        ),
    ] {
        app.post(&path, &body).await.assert_problem(422, &[named]);
    }
    assert_eq!(app.deal_version(&id).await, 7);
}

#[tokio::test]
async fn closing_and_reopening() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let base = format!("/v1/opportunities/{id}");
    app.post(&format!("{base}/stage"), &json!({"stage": "quoted"}))
        .await
        .command_answer(200);
    app.post(
        &format!("{base}/probability"),
        &json!({"probability": 90, "forecast_category": "commit"}),
    )
    .await
    .command_answer(200);

    app.post(&format!("{base}/close"), &json!({"outcome": "lost"}))
        .await
        .assert_problem(422, &["reason"]);
    app.post(
        &format!("{base}/close"),
        &json!({"outcome": "lost", "reason": ""}),
    )
    .await
    .assert_problem(422, &["reason"]);
    app.post(&format!("{base}/close"), &json!({"outcome": "abandoned"}))
        .await
        .assert_problem(422, &["outcome"]);
    app.post(&format!("{base}/reopen"), &json!({}))
        .await
        .assert_problem(422, &["closed"]);
    assert_eq!(app.deal_version(&id).await, 3);

    let answer = app
        .post(
            &format!("{base}/close"),
            &json!({"outcome": "lost", "reason": "went with a rival"}),
        )
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 4);
    let deal = app.deal(&id).await;
    assert_eq!(deal["status"], "lost");
    assert_eq!(deal["probability"], 0);
    assert_eq!(deal["forecast_category"], "omitted");
    assert_eq!(deal["weighted_amount"], 0);
    assert!(deal["closed_at"].is_string());
    let events = app.stream(&format!("opportunity-{id}")).await;
    let closed = &events[3];
    assert_eq!(closed.event_type, "OpportunityClosed");
    assert_eq!(closed.data["outcome"], "lost");
    assert_eq!(closed.data["reason"], "went with a rival");
    assert!(closed.data["closed_at"].is_string());

    app.post(&format!("{base}/close"), &json!({"outcome": "won"}))
        .await
        .assert_problem(422, &["closed"]);

    // Reopening goes to the first stage by default and clears the overrides.
    let answer = app
        .post(&format!("{base}/reopen"), &json!({}))
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 5);
    let deal = app.deal(&id).await;
    assert_eq!(deal["status"], "open");
    assert_eq!(deal["stage"], "new");
    assert_eq!(deal["probability"], 10);
    assert_eq!(deal["forecast_category"], "pipeline");
    assert!(deal.get("closed_at").is_none());
    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(
        events[4].data,
        json!({"stage": "new", "probability": 10, "forecast_category": "pipeline"})
    );

    // Won, then reopened into a named stage (an empty body means the default too).
    app.post(&format!("{base}/close"), &json!({"outcome": "won"}))
        .await
        .command_answer(200);
    let deal = app.deal(&id).await;
    assert_eq!(deal["status"], "won");
    assert_eq!(deal["probability"], 100);
    assert_eq!(deal["forecast_category"], "closed");
    assert_eq!(deal["weighted_amount"], 120_000);
    app.post(&format!("{base}/reopen"), &json!({"stage": "nowhere"}))
        .await
        .assert_problem(422, &["nowhere"]);
    app.post(&format!("{base}/reopen"), &json!({"stage": "negotiation"}))
        .await
        .command_answer(200);
    let deal = app.deal(&id).await;
    assert_eq!(deal["stage"], "negotiation");
    assert_eq!(deal["probability"], 75);
    assert_eq!(deal["status"], "open");

    app.post(&format!("{base}/close"), &json!({"outcome": "won"}))
        .await
        .command_answer(200);
    app.post_raw(&format!("{base}/reopen"), "")
        .await
        .command_answer(200);
    assert_eq!(app.deal(&id).await["stage"], "new");
}

#[tokio::test]
async fn a_closed_deal_refuses_changes_until_reopened() {
    let app = TestApp::spawn().await;
    let id = app.create_won_deal().await;
    let base = format!("/v1/opportunities/{id}");
    let version = app.deal_version(&id).await;
    for (path, body) in [
        ("stage", json!({"stage": "quoted"})),
        ("stage", json!({"stage": "new"})),
        ("amount", json!({"amount": 1, "currency": "EUR"})),
        ("close-date", json!({"expected_close_date": "2027-01-01"})),
        ("owner", json!({"owner": "bruno"})),
        ("probability", json!({"probability": 30})),
        ("probability", json!({"forecast_category": "commit"})),
    ] {
        app.post(&format!("{base}/{path}"), &body)
            .await
            .assert_problem(422, &["closed"]);
    }
    // Activities are history, not changes: a closed deal still records them.
    app.post(
        &format!("{base}/activities"),
        &json!({"kind": "note", "summary": "post-mortem"}),
    )
    .await
    .command_answer(201);
    assert_eq!(app.deal_version(&id).await, version + 1);
}

#[tokio::test]
async fn follow_ups_can_be_completed() {
    let app = TestApp::spawn().await;
    let id = app.create_deal().await;
    let follow_up = Uuid::now_v7();
    app.handler
        .handle_opportunity(
            &CommandContext::new("workflow:first-contact"),
            OpportunityId(Uuid::parse_str(&id).unwrap()),
            OpportunityRequest::Other(OpportunityCommand::ScheduleFollowUp {
                follow_up_id: FollowUpId(follow_up),
                kind: FollowUpKind::parse("first-contact").unwrap(),
                due_at: Utc::now() + Duration::days(1),
                rule: Text::parse("rule", "first-contact", Text::SHORT).unwrap(),
            }),
        )
        .await
        .expect("scheduling a follow-up");
    let deal = app.deal(&id).await;
    assert_eq!(deal["follow_ups"][0]["id"], follow_up.to_string());
    assert_eq!(deal["follow_ups"][0]["status"], "open");

    let path = format!("/v1/opportunities/{id}/follow-ups/{follow_up}/complete");
    let answer = app.post(&path, &json!({})).await.command_answer(200);
    assert_eq!(answer["version"], 3);
    let deal = app.deal(&id).await;
    assert_eq!(deal["follow_ups"][0]["status"], "completed");
    let events = app.stream(&format!("opportunity-{id}")).await;
    assert_eq!(events[2].event_type, "FollowUpCompleted");
    assert_eq!(events[2].data["follow_up_id"], follow_up.to_string());

    // Completing it again is a no-op; an empty body is accepted.
    let answer = app.post_raw(&path, "").await.command_answer(200);
    assert_eq!(answer["version"], 3);

    for follow_up in [unknown_id(), "not-a-uuid".to_owned()] {
        app.post(
            &format!("/v1/opportunities/{id}/follow-ups/{follow_up}/complete"),
            &json!({}),
        )
        .await
        .assert_problem(404, &["follow-up"]);
    }
    app.post(
        &format!(
            "/v1/opportunities/{}/follow-ups/{follow_up}/complete",
            unknown_id()
        ),
        &json!({}),
    )
    .await
    .assert_problem(404, &["opportunity"]);
    app.post(&path, &json!({"note": "done"}))
        .await
        .assert_problem(400, &["note"]);
    assert_eq!(app.deal_version(&id).await, 3);
}

#[tokio::test]
async fn opportunity_values_out_of_range_are_unprocessable() {
    let app = TestApp::spawn().await;
    let long = "z".repeat(300);
    let cases = [
        ("amount", json!(-1), "amount"),
        ("amount", json!(9_223_372_036_854_775_808_u64), "amount"),
        (
            "amount",
            json!(-9_223_372_036_854_775_809_i128 as f64),
            "amount",
        ),
        ("amount", json!(1.5), "amount"),
        ("currency", json!("QQQ"), "currency"),
        ("currency", json!("eur"), "currency"),
        ("currency", json!("EURO"), "currency"),
        ("currency", json!(""), "currency"),
        ("currency", json!("E\u{0}R"), "currency"),
        ("currency", json!("XXX"), "currency"),
        (
            "expected_close_date",
            json!("2026-02-30"),
            "expected_close_date",
        ),
        (
            "expected_close_date",
            json!("15/12/2026"),
            "expected_close_date",
        ),
        ("expected_close_date", json!(""), "expected_close_date"),
        ("name", json!(""), "name"),
        ("name", json!(long), "name"),
        ("name", json!("a\u{0}b"), "name"),
        ("owner", json!(""), "owner"),
        ("owner", json!("\u{0}"), "owner"),
        ("owner", json!(long), "owner"),
        ("pipeline", json!("nowhere"), "pipeline"),
        ("pipeline", json!("Default"), "pipeline"),
        ("stage", json!("nowhere"), "stage"),
        ("stage", json!("\u{0}"), "stage"),
    ];
    for (field, value, named) in cases {
        let mut body = deal_body();
        body[field] = value;
        app.post("/v1/opportunities", &body)
            .await
            .assert_problem(422, &[named]);
    }
    // Numbers beyond i64 are written exactly as a client would send them.
    for amount in [
        "9223372036854775808",
        "1e30",
        "-1e30",
        "18446744073709551616",
    ] {
        let body = format!(
            r#"{{"name":"n","amount":{amount},"currency":"EUR","expected_close_date":"2026-12-15","owner":"o"}}"#
        );
        app.post_raw("/v1/opportunities", body)
            .await
            .assert_problem(422, &["amount"]);
    }

    let id = app.create_deal().await;
    let base = format!("/v1/opportunities/{id}");
    for body in [
        r#"{"amount":-5,"currency":"EUR"}"#,
        r#"{"amount":9223372036854775808,"currency":"EUR"}"#,
        r#"{"amount":1e30,"currency":"EUR"}"#,
    ] {
        app.post_raw(&format!("{base}/amount"), body)
            .await
            .assert_problem(422, &["amount"]);
    }
    for currency in ["QQQ", "usd", "", "U\u{0}D"] {
        app.post(
            &format!("{base}/amount"),
            &json!({"amount": 5, "currency": currency}),
        )
        .await
        .assert_problem(422, &["currency"]);
    }
    for date in ["2026-02-30", "2026-13-01", "tomorrow", "", "2026-1-1\u{0}"] {
        app.post(
            &format!("{base}/close-date"),
            &json!({"expected_close_date": date}),
        )
        .await
        .assert_problem(422, &["expected_close_date"]);
    }
    for owner in ["", "   ", long.as_str(), "bob\u{0}"] {
        app.post(&format!("{base}/owner"), &json!({"owner": owner}))
            .await
            .assert_problem(422, &["owner"]);
    }
    assert_eq!(app.deal_version(&id).await, 1);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn unknown_opportunities_are_not_found() {
    let app = TestApp::spawn().await;
    let commands: [(&str, Value); 9] = [
        ("stage", json!({"stage": "quoted"})),
        ("probability", json!({"probability": 30})),
        ("amount", json!({"amount": 1, "currency": "EUR"})),
        ("close-date", json!({"expected_close_date": "2027-01-01"})),
        ("owner", json!({"owner": "bruno"})),
        ("activities", json!({"kind": "call", "summary": "hello"})),
        ("close", json!({"outcome": "won"})),
        ("reopen", json!({})),
        (
            "follow-ups/0193a000-0000-7000-8000-000000000000/complete",
            json!({}),
        ),
    ];
    for id in [unknown_id(), "not-a-uuid".to_owned(), "%20".to_owned()] {
        app.get(&format!("/v1/opportunities/{id}"))
            .await
            .assert_problem(404, &["opportunity"]);
        app.get(&format!("/v1/opportunities/{id}/history"))
            .await
            .assert_problem(404, &["opportunity"]);
        for (path, body) in &commands {
            app.post(&format!("/v1/opportunities/{id}/{path}"), body)
                .await
                .assert_problem(404, &["opportunity"]);
            // If-Match does not turn an unknown deal into something else than 404 or 409.
            let reply = app
                .call(Method::POST, &format!("/v1/opportunities/{id}/{path}"))
                .json(body)
                .if_match(3)
                .send()
                .await;
            assert!(
                [404, 409].contains(&reply.status.as_u16()),
                "{path}: {reply:?}"
            );
            assert_eq!(reply.content_type(), "application/problem+json");
        }
    }
    assert_eq!(app.event_count().await, 1, "only the default pipeline");
}
