//! The `EventStore` handle: appends go through the group-commit appender, reads go straight to
//! the pool.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use deadpool_postgres::Pool;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_postgres::Row;

use crate::appender::{self, Job, Stats};
use crate::error::{AppendError, Message, StoreError};
use crate::types::{AppendOutcome, AppendRequest, HandledCommand, RecordedEvent};
use uuid::Uuid;

/// How many appends may wait for the appender before `append` itself waits; this is the
/// backpressure that stops a flood of commands from queueing without bound.
const QUEUE_CAPACITY: usize = 1024;

/// Rows written before business time was stored have no `occurred_at`: it was their
/// `recorded_at`.
const EVENT_COLUMNS: &str = "event_id, stream_id, stream_version, position, event_type, \
                             schema_version, recorded_at, \
                             coalesce(occurred_at, recorded_at) as occurred_at, data, metadata";

/// A handle to the event store in the pool's `current_schema()`. Cheap to clone; all clones share
/// one appender task, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct EventStore {
    pool: Pool,
    sender: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    /// Filled on first use: the schema only matters for the notification channel name.
    schema: Arc<OnceCell<String>>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EventStore")
            .field("schema", &self.schema.get())
            .field("batches_committed", &self.batches_committed())
            .finish_non_exhaustive()
    }
}

impl EventStore {
    /// Creates the handle and spawns its appender task.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, because the appender is a Tokio task.
    pub fn new(pool: Pool) -> EventStore {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        tokio::spawn(appender::run(pool.clone(), receiver, stats.clone()));
        EventStore {
            pool,
            sender,
            stats,
            schema: Arc::new(OnceCell::new()),
        }
    }

    /// Appends the request's events atomically, or answers why not. A repeated command id gets
    /// the first outcome back with `replayed: true`.
    #[tracing::instrument(
        name = "eventstore.append",
        skip_all,
        fields(
            command_id = %request.command_id,
            stream_id = request.streams.first().map(|stream| stream.stream_id.as_str()),
            streams = request.streams.len(),
        )
    )]
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job { request, reply })
            .await
            .map_err(|_| appender_gone())?;
        // A closed reply channel means the batch task died before answering. Whether the append
        // committed is unknown, so this is Unavailable: a retry with the same command id is safe.
        answer.await.map_err(|_| appender_gone())?
    }

    /// Every event of one stream, oldest first.
    #[tracing::instrument(name = "eventstore.read_stream", skip_all, fields(stream_id = %stream_id))]
    pub async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "select {EVENT_COLUMNS} from events where stream_id = $1 order by stream_version"
            ))
            .await?;
        let rows = client.query(&statement, &[&stream_id]).await?;
        rows.iter().map(recorded_event).collect()
    }

    /// The stream's events after `after_version`, oldest first: what a caller holding the state
    /// at that version still needs.
    pub async fn read_stream_after(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "select {EVENT_COLUMNS} from events where stream_id = $1 \
                 and stream_version > $2 order by stream_version"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&stream_id, &after_version])
            .await?;
        rows.iter().map(recorded_event).collect()
    }

    /// The stream's current version: 0 when it has no events.
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select coalesce(max(stream_version), 0)::bigint from events where stream_id = $1",
                &[&stream_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Up to `limit` events with `position > after_position`, ascending, optionally only those of
    /// one category. Because positions become visible in order, a follower that passes the last
    /// position it saw never skips an event.
    #[tracing::instrument(
        name = "eventstore.read_all",
        skip_all,
        fields(after_position = after_position, limit = limit, category = category)
    )]
    pub async fn read_all(
        &self,
        after_position: i64,
        limit: i64,
        category: Option<&str>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        // Two statements rather than `($3 is null or category = $3)`, which would keep a cached
        // generic plan from using the category index.
        let rows = match category {
            None => {
                let statement = client
                    .prepare_cached(&format!(
                        "select {EVENT_COLUMNS} from events where position > $1 \
                         order by position limit $2"
                    ))
                    .await?;
                client.query(&statement, &[&after_position, &limit]).await?
            }
            Some(category) => {
                let statement = client
                    .prepare_cached(&format!(
                        "select {EVENT_COLUMNS} from events where category = $3 \
                         and position > $1 order by position limit $2"
                    ))
                    .await?;
                client
                    .query(&statement, &[&after_position, &limit, &category])
                    .await?
            }
        };
        rows.iter().map(recorded_event).collect()
    }

    /// The first answer to a command id, if it was handled. Lets a caller answer a repeat before
    /// deciding again, when a second decision would fail on the state the first one produced.
    pub async fn find_command(
        &self,
        command_id: Uuid,
    ) -> Result<Option<HandledCommand>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("select fingerprint, outcome from commands where command_id = $1")
            .await?;
        let Some(row) = client.query_opt(&statement, &[&command_id]).await? else {
            return Ok(None);
        };
        let outcome: serde_json::Value = row.try_get("outcome")?;
        let mut outcome: AppendOutcome = serde_json::from_value(outcome).map_err(|error| {
            StoreError::message(format!("stored outcome of command {command_id}: {error}"))
        })?;
        outcome.replayed = true;
        Ok(Some(HandledCommand {
            fingerprint: row.try_get("fingerprint")?,
            outcome,
        }))
    }

    /// Forgets the command ids handled more than `retention` ago, in batches short enough not to
    /// hold up appends, and answers how many were forgotten. A repeat of a forgotten command is
    /// decided again: usually refused or a no-op, since its effect is in the streams.
    pub async fn prune_commands(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        const BATCH: i64 = 1_000;
        let retention_seconds = retention.as_secs_f64();
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "delete from commands where command_id in (select command_id from commands \
                 where recorded_at < clock_timestamp() - make_interval(secs => $1) \
                 order by recorded_at limit $2)",
            )
            .await?;
        let mut forgotten = 0;
        loop {
            let deleted = client
                .execute(&statement, &[&retention_seconds, &BATCH])
                .await?;
            forgotten += deleted;
            if deleted < BATCH as u64 {
                return Ok(forgotten);
            }
        }
    }

    /// The position of the last event, 0 when the store is empty.
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("select coalesce(max(position), 0)::bigint from events", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The channel every append notifies after commit, with the last position as payload:
    /// `<current_schema>_events`. The name is case-sensitive, so quote it in `LISTEN`
    /// (see [`listen_statement`](crate::listen_statement)).
    pub async fn notify_channel(&self) -> Result<String, StoreError> {
        let schema = self
            .schema
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                let row = client.query_one("select current_schema()", &[]).await?;
                let schema: Option<String> = row.try_get(0)?;
                schema.ok_or_else(|| StoreError::message("no schema on the search_path"))
            })
            .await?;
        Ok(crate::notify_channel_for_schema(schema))
    }

    /// Append transactions committed by this handle's appender. Fewer than the appends made
    /// means group commit is batching them.
    pub fn batches_committed(&self) -> u64 {
        self.stats.transactions_committed.load(Ordering::Relaxed)
    }
}

fn appender_gone() -> AppendError {
    AppendError::Unavailable(Arc::new(Message(
        "the appender task stopped before answering".to_owned(),
    )))
}

fn recorded_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        position: row.try_get("position")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        recorded_at: row.try_get("recorded_at")?,
        occurred_at: row.try_get("occurred_at")?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
    })
}
