//! Starting up: the workflow waits for NATS and the events stream instead of failing, and its
//! migrations refuse to run without a schema.

use std::time::Duration;

use testkit::TestDb;
use workflow::WorkflowConfig;

use crate::support::{Harness, eventually, of_type, unique_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_events_stream_and_then_reacts() {
    let harness = Harness::new().await;
    // Streams and subjects nobody has created yet, as when the workflow starts before the relay.
    let options = unique_options();
    let instance = harness.start_with(WorkflowConfig::default(), options.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        instance.is_running(),
        "the workflow must keep waiting for the events stream"
    );

    // The relay creates the stream and publishes what the store holds.
    let (relay_stop, relay) = harness.start_relay(&options);
    let deal = harness.create_deal(30).await;
    eventually(
        Duration::from_secs(30),
        "the workflow to react once the stream exists",
        || async {
            let history = harness.history(&deal.stream_id()).await;
            (!of_type(&history, "FollowUpScheduled").is_empty()).then_some(())
        },
    )
    .await;

    instance.stop().await;
    relay_stop.cancel();
    let _ = relay.await;
    let _ = harness
        .jetstream
        .delete_stream(&options.events_stream)
        .await;
    let _ = harness
        .jetstream
        .delete_stream(&options.notifications_stream)
        .await;
    harness.finish().await;
}

#[tokio::test]
async fn migrating_without_a_schema_on_the_search_path_fails_clearly() {
    let database = TestDb::unmigrated().await;
    let mut config = database.config().clone();
    config.options("-c search_path=no_such_schema_here");
    let pool = eventstore::pool_from_config(config, 1).expect("pool");
    let error = workflow::migrate(&pool).await.expect_err("no schema");
    assert!(
        testkit::error_chain(&error).contains("search_path"),
        "{}",
        testkit::error_chain(&error)
    );
}
