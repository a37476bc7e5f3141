use std::time::Duration;

use async_nats::jetstream;
use testkit::TestDb;
use uuid::Uuid;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, nats_url, relay_config,
    shared_client, single_event_request, stream_guard, wait_caught_up,
};

/// An appending transaction held open (it has the append lock and has inserted its event) while
/// other appends queue behind it: nothing after it is published before it commits, and then
/// everything arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_after_an_open_append_is_published_before_it_commits() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    let jetstream = jetstream::new(shared_client().await);

    append_concurrently(&store, 2, 20).await;
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(10)).await;

    // The same lock and position rule as eventstore's appender.
    let held = database.connect().await;
    held.batch_execute(
        "begin; select pg_advisory_xact_lock(hashtext(current_schema() || '.append'))",
    )
    .await
    .expect("take the append lock");
    let slow_event_id = Uuid::now_v7();
    held.execute(
        "insert into events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, recorded_at, data, metadata) \
         select coalesce(max(position), 0) + 1, $1, $2, 1, 'LeadCaptured', 1, \
             clock_timestamp(), '{\"name\": \"slow\"}', '{\"actor\": \"test\"}' from events",
        &[&slow_event_id, &format!("lead-{}", Uuid::now_v7())],
    )
    .await
    .expect("insert inside the open transaction");

    // Other writers queue behind the lock, from two appenders as two processes would.
    let other_store = database.store();
    let mut waiting = Vec::new();
    for store in [store.clone(), other_store.clone()] {
        for _ in 0..25 {
            let store = store.clone();
            waiting.push(tokio::spawn(async move {
                store
                    .append(single_event_request("opportunity", "OpportunityCreated"))
                    .await
                    .expect("append")
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "appends wait for the open transaction"
    );
    assert_eq!(config.stats.last_published_position(), 20);
    let stream = jetstream
        .get_stream(config.stream_name.as_str())
        .await
        .expect("stream");
    assert_eq!(
        stream.cached_info().state.messages,
        20,
        "nothing new published"
    );

    held.batch_execute("commit").await.expect("commit");
    for task in waiting {
        task.await.expect("append task");
    }
    wait_caught_up(&config, &store, Duration::from_secs(10)).await;
    relay.stop().await;
    assert_eq!(store.head_position().await.expect("head"), 71);
    let events = crate::store_events(&store).await;
    assert_eq!(
        events[20].event_id, slow_event_id,
        "the held event is position 21"
    );
    assert_stream_matches_store(&jetstream, &config, &store).await;
}
