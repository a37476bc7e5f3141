//! How the consumer handles deliveries: events this build cannot read yet wait for an upgrade,
//! and one deal's events are handled in stream order whatever the delivery order.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use commands::OpportunityRequest;
use domain::values::{ActivityKind, OpportunityId, StageName};
use eventstore::{AppendRequest, ExpectedVersion, NewEvent, StreamAppend};
use uuid::Uuid;
use workflow::WorkflowConfig;

use crate::support::{Harness, eventually, of_type, wait_until_consumed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_newer_schema_version_waits_for_an_upgrade() {
    let harness = Harness::new().await;
    let instance = harness.start(WorkflowConfig::default());
    // Written by a newer build during a rolling upgrade.
    harness
        .store
        .append(AppendRequest {
            command_id: Uuid::now_v7(),
            fingerprint: None,
            occurred_at: None,
            streams: vec![StreamAppend {
                stream_id: format!("opportunity-{}", Uuid::now_v7()),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "OpportunityCreated".to_owned(),
                    schema_version: 2,
                    data: serde_json::json!({"shape": "of the future"}),
                    metadata: serde_json::json!({}),
                }],
            }],
        })
        .await
        .expect("the newer event is appended");
    let stream = harness
        .jetstream
        .get_stream(&harness.options.events_stream)
        .await
        .expect("events stream");
    let delivered = eventually(Duration::from_secs(20), "the event's delivery", || async {
        let mut consumer = stream
            .get_consumer::<pull::Config>(&harness.options.durable_name())
            .await
            .ok()?;
        let delivered = consumer.info().await.ok()?.delivered.stream_sequence;
        (delivered >= 2).then_some(delivered)
    })
    .await;
    // Sequence 1 is the default pipeline's definition, 2 the newer event.
    assert_eq!(delivered, 2);
    // Handled (and refused) by now; it must stay unacknowledged, for an upgraded instance.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut consumer = stream
        .get_consumer::<pull::Config>(&harness.options.durable_name())
        .await
        .expect("the durable consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!(info.ack_floor.stream_sequence, 1, "the event was given up");
    assert_eq!(info.num_ack_pending, 1);
    instance.stop().await;
    harness.finish().await;
}

/// The deal's follow-ups of `kind` that are still open, from its history.
async fn open_follow_ups(harness: &Harness, deal: OpportunityId, kind: &str) -> usize {
    let history = harness.history(&deal.stream_id()).await;
    of_type(&history, "FollowUpScheduled")
        .into_iter()
        .filter(|scheduled| scheduled.data["kind"] == kind)
        .filter(|scheduled| {
            let id = &scheduled.data["follow_up_id"];
            !history.iter().any(|event| {
                matches!(
                    event.event_type.as_str(),
                    "FollowUpCompleted" | "FollowUpCancelled"
                ) && &event.data["follow_up_id"] == id
            })
        })
        .count()
}

async fn stage_of(harness: &Harness, deal: OpportunityId) -> String {
    let loaded = harness
        .handler
        .load_opportunity(deal)
        .await
        .expect("the deal loads");
    loaded
        .state
        .expect("the deal exists")
        .stage
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_that_moved_on_before_the_workflow_saw_it_keeps_no_spurious_follow_up() {
    let harness = Harness::new().await;
    // The workflow is behind (a backlog, a restart): by the time it sees OpportunityCreated, the
    // first call is logged and someone has moved the deal to `quoted`.
    let deal = harness.create_deal(60).await;
    harness.log_activity(deal, ActivityKind::Call).await;
    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            OpportunityRequest::ChangeStage {
                stage: StageName::parse("quoted").expect("stage"),
                reason: None,
            },
        )
        .await
        .expect("the stage changes");

    let instance = harness.start(WorkflowConfig::default());
    wait_until_consumed(&harness).await;
    // As if it had kept up: first-contact scheduled on creation and completed by the call...
    let history = harness.history(&deal.stream_id()).await;
    assert_eq!(open_follow_ups(&harness, deal, "first-contact").await, 0);
    assert_eq!(of_type(&history, "FollowUpCompleted").len(), 1);
    // ...without moving the deal back from `quoted` to `contacted`.
    assert_eq!(stage_of(&harness, deal).await, "quoted");
    assert_eq!(of_type(&history, "StageChanged").len(), 1);
    assert_eq!(open_follow_ups(&harness, deal, "quote-follow-up").await, 1);
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creation_and_first_call_delivered_together_to_two_instances_end_the_same() {
    const DEALS: usize = 40;
    let harness = Harness::new().await;
    let mut deals = Vec::with_capacity(DEALS);
    for _ in 0..DEALS {
        let deal = harness.create_deal(60).await;
        harness.log_activity(deal, ActivityKind::Call).await;
        deals.push(deal);
    }
    // Both events of every deal are waiting; two instances take them concurrently.
    let first = harness.start(WorkflowConfig::default());
    let second = harness.start(WorkflowConfig::default());
    wait_until_consumed(&harness).await;
    let mut spurious = 0;
    for deal in &deals {
        if open_follow_ups(&harness, *deal, "first-contact").await != 0 {
            spurious += 1;
        }
        assert_eq!(stage_of(&harness, *deal).await, "contacted");
    }
    assert_eq!(spurious, 0, "deals left with an open first-contact");
    first.stop().await;
    second.stop().await;
    harness.finish().await;
}
