//! Messages whose payload is not an event envelope: the batch still reaches the position the last
//! message's header names, and a batch with no position at all is not acknowledged.

use std::time::Duration;

use async_nats::HeaderMap;
use projector::Projection;

use crate::support::{Harness, history, publish};

/// Publishes a message the runner cannot parse, with a `Dealstream-Position` header if given.
async fn publish_unreadable(harness: &Harness, position: Option<i64>) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    if let Some(position) = position {
        headers.insert("Dealstream-Position", position.to_string().as_str());
    }
    harness
        .jetstream
        .publish_with_headers(
            format!(
                "{}.events.opportunity.unreadable.Unreadable",
                harness.prefix
            ),
            headers,
            "not an envelope".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_ending_in_an_unreadable_payload_reaches_its_header_position() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 3, 20, 1, 51).await;
    let events = harness.all_events().await;
    let (last, rest) = events.split_last().unwrap();
    // All published before the projector starts, so that they arrive as one batch.
    for event in rest {
        publish(&harness.jetstream, &harness.prefix, event).await;
    }
    publish_unreadable(&harness, Some(last.position)).await;

    let running = harness.projector(None);
    harness.caught_up(last.position).await;
    running.stop().await.unwrap();
    harness.assert_matches_fold().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_any_position_is_not_acknowledged() {
    let harness = Harness::new().await;
    publish_unreadable(&harness, None).await;
    let running = harness.projector(None);
    // Time for several deliveries: the retry interval is 200 ms.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stream = harness
        .jetstream
        .get_stream(&harness.stream_name)
        .await
        .unwrap();
    for projection in Projection::ALL {
        let durable = harness.config().durable_name(projection);
        let info = stream.consumer_info(&durable).await.unwrap();
        assert_eq!(info.ack_floor.stream_sequence, 0, "{projection}: {info:?}");
    }
    assert!(!running.task.is_finished(), "the projector stopped");

    // Later events are applied, and their acknowledgement settles the message before them.
    let publisher = harness.publisher();
    history::run(&harness.handler, 1, 3, 1, 52).await;
    harness.caught_up(harness.head().await).await;
    running.stop().await.unwrap();
    publisher.stop().await;
    harness.assert_matches_fold().await;
    harness.finish().await;
}
