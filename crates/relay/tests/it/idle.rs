use std::time::Duration;

use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, nats_url, relay_config, stream_guard, wait_caught_up,
};

/// Once caught up, the relay queries the store only on its slow fallback poll, publishes
/// nothing, and a NOTIFY (not the poll) wakes it for the next append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_only_polls_slowly_and_wakes_on_notify() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let mut config = relay_config(&database, &nats_url());
    config.poll_interval = Duration::from_millis(1500);
    let _cleanup = stream_guard(&config);
    let stats = config.stats.clone();

    append_concurrently(&store, 2, 50).await;
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(10)).await;
    // Let a wake-up still pending from the appends be consumed.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reads = stats.store_reads();
    let polls = stats.polls();
    let publishes = stats.publishes();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let idle_reads = stats.store_reads() - reads;
    let idle_polls = stats.polls() - polls;
    assert_eq!(stats.publishes(), publishes, "no publishes while idle");
    assert!(
        (1..=2).contains(&idle_polls),
        "{idle_polls} fallback polls in 2.2 s at a 1.5 s interval"
    );
    assert_eq!(
        idle_reads, idle_polls,
        "every store query while idle is a fallback poll"
    );

    let notifications = stats.notifications();
    append_concurrently(&store, 1, 1).await;
    wait_caught_up(&config, &store, Duration::from_secs(1)).await;
    assert!(stats.notifications() > notifications, "woken by NOTIFY");
    assert!(stats.listener_connects() >= 1);
    relay.stop().await;
}
