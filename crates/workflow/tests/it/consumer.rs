//! How the consumer handles deliveries: events this build cannot read yet wait for an upgrade,
//! and one deal's events are handled in stream order whatever the delivery order.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use eventstore::{AppendRequest, ExpectedVersion, NewEvent, StreamAppend};
use uuid::Uuid;
use workflow::WorkflowConfig;

use crate::support::{Harness, eventually};

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
