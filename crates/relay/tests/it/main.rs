//! Integration tests of the relay against a real PostgreSQL and a real NATS server with
//! JetStream (one binary, per matklad's advice). Every test has its own schema (`TestDb`) and
//! its own JetStream stream and subject prefix, deleted at the end, so tests run in parallel on
//! the shared servers. Destructive tests start a private `nats-server`.
//!
//! DATABASE_URL chooses PostgreSQL (see testkit); NATS_URL the shared NATS server (default
//! nats://127.0.0.1:4222); NATS_SERVER_BIN the binary for private servers (default
//! /usr/sbin/nats-server).

mod crash;
mod database_errors;
mod end_to_end;
mod failover;
mod idle;
mod metrics;
mod nats_outage;
mod open_transaction;
mod tail;

use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, consumer};
use eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend,
};
use futures::StreamExt;
use platform::{CancellationToken, ConnectionUrl, StreamName, SubjectPrefix};
use relay::{RelayConfig, RelayError, subject};
use serde_json::json;
use testkit::TestDb;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// A client of the shared NATS server; panics with a hint when it is not there.
pub async fn shared_client() -> async_nats::Client {
    let url = nats_url();
    match async_nats::connect(&url).await {
        Ok(client) => client,
        Err(error) => panic!(
            "cannot reach NATS with JetStream at NATS_URL={url} (set NATS_URL to a reachable \
             server): {error}"
        ),
    }
}

/// A stream name and subject prefix that no other test uses.
pub fn unique_names() -> (StreamName, SubjectPrefix) {
    let id = Uuid::now_v7().simple().to_string();
    let stream = StreamName::from_str(&format!("TEST_{id}")).expect("valid stream name");
    let prefix = SubjectPrefix::from_str(&format!("test{id}")).expect("valid prefix");
    (stream, prefix)
}

/// The relay configuration of a test: its own stream, prefix and schema, and short delays so
/// recovery is quick.
pub fn relay_config(database: &TestDb, nats_url: &str) -> RelayConfig {
    let (stream, prefix) = unique_names();
    let mut config = RelayConfig::new(
        ConnectionUrl::parse("NATS_URL", nats_url).expect("nats url"),
        database.config().clone(),
        stream,
        prefix,
    );
    config.backoff_max = Duration::from_secs(1);
    config.ack_timeout = Duration::from_secs(2);
    config
}

/// Deletes the test's stream when dropped, even when the test failed.
pub struct StreamGuard {
    pub url: String,
    pub name: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let name = self.name.clone();
        // Drop cannot await inside the test's runtime, so the cleanup gets a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let client =
                    tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url.as_str()))
                        .await
                        .ok()?
                        .ok()?;
                let _ = jetstream::new(client).delete_stream(&name).await;
                Some(())
            })
        });
        let _ = cleanup.join();
    }
}

pub fn stream_guard(config: &RelayConfig) -> StreamGuard {
    StreamGuard {
        url: config.nats_url.expose().to_owned(),
        name: config.stream_name.as_str().to_owned(),
    }
}

pub fn event(event_type: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: json!({ "note": "relay test", "amount": 1250 }),
        metadata: json!({ "actor": "test" }),
    }
}

/// One event in a new stream of `category`, as a command of its own.
pub fn single_event_request(category: &str, event_type: &str) -> AppendRequest {
    AppendRequest {
        command_id: Uuid::now_v7(),
        fingerprint: None,
        occurred_at: None,
        streams: vec![StreamAppend {
            stream_id: format!("{category}-{}", Uuid::now_v7()),
            expected: ExpectedVersion::NoStream,
            events: vec![event(event_type)],
        }],
    }
}

const CATEGORIES: [(&str, &str); 3] = [
    ("lead", "LeadCaptured"),
    ("opportunity", "OpportunityCreated"),
    ("pipeline", "PipelineDefined"),
];

/// Appends `total` single-event commands from `writers` concurrent tasks.
pub async fn append_concurrently(store: &EventStore, writers: usize, total: usize) {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let count = total / writers + usize::from(writer < total % writers);
        tasks.push(tokio::spawn(async move {
            for index in 0..count {
                let (category, event_type) = CATEGORIES[(writer + index) % CATEGORIES.len()];
                store
                    .append(single_event_request(category, event_type))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// The relay running in a task the test owns.
pub struct RunningRelay {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), RelayError>>,
}

impl RunningRelay {
    pub fn start(config: RelayConfig, store: EventStore) -> RunningRelay {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay::run(config, store, shutdown.clone()));
        RunningRelay { shutdown, task }
    }

    /// Graceful stop; the relay must end with Ok.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the relay stops within 10 s of shutdown")
            .expect("relay task");
        if let Err(error) = outcome {
            panic!(
                "relay ended with an error: {}",
                testkit::error_chain(&error)
            );
        }
    }
}

/// Waits until the relay has published everything up to the store's head.
pub async fn wait_caught_up(config: &RelayConfig, store: &EventStore, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let head = store.head_position().await.expect("head");
        let published = config.stats.last_published_position();
        if head > 0 && published == head {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not catch up within {within:?}: head {head}, published {published}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event of the store, in position order.
pub async fn store_events(store: &EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 5000, None).await.expect("read_all");
        let Some(last) = page.last() else {
            return events;
        };
        after = last.position;
        events.extend(page);
    }
}

/// One stored JetStream message, as the tests compare it.
#[derive(Debug)]
pub struct Published {
    pub sequence: u64,
    pub subject: String,
    pub message_id: String,
    pub position: i64,
    pub envelope: serde_json::Value,
}

/// Every message of the stream, in sequence order, through an ordered consumer.
pub async fn stream_messages(jetstream: &Context, stream_name: &str) -> Vec<Published> {
    let stream = jetstream.get_stream(stream_name).await.expect("get stream");
    let total = stream.cached_info().state.messages as usize;
    if total == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut published = Vec::with_capacity(total);
    while published.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("stream messages arrive")
            .expect("stream continues")
            .expect("message");
        let headers = message.headers.clone().expect("headers");
        let info = message.info().expect("jetstream message info");
        published.push(Published {
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            message_id: subject::message_id_of(&headers)
                .expect("Nats-Msg-Id")
                .to_owned(),
            position: subject::position_of(&headers).expect("Dealstream-Position"),
            envelope: serde_json::from_slice(&message.payload).expect("JSON envelope"),
        });
    }
    published
}

/// The stream holds every event of the store exactly once, in position order, with the
/// envelope, subject and headers the contract promises.
pub async fn assert_stream_matches_store(
    jetstream: &Context,
    config: &RelayConfig,
    store: &EventStore,
) {
    let events = store_events(store).await;
    let published = stream_messages(jetstream, config.stream_name.as_str()).await;
    let positions: Vec<i64> = published.iter().map(|message| message.position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "positions in the stream are not strictly increasing"
    );
    assert!(
        published
            .windows(2)
            .all(|pair| pair[1].sequence == pair[0].sequence + 1),
        "stream sequences have gaps"
    );
    assert_eq!(
        published.len(),
        events.len(),
        "the stream holds {} messages for {} events",
        published.len(),
        events.len()
    );
    for (message, event) in published.iter().zip(&events) {
        assert_eq!(message.position, event.position);
        assert_eq!(message.message_id, event.event_id.to_string());
        assert_eq!(
            message.subject,
            subject::event_subject(config.subject_prefix.as_str(), event)
        );
        assert_eq!(
            message.envelope,
            serde_json::to_value(event).expect("envelope"),
            "payload of position {}",
            event.position
        );
    }
}
