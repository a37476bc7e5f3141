//! Concurrent commands on one deal without `If-Match`: the handler retries lost races, so every
//! command succeeds and the stream has no gaps.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::{DEFAULT_STAGES, Reply, TestApp, event_types};

async fn all(requests: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|joined| joined.expect("request task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_changes_all_succeed() {
    let app = Arc::new(TestApp::spawn().await);
    let deal = app.create_deal().await;
    let requests = (0..20)
        .map(|index| {
            let app = app.clone();
            let deal = deal.clone();
            tokio::spawn(async move {
                if index % 2 == 0 {
                    app.post(
                        &format!("/v1/opportunities/{deal}/amount"),
                        &json!({"amount": 1000 + index, "currency": "EUR"}),
                    )
                    .await
                } else {
                    app.post(
                        &format!("/v1/opportunities/{deal}/close-date"),
                        &json!({"expected_close_date": format!("2027-01-{:02}", index)}),
                    )
                    .await
                }
            })
        })
        .collect();
    let replies = all(requests).await;
    let mut versions: Vec<i64> = replies
        .iter()
        .map(|reply| reply.command_answer(200)["version"].as_i64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<i64>>());
    assert_eq!(app.deal_version(&deal).await, 21);
    let events = app.stream(&format!("opportunity-{deal}")).await;
    assert_eq!(events.len(), 21);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.stream_version, index as i64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stage_moves_keep_a_consistent_history() {
    let app = Arc::new(TestApp::spawn().await);
    let deal = app.create_deal().await;
    let requests = (0..20)
        .map(|index| {
            let app = app.clone();
            let deal = deal.clone();
            tokio::spawn(async move {
                app.post(
                    &format!("/v1/opportunities/{deal}/stage"),
                    &json!({"stage": DEFAULT_STAGES[index % 4]}),
                )
                .await
            })
        })
        .collect();
    for reply in all(requests).await {
        reply.command_answer(200);
    }
    let events = app.stream(&format!("opportunity-{deal}")).await;
    let changes = events.len() - 1;
    assert!(changes >= 3, "at least the moves away from new: {changes}");
    assert_eq!(app.deal_version(&deal).await, 1 + changes as i64);
    assert!(
        event_types(&events)[1..]
            .iter()
            .all(|event_type| *event_type == "StageChanged")
    );
    // Each move starts where the previous one ended, and none is a move to the same stage.
    let mut stage = "new".to_owned();
    for event in &events[1..] {
        assert_eq!(event.data["from"], stage.as_str());
        assert_ne!(event.data["to"], event.data["from"]);
        stage = event.data["to"].as_str().unwrap().to_owned();
    }
    assert_eq!(app.deal(&deal).await["stage"], stage.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_qualifications_convert_a_lead_once() {
    let app = Arc::new(TestApp::spawn().await);
    let lead = app.capture_lead().await;
    let requests = (0..6)
        .map(|_| {
            let app = app.clone();
            let path = format!("/v1/leads/{lead}/qualify");
            tokio::spawn(async move {
                app.post(&path, &crate::helpers::qualify_body(true, true, true, true))
                    .await
            })
        })
        .collect();
    let replies = all(requests).await;
    let successes = replies.iter().filter(|reply| reply.status == 200).count();
    assert_eq!(successes, 1, "{replies:?}");
    for reply in replies.iter().filter(|reply| reply.status != 200) {
        reply.assert_problem(422, &["already qualified"]);
    }
    let lead_events = app.stream(&format!("lead-{lead}")).await;
    assert_eq!(
        event_types(&lead_events),
        ["LeadCaptured", "LeadQualified", "LeadConverted"]
    );
    let created = app
        .store
        .read_all(0, 1000, Some("opportunity"))
        .await
        .unwrap();
    assert_eq!(event_types(&created), ["OpportunityCreated"]);
    assert_eq!(
        lead_events[2].data["opportunity_id"],
        created[0].stream_id["opportunity-".len()..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_pipeline_definitions_append_once() {
    let app = Arc::new(TestApp::spawn().await);
    let body = json!({"name": "Partners", "stages": [
        {"name": "intro", "probability": 10, "forecast_category": "pipeline"},
        {"name": "deal", "probability": 60, "forecast_category": "commit"},
    ]});
    let requests = (0..8)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move { app.put("/v1/pipelines/partners", &body).await })
        })
        .collect();
    for reply in all(requests).await {
        assert_eq!(reply.command_answer(200)["version"], 1);
    }
    assert_eq!(
        event_types(&app.stream("pipeline-partners").await),
        ["PipelineDefined"]
    );
}
