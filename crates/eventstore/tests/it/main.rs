//! Integration tests of the event store against a real PostgreSQL (one binary, per matklad's
//! advice). Every test gets its own schema from `testkit::TestDb`, so they run in parallel.
//! Set DATABASE_URL to point them at another server.

mod append_only;
mod bad_data;
mod concurrency;
mod envelope_fuzz;
mod frozen_writer;
mod group_commit;
mod idempotency;
mod migrations;
mod multi_stream;
mod notify;
mod occurred_at;
mod ordering;
mod races;
mod reads;
mod recorded_at;
mod service_role;
mod unavailable;

use std::time::Duration;

use eventstore::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use serde_json::json;
use testkit::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// A stream id of the given category that no other test uses.
pub fn new_stream(category: &str) -> String {
    format!("{category}-{}", Uuid::now_v7())
}

pub fn event(event_type: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: json!({ "note": "test" }),
        metadata: json!({ "actor": "test" }),
    }
}

pub fn events(count: usize) -> Vec<NewEvent> {
    (0..count).map(|_| event("Tested")).collect()
}

/// A request for one stream with a fresh command id and no fingerprint.
pub fn single(stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        command_id: Uuid::now_v7(),
        fingerprint: None,
        occurred_at: None,
        streams: vec![StreamAppend {
            stream_id: stream_id.to_owned(),
            expected,
            events,
        }],
    }
}

/// A raw connection inside an open transaction that holds the store's append lock, so every
/// appender of the schema queues behind it until `release`.
pub struct AppendLock {
    pub client: Client,
}

impl AppendLock {
    pub async fn take(database: &TestDb) -> AppendLock {
        let client = database.connect().await;
        client
            .batch_execute(
                "begin; select pg_advisory_xact_lock(hashtext(current_schema() || '.append'))",
            )
            .await
            .expect("take the append lock");
        AppendLock { client }
    }

    pub async fn release(self) {
        self.client.batch_execute("commit").await.expect("commit");
    }
}

/// Sends one append that will sit in the appender's current transaction, waiting for the lock,
/// so that requests sent afterwards queue up and are drained into the next batch together.
pub async fn occupy_appender(store: &EventStore) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    let handle = tokio::spawn(async move {
        store
            .append(single(
                &new_stream("blocker"),
                ExpectedVersion::Any,
                events(1),
            ))
            .await
            .expect("blocker append");
    });
    // Give the appender time to take the blocker and start waiting for the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle
}

/// Long enough for spawned tasks to have queued their requests on a loaded machine.
pub async fn let_requests_queue() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}
