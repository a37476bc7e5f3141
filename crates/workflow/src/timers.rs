//! The timer loop: sleeps until the next timer is due (by the injected clock), fires every due
//! timer with `FireFollowUp`, and sleeps again.
//!
//! There is no periodic scan. The loop wakes when the clock reaches the earliest due time, when
//! this instance plans a timer (it may be sooner than the current sleep), or, as a safety net for
//! timers planned by another instance, after [`FALLBACK_WAKE`]. After downtime the first pass
//! finds everything overdue and fires it: late rather than never. A timer whose firing fails for
//! a reason that can pass waits for its own retry time (`db::fire_due`), so it neither blocks
//! the others nor keeps the loop busy.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use commands::{CommandError, OpportunityRequest};
use domain::opportunity::{OpportunityCommand, Reminder};
use domain::values::{FollowUpId, FollowUpKind, OpportunityId};
use futures::StreamExt;
use platform::CancellationToken;

use crate::db::{self, DueTimer, TimerOutcome};
use crate::step::{CLOSE_DATE_PASSED, STALE_DEAL};
use crate::{Shared, ids, metrics_names};
use platform::error_chain;

/// How many timers one transaction claims. Small enough that a claim is short and other
/// instances get the rest, large enough to keep the store's group commit busy.
const CLAIM_BATCH: i64 = 200;
/// How many `FireFollowUp` commands of one claim are in flight at once.
const FIRE_CONCURRENCY: usize = 16;
/// The longest sleep: bounds how late a timer planned by *another* instance (which cannot wake
/// this one) fires if that instance dies before firing it.
pub(crate) const FALLBACK_WAKE: Duration = Duration::from_secs(30);
/// Pause after a passing failure (database or store unavailable).
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How many fired timers one pass of the loop deletes once they are past their retention.
const PRUNE_BATCH: i64 = 500;
/// How long to wait before looking again at due timers that another instance's claim holds.
/// That instance normally fires them within this time; if it died, its claim is released and
/// this one takes them over this much later.
const HELD_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        // Registered before reading the next due time, so a timer planned in between is not
        // missed: `notify_one` leaves a permit that this wait consumes.
        let changed = shared.timers_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        let now = shared.clock.now();
        let claimed = match fire_batch(&shared, now).await {
            // A full batch means more may be due: claim again at once.
            Ok(claimed) if claimed as i64 >= CLAIM_BATCH => continue,
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "firing timers failed, retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        let next = match db::next_due(&shared.pool, now).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "reading the next timer failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        let expired = now - shared.config.timer_retention;
        match db::prune_fired(&shared.pool, expired, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(pruned) => {
                tracing::debug!(pruned, "fired timers past their retention deleted");
                // A full batch means more are past their retention: go on at once.
                if pruned >= PRUNE_BATCH as u64 {
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "deleting old fired timers failed");
            }
        }
        if let Ok(pending) = db::pending_count(&shared.pool).await {
            metrics::gauge!(metrics_names::TIMERS_PENDING).set(pending as f64);
        }
        // Due timers left after a claim that took some may have fallen due meanwhile: claim
        // again. After a claim that took none, they are held by another instance: sleeping
        // until their (past) due time would spin, so wait for the next one this instance can
        // take, or a short while in case the holder dies.
        if next.overdue && claimed > 0 {
            continue;
        }
        let held = next.overdue;
        let until_due = async {
            match next.later {
                Some(due_at) => shared.clock.sleep_until(due_at).await,
                None => std::future::pending().await,
            }
        };
        let held_backoff = async {
            if held {
                tokio::time::sleep(HELD_BACKOFF).await;
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = until_due => {}
            () = held_backoff => {}
            () = &mut changed => {}
            () = tokio::time::sleep(FALLBACK_WAKE) => {}
        }
    }
}

/// Claims and fires one batch; returns how many timers were claimed.
async fn fire_batch(
    shared: &Shared,
    now: chrono::DateTime<Utc>,
) -> Result<usize, eventstore::StoreError> {
    let claimed = db::fire_due(&shared.pool, now, CLAIM_BATCH, |timers| async move {
        futures::stream::iter(timers)
            .map(|timer| async move { (timer.timer_id, fire_one(shared, &timer, now).await) })
            .buffer_unordered(FIRE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
    })
    .await?;
    if claimed > 0 {
        tracing::debug!(claimed, "timers claimed");
    }
    Ok(claimed)
}

/// The reminder a timer stands for (`step::plan_timers` names reminders' rule after their kind),
/// or `None` for a scheduled follow-up; `Err` when that kind of reminder is turned off.
fn reminder_of(shared: &Shared, timer: &DueTimer) -> Result<Option<Reminder>, String> {
    if timer.rule != timer.kind {
        return Ok(None);
    }
    match timer.kind.as_str() {
        STALE_DEAL => match shared.config.reminders.stale_after {
            Some(stale_after) => Ok(Some(Reminder::StaleDeal { stale_after })),
            None => Err("stale-deal reminders are turned off".to_owned()),
        },
        CLOSE_DATE_PASSED if shared.config.reminders.close_date_passed => {
            Ok(Some(Reminder::CloseDatePassed))
        }
        CLOSE_DATE_PASSED => Err("close-date-passed reminders are turned off".to_owned()),
        _ => Ok(None),
    }
}

fn fired(timer: &DueTimer, now: chrono::DateTime<Utc>) -> TimerOutcome {
    let lateness = (now - timer.due_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::counter!(metrics_names::TIMERS_FIRED, "kind" => timer.kind.clone()).increment(1);
    metrics::histogram!(metrics_names::TIMER_LATENESS).record(lateness);
    TimerOutcome::Fired
}

/// Sends one timer's `FireFollowUp` (or `FireReminder`) and says what became of the timer. Only a deal that can never
/// accept it ends a timer without firing; every failure is retried later (late rather than
/// never). That includes a stream this build cannot read, which an upgraded build can, and
/// an unexpected database error such as a statement timeout or a plan invalidated by a migration.
async fn fire_one(shared: &Shared, timer: &DueTimer, now: chrono::DateTime<Utc>) -> TimerOutcome {
    let Ok(kind) = FollowUpKind::parse(&timer.kind) else {
        tracing::error!(timer_id = %timer.timer_id, kind = %timer.kind, "timer has an invalid kind; giving it up");
        return TimerOutcome::GivenUp(format!("invalid kind {:?}", timer.kind));
    };
    let deal_id = OpportunityId(timer.opportunity_id);
    let follow_up_id = FollowUpId(timer.timer_id);
    let reminder = match reminder_of(shared, timer) {
        Ok(reminder) => reminder,
        Err(reason) => return TimerOutcome::GivenUp(reason),
    };
    let (command_id, command) = match reminder {
        Some(reminder) => (
            ids::fire_reminder_command(timer.timer_id, now),
            OpportunityCommand::FireReminder {
                reminder_id: follow_up_id,
                reminder,
                due_at: timer.due_at,
                now,
            },
        ),
        None => (
            ids::fire_command(timer.timer_id),
            OpportunityCommand::FireFollowUp {
                follow_up_id,
                kind,
                due_at: timer.due_at,
            },
        ),
    };
    let context = commands::CommandContext {
        actor: format!("workflow:{}", timer.rule),
        command_id,
        correlation_id: timer.correlation_id.unwrap_or(command_id),
        causation_id: timer.causation_id.unwrap_or(command_id),
        repeatable: true,
        fingerprint: None,
        expected_version: None,
        occurred_at: None,
        token_id: None,
    };
    let request = OpportunityRequest::Other(command);
    match shared
        .handler
        .handle_opportunity(&context, deal_id, request)
        .await
    {
        Ok(_) if reminder.is_some() => match shared.handler.load_opportunity(deal_id).await {
            Ok(loaded)
                if loaded
                    .state
                    .as_ref()
                    .is_some_and(|deal| deal.follow_ups.contains_key(&follow_up_id)) =>
            {
                fired(timer, now)
            }
            Ok(_) => {
                tracing::info!(timer_id = %timer.timer_id, kind = %timer.kind, "reminder no longer holds; not fired");
                TimerOutcome::NoLongerDue
            }
            Err(error) => TimerOutcome::Retry(error_chain(&error)),
        },
        Ok(_) => fired(timer, now),
        Err(CommandError::Rejected(rejection)) => {
            tracing::info!(timer_id = %timer.timer_id, refused = rejection.rule, "timer no longer applies");
            TimerOutcome::GivenUp(format!("refused: {}", rejection.rule))
        }
        // A command id reused for a different command cannot be fixed by waiting: the id is
        // derived from the timer alone.
        Err(error @ CommandError::IdempotencyKeyReused) => {
            let reason = error_chain(&error);
            tracing::error!(timer_id = %timer.timer_id, %reason, "firing a timer cannot succeed; giving it up");
            TimerOutcome::GivenUp(reason)
        }
        Err(
            error @ (CommandError::Unavailable(_)
            | CommandError::Conflict { .. }
            | CommandError::Corrupt(_)
            | CommandError::Unexpected(_)),
        ) => {
            let reason = error_chain(&error);
            tracing::warn!(timer_id = %timer.timer_id, %reason, "firing a timer failed; it will be retried");
            TimerOutcome::Retry(reason)
        }
    }
}
