use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use platform::CancellationToken;
use relay::{FailPoint, RelayError, subject};
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, nats_url, relay_config,
    shared_client, store_events, stream_guard, wait_caught_up,
};

/// Runs the relay with a fail point and expects it to stop there, as a crash would.
async fn run_until_fail_point(
    config: &relay::RelayConfig,
    store: &eventstore::EventStore,
    point: FailPoint,
) {
    let mut config = config.clone();
    config.fail_point = Some(point);
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        relay::run(config, store.clone(), CancellationToken::new()),
    )
    .await
    .expect("the relay reaches its fail point");
    match outcome {
        Err(RelayError::FaultInjected(reached)) => assert_eq!(reached, point),
        other => panic!("expected the fail point {point:?}, got {other:?}"),
    }
}

/// Stopped before a publish, after a publish whose ack was never read, and in the middle of a
/// batch with acks in flight, then restarted: every event is in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stops_at_fail_points_lose_and_duplicate_nothing() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);
    append_concurrently(&store, 4, 600).await;

    run_until_fail_point(&config, &store, FailPoint::BeforePublish(1)).await;
    run_until_fail_point(&config, &store, FailPoint::BeforePublish(90)).await;
    run_until_fail_point(&config, &store, FailPoint::AfterPublishBeforeAck(91)).await;
    run_until_fail_point(&config, &store, FailPoint::AfterPublishBeforeAck(300)).await;
    // The first acks of a 512-event read with up to 256 in flight: the rest of the batch is
    // still unacknowledged when the relay stops.
    run_until_fail_point(&config, &store, FailPoint::AfterAck(310)).await;
    run_until_fail_point(&config, &store, FailPoint::AfterAck(600)).await;
    assert_eq!(config.stats.last_published_position(), 600);

    // More events after the last crash, then a normal run.
    append_concurrently(&store, 4, 100).await;
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(30)).await;
    relay.stop().await;
    assert_stream_matches_store(&jetstream, &config, &store).await;
}

/// A pseudo-random number without a dependency: the standard library seeds RandomState from the
/// OS for every new instance.
fn random_below(bound: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % bound
}

/// The relay task is aborted at random moments (which drops it at whatever await point it is,
/// like a kill) during a 2,000-event run, and restarted each time: half of the events are a
/// backlog when the relay first starts, so early aborts land mid-pipeline, and half are
/// appended while the aborts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_aborts_during_a_run_lose_and_duplicate_nothing() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let mut config = relay_config(&database, &nats_url());
    // Small reads and a short pipeline give the aborts more distinct places to land.
    config.read_batch = 32;
    config.max_in_flight = 16;
    config.backoff_max = Duration::from_millis(200);
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);

    append_concurrently(&store, 4, 1_000).await;
    let writers = {
        let store = store.clone();
        tokio::spawn(async move { append_concurrently(&store, 4, 1_000).await })
    };
    let mut aborts = 0;
    while !writers.is_finished() || aborts < 8 {
        let relay = RunningRelay::start(config.clone(), store.clone());
        tokio::time::sleep(Duration::from_millis(5 + random_below(100))).await;
        relay.task.abort();
        let _ = relay.task.await;
        aborts += 1;
    }
    writers.await.expect("writers");
    assert_eq!(store.head_position().await.expect("head"), 2_000);
    assert!(
        config.stats.last_published_position() > 0,
        "the relay made progress between aborts"
    );

    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(30)).await;
    relay.stop().await;
    println!(
        "{aborts} aborts; {} publishes for 2000 events, {} duplicate acks",
        config.stats.publishes(),
        config.stats.duplicates()
    );
    assert_stream_matches_store(&jetstream, &config, &store).await;
}

/// What the relay relies on from the server (checked on nats-server 2.9.10): a stale publish
/// of an event already in the stream is acknowledged as a duplicate at its first sequence even
/// though its expected last sequence no longer holds, and a publish after a missing one is
/// refused, so the stream never gets a gap.
#[tokio::test]
async fn stale_publishes_cannot_break_the_chain() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);
    append_concurrently(&store, 2, 10).await;
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(10)).await;
    relay.stop().await;

    let events = store_events(&store).await;
    let republish = |event: eventstore::RecordedEvent, expected_last_sequence: u64| {
        let message = PublishMessage::build()
            .payload(serde_json::to_vec(&event).expect("json").into())
            .message_id(event.event_id.to_string())
            .header(subject::POSITION_HEADER, event.position.to_string())
            .expected_last_sequence(expected_last_sequence);
        let subject = subject::event_subject(config.subject_prefix.as_str(), &event);
        let jetstream = jetstream.clone();
        async move { jetstream.send_publish(subject, message).await?.await }
    };
    // Position 10 again, sent as the pipeline that first published it did.
    let ack = republish(events[9].clone(), 9)
        .await
        .expect("a duplicate is acknowledged");
    assert!(ack.duplicate);
    assert_eq!(ack.sequence, 10);
    // Position 5 again, with an expectation long outdated.
    let ack = republish(events[4].clone(), 4)
        .await
        .expect("a duplicate is acknowledged");
    assert!(ack.duplicate);
    assert_eq!(ack.sequence, 5);
    // A pipeline whose position 11 was lost sends position 12 after it.
    let mut later = events[9].clone();
    later.event_id = uuid::Uuid::now_v7();
    later.position = 12;
    let refused = republish(later, 11).await.expect_err("a gap is refused");
    assert_eq!(refused.kind(), PublishErrorKind::WrongLastSequence);

    assert_stream_matches_store(&jetstream, &config, &store).await;
}
