//! The harness every workflow test uses: a private schema (testkit), a private JetStream stream and
//! subject prefix, the real relay (`relay::run_with_client`), a manual clock shared by the handler and the workflow, and
//! helpers to start and stop workflow instances and to read a deal's history.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{NaiveDate, SubsecRound, TimeDelta, Utc};
use commands::{Clock, CommandContext, CommandHandler, OpportunityRequest};
use domain::lead::LeadProfile;
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::values::{
    ActivityId, ActivityKind, Amount, Country, Currency, LeadId, OpportunityId, PipelineSlug, Text,
};
use eventstore::{EventStore, RecordedEvent};
use platform::CancellationToken;
use testkit::TestDb;
use tokio::task::JoinHandle;
use uuid::Uuid;
use workflow::{ManualClock, ServiceOptions, WorkflowConfig};

/// Pool size for a test: two workflow instances (each up to 4 messages and one timer claim at a
/// time), the stand-in relay, the store's appender and the test's own commands.
const POOL_SIZE: usize = 24;

pub struct Harness {
    pub db: TestDb,
    pub store: EventStore,
    pub handler: CommandHandler,
    pub clock: Arc<ManualClock>,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub options: ServiceOptions,
    relay_stop: CancellationToken,
    relay: JoinHandle<()>,
    /// The streams of instances started with options of their own, deleted by `finish` too.
    other_streams: std::sync::Mutex<Vec<String>>,
}

/// One running workflow instance.
pub struct Instance {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), workflow::WorkflowError>>,
}

impl Instance {
    /// Whether `workflow::run` is still running (it has not returned or panicked).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Cancels the instance and waits for it to finish its in-flight work.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("workflow instance failed: {error}"),
            Ok(Err(error)) => panic!("workflow instance panicked: {error}"),
            Err(_) => panic!("workflow instance did not stop within 30s"),
        }
    }
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

impl Harness {
    pub async fn new() -> Harness {
        platform::init_test_tracing();
        let db = TestDb::new().await;
        let pool = eventstore::pool_from_config(db.config().clone(), POOL_SIZE)
            .expect("a pool for the test schema");
        // Migrated up front so tests may query the workflow's tables before an instance starts.
        workflow::migrate(&pool)
            .await
            .expect("the workflow tables are created");
        let store = EventStore::new(pool);
        let clock = Arc::new(ManualClock::new(Utc::now().trunc_subsecs(6)));
        let handler = CommandHandler::new(store.clone(), clock.clone());
        handler
            .ensure_default_pipeline()
            .await
            .expect("the default pipeline is defined");

        let url = nats_url();
        let nats = async_nats::connect(&url).await.unwrap_or_else(|error| {
            panic!("cannot connect to NATS at NATS_URL={url} (set NATS_URL): {error}")
        });
        let jetstream = jetstream::new(nats.clone());
        let options = unique_options();
        jetstream
            .create_stream(jetstream::stream::Config {
                name: options.events_stream.clone(),
                subjects: vec![format!("{}.events.>", options.subject_prefix)],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("a JetStream stream for the test (is JetStream enabled on NATS_URL?)");

        let (relay_stop, relay) = spawn_relay(&db, &store, &nats, &options);
        Harness {
            db,
            store,
            handler,
            clock,
            nats,
            jetstream,
            options,
            relay_stop,
            relay,
            other_streams: Default::default(),
        }
    }

    pub fn start(&self, config: WorkflowConfig) -> Instance {
        self.start_with(config, self.options.clone())
    }

    /// Starts an instance on other streams and subjects than the harness's own.
    pub fn start_with(&self, config: WorkflowConfig, options: ServiceOptions) -> Instance {
        if options.notifications_stream != self.options.notifications_stream
            && let Ok(mut streams) = self.other_streams.lock()
        {
            streams.push(options.events_stream.clone());
            streams.push(options.notifications_stream.clone());
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(workflow::run(
            config,
            self.handler.clone(),
            self.nats.clone(),
            options,
            self.clock.clone(),
            shutdown.clone(),
        ));
        Instance { shutdown, task }
    }

    /// Runs another relay on the test's store, publishing to `options`' stream and subjects
    /// (creating the stream); cancel the token to stop it.
    pub fn start_relay(&self, options: &ServiceOptions) -> (CancellationToken, JoinHandle<()>) {
        spawn_relay(&self.db, &self.store, &self.nats, options)
    }

    /// Stops the relay and deletes the test's JetStream streams.
    pub async fn finish(self) {
        self.relay_stop.cancel();
        let _ = self.relay.await;
        let _ = self
            .jetstream
            .delete_stream(&self.options.events_stream)
            .await;
        let _ = self
            .jetstream
            .delete_stream(&self.options.notifications_stream)
            .await;
        let others = self.other_streams.lock().map(|streams| streams.clone());
        for stream in others.unwrap_or_default() {
            let _ = self.jetstream.delete_stream(&stream).await;
        }
    }

    pub fn api(&self) -> CommandContext {
        CommandContext::new("api:test")
    }

    /// A deal in the default pipeline's first stage, closing `close_in_days` after the clock's
    /// today.
    pub async fn create_deal(&self, close_in_days: i64) -> OpportunityId {
        let id = OpportunityId(Uuid::now_v7());
        let close: NaiveDate = (self.clock.now() + TimeDelta::days(close_in_days)).date_naive();
        self.handler
            .create_opportunity(
                &self.api(),
                id,
                NewOpportunity {
                    name: text("Deal"),
                    lead_id: None,
                    pipeline: PipelineSlug::default_pipeline(),
                    stage: None,
                    amount: Amount::parse(100_000).expect("amount"),
                    currency: Currency::parse("EUR").expect("currency"),
                    expected_close_date: close,
                    owner: text("olga"),
                },
            )
            .await
            .expect("the deal is created");
        id
    }

    pub async fn log_activity(&self, deal: OpportunityId, kind: ActivityKind) {
        self.handler
            .handle_opportunity(
                &self.api(),
                deal,
                OpportunityRequest::Other(OpportunityCommand::LogActivity {
                    activity_id: ActivityId(Uuid::now_v7()),
                    kind,
                    summary: text("talked"),
                    occurred_at: self.clock.now(),
                }),
            )
            .await
            .expect("the activity is logged");
    }

    pub async fn capture_lead(&self, country: &str) -> LeadId {
        let id = LeadId(Uuid::now_v7());
        self.handler
            .capture_lead(
                &self.api(),
                id,
                LeadProfile {
                    name: text("Lead"),
                    company: None,
                    email: None,
                    country: Some(Country::parse(country).expect("country")),
                    source: None,
                },
            )
            .await
            .expect("the lead is captured");
        id
    }

    pub async fn history(&self, stream_id: &str) -> Vec<RecordedEvent> {
        self.store
            .read_stream(stream_id)
            .await
            .expect("the stream is readable")
    }

    /// How many events of `event_type` the store holds.
    pub async fn count_events(&self, event_type: &str) -> i64 {
        let client = self.db.pool.get().await.expect("a connection");
        client
            .query_one(
                "select count(*) from events where event_type = $1",
                &[&event_type],
            )
            .await
            .expect("counting events")
            .get(0)
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let client = self.db.pool.get().await.expect("a connection");
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .get(0)
    }

    pub async fn notifications_stored(&self) -> u64 {
        let mut stream = self
            .jetstream
            .get_stream(&self.options.notifications_stream)
            .await
            .expect("the notification stream exists");
        stream.info().await.expect("stream info").state.messages
    }
}

/// Options with a subject prefix and stream name of their own, unused by anything yet.
pub fn unique_options() -> ServiceOptions {
    let unique = Uuid::now_v7().simple().to_string();
    ServiceOptions::new(
        format!("wf{unique}"),
        format!("WF_{}", unique.to_uppercase()),
    )
}

fn spawn_relay(
    db: &TestDb,
    store: &EventStore,
    nats: &async_nats::Client,
    options: &ServiceOptions,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let config = relay::RelayConfig::new(
        platform::ConnectionUrl::parse("NATS_URL", &nats_url()).expect("a NATS URL"),
        db.config().clone(),
        options.events_stream.parse().expect("a stream name"),
        options.subject_prefix.parse().expect("a subject prefix"),
    );
    let relay = tokio::spawn({
        let (client, store, stop) = (nats.clone(), store.clone(), stop.clone());
        async move {
            if let Err(error) = relay::run_with_client(config, client, store, stop).await {
                panic!("the relay failed: {error}");
            }
        }
    });
    (stop, relay)
}

pub fn text(value: &str) -> Text {
    Text::parse("text", value, Text::LONG).expect("valid text")
}

/// Events of `history` with this type.
pub fn of_type<'a>(history: &'a [RecordedEvent], event_type: &str) -> Vec<&'a RecordedEvent> {
    history
        .iter()
        .filter(|event| event.event_type == event_type)
        .collect()
}

pub fn actor(event: &RecordedEvent) -> &str {
    event.metadata["actor"].as_str().unwrap_or_default()
}

/// Polls `check` until it returns `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the workflow's durable consumer has nothing left to deliver or acknowledge.
pub async fn wait_until_consumed(harness: &Harness) {
    let stream = harness
        .jetstream
        .get_stream(&harness.options.events_stream)
        .await
        .expect("events stream");
    eventually(
        Duration::from_secs(60),
        "the events to be consumed",
        || async {
            let mut consumer = stream
                .get_consumer::<jetstream::consumer::pull::Config>(&harness.options.durable_name())
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}
