//! Each default rule, end to end: a command through the handler, the relay,
//! JetStream, the workflow, and the workflow's events in the deal's history.

use std::time::Duration;

use chrono::TimeDelta;
use commands::OpportunityRequest;
use domain::opportunity::OpportunityCommand;
use domain::values::{ActivityKind, OpportunityId, Outcome, StageName};
use workflow::WorkflowConfig;

use crate::support::{Harness, actor, eventually, of_type, text};

const WAIT: Duration = Duration::from_secs(20);

/// Waits until the deal's history holds `count` events of `event_type` and returns the history.
async fn wait_for(
    harness: &Harness,
    deal: OpportunityId,
    event_type: &str,
    count: usize,
) -> Vec<eventstore::RecordedEvent> {
    eventually(WAIT, &format!("{count} {event_type} on {deal}"), || async {
        let history = harness.history(&deal.stream_id()).await;
        (of_type(&history, event_type).len() >= count).then_some(history)
    })
    .await
}

fn due_at(event: &eventstore::RecordedEvent) -> chrono::DateTime<chrono::Utc> {
    data_str(event, "due_at").parse().expect("due_at")
}

fn data_str<'a>(event: &'a eventstore::RecordedEvent, field: &str) -> &'a str {
    event.data[field].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rules_drive_a_deal_and_its_reminders() {
    let harness = Harness::new().await;
    let instance = harness.start(WorkflowConfig::default());
    let deal = harness.create_deal(20).await;

    // 1. OpportunityCreated -> first-contact, due after one day.
    let history = wait_for(&harness, deal, "FollowUpScheduled", 1).await;
    let scheduled = of_type(&history, "FollowUpScheduled")[0];
    assert_eq!(actor(scheduled), "workflow:first-contact");
    assert_eq!(data_str(scheduled, "kind"), "first-contact");
    assert_eq!(data_str(scheduled, "rule"), "first-contact");
    let first_contact_id = data_str(scheduled, "follow_up_id").to_owned();
    let created = of_type(&history, "OpportunityCreated")[0];
    assert_eq!(due_at(scheduled), created.recorded_at + TimeDelta::days(1));

    // 2. A call while in `new` -> contacted, and first-contact completed.
    harness.log_activity(deal, ActivityKind::Call).await;
    let history = wait_for(&harness, deal, "FollowUpCompleted", 1).await;
    let moved = of_type(&history, "StageChanged");
    assert_eq!(moved.len(), 1);
    assert_eq!(data_str(moved[0], "to"), "contacted");
    assert_eq!(actor(moved[0]), "workflow:contacted-on-first-touch");
    let completed = of_type(&history, "FollowUpCompleted")[0];
    assert_eq!(actor(completed), "workflow:contacted-on-first-touch");
    assert_eq!(data_str(completed, "follow_up_id"), first_contact_id);

    // 3. quote_sent while in `contacted` -> quoted; 4. StageChanged to quoted -> quote-follow-up.
    harness.log_activity(deal, ActivityKind::QuoteSent).await;
    let history = wait_for(&harness, deal, "FollowUpScheduled", 2).await;
    let moved = of_type(&history, "StageChanged");
    assert_eq!(data_str(moved[1], "to"), "quoted");
    assert_eq!(actor(moved[1]), "workflow:quote-sent");
    let quote_follow_up = of_type(&history, "FollowUpScheduled")[1];
    assert_eq!(actor(quote_follow_up), "workflow:quote-follow-up");
    assert_eq!(data_str(quote_follow_up, "kind"), "quote-follow-up");
    assert_eq!(
        due_at(quote_follow_up),
        moved[1].recorded_at + TimeDelta::days(3)
    );

    // The follow-up fires at its due time, once, with a notification. (Due times count from the
    // store's clock, which has run on a little since the manual clock was set.)
    harness
        .clock
        .set(due_at(quote_follow_up) + TimeDelta::seconds(1));
    let history = wait_for(&harness, deal, "FollowUpDue", 1).await;
    let due = of_type(&history, "FollowUpDue")[0];
    assert_eq!(actor(due), "workflow:quote-follow-up");
    assert_eq!(data_str(due, "kind"), "quote-follow-up");
    eventually(WAIT, "the follow_up_due notification", || async {
        (harness.notifications_stored().await == 1).then_some(())
    })
    .await;

    // 5. No activity for 14 days and nothing planned ahead -> stale-deal.
    harness.clock.advance(TimeDelta::days(11));
    let history = wait_for(&harness, deal, "FollowUpDue", 2).await;
    let stale = of_type(&history, "FollowUpDue")[1];
    assert_eq!(data_str(stale, "kind"), "stale-deal");
    assert_eq!(actor(stale), "workflow:stale-deal");

    // 6. Expected close date (20 days after creation) passed while open -> close-date-passed.
    harness.clock.advance(TimeDelta::days(7));
    let history = wait_for(&harness, deal, "FollowUpDue", 3).await;
    let passed = of_type(&history, "FollowUpDue")[2];
    assert_eq!(data_str(passed, "kind"), "close-date-passed");
    assert_eq!(actor(passed), "workflow:close-date-passed");
    eventually(WAIT, "three notifications", || async {
        (harness.notifications_stored().await == 3).then_some(())
    })
    .await;

    // 7. OpportunityClosed -> every pending follow-up cancelled: the due quote-follow-up and the
    // two due reminders, so none is left on anyone's list of due follow-ups.
    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            OpportunityRequest::Other(OpportunityCommand::Close {
                outcome: Outcome::Lost,
                reason: Some(text("budget cut")),
                closed_at: harness.clock_now(),
            }),
        )
        .await
        .expect("the deal closes");
    let history = wait_for(&harness, deal, "FollowUpCancelled", 3).await;
    let cancelled = of_type(&history, "FollowUpCancelled");
    assert_eq!(cancelled.len(), 3);
    assert!(
        cancelled
            .iter()
            .all(|event| actor(event) == "workflow:close-cancels-follow-ups")
    );
    assert!(
        cancelled
            .iter()
            .any(|event| data_str(event, "follow_up_id")
                == data_str(quote_follow_up, "follow_up_id"))
    );

    // Redelivery has no second effect: replay every event to a fresh consumer.
    instance.stop().await;
    let settled = harness.history(&deal.stream_id()).await.len();
    let stream = harness
        .jetstream
        .get_stream(&harness.options.events_stream)
        .await
        .expect("events stream");
    stream
        .delete_consumer(&harness.options.durable_name())
        .await
        .expect("the durable consumer is deleted");
    let instance = harness.start(WorkflowConfig::default());
    eventually(WAIT, "the replay to be consumed", || async {
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                &harness.options.durable_name(),
            )
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.history(&deal.stream_id()).await.len(), settled);
    assert_eq!(harness.notifications_stored().await, 3);
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_handled_late_is_due_after_its_event_not_after_the_reaction() {
    let harness = Harness::new().await;
    // The deal is created while no workflow runs, and the workflow gets to it half a day later.
    let deal = harness.create_deal(20).await;
    harness.clock.advance(TimeDelta::hours(12));
    let instance = harness.start(WorkflowConfig::default());
    let history = wait_for(&harness, deal, "FollowUpScheduled", 1).await;
    let created = of_type(&history, "OpportunityCreated")[0];
    let scheduled = of_type(&history, "FollowUpScheduled")[0];
    assert_eq!(due_at(scheduled), created.recorded_at + TimeDelta::days(1));
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_deal_cancels_its_follow_ups_and_none_fires_afterwards() {
    let harness = Harness::new().await;
    let instance = harness.start(WorkflowConfig::default());
    let deal = harness.create_deal(10).await;
    wait_for(&harness, deal, "FollowUpScheduled", 1).await;
    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            OpportunityRequest::ChangeStage {
                stage: StageName::parse("quoted").expect("stage"),
                reason: None,
            },
        )
        .await
        .expect("the stage changes");
    wait_for(&harness, deal, "FollowUpScheduled", 2).await;

    harness
        .handler
        .handle_opportunity(
            &harness.api(),
            deal,
            OpportunityRequest::Other(OpportunityCommand::Close {
                outcome: Outcome::Won,
                reason: None,
                closed_at: harness.clock_now(),
            }),
        )
        .await
        .expect("the deal closes");
    let history = wait_for(&harness, deal, "FollowUpCancelled", 2).await;
    for cancelled in of_type(&history, "FollowUpCancelled") {
        assert_eq!(actor(cancelled), "workflow:close-cancels-follow-ups");
    }
    eventually(WAIT, "the deal's timers to be removed", || async {
        let pending = harness
            .scalar(&format!(
                "select count(*) from workflow_timers where opportunity_id = '{}' and fired_at is null",
                deal.0
            ))
            .await;
        (pending == 0).then_some(())
    })
    .await;

    // Past every due time and reminder: nothing fires.
    harness.clock.advance(TimeDelta::days(30));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = harness.history(&deal.stream_id()).await;
    assert!(of_type(&history, "FollowUpDue").is_empty());
    assert_eq!(harness.notifications_stored().await, 0);
    instance.stop().await;
    harness.finish().await;
}

impl Harness {
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use commands::Clock;
        self.clock.now()
    }
}
