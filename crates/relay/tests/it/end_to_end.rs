use std::time::{Duration, Instant};

use async_nats::jetstream;
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, nats_url, relay_config,
    shared_client, stream_guard, wait_caught_up,
};

/// 10,000 events from 8 concurrent writers arrive exactly once each, in position order,
/// matching the store one to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_events_arrive_once_in_order() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);

    let relay = RunningRelay::start(config.clone(), store.clone());
    let started = Instant::now();
    append_concurrently(&store, 8, 10_000).await;
    let appended = started.elapsed();
    wait_caught_up(&config, &store, Duration::from_secs(60)).await;
    let published = started.elapsed();
    println!(
        "10000 events: appended in {appended:?} ({:.0} events/s), all published {published:?} \
         after the first append ({:.0} events/s end to end)",
        10_000.0 / appended.as_secs_f64(),
        10_000.0 / published.as_secs_f64()
    );
    relay.stop().await;

    assert_eq!(store.head_position().await.expect("head"), 10_000);
    assert_stream_matches_store(&jetstream, &config, &store).await;
    assert_eq!(
        config.stats.duplicates(),
        0,
        "a clean run publishes nothing twice"
    );
}

/// With the relay stopped, a backlog of 10,000 events is drained: the relay's own throughput,
/// not limited by the writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_is_drained_in_order() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);

    append_concurrently(&store, 8, 10_000).await;
    let started = Instant::now();
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    println!(
        "backlog of 10000 events published in {elapsed:?} ({:.0} events/s)",
        10_000.0 / elapsed.as_secs_f64()
    );
    relay.stop().await;
    assert_stream_matches_store(&jetstream, &config, &store).await;
}
