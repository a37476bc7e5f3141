//! Leads: capture, read, qualification (which converts the lead into a deal atomically) and
//! disqualification.

use serde_json::json;

use crate::helpers::{TestApp, event_types, qualify_body, unknown_id};

#[tokio::test]
async fn a_captured_lead_can_be_read_back() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/v1/leads",
            &json!({
                "name": "  Ada Lovelace ",
                "company": "Analytical",
                "email": "ada@example.com",
                "country": "GB",
                "source": "webinar",
            }),
        )
        .await;
    let answer = reply.command_answer(201);
    assert_eq!(answer["version"], 1);
    let id = answer["id"].as_str().unwrap();

    let lead = app.get(&format!("/v1/leads/{id}")).await;
    lead.assert_status(200);
    let lead = lead.json();
    assert_eq!(lead["id"], id);
    assert_eq!(lead["name"], "Ada Lovelace");
    assert_eq!(lead["company"], "Analytical");
    assert_eq!(lead["email"], "ada@example.com");
    assert_eq!(lead["country"], "GB");
    assert_eq!(lead["source"], "webinar");
    assert_eq!(lead["status"], "open");
    assert_eq!(lead["version"], 1);

    let events = app.stream(&format!("lead-{id}")).await;
    assert_eq!(event_types(&events), ["LeadCaptured"]);
    assert_eq!(events[0].position, answer["position"].as_i64().unwrap());
}

#[tokio::test]
async fn lead_values_out_of_range_are_unprocessable() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(300);
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": long}), "name"),
        (json!({"name": "Ada\u{0}"}), "name"),
        (json!({"name": "Ada", "company": "\u{0}"}), "company"),
        (json!({"name": "Ada", "email": "not-an-address"}), "email"),
        (json!({"name": "Ada", "email": "a\u{0}@b.c"}), "email"),
        (json!({"name": "Ada", "country": "gb"}), "country"),
        (json!({"name": "Ada", "country": "XX"}), "country"),
        (json!({"name": "Ada", "source": ""}), "source"),
    ];
    for (body, field) in cases {
        app.post("/v1/leads", &body)
            .await
            .assert_problem(422, &[field]);
    }
    assert_eq!(app.event_count().await, 1, "only the default pipeline");
}

#[tokio::test]
async fn qualifying_converts_the_lead_into_an_opportunity_atomically() {
    let app = TestApp::spawn().await;
    let lead_id = app.capture_lead().await;

    let reply = app
        .post(
            &format!("/v1/leads/{lead_id}/qualify"),
            &qualify_body(true, false, true, true),
        )
        .await;
    reply.assert_status(200);
    let answer = reply.json();
    let keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "opportunity_id", "position", "version"]);
    assert_eq!(answer["id"], lead_id.as_str());
    assert_eq!(answer["version"], 3);
    let opportunity_id = answer["opportunity_id"].as_str().unwrap();

    let deal = app.deal(opportunity_id).await;
    assert_eq!(deal["lead_id"], lead_id.as_str());
    assert_eq!(deal["name"], "Analytical engine");
    assert_eq!(deal["stage"], "new");
    assert_eq!(deal["pipeline"], "default");
    assert_eq!(deal["amount"], 50_000);
    assert_eq!(deal["currency"], "GBP");
    assert_eq!(
        deal["owner"], "unassigned",
        "an unrouted lead's deal gets the default"
    );
    assert_eq!(deal["status"], "open");

    let lead_events = app.stream(&format!("lead-{lead_id}")).await;
    assert_eq!(
        event_types(&lead_events),
        ["LeadCaptured", "LeadQualified", "LeadConverted"]
    );
    assert_eq!(
        lead_events[1].data["criteria"],
        json!({"budget": true, "authority": false, "need": true, "timeline": true})
    );
    assert_eq!(lead_events[2].data["opportunity_id"], opportunity_id);
    let deal_events = app.stream(&format!("opportunity-{opportunity_id}")).await;
    assert_eq!(event_types(&deal_events), ["OpportunityCreated"]);
    assert_eq!(deal_events[0].data["lead_id"], lead_id.as_str());
    // One command, one transaction: consecutive positions, the answer naming the last.
    let positions = [
        lead_events[1].position,
        lead_events[2].position,
        deal_events[0].position,
    ];
    assert_eq!(positions[1], positions[0] + 1);
    assert_eq!(positions[2], positions[1] + 1);
    assert_eq!(answer["position"], positions[2]);
    assert_eq!(lead_events[1].metadata, deal_events[0].metadata);

    let lead = app.get(&format!("/v1/leads/{lead_id}")).await.json();
    assert_eq!(lead["status"], "qualified");
    assert_eq!(lead["opportunity_id"], opportunity_id);

    // An explicit owner wins over the default.
    let second = app.capture_lead().await;
    let mut body = qualify_body(true, true, true, false);
    body["opportunity"]["owner"] = json!("bruno");
    let answer = app
        .post(&format!("/v1/leads/{second}/qualify"), &body)
        .await
        .json();
    let deal = app.deal(answer["opportunity_id"].as_str().unwrap()).await;
    assert_eq!(deal["owner"], "bruno");
}

#[tokio::test]
async fn qualification_rules_are_enforced() {
    let app = TestApp::spawn().await;
    let lead_id = app.capture_lead().await;
    let qualify = format!("/v1/leads/{lead_id}/qualify");

    // Need is required, and two of the other three.
    app.post(&qualify, &qualify_body(true, true, false, true))
        .await
        .assert_problem(422, &["criteria"]);
    app.post(&qualify, &qualify_body(true, false, true, false))
        .await
        .assert_problem(422, &["criteria"]);
    assert_eq!(app.stream(&format!("lead-{lead_id}")).await.len(), 1);

    app.post(&qualify, &qualify_body(true, true, true, true))
        .await
        .assert_status(200);
    app.post(&qualify, &qualify_body(true, true, true, true))
        .await
        .assert_problem(422, &["already qualified"]);
    assert_eq!(app.stream(&format!("lead-{lead_id}")).await.len(), 3);
    let opportunities = app
        .store
        .read_all(0, 1000, Some("opportunity"))
        .await
        .unwrap();
    assert_eq!(opportunities.len(), 1, "no second deal");
}

#[tokio::test]
async fn a_disqualified_lead_cannot_be_qualified() {
    let app = TestApp::spawn().await;
    let lead_id = app.capture_lead().await;
    let answer = app
        .post(
            &format!("/v1/leads/{lead_id}/disqualify"),
            &json!({"reason": "no budget this year"}),
        )
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 2);
    let lead = app.get(&format!("/v1/leads/{lead_id}")).await.json();
    assert_eq!(lead["status"], "disqualified");
    assert_eq!(lead["disqualification_reason"], "no budget this year");

    app.post(
        &format!("/v1/leads/{lead_id}/qualify"),
        &qualify_body(true, true, true, true),
    )
    .await
    .assert_problem(422, &["disqualified"]);
    let events = app.stream(&format!("lead-{lead_id}")).await;
    assert_eq!(event_types(&events), ["LeadCaptured", "LeadDisqualified"]);
    assert_eq!(events[1].data["reason"], "no budget this year");
}

#[tokio::test]
async fn qualification_values_are_validated() {
    let app = TestApp::spawn().await;
    let lead_id = app.capture_lead().await;
    let qualify = format!("/v1/leads/{lead_id}/qualify");
    let cases = [
        ("amount", json!(-1), "amount"),
        ("amount", json!(9_223_372_036_854_775_808_u64), "amount"),
        ("currency", json!("QQQ"), "currency"),
        ("currency", json!("gbp"), "currency"),
        (
            "expected_close_date",
            json!("2026-02-30"),
            "expected_close_date",
        ),
        ("name", json!(""), "name"),
        ("name", json!("n\u{0}"), "name"),
        ("pipeline", json!("nowhere"), "pipeline"),
        ("owner", json!(""), "owner"),
    ];
    for (field, value, named) in cases {
        let mut body = qualify_body(true, true, true, true);
        body["opportunity"][field] = value;
        app.post(&qualify, &body)
            .await
            .assert_problem(422, &[named]);
    }
    for amount in ["9223372036854775808", "1e30", "-3"] {
        let body = qualify_body(true, true, true, true)
            .to_string()
            .replace("50000", amount);
        app.post_raw(&qualify, body)
            .await
            .assert_problem(422, &["amount"]);
    }
    app.post(
        &format!("/v1/leads/{lead_id}/disqualify"),
        &json!({"reason": ""}),
    )
    .await
    .assert_problem(422, &["reason"]);
    app.post(
        &format!("/v1/leads/{lead_id}/disqualify"),
        &json!({"reason": "a\u{0}b"}),
    )
    .await
    .assert_problem(422, &["reason"]);
    assert_eq!(app.stream(&format!("lead-{lead_id}")).await.len(), 1);
}

#[tokio::test]
async fn unknown_leads_are_not_found() {
    let app = TestApp::spawn().await;
    for id in [unknown_id(), "not-a-uuid".to_owned()] {
        app.get(&format!("/v1/leads/{id}"))
            .await
            .assert_problem(404, &["lead"]);
        app.post(
            &format!("/v1/leads/{id}/qualify"),
            &qualify_body(true, true, true, true),
        )
        .await
        .assert_problem(404, &["lead"]);
        app.post(
            &format!("/v1/leads/{id}/disqualify"),
            &json!({"reason": "spam"}),
        )
        .await
        .assert_problem(404, &["lead"]);
    }
    assert_eq!(app.event_count().await, 1, "only the default pipeline");
}

#[tokio::test]
async fn lead_commands_honour_if_match() {
    let app = TestApp::spawn().await;
    let lead_id = app.capture_lead().await;
    app.call(
        reqwest::Method::POST,
        &format!("/v1/leads/{lead_id}/qualify"),
    )
    .json(&qualify_body(true, true, true, true))
    .if_match(4)
    .send()
    .await
    .assert_version_conflict(1, 4);
    app.call(
        reqwest::Method::POST,
        &format!("/v1/leads/{lead_id}/disqualify"),
    )
    .json(&json!({"reason": "spam"}))
    .if_match(0)
    .send()
    .await
    .assert_version_conflict(1, 0);
    app.call(
        reqwest::Method::POST,
        &format!("/v1/leads/{lead_id}/disqualify"),
    )
    .json(&json!({"reason": "spam"}))
    .if_match(1)
    .send()
    .await
    .command_answer(200);
    // On a disqualified lead, a stale If-Match is reported before the rule.
    let qualify = format!("/v1/leads/{lead_id}/qualify");
    app.call(reqwest::Method::POST, &qualify)
        .json(&qualify_body(true, true, true, true))
        .if_match(1)
        .send()
        .await
        .assert_version_conflict(2, 1);
    app.call(reqwest::Method::POST, &qualify)
        .json(&qualify_body(true, true, true, true))
        .if_match(2)
        .send()
        .await
        .assert_problem(422, &["disqualified"]);
}

#[tokio::test]
async fn leads_and_opportunities_are_not_each_other() {
    let app = TestApp::spawn().await;
    let lead = app.capture_lead().await;
    let deal = app.create_deal().await;
    app.get(&format!("/v1/opportunities/{lead}"))
        .await
        .assert_problem(404, &["opportunity"]);
    app.get(&format!("/v1/leads/{deal}"))
        .await
        .assert_problem(404, &["lead"]);
    app.post(
        &format!("/v1/leads/{deal}/disqualify"),
        &json!({"reason": "spam"}),
    )
    .await
    .assert_problem(404, &["lead"]);
    app.post(
        &format!("/v1/opportunities/{lead}/owner"),
        &json!({"owner": "bruno"}),
    )
    .await
    .assert_problem(404, &["opportunity"]);
}
