use std::time::{Duration, Instant};

use async_nats::jetstream;
use relay::RelayConfig;
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, nats_url, relay_config,
    shared_client, stream_guard, wait_caught_up,
};

/// A second relay of the same deployment: same store, stream and prefix, counters of its own.
fn sibling(config: &RelayConfig) -> RelayConfig {
    let mut sibling = config.clone();
    sibling.stats = relay::RelayStats::default();
    sibling
}

/// Waits until exactly one of the relays is active and answers its index.
async fn wait_for_one_active(configs: &[&RelayConfig], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let active: Vec<usize> = (0..configs.len())
            .filter(|index| configs[*index].stats.is_active())
            .collect();
        if let [only] = active.as_slice() {
            return *only;
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one active relay within {within:?}: active {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two relays: one publishes while the other stands by; when the active one dies (its task is
/// dropped, closing its lock session as a killed process would) with appends going on, the
/// other takes over and the stream still holds every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_relay_takes_over_when_the_active_one_dies() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let first = relay_config(&database, &nats_url());
    let second = sibling(&first);
    let _cleanup = stream_guard(&first);
    let jetstream = jetstream::new(shared_client().await);

    let mut relays = [
        Some(RunningRelay::start(first.clone(), store.clone())),
        Some(RunningRelay::start(second.clone(), store.clone())),
    ];
    let configs = [&first, &second];
    append_concurrently(&store, 4, 300).await;
    let active = wait_for_one_active(&configs, Duration::from_secs(30)).await;
    wait_caught_up(configs[active], &store, Duration::from_secs(30)).await;
    let standby = 1 - active;
    assert!(
        !configs[standby].stats.is_active() && configs[standby].stats.publishes() == 0,
        "the standby relay published"
    );

    let dying = relays[active].take().expect("the active relay runs");
    let appends = tokio::spawn({
        let store = store.clone();
        async move { append_concurrently(&store, 4, 300).await }
    });
    dying.task.abort();
    let _ = dying.task.await;
    appends.await.expect("appends");
    // The aborted relay's counters still read active, as a killed process's last word would.
    assert_eq!(
        wait_for_one_active(&[configs[standby]], Duration::from_secs(30)).await,
        0,
        "the standby did not take over"
    );
    wait_caught_up(configs[standby], &store, Duration::from_secs(30)).await;
    relays[standby]
        .take()
        .expect("the standby runs")
        .stop()
        .await;
    assert_stream_matches_store(&jetstream, &first, &store).await;
}

/// The lock is switched off and two relays publish at once while appends go on: the
/// expected-last-sequence chain makes each refuse the other's stale publishes, so the stream
/// still holds every event exactly once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishers_at_once_neither_reorder_nor_duplicate() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let mut first = relay_config(&database, &nats_url());
    first.exclusive = false;
    first.backoff_max = Duration::from_millis(200);
    let second = sibling(&first);
    let _cleanup = stream_guard(&first);
    let jetstream = jetstream::new(shared_client().await);

    let relays = [
        RunningRelay::start(first.clone(), store.clone()),
        RunningRelay::start(second.clone(), store.clone()),
    ];
    append_concurrently(&store, 8, 1500).await;
    wait_caught_up(&first, &store, Duration::from_secs(60)).await;
    wait_caught_up(&second, &store, Duration::from_secs(60)).await;
    assert!(
        first.stats.is_active() && second.stats.is_active(),
        "both relays were meant to publish"
    );
    assert!(
        first.stats.publishes() > 0 && second.stats.publishes() > 0,
        "both relays published ({} and {} messages sent)",
        first.stats.publishes(),
        second.stats.publishes()
    );
    for relay in relays {
        relay.stop().await;
    }
    assert_stream_matches_store(&jetstream, &first, &store).await;
}

/// The operators' recovery of a lost JetStream stream: it is deleted while the relay runs, and
/// the relay creates it again and republishes every event from the store, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_stream_is_republished_from_the_store() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);
    let relay = RunningRelay::start(config.clone(), store.clone());
    append_concurrently(&store, 4, 400).await;
    wait_caught_up(&config, &store, Duration::from_secs(30)).await;

    jetstream
        .delete_stream(config.stream_name.as_str())
        .await
        .expect("delete the stream");
    append_concurrently(&store, 4, 100).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let messages = match jetstream.get_stream(config.stream_name.as_str()).await {
            Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
            Err(_) => 0,
        };
        if messages == 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {messages} of 500 events a minute after it was lost"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop().await;
    assert_stream_matches_store(&jetstream, &config, &store).await;
}
