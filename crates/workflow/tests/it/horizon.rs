//! The workflow's horizon: imported history that happened longer ago than `[workflow] horizon`
//! triggers no rule, no timer and no routing, while recent imported history is followed up as if
//! it had been entered live, counting from when it happened.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use commands::{Clock, CommandContext, OpportunityRequest};
use domain::lead::LeadProfile;
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::values::{
    ActivityId, ActivityKind, Amount, Country, Currency, LeadId, OpportunityId, PipelineSlug,
};
use uuid::Uuid;
use workflow::WorkflowConfig;

use crate::support::{Harness, actor, eventually, of_type, text, wait_until_consumed};

const WAIT: Duration = Duration::from_secs(20);

fn imported(occurred_at: DateTime<Utc>) -> CommandContext {
    let mut context = CommandContext::new("import:test");
    context.occurred_at = Some(occurred_at);
    context
}

/// A deal created at `created_at`, with a call an hour later, both imported.
async fn import_deal(harness: &Harness, created_at: DateTime<Utc>) -> OpportunityId {
    let id = OpportunityId(Uuid::now_v7());
    let deal = NewOpportunity {
        name: text("Imported deal"),
        lead_id: None,
        pipeline: PipelineSlug::default_pipeline(),
        stage: None,
        amount: Amount::parse(100_000).expect("amount"),
        currency: Currency::parse("EUR").expect("currency"),
        expected_close_date: (created_at + TimeDelta::days(60)).date_naive(),
        owner: text("olga"),
    };
    harness
        .handler
        .create_opportunity(&imported(created_at), id, deal)
        .await
        .expect("the deal is imported");
    let called_at = created_at + TimeDelta::hours(1);
    let call = OpportunityCommand::LogActivity {
        activity_id: ActivityId(Uuid::now_v7()),
        kind: ActivityKind::Call,
        summary: text("intro call"),
        occurred_at: called_at,
    };
    harness
        .handler
        .handle_opportunity(&imported(called_at), id, OpportunityRequest::Other(call))
        .await
        .expect("the call is imported");
    id
}

async fn import_lead(harness: &Harness, captured_at: DateTime<Utc>) -> LeadId {
    let id = LeadId(Uuid::now_v7());
    let profile = LeadProfile {
        name: text("Imported lead"),
        company: None,
        email: None,
        country: Some(Country::parse("DE").expect("country")),
        source: None,
    };
    harness
        .handler
        .capture_lead(&imported(captured_at), id, profile)
        .await
        .expect("the lead is imported");
    id
}

fn by_workflow(history: &[eventstore::RecordedEvent]) -> Vec<&str> {
    history
        .iter()
        .filter(|event| actor(event).starts_with("workflow:"))
        .map(|event| event.event_type.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_history_beyond_the_horizon_triggers_nothing_and_recent_history_is_followed_up() {
    let harness = Harness::new().await;
    let config = WorkflowConfig::default();
    assert_eq!(config.horizon, TimeDelta::days(7));
    let instance = harness.start(config);
    let now = harness.clock.now();

    let old_deal = import_deal(&harness, now - TimeDelta::days(30)).await;
    let old_lead = import_lead(&harness, now - TimeDelta::days(30)).await;
    let recent_deal = import_deal(&harness, now - TimeDelta::days(2)).await;
    let recent_lead = import_lead(&harness, now - TimeDelta::days(1)).await;

    // Recent history is handled like live history: first-contact is scheduled, due a day after
    // the deal was created (not imported), and the call moves the deal on.
    let history = eventually(WAIT, "the recent deal's reactions", || async {
        let history = harness.history(&recent_deal.stream_id()).await;
        let reactions = by_workflow(&history);
        (reactions.contains(&"FollowUpScheduled") && reactions.contains(&"StageChanged"))
            .then_some(history)
    })
    .await;
    let created = of_type(&history, "OpportunityCreated")[0];
    let scheduled = of_type(&history, "FollowUpScheduled")[0];
    assert_eq!(actor(scheduled), "workflow:first-contact");
    let due_at: DateTime<Utc> = scheduled.data["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(due_at, created.occurred_at + TimeDelta::days(1));
    let moved = of_type(&history, "StageChanged")[0];
    assert_eq!(actor(moved), "workflow:contacted-on-first-touch");
    eventually(WAIT, "the recent lead's routing", || async {
        let history = harness.history(&recent_lead.stream_id()).await;
        (!of_type(&history, "LeadRouted").is_empty()).then_some(())
    })
    .await;

    // Everything was delivered and acknowledged: the old history's turn has come and gone.
    wait_until_consumed(&harness).await;
    let old_history = harness.history(&old_deal.stream_id()).await;
    assert_eq!(by_workflow(&old_history), Vec::<&str>::new());
    assert_eq!(old_history.len(), 2);
    let old_lead_history = harness.history(&old_lead.stream_id()).await;
    assert_eq!(of_type(&old_lead_history, "LeadRouted").len(), 0);
    let timers = harness
        .scalar(&format!(
            "select count(*) from workflow_timers where opportunity_id = '{}'",
            old_deal.0
        ))
        .await;
    assert_eq!(timers, 0, "no reminder planned for an old imported deal");

    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_are_handled_however_old_they_are_when_the_workflow_gets_to_them() {
    let harness = Harness::new().await;
    let deal = harness.create_deal(20).await;
    // The workflow was down for a month: live history is still followed up.
    harness.clock.advance(TimeDelta::days(30));
    let instance = harness.start(WorkflowConfig::default());

    let history = eventually(WAIT, "the first-contact follow-up", || async {
        let history = harness.history(&deal.stream_id()).await;
        (!of_type(&history, "FollowUpScheduled").is_empty()).then_some(history)
    })
    .await;
    assert_eq!(
        actor(of_type(&history, "FollowUpScheduled")[0]),
        "workflow:first-contact"
    );

    instance.stop().await;
    harness.finish().await;
}
