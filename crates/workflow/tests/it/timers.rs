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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_that_can_never_fire_do_not_starve_later_ones() {
    const BROKEN: i64 = 250;
    let harness = Harness::new().await;
    // A deal whose stream cannot be read back: firing its timers fails however often it is tried.
    let broken = Uuid::now_v7();
    harness
        .store
        .append(AppendRequest {
            command_id: Uuid::now_v7(),
            fingerprint: None,
            streams: vec![StreamAppend {
                stream_id: format!("opportunity-{broken}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "NoSuchEvent".to_owned(),
                    schema_version: 1,
                    data: serde_json::json!({}),
                    metadata: serde_json::json!({}),
                }],
            }],
        })
        .await
        .expect("the unreadable event is appended");
    // More of its timers than one claim takes, all due before anything else.
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
            &[&broken, &harness.clock.now(), &BROKEN],
        )
        .await
        .expect("the broken timers are stored");

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
    // The deal's follow-up shows in its history as soon as the command appends it; the claim
    // that also gave up on the last broken timers commits just after.
    eventually(
        Duration::from_secs(30),
        "every broken timer to be given up on, with the reason",
        || async {
            let given_up = harness
                .scalar(&format!(
                    "select count(*) from workflow_timers where opportunity_id = '{broken}'
                     and fired_at is not null and failure like 'stored events are unreadable%'"
                ))
                .await;
            (given_up == BROKEN).then_some(())
        },
    )
    .await;
    assert_eq!(
        harness
            .scalar("select count(*) from workflow_timers where failure is not null")
            .await,
        BROKEN
    );
    instance.stop().await;
    harness.finish().await;
}
