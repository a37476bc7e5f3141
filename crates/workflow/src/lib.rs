//! The workflow service: declarative rules that schedule, complete and cancel
//! follow-ups and move deals on activity; durable timers that fire due follow-ups and the
//! `stale-deal` and `close-date-passed` reminders; and lead routing on `LeadCaptured`.
//!
//! It owns the rules file ([`config`]), the pure step that maps an event and the deal's state to
//! commands and timers ([`step`]), and its tables in PostgreSQL ([`db`]: timers, per-deal plan
//! versions, round-robin turns). It reacts to events from a durable JetStream consumer
//! (`consumer`) and fires timers from a loop driven by the injected clock (`timers`).
//!
//! What it deliberately avoids: writing events itself. Every effect is a command through the same
//! [`CommandHandler`] as the API, with actor `workflow:<rule>`, so it lands in the deal's history;
//! every command id is derived from its cause ([`ids`]), so redelivery and several instances are
//! harmless. It keeps no copy of deal state that could drift: conditions are checked against the
//! deal's stream, and one deal's events are handled in stream order (`consumer`). Read `step`
//! first, then `consumer` and `timers`.

pub mod clock;
pub mod config;
mod consumer;
pub mod db;
pub mod ids;
pub mod step;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use commands::{Clock, CommandHandler};
use deadpool_postgres::Pool;
use platform::CancellationToken;
use tokio::sync::Notify;

pub use clock::ManualClock;
pub use config::{ConfigError, WorkflowConfig, load_config};

/// Names of the metrics the service records (through the `metrics` facade; the binary installs
/// the exporter).
pub mod metrics_names {
    /// Gauge: timers planned and not yet fired.
    pub const TIMERS_PENDING: &str = "dealstream_workflow_timers_pending";
    /// Counter (label `kind`): timers fired by this instance.
    pub const TIMERS_FIRED: &str = "dealstream_workflow_timers_fired_total";
    /// Histogram: seconds between a timer's due time and its firing.
    pub const TIMER_LATENESS: &str = "dealstream_workflow_timer_lateness_seconds";
    /// Gauge: messages JetStream still holds for the workflow's consumer.
    pub const CONSUMER_LAG: &str = "dealstream_workflow_consumer_lag";
    /// Counter (label `rule`): commands sent by rules.
    pub const REACTIONS: &str = "dealstream_workflow_reactions_total";
    /// Counter: `follow_up_due` notifications published.
    pub const NOTIFICATIONS: &str = "dealstream_workflow_notifications_total";
    /// Counter: events that could not be handled at all and were skipped.
    pub const SKIPPED_EVENTS: &str = "dealstream_workflow_skipped_events_total";
}

/// Where the service finds its events and announces its notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// `DEALSTREAM_SUBJECT_PREFIX`: events are read from `<prefix>.events.>`, notifications go to
    /// `<prefix>.notifications.follow_up_due`, and the durable consumer is `<prefix>-workflow`.
    pub subject_prefix: String,
    /// `DEALSTREAM_NATS_STREAM`: the JetStream stream the relay publishes to.
    pub events_stream: String,
    /// The JetStream stream that stores the notifications (and de-duplicates them by message
    /// id); created on start if missing. Default `<events_stream>_NOTIFICATIONS`.
    pub notifications_stream: String,
    /// Messages handled at once by one instance. Each holds its deal's lock on one pooled
    /// connection and uses at most one more at a time, so keep twice this well below the pool's
    /// size.
    pub concurrency: usize,
}

impl ServiceOptions {
    pub fn new(subject_prefix: impl Into<String>, events_stream: impl Into<String>) -> Self {
        let events_stream = events_stream.into();
        ServiceOptions {
            subject_prefix: subject_prefix.into(),
            notifications_stream: format!("{events_stream}_NOTIFICATIONS"),
            events_stream,
            concurrency: 4,
        }
    }

    pub fn from_settings(settings: &platform::Settings) -> Self {
        ServiceOptions::new(
            settings.subject_prefix.as_str(),
            settings.nats_stream.as_str(),
        )
    }

    /// The durable consumer's name: derived from the prefix, so deployments sharing a NATS
    /// server do not share a consumer.
    pub fn durable_name(&self) -> String {
        format!("{}-workflow", self.subject_prefix)
    }
}

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow tables: {0}")]
    Database(#[from] eventstore::StoreError),
    #[error("JetStream {what}: {detail}")]
    Nats { what: &'static str, detail: String },
}

/// What the consumer and the timer loop share.
pub(crate) struct Shared {
    pub(crate) config: WorkflowConfig,
    pub(crate) handler: CommandHandler,
    pub(crate) pool: Pool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) options: ServiceOptions,
    /// Signalled when this instance stores a timer plan, so the timer loop re-reads its next due
    /// time instead of sleeping past a sooner timer.
    pub(crate) timers_changed: Notify,
}

/// Applies the workflow's migrations to the pool's `current_schema()` (also done by [`run`]).
pub async fn migrate(pool: &Pool) -> Result<(), eventstore::StoreError> {
    db::migrate(pool).await
}

/// Runs the workflow service until `shutdown` is cancelled: migrates its tables, fires timers,
/// and consumes events once the notification stream and the durable consumer are set up.
///
/// NATS being down, or the events stream not being there yet (the relay creates it), is never an
/// error: the setup is retried with capped backoff, while timers keep firing, since they are
/// commands that need only the store. Only a failed migration is returned.
///
/// The event store is the handler's (its pool holds the workflow's tables too). `clock` decides
/// when timers are due; give the handler the same clock. Returns once both loops have stopped:
/// messages being handled finish first, the rest are redelivered later.
pub async fn run(
    config: WorkflowConfig,
    handler: CommandHandler,
    nats: async_nats::Client,
    options: ServiceOptions,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), WorkflowError> {
    describe_metrics();
    let pool = handler.store().pool().clone();
    db::migrate(&pool).await?;

    let shared = Arc::new(Shared {
        config,
        handler,
        pool,
        clock,
        jetstream: jetstream::new(nats),
        options,
        timers_changed: Notify::new(),
    });
    tracing::info!(
        durable = %shared.options.durable_name(),
        stream = %shared.options.events_stream,
        rules = shared.config.rules.len(),
        routing_rules = shared.config.routing.rules.len(),
        "workflow service started"
    );
    let consuming = tokio::spawn({
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        async move {
            if let Some(consumer) = set_up_consumer(&shared, &shutdown).await {
                consumer::run(shared, consumer, shutdown).await;
            }
        }
    });
    let firing = tokio::spawn(timers::run(shared.clone(), shutdown.clone()));
    let (consumed, fired) = tokio::join!(consuming, firing);
    // A panic in either loop is a bug; report it instead of unwinding the caller.
    for (task, result) in [("consumer", consumed), ("timer loop", fired)] {
        if let Err(error) = result {
            tracing::error!(task, %error, "workflow task ended abnormally");
        }
    }
    tracing::info!("workflow service stopped");
    Ok(())
}

/// The first pause after a failed setup; it doubles after each further failure.
const SETUP_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between setup attempts: how late the workflow notices NATS or the events
/// stream coming back.
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Ensures the notification stream and the durable consumer, retrying until they are there;
/// `None` if `shutdown` came first.
async fn set_up_consumer(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Option<jetstream::consumer::PullConsumer> {
    let mut backoff = SETUP_BACKOFF_MIN;
    loop {
        let attempt = async {
            ensure_notification_stream(&shared.jetstream, &shared.options).await?;
            events_consumer(&shared.jetstream, &shared.options).await
        };
        let error = tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = attempt => match outcome {
                Ok(consumer) => return Some(consumer),
                Err(error) => error,
            },
        };
        tracing::warn!(
            %error,
            retry_in_ms = backoff.as_millis() as u64,
            "cannot set up the workflow's JetStream consumer, retrying"
        );
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(SETUP_BACKOFF_MAX);
    }
}

async fn ensure_notification_stream(
    context: &jetstream::Context,
    options: &ServiceOptions,
) -> Result<(), WorkflowError> {
    let subject = format!("{}.notifications.>", options.subject_prefix);
    let config = jetstream::stream::Config {
        name: options.notifications_stream.clone(),
        subjects: vec![subject],
        // Wide enough to cover any redelivery of a FollowUpDue whose ack was lost.
        duplicate_window: Duration::from_secs(24 * 3600),
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    };
    match context.get_or_create_stream(config).await {
        Ok(_) => Ok(()),
        Err(error) => Err(WorkflowError::Nats {
            what: "notification stream",
            detail: platform::error_chain(&error),
        }),
    }
}

async fn events_consumer(
    context: &jetstream::Context,
    options: &ServiceOptions,
) -> Result<jetstream::consumer::PullConsumer, WorkflowError> {
    let stream = context
        .get_stream(&options.events_stream)
        .await
        .map_err(|error| WorkflowError::Nats {
            what: "events stream",
            detail: platform::error_chain(&error),
        })?;
    let durable = options.durable_name();
    stream
        .get_or_create_consumer(
            &durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: format!("{}.events.>", options.subject_prefix),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: consumer::ACK_WAIT,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                max_ack_pending: 1024,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| WorkflowError::Nats {
            what: "durable consumer",
            detail: platform::error_chain(&error),
        })
}

fn describe_metrics() {
    use metrics_names as names;
    metrics::describe_gauge!(names::TIMERS_PENDING, "timers planned and not yet fired");
    metrics::describe_counter!(names::TIMERS_FIRED, "timers fired");
    metrics::describe_histogram!(
        names::TIMER_LATENESS,
        metrics::Unit::Seconds,
        "delay between a timer's due time and its firing"
    );
    metrics::describe_gauge!(
        names::CONSUMER_LAG,
        "events JetStream still holds for the workflow consumer"
    );
    metrics::describe_counter!(names::REACTIONS, "commands sent by workflow rules");
    metrics::describe_counter!(
        names::NOTIFICATIONS,
        "follow_up_due notifications published"
    );
    metrics::describe_counter!(names::SKIPPED_EVENTS, "events that could not be handled");
}
