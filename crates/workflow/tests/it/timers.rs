//! Durable timers: exactly once with two instances, late rather than never after downtime, and
//! never held back by timers that cannot fire.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use commands::Clock;
use eventstore::{AppendRequest, ExpectedVersion, NewEvent, StreamAppend};
use futures::StreamExt;
use uuid::Uuid;
use workflow::WorkflowConfig;

use crate::support::{Harness, eventually};

fn follow_ups_only() -> WorkflowConfig {
    let mut config = WorkflowConfig::default();
    // Reminders would add their own timers; these tests count first-contact follow-ups only.
    config.reminders = workflow::config::Reminders::default();
    config
}

async fn create_deals(harness: &Harness, count: usize) {
    futures::stream::iter(0..count)
        .map(|_| harness.create_deal(60))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

async fn wait_for_pending_timers(harness: &Harness, count: i64) {
    eventually(
        Duration::from_secs(120),
        &format!("{count} pending timers"),
        || async {
            let pending = harness
                .scalar("select count(*) from workflow_timers where fired_at is null")
                .await;
            (pending == count).then_some(())
        },
    )
    .await;
}

/// The due time of the last pending timer.
async fn latest_due(harness: &Harness) -> DateTime<Utc> {
    let client = harness.db.pool.get().await.expect("a connection");
    client
        .query_one(
            "select max(due_at) from workflow_timers where fired_at is null",
            &[],
        )
        .await
        .expect("the latest due time")
        .get(0)
}

/// Every deal's history holds exactly one FollowUpDue.
async fn assert_each_fired_once(harness: &Harness, deals: i64) {
    let per_deal = harness
        .scalar(
            "select count(*) from (select stream_id from events where event_type = 'FollowUpDue'
             group by stream_id having count(*) = 1) as once",
        )
        .await;
    assert_eq!(per_deal, deals);
    assert_eq!(harness.count_events("FollowUpDue").await, deals);
    assert_eq!(
        harness
            .scalar("select count(*) from workflow_timers where fired_at is not null")
            .await,
        deals
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_fire_500_simultaneous_follow_ups_exactly_once() {
    const DEALS: i64 = 500;
    let harness = Harness::new().await;
    let first = harness.start(follow_ups_only());
    let second = harness.start(follow_ups_only());
    create_deals(&harness, DEALS as usize).await;
    wait_for_pending_timers(&harness, DEALS).await;

    // Each follow-up is due a day after its deal was recorded; one move of the clock past the
    // last of them makes all of them due at once.
    let started = Instant::now();
    harness
        .clock
        .set(latest_due(&harness).await + TimeDelta::seconds(1));
    eventually(Duration::from_secs(120), "500 FollowUpDue", || async {
        (harness.count_events("FollowUpDue").await >= DEALS).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "fired {DEALS} timers with two instances in {elapsed:?} ({:.0} timers/s)",
        DEALS as f64 / elapsed.as_secs_f64()
    );
    eventually(Duration::from_secs(60), "500 notifications", || async {
        (harness.notifications_stored().await >= DEALS as u64).then_some(())
    })
    .await;
    // Give a duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_fired_once(&harness, DEALS).await;
    assert_eq!(harness.notifications_stored().await, DEALS as u64);

    first.stop().await;
    second.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_while_stopped_fire_once_after_restart() {
    const DEALS: i64 = 50;
    let harness = Harness::new().await;
    let instance = harness.start(follow_ups_only());
    create_deals(&harness, DEALS as usize).await;
    wait_for_pending_timers(&harness, DEALS).await;
    instance.stop().await;

    // They fall due while no instance runs.
    harness.clock.advance(TimeDelta::days(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.count_events("FollowUpDue").await, 0);

    let started = Instant::now();
    let instance = harness.start(follow_ups_only());
    eventually(Duration::from_secs(60), "late timers to fire", || async {
        (harness.count_events("FollowUpDue").await >= DEALS).then_some(())
    })
    .await;
    eprintln!(
        "restart fired {DEALS} overdue timers in {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_fired_once(&harness, DEALS).await;

    // A second restart fires nothing more.
    instance.stop().await;
    let instance = harness.start(follow_ups_only());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(harness.count_events("FollowUpDue").await, DEALS);
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_promptly_at_its_due_time() {
    let harness = Harness::new().await;
    let instance = harness.start(follow_ups_only());
    let deal = harness.create_deal(60).await;
    wait_for_pending_timers(&harness, 1).await;
    let due_at = latest_due(&harness).await;
    // Not yet: one second short of the due time.
    harness.clock.set(due_at - TimeDelta::seconds(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.count_events("FollowUpDue").await, 0);

    let started = Instant::now();
    harness.clock.set(due_at);
    eventually(Duration::from_secs(10), "the timer to fire", || async {
        (harness.count_events("FollowUpDue").await == 1).then_some(())
    })
    .await;
    let delay = started.elapsed();
    eprintln!("due-to-fired delay for one timer: {delay:?}");
    assert!(delay < Duration::from_secs(2), "fired after {delay:?}");
    let history = harness.history(&deal.stream_id()).await;
    assert_eq!(crate::support::of_type(&history, "FollowUpDue").len(), 1);
    instance.stop().await;
    harness.finish().await;
}

/// Stores `count` timers of the deal `opportunity_id`, due one second apart before `due`.
async fn insert_timers(harness: &Harness, opportunity_id: Uuid, due: DateTime<Utc>, count: i64) {
    harness
        .db
        .pool
        .get()
        .await
        .expect("a connection")
        .execute(
            "insert into workflow_timers (timer_id, opportunity_id, kind, rule, due_at)
             select gen_random_uuid(), $1, 'first-contact', 'first-contact',
                    $2::timestamptz - make_interval(secs => n)
             from generate_series(1, $3::bigint) as n",
            &[&opportunity_id, &due, &count],
        )
        .await
        .expect("the timers are stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_that_keep_failing_are_retried_with_backoff_and_do_not_starve_later_ones() {
    const BROKEN: i64 = 250;
    let harness = Harness::new().await;
    // A deal whose stream holds an event this build cannot read (as after a rolling upgrade):
    // firing its timers fails until the build is upgraded, so they must wait, not be dropped.
    let broken = Uuid::now_v7();
    harness
        .store
        .append(AppendRequest {
            command_id: Uuid::now_v7(),
            fingerprint: None,
            occurred_at: None,
            streams: vec![StreamAppend {
                stream_id: format!("opportunity-{broken}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "OpportunityCreated".to_owned(),
                    schema_version: 2,
                    data: serde_json::json!({}),
                    metadata: serde_json::json!({}),
                }],
            }],
        })
        .await
        .expect("the unreadable event is appended");
    // More of its timers than one claim takes, all due before anything else.
    insert_timers(&harness, broken, harness.clock.now(), BROKEN).await;

    let instance = harness.start(follow_ups_only());
    let deal = harness.create_deal(60).await;
    eventually(Duration::from_secs(30), "the deal's timer", || async {
        let planned = harness
            .scalar(&format!(
                "select count(*) from workflow_timers where opportunity_id = '{}'",
                deal.0
            ))
            .await;
        (planned == 1).then_some(())
    })
    .await;
    harness
        .clock
        .set(latest_due(&harness).await + TimeDelta::seconds(1));
    eventually(
        Duration::from_secs(30),
        "the deal's follow-up to fire",
        || async {
            let history = harness.history(&deal.stream_id()).await;
            (!crate::support::of_type(&history, "FollowUpDue").is_empty()).then_some(())
        },
    )
    .await;
    let now = harness.clock.now();
    let waiting_query = format!(
        "select count(*) from workflow_timers where opportunity_id = '{broken}'
         and fired_at is null and attempts >= 1 and retry_at > '{now}'
         and failure like 'stored events are unreadable%'"
    );
    eventually(
        Duration::from_secs(30),
        "every broken timer to wait for a retry, with the reason",
        || async { (harness.scalar(&waiting_query).await == BROKEN).then_some(()) },
    )
    .await;
    let attempts_query = format!(
        "select sum(attempts)::bigint from workflow_timers where opportunity_id = '{broken}'"
    );
    let attempts = harness.scalar(&attempts_query).await;
    // The clock has not moved since: no broken timer is claimed again before its retry time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(harness.scalar(&attempts_query).await, attempts);
    // Once the longest backoff has passed they are all tried again, and still wait.
    harness.clock.advance(TimeDelta::minutes(10));
    eventually(
        Duration::from_secs(30),
        "another attempt of each",
        || async { (harness.scalar(&attempts_query).await == attempts + BROKEN).then_some(()) },
    )
    .await;
    assert_eq!(
        harness
            .scalar(&format!(
                "select count(*) from workflow_timers where opportunity_id = '{broken}' and fired_at is null"
            ))
            .await,
        BROKEN
    );
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_failing_unexpectedly_fires_once_the_failure_passes() {
    let harness = Harness::new().await;
    let instance = harness.start(follow_ups_only());
    let deal = harness.create_deal(60).await;
    wait_for_pending_timers(&harness, 1).await;
    // The command table disappears under the store, as a migration gone wrong or a plan cached
    // against a dropped table would make it: every command fails with an unexpected error.
    let client = harness.db.pool.get().await.expect("a connection");
    client
        .batch_execute("alter table commands rename to commands_away")
        .await
        .expect("the commands table is renamed");
    harness
        .clock
        .set(latest_due(&harness).await + TimeDelta::seconds(1));
    eventually(Duration::from_secs(30), "a failed attempt", || async {
        let failed = harness
            .scalar(
                "select count(*) from workflow_timers
                 where fired_at is null and attempts >= 1 and failure is not null",
            )
            .await;
        (failed == 1).then_some(())
    })
    .await;
    client
        .batch_execute("alter table commands_away rename to commands")
        .await
        .expect("the commands table is back");
    harness.clock.advance(TimeDelta::minutes(10));
    eventually(Duration::from_secs(30), "the timer to fire", || async {
        (harness.count_events("FollowUpDue").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_each_fired_once(&harness, 1).await;
    let history = harness.history(&deal.stream_id()).await;
    assert_eq!(crate::support::of_type(&history, "FollowUpDue").len(), 1);
    instance.stop().await;
    harness.finish().await;
}

/// Index and table scans of `workflow_timers` counted by PostgreSQL's statistics so far.
async fn timer_table_scans(harness: &Harness) -> i64 {
    harness
        .scalar(
            "select (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint
             from pg_stat_user_tables
             where relname = 'workflow_timers' and schemaname = current_schema()",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_held_by_another_instance_do_not_make_this_one_spin() {
    let harness = Harness::new().await;
    insert_timers(&harness, Uuid::now_v7(), harness.clock.now(), 10).await;
    // Another instance is firing the due timers: it holds their rows for the whole claim.
    let mut holder = harness.db.pool.get().await.expect("a connection");
    let claim = holder.transaction().await.expect("a transaction");
    let held = claim
        .query("select timer_id from workflow_timers for update", &[])
        .await
        .expect("the rows are locked");
    assert_eq!(held.len(), 10);

    let instance = harness.start(follow_ups_only());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = timer_table_scans(&harness).await;
    // PostgreSQL publishes a busy backend's counts at least every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scans = timer_table_scans(&harness).await - before;
    eprintln!("timer table scans while another instance held the due timers: {scans}");
    assert!(
        scans < 50,
        "{scans} scans in 3s: the timer loop spins on timers it cannot claim"
    );

    // Once the other instance lets go without firing them (it crashed), they are taken over.
    claim.rollback().await.expect("the claim is released");
    eventually(
        Duration::from_secs(10),
        "the released timers to be handled",
        || async {
            let pending = harness
                .scalar(
                    "select count(*) from workflow_timers where fired_at is null and attempts = 0",
                )
                .await;
            (pending == 0).then_some(())
        },
    )
    .await;
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_planned_on_an_older_state_do_not_fire_once_they_no_longer_hold() {
    let harness = Harness::new().await;
    let mut config = WorkflowConfig::default();
    // Only the reminders: no follow-up planned ahead keeps the deal from being stale.
    config.rules.clear();
    let instance = harness.start(config.clone());
    let deal = harness.create_deal(10).await;
    wait_for_pending_timers(&harness, 2).await;
    instance.stop().await;

    // The workflow's consumer does not see what happens next (NATS down): the deal is called
    // on day 9 and its close date moves out by a month, but the planned reminders stay as they
    // were (stale on day 14, close date passed after day 10).
    harness.clock.advance(TimeDelta::days(9));
    harness
        .log_activity(deal, domain::values::ActivityKind::Call)
        .await;
    let later = (harness.clock.now() + TimeDelta::days(31)).date_naive();
    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            commands::OpportunityRequest::Other(
                domain::opportunity::OpportunityCommand::ChangeCloseDate {
                    expected_close_date: later,
                },
            ),
        )
        .await
        .expect("the close date moves");
    let elsewhere = harness.start_with(config, crate::support::unique_options());
    harness.clock.advance(TimeDelta::days(6));
    eventually(
        Duration::from_secs(20),
        "both reminders to be handled",
        || async {
            let pending = harness
                .scalar("select count(*) from workflow_timers where fired_at is null")
                .await;
            (pending == 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = harness.history(&deal.stream_id()).await;
    assert!(
        crate::support::of_type(&history, "FollowUpDue").is_empty(),
        "a reminder fired on a deal that was no longer stale or past its close date"
    );
    elsewhere.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_timers_are_deleted_once_past_their_retention() {
    let harness = Harness::new().await;
    let mut config = follow_ups_only();
    config.timer_retention = TimeDelta::days(30);
    let now = harness.clock.now();
    // 700 timers fired 31 days ago (more than one pass deletes), 5 fired yesterday, 3 pending.
    let client = harness.db.pool.get().await.expect("a connection");
    for (count, fired_at) in [
        (700_i64, Some(now - TimeDelta::days(31))),
        (5, Some(now - TimeDelta::days(1))),
        (3, None),
    ] {
        client
            .execute(
                "insert into workflow_timers (timer_id, opportunity_id, kind, rule, due_at, fired_at)
                 select gen_random_uuid(), gen_random_uuid(), 'first-contact', 'first-contact',
                        $1::timestamptz + interval '60 days', $2
                 from generate_series(1, $3::bigint)",
                &[&now, &fired_at, &count],
            )
            .await
            .expect("the timers are stored");
    }
    let instance = harness.start(config);
    eventually(
        Duration::from_secs(20),
        "the old timers to be deleted",
        || async {
            let left = harness.scalar("select count(*) from workflow_timers").await;
            (left == 8).then_some(())
        },
    )
    .await;
    assert_eq!(
        harness
            .scalar("select count(*) from workflow_timers where fired_at is null")
            .await,
        3
    );
    instance.stop().await;
    harness.finish().await;
}

/// A reminder that fell due while its deal was closed is a no-op then; once the deal is reopened
/// with its close date still past, the same reminder (same id, same due time) must fire, not be
/// answered with the earlier no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_date_reminder_that_fell_due_while_closed_fires_after_a_reopen() {
    let harness = Harness::new().await;
    let mut config = WorkflowConfig::default();
    config.rules.clear();
    config.reminders.stale_after = None;
    let instance = harness.start(config.clone());
    let deal = harness.create_deal(10).await;
    wait_for_pending_timers(&harness, 1).await;
    instance.stop().await;

    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            commands::OpportunityRequest::Other(domain::opportunity::OpportunityCommand::Close {
                outcome: domain::values::Outcome::Won,
                reason: None,
                closed_at: harness.clock.now(),
            }),
        )
        .await
        .expect("the deal closes");
    harness.clock.advance(TimeDelta::days(11));
    // An instance that has not seen the close yet (its consumer reads another stream) fires the
    // reminder on the closed deal: a no-op, and the timer is dropped.
    let timers_only = harness.start_with(config.clone(), crate::support::unique_options());
    eventually(
        Duration::from_secs(20),
        "the reminder to be tried on the closed deal",
        || async {
            let timers = harness.scalar("select count(*) from workflow_timers").await;
            (timers == 0).then_some(())
        },
    )
    .await;
    timers_only.stop().await;

    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            commands::OpportunityRequest::Reopen { stage: None },
        )
        .await
        .expect("the deal reopens, its close date still past");
    harness.clock.advance(TimeDelta::minutes(1));
    let instance = harness.start(config);
    eventually(
        Duration::from_secs(20),
        "the close-date reminder to fire after the reopen",
        || async {
            let history = harness.history(&deal.stream_id()).await;
            (!crate::support::of_type(&history, "FollowUpDue").is_empty()).then_some(())
        },
    )
    .await;
    instance.stop().await;
    harness.finish().await;
}
