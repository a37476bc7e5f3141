//! `PUT /v1/pipelines/{slug}`: define, revise, idempotent repeats, and deals in a custom pipeline.

use serde_json::{Value, json};

use crate::helpers::{TestApp, deal_body, event_types};

fn saas_pipeline() -> Value {
    json!({
        "name": "SaaS",
        "stages": [
            {"name": "trial", "probability": 5, "forecast_category": "pipeline"},
            {"name": "demo", "probability": 30, "forecast_category": "best_case"},
            {"name": "contract", "probability": 80, "forecast_category": "commit"},
        ],
    })
}

#[tokio::test]
async fn pipelines_are_defined_revised_and_idempotent() {
    let app = TestApp::spawn().await;
    let answer = app
        .put("/v1/pipelines/saas", &saas_pipeline())
        .await
        .command_answer(200);
    assert_eq!(answer["id"], "saas");
    assert_eq!(answer["version"], 1);

    // The same body again appends nothing.
    let again = app
        .put("/v1/pipelines/saas", &saas_pipeline())
        .await
        .command_answer(200);
    assert_eq!(again["version"], 1);
    assert_eq!(app.stream("pipeline-saas").await.len(), 1);

    let mut revised = saas_pipeline();
    revised["stages"][1]["probability"] = json!(40);
    revised["stages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "signature", "probability": 95, "forecast_category": "commit"}));
    let answer = app
        .put("/v1/pipelines/saas", &revised)
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 2);
    let events = app.stream("pipeline-saas").await;
    assert_eq!(event_types(&events), ["PipelineDefined", "PipelineRevised"]);
    assert_eq!(events[0].data, saas_pipeline(), "a revision never rewrites");
    assert_eq!(events[1].data, revised);

    // A deal in the pipeline starts in its first stage and moves through its stages only.
    let mut body = deal_body();
    body["pipeline"] = json!("saas");
    let id = app.create_deal_with(body).await;
    let deal = app.deal(&id).await;
    assert_eq!(deal["pipeline"], "saas");
    assert_eq!(deal["stage"], "trial");
    assert_eq!(deal["probability"], 5);
    let stage = format!("/v1/opportunities/{id}/stage");
    app.post(&stage, &json!({"stage": "demo"}))
        .await
        .command_answer(200);
    let deal = app.deal(&id).await;
    assert_eq!(deal["probability"], 40, "the revised probability applies");
    assert_eq!(deal["forecast_category"], "best_case");
    app.post(&stage, &json!({"stage": "signature"}))
        .await
        .command_answer(200);
    assert_eq!(app.deal(&id).await["stage"], "signature");
    app.post(&stage, &json!({"stage": "quoted"}))
        .await
        .assert_problem(422, &["quoted", "saas"]);

    // Reopening goes to this pipeline's first stage.
    app.post(
        &format!("/v1/opportunities/{id}/close"),
        &json!({"outcome": "won"}),
    )
    .await
    .command_answer(200);
    app.post(&format!("/v1/opportunities/{id}/reopen"), &json!({}))
        .await
        .command_answer(200);
    assert_eq!(app.deal(&id).await["stage"], "trial");

    // The default pipeline can be revised too.
    let answer = app
        .put("/v1/pipelines/default", &saas_pipeline())
        .await
        .command_answer(200);
    assert_eq!(answer["version"], 2);
}

#[tokio::test]
async fn invalid_pipelines_are_unprocessable() {
    let app = TestApp::spawn().await;
    let stage = |name: &str, probability: Value, category: &str| json!({"name": name, "probability": probability, "forecast_category": category});
    let cases = [
        (
            json!({"name": "P", "stages": [stage("a", json!(10), "pipeline"), stage("a", json!(20), "commit")]}),
            "listed twice",
        ),
        (
            json!({"name": "P", "stages": [stage("a", json!(10), "closed")]}),
            "closed",
        ),
        (
            json!({"name": "P", "stages": [stage("a", json!(10), "omitted")]}),
            "omitted",
        ),
        (json!({"name": "P", "stages": []}), "stage"),
        (
            json!({"name": "P", "stages": [stage("a", json!(101), "pipeline")]}),
            "probability",
        ),
        (
            json!({"name": "P", "stages": [stage("a", json!(-1), "pipeline")]}),
            "probability",
        ),
        (
            json!({"name": "P", "stages": [stage("Big Stage", json!(1), "pipeline")]}),
            "stage",
        ),
        (
            json!({"name": "P", "stages": [stage("a\u{0}", json!(1), "pipeline")]}),
            "stage",
        ),
        (
            json!({"name": "", "stages": [stage("a", json!(1), "pipeline")]}),
            "name",
        ),
        (
            json!({"name": "x".repeat(300), "stages": [stage("a", json!(1), "pipeline")]}),
            "name",
        ),
        (
            json!({"name": "P\u{0}", "stages": [stage("a", json!(1), "pipeline")]}),
            "name",
        ),
    ];
    for (body, named) in cases {
        app.put("/v1/pipelines/custom", &body)
            .await
            .assert_problem(422, &[named]);
    }
    let too_many: Vec<Value> = (0..51)
        .map(|index| stage(&format!("s{index}"), json!(1), "pipeline"))
        .collect();
    app.put(
        "/v1/pipelines/custom",
        &json!({"name": "P", "stages": too_many}),
    )
    .await
    .assert_problem(422, &["stages"]);

    for slug in ["Custom", "a%20b", "-lead", &"p".repeat(65)] {
        app.put(&format!("/v1/pipelines/{slug}"), &saas_pipeline())
            .await
            .assert_problem(422, &["pipeline"]);
    }
    assert!(app.stream("pipeline-custom").await.is_empty());

    // A stale If-Match is refused; the right one is accepted.
    app.put("/v1/pipelines/custom", &saas_pipeline())
        .await
        .command_answer(200);
    let mut revised = saas_pipeline();
    revised["name"] = json!("Renamed");
    app.call(reqwest::Method::PUT, "/v1/pipelines/custom")
        .json(&revised)
        .if_match(0)
        .send()
        .await
        .assert_version_conflict(1, 0);
    app.call(reqwest::Method::PUT, "/v1/pipelines/custom")
        .json(&revised)
        .if_match(1)
        .send()
        .await
        .command_answer(200);
}

#[tokio::test]
async fn a_deal_in_an_undefined_pipeline_is_refused() {
    let app = TestApp::spawn().await;
    let mut body = deal_body();
    body["pipeline"] = json!("enterprise");
    app.post("/v1/opportunities", &body)
        .await
        .assert_problem(422, &["enterprise"]);
    assert_eq!(app.event_count().await, 1);
}
