//! The projection runner: one durable JetStream pull consumer per projection, events applied in
//! bounded batches, each batch and the projection's checkpoint committed in one PostgreSQL
//! transaction and only then acknowledged.
//!
//! Why redelivery never has a second effect: every batch transaction first locks the
//! projection's checkpoint row and skips events at or below it. Why nothing is skipped either:
//! positions in the store have no gaps, so a batch that does not continue
//! exactly from the checkpoint (a message lost, a payload that does not parse, a consumer created
//! after the stream was trimmed, messages of a crashed leader still waiting for redelivery) is
//! completed from the event store itself before anything is applied. JetStream is the transport
//! and the wake-up; the store stays the source of truth. Nor is an event of a schema version
//! this build cannot read skipped: the checkpoint stops right before it and the batch is retried
//! (a transient error) until an upgraded projector takes over.
//!
//! Several instances of one projection may run: the one holding a session advisory lock (on a
//! connection taken out of the pool for that purpose) consumes, the others wait to take over.
//! Correctness does not hinge on that lock, only efficiency does: two active instances would still
//! serialize on the checkpoint row and complete gaps from the store.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::AckPolicy, consumer::pull};
use chrono::Utc;
use deadpool_postgres::Pool;
use eventstore::{EventStore, RecordedEvent};
use futures::{FutureExt, StreamExt};
use platform::CancellationToken;
use tokio::task::JoinSet;

use crate::error::ProjectorError;
use crate::persist;
use crate::{Projection, migrate};

/// Where a test may stop the runner as if the process had been killed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The batch is applied inside the transaction, which is not committed.
    BeforeCommit,
    /// The transaction is committed, the messages are not acknowledged.
    BeforeAck,
}

/// Asked at every fault point with the projection; `true` stops the runner there with
/// [`ProjectorError::InjectedFault`].
pub type FaultHook = Arc<dyn Fn(Projection, FaultPoint) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct ProjectorConfig {
    pub nats_url: String,
    /// The JetStream stream the relay publishes to (`DEALSTREAM_EVENTS` by default).
    pub stream_name: String,
    /// The first subject token (`dealstream` by default); durable consumer names derive from it.
    pub subject_prefix: String,
    /// At most this many messages per batch and transaction: the back-pressure bound.
    pub batch_size: usize,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// How long a standby instance waits between attempts to become active, and the first pause
    /// after a transient failure.
    pub retry_interval: Duration,
    /// The longest pause after transient failures in a row: each pause doubles from
    /// `retry_interval` up to this, and a batch applied brings it back to `retry_interval`.
    pub retry_interval_max: Duration,
    /// Positions between two snapshots of the read models ([`crate::snapshot`]).
    pub snapshot_every: i64,
    /// Test-only fault injection; `None` in production.
    pub faults: Option<FaultHook>,
}

impl std::fmt::Debug for ProjectorConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProjectorConfig")
            .field("stream_name", &self.stream_name)
            .field("subject_prefix", &self.subject_prefix)
            .field("batch_size", &self.batch_size)
            .field("ack_wait", &self.ack_wait)
            .field("retry_interval", &self.retry_interval)
            .field("retry_interval_max", &self.retry_interval_max)
            .field("snapshot_every", &self.snapshot_every)
            .field("faults", &self.faults.is_some())
            .finish_non_exhaustive()
    }
}

impl ProjectorConfig {
    /// Production defaults: batches of up to 500 messages, 30 s to acknowledge, retries after 1 s
    /// doubling up to 30 s, a snapshot every 1,000 positions.
    pub fn new(
        nats_url: impl Into<String>,
        stream_name: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> ProjectorConfig {
        ProjectorConfig {
            nats_url: nats_url.into(),
            stream_name: stream_name.into(),
            subject_prefix: subject_prefix.into(),
            batch_size: 500,
            ack_wait: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
            retry_interval_max: Duration::from_secs(30),
            snapshot_every: crate::snapshot::DEFAULT_SNAPSHOT_EVERY,
            faults: None,
        }
    }

    /// `<prefix>_projector_<name>`: one durable consumer per projection and deployment.
    pub fn durable_name(&self, projection: Projection) -> String {
        format!("{}_projector_{}", self.subject_prefix, projection.name())
    }

    fn fault(&self, projection: Projection, point: FaultPoint) -> Result<(), ProjectorError> {
        match &self.faults {
            Some(hook) if hook(projection, point) => Err(ProjectorError::InjectedFault(point)),
            _ => Ok(()),
        }
    }
}

/// Runs `projections` until `shutdown` is cancelled (then `Ok`) or one of them fails for good.
/// Transient failures (database or NATS down, a statement refused for a passing reason) are
/// retried after a pause. Migrates the read-model tables first.
pub async fn run(
    config: ProjectorConfig,
    store: EventStore,
    projections: &[Projection],
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    // Returns at once even while NATS is away; the workers retry until it answers, so a node
    // whose NATS is down still starts and catches up later.
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(config.nats_url.as_str())
        .await
        .map_err(|error| ProjectorError::messaging("connecting to NATS", error))?;
    run_with_client(config, client, store, projections, shutdown).await
}

/// The projector's Prometheus metrics, each labelled with its `projection`.
pub mod metric_names {
    /// Messages the projection's consumer has not been delivered yet, after the last batch.
    pub const LAG_MESSAGES: &str = "dealstream_projector_lag_messages";
    /// Age of the last event applied while messages were still pending, 0 when caught up.
    pub const LAG_SECONDS: &str = "dealstream_projector_lag_seconds";
    /// The projection's checkpoint: the position of the last event applied.
    pub const CHECKPOINT_POSITION: &str = "dealstream_projector_checkpoint_position";
    /// Events applied to the read model.
    pub const EVENTS_APPLIED: &str = "dealstream_projector_events_applied_total";
    /// Messages that were not a readable event envelope and were skipped.
    pub const EVENTS_MALFORMED: &str = "dealstream_projector_events_malformed_total";
    /// Batches interrupted by a passing failure and retried.
    pub const RETRIES: &str = "dealstream_projector_retries_total";

    pub(crate) fn describe() {
        metrics::describe_gauge!(
            LAG_MESSAGES,
            "Messages the projection's consumer has not been delivered yet"
        );
        metrics::describe_gauge!(
            LAG_SECONDS,
            "Age in seconds of the last event applied while more were pending, 0 when caught up"
        );
        metrics::describe_gauge!(
            CHECKPOINT_POSITION,
            "Position of the last event the projection applied"
        );
        metrics::describe_counter!(EVENTS_APPLIED, "Events applied to the read model");
        metrics::describe_counter!(
            EVENTS_MALFORMED,
            "Messages that were not a readable event envelope and were skipped"
        );
        metrics::describe_counter!(
            RETRIES,
            "Projection batches interrupted by a passing failure and retried"
        );
    }
}

/// As [`run`], on an existing NATS client (so that one process shares one connection).
pub async fn run_with_client(
    config: ProjectorConfig,
    client: async_nats::Client,
    store: EventStore,
    projections: &[Projection],
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    metric_names::describe();
    let mut backoff = Backoff::new(&config);
    loop {
        match migrate(store.pool()).await {
            Ok(()) => break,
            // The database being away at start-up is as passing as it is later on.
            Err(error) if error.is_transient() => {
                if !backoff
                    .wait("migrations", &error, store.pool(), &shutdown)
                    .await
                {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    }
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let mut projections = projections.to_vec();
    projections.sort();
    projections.dedup();
    for projection in projections {
        let worker = Worker {
            config: config.clone(),
            store: store.clone(),
            jetstream: jetstream::new(client.clone()),
            projection,
        };
        tasks.spawn(worker.run(stop.clone()));
    }
    let mut outcome = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let result =
            joined.unwrap_or_else(|error| Err(ProjectorError::Unexpected(Arc::new(error))));
        if let Err(error) = result {
            if outcome.is_ok() {
                outcome = Err(error);
            }
            stop.cancel();
        }
    }
    outcome
}

struct Worker {
    config: ProjectorConfig,
    store: EventStore,
    jetstream: jetstream::Context,
    projection: Projection,
}

impl Worker {
    async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        let mut backoff = Backoff::new(&self.config);
        loop {
            let error = match self.run_while_active(&shutdown, &mut backoff).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !error.is_transient() {
                tracing::error!(projection = self.projection.name(), error = %platform::error_chain(&error), "projection stopped");
                return Err(error);
            }
            if !backoff
                .wait(self.projection.name(), &error, self.store.pool(), &shutdown)
                .await
            {
                return Ok(());
            }
        }
    }

    /// Becomes the active instance, then consumes until shutdown or a failure. Resets `backoff`
    /// after every batch applied.
    async fn run_while_active(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ProjectorError> {
        let pool = self.store.pool();
        // Taken out of the pool so that the session lock ends with this connection and never
        // stays behind on a pooled connection someone else reuses.
        let lock_connection = deadpool_postgres::Object::take(pool.get().await?);
        loop {
            let row = lock_connection
                .query_one(
                    "select pg_try_advisory_lock(hashtext(current_schema() || '.projector.' || $1))",
                    &[&self.projection.name()],
                )
                .await?;
            if row.try_get::<_, bool>(0)? {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.retry_interval) => {}
            }
        }
        tracing::info!(projection = self.projection.name(), "projection active");

        let stream = self
            .jetstream
            .get_stream(&self.config.stream_name)
            .await
            .map_err(|error| ProjectorError::messaging("looking up the event stream", error))?;
        let durable = self.config.durable_name(self.projection);
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(format!("dealstream projection {}", self.projection)),
                    // Every event, not only the opportunity category: positions must arrive
                    // without gaps for the gap check to mean anything.
                    filter_subject: format!("{}.events.>", self.config.subject_prefix),
                    ack_policy: AckPolicy::All,
                    ack_wait: self.config.ack_wait,
                    max_ack_pending: i64::try_from(self.config.batch_size * 4).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| ProjectorError::messaging("creating the durable consumer", error))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .messages()
            .await
            .map_err(|error| ProjectorError::messaging("pulling messages", error))?;

        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(first) = first else {
                return Err(ProjectorError::Messaging {
                    context: "the message stream ended",
                    source: Arc::new(std::io::Error::other("consumer stream closed")),
                });
            };
            let first =
                first.map_err(|error| ProjectorError::messaging("receiving a message", error))?;
            let mut batch = vec![first];
            // Takes what has already arrived, without waiting: a lone event is applied at once,
            // a burst is applied in bounded batches.
            while batch.len() < self.config.batch_size {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(error))) => {
                        return Err(ProjectorError::messaging("receiving a message", error));
                    }
                    _ => break,
                }
            }
            if lock_connection.is_closed() {
                return Err(ProjectorError::Unavailable(Arc::new(
                    std::io::Error::other("lost the connection that holds the projection's lock"),
                )));
            }
            self.process(&batch).await?;
            backoff.reset();
        }
    }

    async fn process(&self, batch: &[jetstream::Message]) -> Result<(), ProjectorError> {
        let mut events: Vec<RecordedEvent> = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<RecordedEvent>(&message.payload) {
                Ok(event) => events.push(event),
                // Left out: the gap it leaves is completed from the store.
                Err(error) => tracing::warn!(
                    projection = self.projection.name(),
                    subject = %message.subject,
                    error = %error,
                    "message payload is not an event envelope"
                ),
            }
        }
        events.sort_by_key(|event| event.position);
        events.dedup_by_key(|event| event.position);
        let Some(last) = batch.last() else {
            return Ok(());
        };
        // The acknowledgement below covers every message of the batch, so the batch must be
        // applied up to the last message's position even when that message's payload did not
        // parse: the header names it, and the store fills in the event.
        let Some(last_position) = events
            .last()
            .map(|event| event.position)
            .max(header_position(last))
        else {
            // Nothing says how far the batch reaches, so it is not acknowledged: a later
            // acknowledgement, or a redelivery, settles these messages.
            tracing::warn!(
                projection = self.projection.name(),
                subject = %last.subject,
                "no position in the batch; handing it back"
            );
            self.nak(last).await?;
            return Ok(());
        };

        let faults = self.config.faults.clone();
        let reached = match commit_batch(
            &self.store,
            self.projection,
            &events,
            last_position,
            self.config.snapshot_every,
            faults.as_ref(),
        )
        .await
        {
            Ok(reached) => reached,
            Err(error @ ProjectorError::UnknownSchemaVersion { .. }) => {
                // Handed back rather than left to the acknowledgement timeout, so that the
                // retry after `retry_interval` finds it again at once.
                self.nak(last).await?;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let labels = [("projection", self.projection.name())];
        let pending_messages = last.info().map(|info| info.pending).unwrap_or(0);
        metrics::gauge!(metric_names::LAG_MESSAGES, &labels).set(pending_messages as f64);
        let lag_seconds = match (pending_messages, events.last()) {
            (0, _) | (_, None) => 0.0,
            (_, Some(event)) => {
                (Utc::now() - event.recorded_at).num_milliseconds().max(0) as f64 / 1000.0
            }
        };
        metrics::gauge!(metric_names::LAG_SECONDS, &labels).set(lag_seconds);
        metrics::gauge!(metric_names::CHECKPOINT_POSITION, &labels).set(reached as f64);

        self.config.fault(self.projection, FaultPoint::BeforeAck)?;
        // Acknowledgement policy "all": acknowledging the last message covers the batch. A lost
        // acknowledgement only means a redelivery, which the checkpoint turns into a no-op.
        last.ack()
            .await
            .map_err(|error| ProjectorError::Messaging {
                context: "acknowledging a batch",
                source: Arc::from(error),
            })?;
        Ok(())
    }

    /// Asks JetStream to deliver `message` again after the retry interval.
    async fn nak(&self, message: &jetstream::Message) -> Result<(), ProjectorError> {
        message
            .ack_with(AckKind::Nak(Some(self.config.retry_interval)))
            .await
            .map_err(|error| ProjectorError::Messaging {
                context: "handing a batch back",
                source: Arc::from(error),
            })
    }
}

/// Applies a delivered batch (ascending positions; duplicates, already-applied events and gaps
/// allowed) up to `last_position`, in as many transactions as gap filling needs, each with the
/// checkpoint. Events at or below the checkpoint have no effect, so applying the same batch
/// twice changes nothing the second time. Snapshots as in production. Returns the checkpoint
/// reached.
pub async fn apply_batch(
    store: &EventStore,
    projection: Projection,
    events: &[RecordedEvent],
) -> Result<i64, ProjectorError> {
    let last_position = events.iter().map(|event| event.position).max().unwrap_or(0);
    let snapshot_every = crate::snapshot::DEFAULT_SNAPSHOT_EVERY;
    commit_batch(
        store,
        projection,
        events,
        last_position,
        snapshot_every,
        None,
    )
    .await
}

async fn commit_batch(
    store: &EventStore,
    projection: Projection,
    events: &[RecordedEvent],
    last_position: i64,
    snapshot_every: i64,
    faults: Option<&FaultHook>,
) -> Result<i64, ProjectorError> {
    let pool: &Pool = store.pool();
    let mut reached;
    loop {
        let mut client = pool.get().await?;
        let transaction = client.transaction().await?;
        let checkpoint = persist::lock_checkpoint(&transaction, projection).await?;
        reached = checkpoint;
        if checkpoint >= last_position {
            transaction.commit().await?;
            break;
        }
        let pending: Vec<&RecordedEvent> = events
            .iter()
            .filter(|event| event.position > checkpoint)
            .collect();
        let continues = pending
            .iter()
            .zip(checkpoint + 1..)
            .all(|(event, expected)| event.position == expected);
        let fetched: Vec<RecordedEvent>;
        let to_apply: Vec<&RecordedEvent> = if continues && !pending.is_empty() {
            pending
        } else {
            tracing::info!(
                projection = projection.name(),
                checkpoint,
                last_position,
                "batch does not continue from the checkpoint; reading the gap from the store"
            );
            let wanted = (last_position - checkpoint).min(GAP_FILL_BATCH);
            fetched = store.read_all(checkpoint, wanted, None).await?;
            fetched.iter().collect()
        };
        if to_apply.is_empty() {
            return Err(ProjectorError::Corrupt(format!(
                "position {last_position} was published but the store holds nothing after {checkpoint}"
            )));
        }
        let owned: Vec<RecordedEvent> = to_apply.into_iter().cloned().collect();
        let applied = persist::apply_events(
            &transaction,
            projection,
            "",
            checkpoint,
            snapshot_every,
            &owned,
        )
        .await?;
        // Short of the batch's end only when an event of an unknown schema version stopped it:
        // what came before it is kept, the checkpoint stays right before it.
        let last_applied = applied.through.unwrap_or(checkpoint);
        persist::save_checkpoint(&transaction, projection, last_applied).await?;
        if faults.is_some_and(|hook| hook(projection, FaultPoint::BeforeCommit)) {
            return Err(ProjectorError::InjectedFault(FaultPoint::BeforeCommit));
        }
        transaction.commit().await?;
        reached = last_applied;
        let labels = [("projection", projection.name())];
        metrics::counter!(metric_names::EVENTS_APPLIED, &labels).increment(applied.events);
        if applied.malformed > 0 {
            metrics::counter!(metric_names::EVENTS_MALFORMED, &labels).increment(applied.malformed);
        }
        if let Some(error) = applied.stopped {
            return Err(error);
        }
        if reached >= last_position {
            break;
        }
    }
    Ok(reached)
}

/// Capped exponential pauses between attempts after transient failures.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &ProjectorConfig) -> Backoff {
        let first = config.retry_interval;
        Backoff {
            first,
            max: config.retry_interval_max.max(first),
            next: first,
        }
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    /// Logs and counts the failure of `what` (a projection, or the migrations), then sleeps for
    /// the next pause; false when shutdown was requested meanwhile.
    async fn wait(
        &mut self,
        what: &'static str,
        error: &ProjectorError,
        pool: &Pool,
        shutdown: &CancellationToken,
    ) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let retry_in_ms = delay.as_millis() as u64;
        let chain = platform::error_chain(error);
        if let ProjectorError::UnknownSchemaVersion { .. } = error {
            // Not a passing outage: nothing moves until an operator upgrades the projector.
            tracing::error!(projection = what, error = %chain, retry_in_ms, "projection waiting for an upgrade, retrying");
        } else {
            tracing::warn!(projection = what, error = %chain, retry_in_ms, "projection interrupted, retrying");
        }
        metrics::counter!(metric_names::RETRIES, "projection" => what).increment(1);
        if error.is_stale_statement() {
            // Every pooled connection may hold the invalidated statement; dropping them all
            // makes the next use prepare it again against the new schema.
            pool.manager().statement_caches.clear();
        }
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// How many events one gap-filling transaction reads from the store.
const GAP_FILL_BATCH: i64 = 5_000;

fn header_position(message: &jetstream::Message) -> Option<i64> {
    message
        .headers
        .as_ref()?
        .get(eventstore::POSITION_HEADER)?
        .as_str()
        .parse()
        .ok()
}
