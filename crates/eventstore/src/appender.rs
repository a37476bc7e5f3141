//! The group-commit appender: one task per `EventStore` that turns concurrent appends into few
//! transactions.
//!
//! Every append transaction holds one advisory lock from before it reads the head position until
//! it commits, so positions are handed out in commit order and a reader never sees a later
//! position before an earlier one. That serializes appends; batching is what buys the throughput
//! back. The task drains whatever requests are
//! queued, checks and answers each one on its own in memory, and writes all accepted events with
//! one insert. Requests are independent: a conflict or a replay affects only its own request.
//!
//! What this module deliberately avoids: sequences for positions (they number in start order, not
//! commit order), `now()` for `recorded_at` (it is the transaction start, taken before the lock),
//! and letting one bad request fail the innocent requests batched with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{AppendError, ErrorSource, Message, StoreError};
use crate::types::{AppendOutcome, AppendRequest, NewEvent, StreamVersion};

/// Upper bound on requests per transaction, so one transaction's latency stays bounded under a
/// flood of requests.
const MAX_BATCH_REQUESTS: usize = 256;
/// Upper bound on events per transaction (a single larger request is still taken alone).
const MAX_BATCH_EVENTS: usize = 4096;
/// How often a batch is retried after losing a unique-constraint race to a writer that does not
/// take the append lock. Each retry re-reads versions and command ids, so the loser is answered
/// with a conflict or a replay; the bound only stops a pathological loop.
const RACE_RETRIES: usize = 3;

pub(crate) type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

pub(crate) struct Job {
    pub(crate) request: AppendRequest,
    pub(crate) reply: Reply,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Append transactions committed, including per-request retries after a failed batch.
    pub(crate) transactions_committed: AtomicU64,
}

/// Runs until every sender (every `EventStore` clone) is dropped.
pub(crate) async fn run(pool: Pool, mut receiver: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    while let Some(first) = receiver.recv().await {
        let mut queued_events = event_count(&first.request);
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH_REQUESTS && queued_events < MAX_BATCH_EVENTS {
            match receiver.try_recv() {
                Ok(job) => {
                    queued_events += event_count(&job.request);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Each batch runs in its own task so that a bug that panics fails only this batch (its
        // callers see their reply channel close and get Unavailable) instead of ending the
        // appender for every later caller.
        let batch = tokio::spawn(handle_batch(pool.clone(), jobs, stats.clone()));
        if let Err(error) = batch.await {
            tracing::error!(error = %error, "append batch task failed");
        }
    }
    tracing::debug!("appender stopped: every event store handle was dropped");
}

fn event_count(request: &AppendRequest) -> usize {
    request
        .streams
        .iter()
        .map(|stream| stream.events.len())
        .sum()
}

async fn handle_batch(pool: Pool, jobs: Vec<Job>, stats: Arc<Stats>) {
    let span = tracing::debug_span!("append_batch", requests = jobs.len());
    async move {
        let requests: Vec<&AppendRequest> = jobs.iter().map(|job| &job.request).collect();
        let results = append_batch(&pool, &requests, &stats).await;
        for (job, result) in jobs.into_iter().zip(results) {
            // The caller may have given up (its future was dropped); nobody is left to tell.
            let _ = job.reply.send(result);
        }
    }
    .instrument(span)
    .await
}

/// Why a whole batch transaction failed.
enum BatchFailure {
    /// The database is unreachable: every request of the batch gets Unavailable.
    Unavailable(ErrorSource),
    /// Something that no retry will fix, such as a pool without a runtime: every request gets
    /// Unexpected.
    Unexpected(ErrorSource),
    /// A unique violation caused by a concurrent writer that does not take the append lock:
    /// retrying re-reads the state and turns it into conflicts or replays.
    Race(ErrorSource),
    /// The database refused something in the batch, most likely one request's data: each
    /// request is retried alone so only the culprit fails.
    Rejected(ErrorSource),
}

/// Constraints a racing writer can make us violate; a retry sees its rows and answers properly.
const RACE_CONSTRAINTS: &[&str] = &[
    "events_pkey",
    "events_stream_id_stream_version_key",
    "commands_pkey",
];

fn classify(error: tokio_postgres::Error) -> BatchFailure {
    let race = error.as_db_error().is_some_and(|db_error| {
        db_error.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db_error
                .constraint()
                .is_some_and(|constraint| RACE_CONSTRAINTS.contains(&constraint))
    });
    match StoreError::from(error) {
        StoreError::Unavailable(source) => BatchFailure::Unavailable(source),
        StoreError::Unexpected(source) if race => BatchFailure::Race(source),
        StoreError::Unexpected(source) => BatchFailure::Rejected(source),
    }
}

fn classify_pool(error: deadpool_postgres::PoolError) -> BatchFailure {
    match StoreError::from(error) {
        StoreError::Unavailable(source) => BatchFailure::Unavailable(source),
        StoreError::Unexpected(source) => BatchFailure::Unexpected(source),
    }
}

type Answer = Result<AppendOutcome, AppendError>;

/// Appends a batch and answers every request, in request order.
async fn append_batch(pool: &Pool, requests: &[&AppendRequest], stats: &Stats) -> Vec<Answer> {
    let rejection = match attempt(pool, requests, stats).await {
        Ok(answers) => return answers,
        Err(BatchFailure::Unavailable(source)) => {
            tracing::warn!(error = %source, "append batch failed: database unavailable");
            if crate::error::is_stale_statement(&*source) {
                // A migration changed a table under the statements prepared on the pool's
                // connections; they would fail on every reuse, so the retry prepares anew.
                pool.manager().statement_caches.clear();
            }
            return vec![Err(AppendError::Unavailable(source)); requests.len()];
        }
        Err(BatchFailure::Unexpected(source)) => {
            tracing::error!(error = %source, "append batch failed");
            return vec![Err(AppendError::Unexpected(source)); requests.len()];
        }
        Err(BatchFailure::Rejected(source) | BatchFailure::Race(source)) => source,
    };
    if let [request] = requests {
        tracing::warn!(
            command_id = %request.command_id,
            error = %rejection,
            "append refused by the database"
        );
        return vec![Err(AppendError::Unexpected(rejection))];
    }

    // Retry each request alone, in the original order so that a request depending on an earlier
    // one of the batch (same stream, or the same command id) still sees it first.
    tracing::info!(
        requests = requests.len(),
        error = %rejection,
        "append batch refused by the database; retrying its requests one by one"
    );
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        let answer = match attempt(pool, std::slice::from_ref(request), stats).await {
            Ok(mut single) => single.pop().unwrap_or_else(|| {
                Err(AppendError::Unexpected(Arc::new(Message(
                    "append produced no answer".to_owned(),
                ))))
            }),
            Err(BatchFailure::Unavailable(source)) => Err(AppendError::Unavailable(source)),
            Err(
                BatchFailure::Unexpected(source)
                | BatchFailure::Rejected(source)
                | BatchFailure::Race(source),
            ) => {
                tracing::warn!(
                    command_id = %request.command_id,
                    error = %source,
                    "append refused by the database"
                );
                Err(AppendError::Unexpected(source))
            }
        };
        answers.push(answer);
    }
    answers
}

/// One transaction for the batch, repeated while it loses unique-constraint races.
async fn attempt(
    pool: &Pool,
    requests: &[&AppendRequest],
    stats: &Stats,
) -> Result<Vec<Answer>, BatchFailure> {
    let mut tries = 0;
    loop {
        tries += 1;
        match transaction(pool, requests).await {
            Ok(answers) => {
                stats.transactions_committed.fetch_add(1, Ordering::Relaxed);
                return Ok(answers);
            }
            Err(BatchFailure::Race(source)) if tries <= RACE_RETRIES => {
                tracing::debug!(error = %source, "append lost a race with another writer; retrying");
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// What the batch already knows about a command id: from the commands table, or from an earlier
/// request of the same batch.
struct KnownCommand {
    fingerprint: Option<Vec<u8>>,
    /// Err holds why a stored outcome could not be read back.
    outcome: Result<AppendOutcome, String>,
}

/// The columns of the multi-row insert, one entry per accepted event.
#[derive(Default)]
struct EventColumns<'a> {
    positions: Vec<i64>,
    event_ids: Vec<Uuid>,
    stream_ids: Vec<&'a str>,
    stream_versions: Vec<i64>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    data: Vec<&'a Value>,
    metadata: Vec<&'a Value>,
    occurred_ats: Vec<DateTime<Utc>>,
}

/// What the batch knows of a stream's last event: from the database, or from an earlier request
/// of the same batch.
#[derive(Clone, Copy, Default)]
struct StreamHead {
    /// 0 when the stream has no events.
    version: i64,
    last_occurred_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct CommandColumns<'a> {
    command_ids: Vec<Uuid>,
    fingerprints: Vec<Option<&'a [u8]>>,
    outcomes: Vec<Value>,
}

struct PlannedEvent<'a> {
    stream_id: &'a str,
    stream_version: i64,
    position: i64,
    event: &'a NewEvent,
}

/// Serializes every append transaction of the schema, in every process, until commit.
///
/// The two timeouts, set for this transaction only and in the same round trip, keep a writer
/// that froze while holding the lock (a stopped process, a cut network) from stopping every
/// other writer: the others give up waiting after `lock_timeout` and answer Unavailable, and the
/// server ends the frozen session after `idle_in_transaction_session_timeout`, which releases
/// the lock. An append never waits on anything but the server between its statements, so only
/// a frozen or cut-off writer is ever idle that long.
const LOCK_SQL: &str = "set local lock_timeout = '5s'; \
    set local idle_in_transaction_session_timeout = '5s'; \
    select pg_advisory_xact_lock(hashtext(current_schema() || '.append'))";
/// The last event by the primary key (one index entry, whatever the store's size), and the time
/// for this batch: never before the last event's, even if the server's clock stepped back, so
/// that "the store as of T" stays a prefix of the log.
const HEAD_SQL: &str = "select coalesce(last.position, 0)::bigint, \
        greatest(clock_timestamp(), last.recorded_at) \
    from (select 1) as one \
    left join lateral (select position, recorded_at from events order by position desc limit 1) \
        as last on true";
/// Each stream's head by a backward scan of the (stream_id, stream_version) index: one entry per
/// stream, so a command costs the same on a stream's thousandth event as on its first.
const VERSIONS_SQL: &str = "select input.stream_id, head.stream_version, head.occurred_at \
    from unnest($1::text[]) as input(stream_id) \
    cross join lateral (select stream_version, \
            coalesce(occurred_at, recorded_at) as occurred_at from events \
        where events.stream_id = input.stream_id \
        order by stream_version desc limit 1) as head";
const KNOWN_COMMANDS_SQL: &str = "select command_id, fingerprint, outcome from commands \
                                  where command_id = any($1::uuid[])";
/// One statement for the whole batch, whatever its size: arrays have no parameter limit.
const INSERT_EVENTS_SQL: &str = "insert into events (position, event_id, stream_id, \
        stream_version, event_type, schema_version, recorded_at, data, metadata, occurred_at) \
    select position, event_id, stream_id, stream_version, event_type, schema_version, $7, \
        data, metadata, occurred_at \
    from unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], \
        $8::jsonb[], $9::jsonb[], $10::timestamptz[]) \
        as input(position, event_id, stream_id, stream_version, event_type, schema_version, \
        data, metadata, occurred_at)";
const INSERT_COMMANDS_SQL: &str = "insert into commands (command_id, fingerprint, outcome, \
        recorded_at) \
    select command_id, fingerprint, outcome, $4 \
    from unnest($1::uuid[], $2::bytea[], $3::jsonb[]) as input(command_id, fingerprint, outcome)";
/// Delivered at commit, so a listener woken by it can already read the events.
const NOTIFY_SQL: &str = "select pg_notify(current_schema() || '_events', $1::text)";

async fn transaction(
    pool: &Pool,
    requests: &[&AppendRequest],
) -> Result<Vec<Answer>, BatchFailure> {
    let mut client = pool.get().await.map_err(classify_pool)?;
    // Read committed: after waiting for the lock, each following statement takes a fresh
    // snapshot that includes every append committed before the lock was granted.
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(classify)?;
    // Statements are prepared once per pooled connection: a batch is otherwise dominated by
    // round trips, all of them made while holding the lock.
    let prepare = async |sql: &str| transaction.prepare_cached(sql).await.map_err(classify);

    transaction
        .batch_execute(LOCK_SQL)
        .await
        .map_err(classify)?;
    let mut stream_ids: Vec<&str> = requests
        .iter()
        .flat_map(|request| {
            request
                .streams
                .iter()
                .map(|stream| stream.stream_id.as_str())
        })
        .collect();
    stream_ids.sort_unstable();
    stream_ids.dedup();
    let mut command_ids: Vec<Uuid> = requests.iter().map(|request| request.command_id).collect();
    command_ids.sort_unstable();
    command_ids.dedup();

    // The three reads go out together, pipelined on the connection: one round trip under the
    // lock instead of three. The head and the clock are read once, under the lock: positions
    // continue from the head without gaps and recorded_at cannot run backwards.
    let (head_statement, versions_statement, known_statement) = (
        prepare(HEAD_SQL).await?,
        prepare(VERSIONS_SQL).await?,
        prepare(KNOWN_COMMANDS_SQL).await?,
    );
    let (versions_parameters, known_parameters): (
        [&(dyn ToSql + Sync); 1],
        [&(dyn ToSql + Sync); 1],
    ) = ([&stream_ids], [&command_ids]);
    let (head_row, version_rows, command_rows) = tokio::try_join!(
        transaction.query_one(&head_statement, &[]),
        transaction.query(&versions_statement, &versions_parameters),
        transaction.query(&known_statement, &known_parameters),
    )
    .map_err(classify)?;
    let mut head: i64 = head_row.try_get(0).map_err(classify)?;
    let recorded_at: DateTime<Utc> = head_row.try_get(1).map_err(classify)?;

    let mut heads: HashMap<String, StreamHead> = HashMap::with_capacity(version_rows.len());
    for row in version_rows {
        heads.insert(
            row.try_get(0).map_err(classify)?,
            StreamHead {
                version: row.try_get(1).map_err(classify)?,
                last_occurred_at: Some(row.try_get(2).map_err(classify)?),
            },
        );
    }

    let mut known: HashMap<Uuid, KnownCommand> = HashMap::new();
    for row in command_rows {
        let command_id: Uuid = row.try_get(0).map_err(classify)?;
        let fingerprint: Option<Vec<u8>> = row.try_get(1).map_err(classify)?;
        let outcome: Value = row.try_get(2).map_err(classify)?;
        let outcome = serde_json::from_value::<AppendOutcome>(outcome).map_err(|error| {
            format!("stored outcome of command {command_id} is unreadable: {error}")
        });
        known.insert(
            command_id,
            KnownCommand {
                fingerprint,
                outcome,
            },
        );
    }

    let mut events = EventColumns::default();
    let mut commands = CommandColumns::default();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        let answer = decide(
            request,
            &mut known,
            &mut heads,
            &mut head,
            recorded_at,
            &mut events,
            &mut commands,
        );
        answers.push(answer);
    }

    // The writes are pipelined too. Each answer comes back in statement order, and after the
    // first failure PostgreSQL refuses the rest as "transaction aborted", so the first error in
    // statement order is the one that says what went wrong.
    let (insert_events, insert_commands, notify) = (
        prepare(INSERT_EVENTS_SQL).await?,
        prepare(INSERT_COMMANDS_SQL).await?,
        prepare(NOTIFY_SQL).await?,
    );
    let notify_payload = events.positions.last().map(i64::to_string);
    let (events_written, commands_written, notified) = tokio::join!(
        async {
            if events.positions.is_empty() {
                return Ok(0);
            }
            transaction
                .execute(
                    &insert_events,
                    &[
                        &events.positions,
                        &events.event_ids,
                        &events.stream_ids,
                        &events.stream_versions,
                        &events.event_types,
                        &events.schema_versions,
                        &recorded_at,
                        &events.data,
                        &events.metadata,
                        &events.occurred_ats,
                    ],
                )
                .await
        },
        async {
            if commands.command_ids.is_empty() {
                return Ok(0);
            }
            transaction
                .execute(
                    &insert_commands,
                    &[
                        &commands.command_ids,
                        &commands.fingerprints,
                        &commands.outcomes,
                        &recorded_at,
                    ],
                )
                .await
        },
        async {
            match &notify_payload {
                Some(last_position) => transaction.execute(&notify, &[last_position]).await,
                None => Ok(0),
            }
        },
    );
    events_written
        .and(commands_written)
        .and(notified)
        .map_err(classify)?;
    transaction.commit().await.map_err(classify)?;

    if let (Some(first), Some(last)) = (events.positions.first(), events.positions.last()) {
        tracing::debug!(
            requests = requests.len(),
            events = events.positions.len(),
            first_position = first,
            last_position = last,
            "append batch committed"
        );
    }
    Ok(answers)
}

/// Checks one request against the state so far (database plus the earlier requests of this
/// batch) and, if it is accepted, plans its events and records it as handled.
fn decide<'a>(
    request: &'a AppendRequest,
    known: &mut HashMap<Uuid, KnownCommand>,
    heads: &mut HashMap<String, StreamHead>,
    head: &mut i64,
    recorded_at: DateTime<Utc>,
    events: &mut EventColumns<'a>,
    commands: &mut CommandColumns<'a>,
) -> Answer {
    if let Some(command) = known.get(&request.command_id) {
        if command.fingerprint != request.fingerprint {
            return Err(AppendError::FingerprintMismatch {
                command_id: request.command_id,
            });
        }
        return match &command.outcome {
            Ok(outcome) => Ok(AppendOutcome {
                replayed: true,
                ..outcome.clone()
            }),
            Err(reason) => Err(AppendError::Unexpected(Arc::new(Message(reason.clone())))),
        };
    }

    let occurred_at = request.occurred_at.unwrap_or(recorded_at);
    if occurred_at > recorded_at {
        return Err(AppendError::OccurredInTheFuture {
            occurred_at,
            recorded_at,
        });
    }

    // Stream heads as this request sees them; only merged into the batch state if the whole
    // request is accepted, which is what makes a multi-stream append all or nothing.
    let mut local: HashMap<&str, StreamHead> = HashMap::new();
    let mut planned: Vec<PlannedEvent<'a>> = Vec::new();
    let mut stream_versions = Vec::with_capacity(request.streams.len());
    let mut next_position = *head + 1;
    for stream in &request.streams {
        let stream_id = stream.stream_id.as_str();
        let stream_head = local
            .get(stream_id)
            .or_else(|| heads.get(stream_id))
            .copied()
            .unwrap_or_default();
        let actual = stream_head.version;
        if !stream.expected.matches(actual) {
            tracing::debug!(
                command_id = %request.command_id,
                stream_id,
                expected = %stream.expected,
                actual,
                "append conflict"
            );
            return Err(AppendError::Conflict {
                stream_id: stream.stream_id.clone(),
                expected: stream.expected,
                actual,
            });
        }
        if let Some(last_occurred_at) = stream_head.last_occurred_at
            && occurred_at < last_occurred_at
            && !stream.events.is_empty()
        {
            return Err(AppendError::OccurredBeforeStreamHead {
                stream_id: stream.stream_id.clone(),
                occurred_at,
                last_occurred_at,
            });
        }
        let mut version = actual;
        for event in &stream.events {
            version += 1;
            planned.push(PlannedEvent {
                stream_id,
                stream_version: version,
                position: next_position,
                event,
            });
            next_position += 1;
        }
        let last_occurred_at = if stream.events.is_empty() {
            stream_head.last_occurred_at
        } else {
            Some(occurred_at)
        };
        local.insert(
            stream_id,
            StreamHead {
                version,
                last_occurred_at,
            },
        );
        stream_versions.push(StreamVersion {
            stream_id: stream.stream_id.clone(),
            version,
        });
    }

    // With no events this is the head as it stands, which is what a read-your-writes query
    // should wait for.
    let outcome = AppendOutcome {
        streams: stream_versions,
        position: next_position - 1,
        replayed: false,
    };
    let stored_outcome = match serde_json::to_value(&outcome) {
        Ok(value) => value,
        Err(error) => return Err(AppendError::Unexpected(Arc::new(error))),
    };

    *head = outcome.position;
    for (stream_id, stream_head) in local {
        heads.insert(stream_id.to_owned(), stream_head);
    }
    for planned_event in planned {
        events.positions.push(planned_event.position);
        events.event_ids.push(planned_event.event.event_id);
        events.stream_ids.push(planned_event.stream_id);
        events.stream_versions.push(planned_event.stream_version);
        events.event_types.push(&planned_event.event.event_type);
        events
            .schema_versions
            .push(planned_event.event.schema_version);
        events.data.push(&planned_event.event.data);
        events.metadata.push(&planned_event.event.metadata);
        events.occurred_ats.push(occurred_at);
    }
    commands.command_ids.push(request.command_id);
    commands.fingerprints.push(request.fingerprint.as_deref());
    commands.outcomes.push(stored_outcome);
    known.insert(
        request.command_id,
        KnownCommand {
            fingerprint: request.fingerprint.clone(),
            outcome: Ok(outcome.clone()),
        },
    );
    Ok(outcome)
}
