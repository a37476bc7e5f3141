//! PostgreSQL refusing the relay's statements for a passing reason (a DBA's timeouts, a lock
//! held by someone else, a migration that invalidates cached statements, a deadlock, exhausted
//! resources) pauses the relay; it never stops it, and once the cause is gone every event
//! arrives in order, once. Only what no retry can fix stops it.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use eventstore::{EventStore, StoreError};
use relay::{RelayConfig, RelayError};
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, nats_url, relay_config,
    shared_client, stream_guard, wait_caught_up,
};

/// An event store on the test's schema whose sessions carry `setting`, as a DBA's
/// `alter role ... set` would give them.
fn store_with_setting(database: &TestDb, setting: &str) -> EventStore {
    let mut config = database.config().clone();
    let options = format!("{} -c {setting}", config.get_options().unwrap_or_default());
    config.options(options.as_str());
    EventStore::new(eventstore::pool_from_config(config, 4).expect("pool"))
}

/// Waits until the relay has started `sessions` publish sessions (each retry starts one), and
/// fails at once if it stopped instead.
async fn wait_for_sessions(relay: &RunningRelay, config: &RelayConfig, sessions: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while config.stats.resumes() < sessions {
        assert!(
            !relay.task.is_finished(),
            "the relay stopped on a passing database error"
        );
        assert!(
            Instant::now() < deadline,
            "the relay did not retry within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay's reads fail while another transaction holds a lock on `events`, with the error
/// that `setting` turns a long wait into; the relay retries until the lock is released.
async fn reads_blocked_by_a_lock_with(setting: &str) {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    append_concurrently(&store, 2, 200).await;

    let blocker = database.connect().await;
    blocker
        .batch_execute("begin; lock table events in access exclusive mode")
        .await
        .expect("lock the events table");
    let relay = RunningRelay::start(config.clone(), store_with_setting(&database, setting));
    wait_for_sessions(&relay, &config, 3).await;
    assert_eq!(config.stats.last_published_position(), 0);

    blocker.batch_execute("commit").await.expect("release");
    append_concurrently(&store, 2, 50).await;
    wait_caught_up(&config, &store, Duration::from_secs(30)).await;
    relay.stop().await;
    let jetstream = jetstream::new(shared_client().await);
    assert_stream_matches_store(&jetstream, &config, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_timeout_pauses_the_relay_until_the_cause_is_gone() {
    reads_blocked_by_a_lock_with("statement_timeout=100ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_timeout_pauses_the_relay_until_the_cause_is_gone() {
    reads_blocked_by_a_lock_with("lock_timeout=100ms").await;
}

/// A migration changes the result type of a statement the relay's connections have prepared:
/// PostgreSQL then refuses that statement on every reuse ("cached plan must not change result
/// type"). The relay prepares its statements again and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_under_cached_statements_does_not_stop_the_relay() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    append_concurrently(&store, 2, 100).await;
    let relay_store = store_with_setting(&database, "application_name=relay");
    let relay = RunningRelay::start(config.clone(), relay_store);
    wait_caught_up(&config, &store, Duration::from_secs(20)).await;
    let sessions = config.stats.resumes();

    let migrator = database.connect().await;
    migrator
        .batch_execute("alter table events alter column event_type type varchar")
        .await
        .expect("migrate");
    append_concurrently(&store, 2, 100).await;
    wait_for_sessions(&relay, &config, sessions + 1).await;
    wait_caught_up(&config, &store, Duration::from_secs(20)).await;
    relay.stop().await;
    let jetstream = jetstream::new(shared_client().await);
    assert_stream_matches_store(&jetstream, &config, &store).await;
}

/// Every class of passing refusal, raised by the real server, is retryable; corruption, a
/// broken statement and a refused value are not.
#[tokio::test]
async fn store_errors_are_classified_by_sqlstate() {
    let database = TestDb::new().await;
    let client = database.connect().await;
    let passing = [
        ("57014", "statement_timeout"),
        ("55P03", "lock_timeout"),
        ("40001", "serialization failure"),
        ("40P01", "deadlock"),
        ("0A000", "cached plan must not change result type"),
        ("57P01", "admin shutdown"),
        ("53300", "too many connections"),
        ("53200", "out of memory"),
        ("53100", "disk full"),
        ("58030", "I/O error"),
        ("25P03", "idle_in_transaction_session_timeout"),
    ];
    let fatal = [
        ("XX001", "data corrupted"),
        ("42P01", "undefined table"),
        ("22P02", "invalid text representation"),
    ];
    for (code, expected) in passing
        .iter()
        .map(|case| (case, true))
        .chain(fatal.iter().map(|case| (case, false)))
    {
        let (sqlstate, name) = code;
        let error = client
            .batch_execute(&format!(
                "do $$ begin raise exception '{name}' using errcode = '{sqlstate}'; end $$"
            ))
            .await
            .expect_err("raised");
        let error = RelayError::from(StoreError::from(error));
        assert_eq!(
            error.is_retryable(),
            expected,
            "{sqlstate} ({name}): {}",
            testkit::error_chain(&error)
        );
    }
}

/// PostgreSQL drops every connection of the relay, pooled and LISTEN alike, as a restart does:
/// the relay reconnects and publishes what was appended meanwhile, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_connections_do_not_stop_the_relay() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let mut config = relay_config(&database, &nats_url());
    let application = format!("relay_{}", database.schema);
    config.database.application_name(&application);
    let _cleanup = stream_guard(&config);
    append_concurrently(&store, 2, 100).await;
    let relay_store = store_with_setting(&database, &format!("application_name={application}"));
    let relay = RunningRelay::start(config.clone(), relay_store);
    wait_caught_up(&config, &store, Duration::from_secs(20)).await;

    let admin = database.connect().await;
    for round in 0..3 {
        let connects = config.stats.listener_connects();
        let terminated: i64 = admin
            .query_one(
                "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
                 where application_name = $1) terminated",
                &[&application],
            )
            .await
            .expect("terminate the relay's connections")
            .get(0);
        assert!(terminated > 0, "round {round}: no relay connection found");
        append_concurrently(&store, 2, 50).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while config.stats.listener_connects() <= connects {
            assert!(!relay.task.is_finished(), "the relay stopped");
            assert!(
                Instant::now() < deadline,
                "the LISTEN connection did not come back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_caught_up(&config, &store, Duration::from_secs(20)).await;
    }
    relay.stop().await;
    let jetstream = jetstream::new(shared_client().await);
    assert_stream_matches_store(&jetstream, &config, &store).await;
}
