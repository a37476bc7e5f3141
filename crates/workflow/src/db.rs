//! The workflow's own tables in `current_schema()`: timers, the version each deal's timers were
//! planned from, round-robin turns and lead assignments. Migrations are versioned in their own
//! `workflow_schema_migrations` table, so they never collide with the event store's.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use eventstore::{Migration, StoreError};
use uuid::Uuid;

use crate::step::PlannedTimer;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "workflow",
        sql: include_str!("../migrations/0001_workflow.sql"),
    },
    Migration {
        version: 2,
        name: "timer_failure",
        sql: include_str!("../migrations/0002_timer_failure.sql"),
    },
    Migration {
        version: 3,
        name: "timer_retry",
        sql: include_str!("../migrations/0003_timer_retry.sql"),
    },
    Migration {
        version: 4,
        name: "deal_progress",
        sql: include_str!("../migrations/0004_deal_progress.sql"),
    },
];

/// Creates or updates the workflow's tables. Idempotent and safe when several processes start at
/// once: the event store's runner serializes them on an advisory lock keyed on the schema and
/// this ledger.
pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    eventstore::apply_migrations(pool, "workflow_schema_migrations", MIGRATIONS).await
}

/// Where a timer write came from, for the metadata of the `FollowUpDue` it causes.
pub struct Cause {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
}

/// How long a handler waits for another one (in this or another instance) that holds the same
/// deal. Longer than handling a deal's events normally takes; past it the message is
/// redelivered later rather than tying up a connection.
const DEAL_LOCK_TIMEOUT: &str = "5s";
/// How long a transaction holding workflow rows (a deal being handled, claimed timers) may sit
/// idle waiting for its own process. Between statements it waits on commands, which take well
/// under this; a frozen or cut-off instance holds the rows no longer than this before the server
/// ends its session and another instance takes them over.
const HOLDER_IDLE_TIMEOUT: &str = "30s";

/// Locks the deal's progress row for the rest of `transaction` and returns the last stream
/// version handled. Everyone handling the deal's events serializes here.
pub async fn lock_deal(
    transaction: &Transaction<'_>,
    opportunity_id: Uuid,
) -> Result<i64, StoreError> {
    transaction
        .batch_execute(&format!(
            "set local lock_timeout = '{DEAL_LOCK_TIMEOUT}'; \
             set local idle_in_transaction_session_timeout = '{HOLDER_IDLE_TIMEOUT}'"
        ))
        .await?;
    transaction
        .execute(
            "insert into workflow_deals (opportunity_id, planned_version) values ($1, 0)
             on conflict (opportunity_id) do nothing",
            &[&opportunity_id],
        )
        .await?;
    Ok(transaction
        .query_one(
            "select handled_version from workflow_deals where opportunity_id = $1 for update",
            &[&opportunity_id],
        )
        .await?
        .try_get(0)?)
}

/// Records that the deal's events up to `version` are handled (under [`lock_deal`]'s lock).
pub async fn mark_handled(
    transaction: &Transaction<'_>,
    opportunity_id: Uuid,
    version: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "update workflow_deals set handled_version = $2 where opportunity_id = $1",
            &[&opportunity_id, &version],
        )
        .await?;
    Ok(())
}

/// Makes a deal's unfired timers match `plan`, computed from stream version `version`, within
/// `transaction` (which holds [`lock_deal`]'s lock). Returns false when a plan from this or a
/// newer version was already stored (this one is then dropped).
pub async fn store_plan(
    transaction: &Transaction<'_>,
    opportunity_id: Uuid,
    version: i64,
    plan: &[PlannedTimer],
    cause: &Cause,
) -> Result<bool, StoreError> {
    let planned: i64 = transaction
        .query_one(
            "select planned_version from workflow_deals where opportunity_id = $1",
            &[&opportunity_id],
        )
        .await?
        .get(0);
    if planned >= version {
        return Ok(false);
    }
    let timer_ids: Vec<Uuid> = plan.iter().map(|timer| timer.timer_id.0).collect();
    // Rows claimed by a firing instance are skipped: that instance marks them fired.
    transaction
        .execute(
            "delete from workflow_timers where timer_id in (
                 select timer_id from workflow_timers
                 where opportunity_id = $1 and fired_at is null and timer_id <> all($2)
                 for update skip locked)",
            &[&opportunity_id, &timer_ids],
        )
        .await?;
    let statement = transaction
        .prepare_cached(
            "insert into workflow_timers
                 (timer_id, opportunity_id, kind, rule, due_at, correlation_id, causation_id)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (timer_id) do update set due_at = excluded.due_at
             where workflow_timers.fired_at is null
               and workflow_timers.due_at <> excluded.due_at",
        )
        .await?;
    for timer in plan {
        transaction
            .execute(
                &statement,
                &[
                    &timer.timer_id.0,
                    &opportunity_id,
                    &timer.kind.as_str(),
                    &timer.rule,
                    &timer.due_at,
                    &cause.correlation_id,
                    &cause.causation_id,
                ],
            )
            .await?;
    }
    transaction
        .execute(
            "update workflow_deals set planned_version = $2 where opportunity_id = $1",
            &[&opportunity_id, &version],
        )
        .await?;
    Ok(true)
}

/// A timer claimed for firing.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub timer_id: Uuid,
    pub opportunity_id: Uuid,
    pub kind: String,
    pub rule: String,
    pub due_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

/// When the unfired timers can next be claimed, as seen at some instant `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDue {
    /// Some timer is due at `now` and still unfired. Right after a claim that took nothing, such
    /// timers are held by another instance's claim.
    pub overdue: bool,
    /// The earliest time after `now` at which a timer falls due (or may be retried).
    pub later: Option<DateTime<Utc>>,
}

/// When the unfired timers fall due, relative to `now`.
pub async fn next_due(pool: &Pool, now: DateTime<Utc>) -> Result<NextDue, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "select bool_or(at <= $1), min(at) filter (where at > $1)
             from (select coalesce(retry_at, due_at) as at from workflow_timers
                   where fired_at is null) as pending",
            &[&now],
        )
        .await?;
    Ok(NextDue {
        overdue: row.try_get::<_, Option<bool>>(0)?.unwrap_or(false),
        later: row.try_get(1)?,
    })
}

/// Deletes up to `limit` timers fired (or given up) before `before`; returns how many. Small
/// batches keep each delete short beside the claims. Safe for exactly-once: the deal's stream
/// records every `FollowUpDue`, so no plan brings a fired timer back.
pub async fn prune_fired(
    pool: &Pool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "delete from workflow_timers where timer_id in (
                 select timer_id from workflow_timers where fired_at < $1 limit $2
                 for update skip locked)",
            &[&before, &limit],
        )
        .await?)
}

pub async fn pending_count(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "select count(*) from workflow_timers where fired_at is null",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// What became of a claimed timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOutcome {
    /// `FollowUpDue` is recorded (now or by an earlier attempt).
    Fired,
    /// Done with, without firing: the deal can never accept it. Recorded in the timer's
    /// `failure` column, so it no longer blocks the timers due after it.
    GivenUp(String),
    /// A reminder that no longer held when it fell due (activity since, a follow-up planned
    /// ahead, a new close date). Its row is deleted rather than marked fired, so that a later
    /// plan can bring it back if the deal becomes stale again.
    NoLongerDue,
    /// Failed for a reason that can pass: stays pending, and is claimed again after a backoff
    /// that grows with its failed attempts.
    Retry(String),
}

/// The first retry waits this long; each further failure doubles it, up to [`RETRY_MAX_SECONDS`].
const RETRY_MIN_SECONDS: f64 = 1.0;
/// The longest wait between two attempts: how late a timer fires once its failure has passed.
const RETRY_MAX_SECONDS: f64 = 300.0;

/// Claims up to `limit` timers due at `now`, lets `fire` handle them while the claim is held, and
/// records what became of each in the same transaction. Another instance skips the claimed rows
/// instead of waiting; a crash before commit releases them to be fired again, which the
/// deterministic command id makes harmless. Returns how many were claimed.
pub async fn fire_due<F, Fut>(
    pool: &Pool,
    now: DateTime<Utc>,
    limit: i64,
    fire: F,
) -> Result<usize, StoreError>
where
    F: FnOnce(Vec<DueTimer>) -> Fut,
    Fut: std::future::Future<Output = Vec<(Uuid, TimerOutcome)>>,
{
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(&format!(
            "set local idle_in_transaction_session_timeout = '{HOLDER_IDLE_TIMEOUT}'"
        ))
        .await?;
    let rows = transaction
        .query(
            "select timer_id, opportunity_id, kind, rule, due_at, correlation_id, causation_id
             from workflow_timers
             where fired_at is null and coalesce(retry_at, due_at) <= $1
             order by coalesce(retry_at, due_at)
             limit $2
             for update skip locked",
            &[&now, &limit],
        )
        .await?;
    let claimed = rows
        .iter()
        .map(|row| {
            Ok(DueTimer {
                timer_id: row.try_get(0)?,
                opportunity_id: row.try_get(1)?,
                kind: row.try_get(2)?,
                rule: row.try_get(3)?,
                due_at: row.try_get(4)?,
                correlation_id: row.try_get(5)?,
                causation_id: row.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let count = claimed.len();
    if count == 0 {
        return Ok(0);
    }
    let mut done = Vec::new();
    let mut done_failures: Vec<Option<String>> = Vec::new();
    let mut retried = Vec::new();
    let mut retry_failures = Vec::new();
    let mut dropped = Vec::new();
    for (timer_id, outcome) in fire(claimed).await {
        match outcome {
            TimerOutcome::Fired => {
                done.push(timer_id);
                done_failures.push(None);
            }
            TimerOutcome::GivenUp(reason) => {
                done.push(timer_id);
                done_failures.push(Some(reason));
            }
            TimerOutcome::Retry(reason) => {
                retried.push(timer_id);
                retry_failures.push(reason);
            }
            TimerOutcome::NoLongerDue => dropped.push(timer_id),
        }
    }
    transaction
        .execute(
            "delete from workflow_timers where timer_id = any($1)",
            &[&dropped],
        )
        .await?;
    transaction
        .execute(
            "update workflow_timers as timer set fired_at = $3, failure = done.failure
             from unnest($1::uuid[], $2::text[]) as done (timer_id, failure)
             where timer.timer_id = done.timer_id",
            &[&done, &done_failures, &now],
        )
        .await?;
    // The exponent is capped before `power` so that the interval cannot overflow, however many
    // attempts a timer has behind it.
    transaction
        .execute(
            "update workflow_timers as timer
             set attempts = timer.attempts + 1,
                 failure = retry.failure,
                 retry_at = $3::timestamptz + make_interval(secs => least(
                     $4::float8 * power(2, least(timer.attempts, 30)), $5::float8))
             from unnest($1::uuid[], $2::text[]) as retry (timer_id, failure)
             where timer.timer_id = retry.timer_id",
            &[
                &retried,
                &retry_failures,
                &now,
                &RETRY_MIN_SECONDS,
                &RETRY_MAX_SECONDS,
            ],
        )
        .await?;
    transaction.commit().await?;
    Ok(count)
}

/// The owner a lead was given, taking the rule's next round-robin turn unless the lead already
/// has one. Turn and assignment commit together, so a redelivered `LeadCaptured` gets the same
/// owner and takes no second turn; concurrent instances take distinct turns (the counter row
/// serializes them), which keeps the team's shares within one of each other.
pub async fn round_robin_owner(
    pool: &Pool,
    lead_id: Uuid,
    rule: &str,
    team: &[String],
) -> Result<String, StoreError> {
    let mut client = pool.get().await?;
    if let Some(row) = client
        .query_opt(
            "select owner from workflow_lead_routes where lead_id = $1",
            &[&lead_id],
        )
        .await?
    {
        return Ok(row.try_get(0)?);
    }
    let transaction = client.transaction().await?;
    let turn: i64 = transaction
        .query_one(
            "insert into workflow_round_robin (rule, next_turn) values ($1, 1)
             on conflict (rule) do update set next_turn = workflow_round_robin.next_turn + 1
             returning next_turn - 1",
            &[&rule],
        )
        .await?
        .try_get(0)?;
    let team_size = i64::try_from(team.len().max(1)).unwrap_or(i64::MAX);
    let index = usize::try_from(turn.rem_euclid(team_size)).unwrap_or(0);
    let owner = team.get(index).cloned().unwrap_or_default();
    let inserted = transaction
        .query_opt(
            "insert into workflow_lead_routes (lead_id, rule, owner, turn)
             values ($1, $2, $3, $4)
             on conflict (lead_id) do nothing
             returning owner",
            &[&lead_id, &rule, &owner, &turn],
        )
        .await?;
    if inserted.is_some() {
        transaction.commit().await?;
        return Ok(owner);
    }
    // Another delivery of the same lead won the race: give the turn back by rolling back, and use
    // the owner it recorded.
    transaction.rollback().await?;
    let row = client
        .query_one(
            "select owner from workflow_lead_routes where lead_id = $1",
            &[&lead_id],
        )
        .await?;
    Ok(row.try_get(0)?)
}
