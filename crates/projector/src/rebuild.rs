//! Rebuilding a projection from the event store while the old tables keep serving.
//!
//! 1. Fresh tables `<table>_rebuild` are created with the live tables' shape.
//! 2. The store is replayed into them in large batches (reading the next batch while the current
//!    one is written), each batch its own transaction, so memory stays bounded whatever the
//!    history's size.
//! 3. Once the replay has caught up, one transaction locks the projection's checkpoint row (which
//!    holds back the live runner's next batch), applies the last few events up to the store's
//!    head, drops the old tables, renames the new ones into place and sets the checkpoint to that
//!    head. Readers see either the old tables or the new ones; the runner carries on from the new
//!    checkpoint.
//!
//! Dropping a table waits for every query still reading it, and while it waits every later
//! query on that table queues behind it: one long report would stall the whole API. So the swap
//! waits at most `swap_lock_timeout` for the old tables, then gives up, lets the queue drain,
//! and tries again after a pause, a bounded number of times.
//!
//! Only one rebuild of a projection runs at a time (a session advisory lock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{EventStore, RecordedEvent};
use platform::CancellationToken;

use crate::error::ProjectorError;
use crate::persist;
use crate::{Projection, migrate};

const SUFFIX: &str = "_rebuild";

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Events read from the store per batch and transaction.
    pub batch_size: i64,
    /// How long the swap waits for queries on the old tables to end; readers queued behind the
    /// swap wait at most this long.
    pub swap_lock_timeout: Duration,
    /// How many times the swap is tried before the rebuild fails with
    /// [`ProjectorError::SwapBlocked`]; at least 1.
    pub swap_attempts: u32,
    /// The pause between two attempts, in which queued readers go ahead.
    pub swap_retry_pause: Duration,
    /// Positions between two snapshots, as the live projection writes them.
    pub snapshot_every: i64,
}

impl Default for RebuildOptions {
    /// Batches of 5,000 events; the swap waits 1 s for readers, up to 30 times, 4 s apart; a
    /// snapshot every 1,000 positions.
    fn default() -> Self {
        RebuildOptions {
            batch_size: 5_000,
            swap_lock_timeout: Duration::from_secs(1),
            swap_attempts: 30,
            swap_retry_pause: Duration::from_secs(4),
            snapshot_every: crate::snapshot::DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildPhase {
    /// Replaying the store into the fresh tables.
    Replaying,
    /// Caught up; swapping the tables in.
    Swapping,
    Done,
}

/// Reported after every batch, for a progress bar or log lines.
#[derive(Debug, Clone)]
pub struct RebuildProgress {
    pub projection: Projection,
    pub phase: RebuildPhase,
    /// The last position replayed.
    pub position: i64,
    /// The store's head when the rebuild started; the replay goes on past it if events arrive.
    pub head: i64,
    /// Opportunity events folded into the fresh tables so far.
    pub events_applied: u64,
    pub elapsed: Duration,
    /// Positions covered per second since the start.
    pub positions_per_second: f64,
    /// At the current rate, until the starting head is reached.
    pub eta: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The checkpoint the swapped-in tables start from.
    pub position: i64,
    pub events_applied: u64,
    pub elapsed: Duration,
}

/// Rebuilds `projection` from the store and swaps the result in. `progress` is called after
/// every batch and at each phase change. Cancelling `shutdown` stops before the swap and leaves
/// the live tables untouched.
pub async fn rebuild(
    projection: Projection,
    store: &EventStore,
    options: &RebuildOptions,
    shutdown: &CancellationToken,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<RebuildReport, ProjectorError> {
    let pool = store.pool();
    migrate(pool).await?;
    let started = Instant::now();
    let batch_size = options.batch_size.max(1);

    let lock_connection = deadpool_postgres::Object::take(pool.get().await?);
    let locked: bool = lock_connection
        .query_one(
            "select pg_try_advisory_lock(hashtext(current_schema() || '.projector.rebuild.' || $1))",
            &[&projection.name()],
        )
        .await?
        .try_get(0)?;
    if !locked {
        return Err(ProjectorError::RebuildInProgress(projection.name()));
    }

    {
        let client = pool.get().await?;
        let mut statements = String::new();
        for table in projection.tables() {
            statements.push_str(&format!(
                "drop table if exists {table}{SUFFIX}; \
                 create table {table}{SUFFIX} (like {table} including all);"
            ));
        }
        client.batch_execute(&statements).await?;
    }

    let head = store.head_position().await?;
    let mut state = Progress {
        projection,
        head,
        position: 0,
        events_applied: 0,
        started,
    };
    progress(&state.report(RebuildPhase::Replaying));

    // Replay, reading the next batch while the current one is written.
    let mut next = read(store, 0, batch_size).await?;
    while !next.is_empty() {
        if shutdown.is_cancelled() {
            return Err(ProjectorError::Cancelled);
        }
        let current = next;
        let after = current
            .last()
            .map_or(state.position, |event| event.position);
        let (read_result, applied) = tokio::join!(
            read(store, after, batch_size),
            apply_batch(
                pool,
                projection,
                state.position,
                options.snapshot_every,
                &current
            )
        );
        state.events_applied += applied?;
        state.position = after;
        next = read_result?;
        progress(&state.report(RebuildPhase::Replaying));
    }

    let mut attempt = 1;
    let position = loop {
        progress(&state.report(RebuildPhase::Swapping));
        match swap(
            store,
            projection,
            &mut state,
            batch_size,
            options.snapshot_every,
            options.swap_lock_timeout,
        )
        .await
        {
            Ok(position) => break position,
            Err(error) if error.is_lock_timeout() => {
                if attempt >= options.swap_attempts {
                    return Err(ProjectorError::SwapBlocked {
                        projection: projection.name(),
                        attempts: attempt,
                        lock_timeout: options.swap_lock_timeout,
                        source: Arc::new(error),
                    });
                }
                tracing::warn!(
                    projection = projection.name(),
                    attempt,
                    attempts = options.swap_attempts,
                    retry_in_ms = options.swap_retry_pause.as_millis() as u64,
                    "queries on the old tables held up the swap; trying again after a pause"
                );
                attempt += 1;
                tokio::select! {
                    () = shutdown.cancelled() => return Err(ProjectorError::Cancelled),
                    () = tokio::time::sleep(options.swap_retry_pause) => {}
                }
            }
            Err(error) => return Err(error),
        }
    };
    state.position = position;
    progress(&state.report(RebuildPhase::Done));
    drop(lock_connection);
    Ok(RebuildReport {
        position,
        events_applied: state.events_applied,
        elapsed: started.elapsed(),
    })
}

async fn read(
    store: &EventStore,
    after: i64,
    batch_size: i64,
) -> Result<Vec<RecordedEvent>, ProjectorError> {
    // Every category, although only opportunity events change these projections: snapshots
    // are taken at the positions the live projection takes them, right after the event that
    // starts an interval, with its `recorded_at`.
    Ok(store.read_all(after, batch_size, None).await?)
}

async fn apply_batch(
    pool: &deadpool_postgres::Pool,
    projection: Projection,
    after: i64,
    snapshot_every: i64,
    events: &[RecordedEvent],
) -> Result<u64, ProjectorError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let applied = persist::apply_events(
        &transaction,
        projection,
        SUFFIX,
        after,
        snapshot_every,
        events,
    )
    .await?;
    if let Some(error) = applied.stopped {
        // The fresh tables would lack that event for good: the rebuild fails instead.
        return Err(error);
    }
    transaction.commit().await?;
    Ok(applied.events)
}

/// One attempt at the swap transaction. `state` only moves once it has committed, so that a
/// failed attempt leaves nothing for the next one to skip.
async fn swap(
    store: &EventStore,
    projection: Projection,
    state: &mut Progress,
    batch_size: i64,
    snapshot_every: i64,
    lock_timeout: Duration,
) -> Result<i64, ProjectorError> {
    let mut client = store.pool().get().await?;
    let transaction = client.transaction().await?;
    persist::lock_checkpoint(&transaction, projection).await?;
    // Everything at or below this head is visible now, and nothing below it can appear later.
    let head: i64 = transaction
        .query_one("select coalesce(max(position), 0)::bigint from events", &[])
        .await?
        .try_get(0)?;
    let mut position = state.position;
    let mut events_applied = 0;
    loop {
        let mut events = read(store, position, batch_size).await?;
        events.retain(|event| event.position <= head);
        let Some(last) = events.last().map(|event| event.position) else {
            break;
        };
        let applied = persist::apply_events(
            &transaction,
            projection,
            SUFFIX,
            position,
            snapshot_every,
            &events,
        )
        .await?;
        if let Some(error) = applied.stopped {
            return Err(error);
        }
        events_applied += applied.events;
        position = last;
    }
    // `like ... including all` named the fresh tables' indexes after them (`deals_rebuild_pkey`);
    // each takes back the name of the live index with the same definition, so that the names
    // the migrations gave (and a later migration may refer to) survive a rebuild.
    let tables: Vec<&str> = projection.tables().to_vec();
    let index_pairs = transaction
        .query(
            "select fresh.indexname, live.indexname \
             from pg_indexes live join pg_indexes fresh \
               on fresh.schemaname = live.schemaname \
               and fresh.tablename::text = live.tablename::text || $2::text \
               and regexp_replace(fresh.indexdef, '^.*? USING ', '') \
                 = regexp_replace(live.indexdef, '^.*? USING ', '') \
               and (fresh.indexdef like 'CREATE UNIQUE %') = (live.indexdef like 'CREATE UNIQUE %') \
             where live.schemaname = current_schema() and live.tablename::text = any($1::text[])",
            &[&tables, &SUFFIX],
        )
        .await?;
    // Only the drops wait for readers; the checkpoint row above is held by short batches.
    let mut statements = format!(
        "set local lock_timeout = {};",
        lock_timeout.as_millis().max(1)
    );
    for table in projection.tables() {
        statements.push_str(&format!(
            "drop table {table}; alter table {table}{SUFFIX} rename to {table};"
        ));
    }
    let mut named = std::collections::HashSet::new();
    for row in &index_pairs {
        let fresh: String = row.try_get(0)?;
        let live: String = row.try_get(1)?;
        // Two live indexes with one definition match twice each way; any one-to-one pairing of
        // identical indexes will do.
        if named.contains(&fresh) || named.contains(&live) {
            continue;
        }
        statements.push_str(&format!(
            "alter index {} rename to {};",
            quote_identifier(&fresh),
            quote_identifier(&live)
        ));
        named.insert(fresh);
        named.insert(live);
    }
    transaction.batch_execute(&statements).await?;
    persist::save_checkpoint(&transaction, projection, head).await?;
    transaction.commit().await?;
    state.events_applied += events_applied;
    tracing::info!(
        projection = projection.name(),
        position = head,
        "rebuilt tables swapped in"
    );
    Ok(head)
}

fn quote_identifier(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

struct Progress {
    projection: Projection,
    head: i64,
    position: i64,
    events_applied: u64,
    started: Instant,
}

impl Progress {
    fn report(&self, phase: RebuildPhase) -> RebuildProgress {
        let elapsed = self.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        let positions_per_second = if seconds > 0.0 {
            self.position as f64 / seconds
        } else {
            0.0
        };
        let remaining = (self.head - self.position).max(0) as f64;
        let eta = (positions_per_second > 0.0)
            .then(|| Duration::from_secs_f64(remaining / positions_per_second));
        RebuildProgress {
            projection: self.projection,
            phase,
            position: self.position,
            head: self.head,
            events_applied: self.events_applied,
            elapsed,
            positions_per_second,
            eta,
        }
    }
}
