//! A realistic opportunity history, generated in memory and appended in bulk, for the scenarios
//! that need a large store quickly (`rebuild`, `relay`).
//!
//! Each deal's events come from the real decider (`OpportunityDecider::decide` and `evolve`) and
//! are encoded with `domain::codec`, exactly as the command handler would write them, so the
//! projector folds them as it folds production events. Only the shell is skipped: a whole deal's
//! life goes into one stream append, and hundreds of deals into one request, because loading a
//! million events through single commands would take longer than the whole bench may.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Days, TimeDelta, Utc};
use domain::codec::{self, CURRENT_SCHEMA_VERSION};
use domain::decider::Decider;
use domain::opportunity::{
    NewOpportunity, OpportunityCommand, OpportunityDecider, OpportunityEvent, OpportunityState,
};
use domain::pipeline::PipelineDefinition;
use domain::values::{
    ActivityId, ActivityKind, Amount, Currency, FollowUpId, FollowUpKind, OpportunityId, Outcome,
    PipelineSlug, StageName, Text, parse_owner,
};
use eventstore::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::Progress;

/// Events in one generated deal's life (fewer only if the decider refused a step).
pub const EVENTS_PER_DEAL: u64 = 10;
/// Deals per append request: about 4,000 events, the appender's batch bound, so one request is
/// one transaction and one multi-row insert.
const DEALS_PER_REQUEST: u64 = 400;
/// Requests generated and appended at once: one being encoded while another is written.
const REQUESTS_IN_FLIGHT: usize = 3;

const OWNERS: [&str; 5] = ["anna", "bruno", "chloe", "dmitri", "eve"];

/// One deal's whole life as a stream append: created, worked through the stages with activities,
/// a follow-up scheduled and completed, amount and close date changed, and closed won or lost
/// for half of them.
pub fn deal_history(index: u64, now: DateTime<Utc>) -> anyhow::Result<StreamAppend> {
    let definition = PipelineDefinition::built_in_default();
    let id = OpportunityId(Uuid::now_v7());
    let follow_up = FollowUpId(Uuid::now_v7());
    let text = |value: &str| Text::parse("text", value, Text::LONG);
    let stage = |name: &str| StageName::parse(name);
    let activity = |kind, summary: &str| -> anyhow::Result<OpportunityCommand> {
        Ok(OpportunityCommand::LogActivity {
            activity_id: ActivityId(Uuid::now_v7()),
            kind,
            summary: text(summary)?,
            occurred_at: now,
        })
    };
    let change_stage = |name: &str| -> anyhow::Result<OpportunityCommand> {
        Ok(OpportunityCommand::ChangeStage {
            stage: stage(name)?,
            reason: None,
            definition: definition.clone(),
        })
    };
    let amount = 50_000 + (index * 7_919 % 5_000_000) as i128;
    let currency = Currency::parse(["EUR", "USD", "GBP"][(index % 3) as usize])?;
    let close_date = now.date_naive() + Days::new(30 + index % 90);
    let last = match index % 4 {
        0 => OpportunityCommand::Close {
            outcome: Outcome::Won,
            reason: Some(text("signed after the second proposal")?),
            closed_at: now,
        },
        1 => OpportunityCommand::Close {
            outcome: Outcome::Lost,
            reason: Some(text("went with a cheaper competitor")?),
            closed_at: now,
        },
        _ => change_stage("negotiation")?,
    };
    let commands = [
        OpportunityCommand::Create {
            opportunity: NewOpportunity {
                name: Text::parse("name", &format!("Generated deal {index}"), Text::SHORT)?,
                lead_id: None,
                pipeline: PipelineSlug::default_pipeline(),
                stage: None,
                amount: Amount::parse(amount)?,
                currency: currency.clone(),
                expected_close_date: close_date,
                owner: parse_owner(OWNERS[(index % OWNERS.len() as u64) as usize])?,
            },
            definition: definition.clone(),
        },
        activity(
            ActivityKind::Call,
            "first call, interested in the annual plan",
        )?,
        change_stage("contacted")?,
        OpportunityCommand::ScheduleFollowUp {
            follow_up_id: follow_up,
            kind: FollowUpKind::parse("quote-follow-up")?,
            due_at: now + TimeDelta::days(1 + (index % 7) as i64),
            rule: text("bench")?,
        },
        OpportunityCommand::ChangeAmount {
            amount: Amount::parse(amount + 25_000)?,
            currency,
        },
        activity(ActivityKind::Email, "sent the proposal with volume pricing")?,
        change_stage("quoted")?,
        OpportunityCommand::CompleteFollowUp {
            follow_up_id: follow_up,
        },
        OpportunityCommand::ChangeCloseDate {
            expected_close_date: close_date + Days::new(14),
        },
        last,
    ];
    let mut state: OpportunityState = None;
    let mut events: Vec<OpportunityEvent> = Vec::with_capacity(commands.len());
    for command in &commands {
        // A refused step is left out, as the handler would answer it with an error.
        if let Ok(decided) = OpportunityDecider::decide(command, &state) {
            for event in decided {
                state = OpportunityDecider::evolve(state, &event);
                events.push(event);
            }
        }
    }
    Ok(StreamAppend {
        stream_id: id.stream_id(),
        expected: ExpectedVersion::NoStream,
        events: events
            .iter()
            .map(|event| {
                let (event_type, data) = codec::encode(event);
                let command_id = Uuid::now_v7();
                NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type,
                    schema_version: CURRENT_SCHEMA_VERSION,
                    data,
                    metadata: json!({
                        "actor": "bench:history",
                        "command_id": command_id,
                        "correlation_id": command_id,
                        "causation_id": command_id,
                    }),
                }
            })
            .collect(),
    })
}

/// Appends deals until at least `events` opportunity events were written; returns how many.
/// `progress` counts from `already` towards `already + events`. The deals occur evenly over the
/// `span` before now, each request's deals on one day, in `occurred_at` and in their dates (all
/// now when `span` is zero).
pub async fn append(
    store: &EventStore,
    events: u64,
    progress: &Progress,
    already: u64,
    span: TimeDelta,
) -> anyhow::Result<u64> {
    let deals = events.div_ceil(EVENTS_PER_DEAL);
    let appended = Arc::new(AtomicU64::new(0));
    let now = Utc::now();
    let occurred = |first: u64| {
        let elapsed = span.num_seconds() as f64 * (first as f64 / deals as f64);
        (!span.is_zero()).then(|| now - span + TimeDelta::seconds(elapsed as i64))
    };
    let mut requests = JoinSet::new();
    let mut first = 0;
    while first < deals || !requests.is_empty() {
        while first < deals && requests.len() < REQUESTS_IN_FLIGHT {
            let last = (first + DEALS_PER_REQUEST).min(deals);
            let (store, appended) = (store.clone(), appended.clone());
            // Indices continue across calls so that a second call adds different deals.
            let offset = already / EVENTS_PER_DEAL;
            let occurred_at = occurred(first);
            requests.spawn(async move {
                let streams = (first..last)
                    .map(|index| deal_history(offset + index, occurred_at.unwrap_or(now)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let count: usize = streams.iter().map(|stream| stream.events.len()).sum();
                store
                    .append(AppendRequest {
                        command_id: Uuid::now_v7(),
                        fingerprint: None,
                        occurred_at,
                        streams,
                    })
                    .await?;
                appended.fetch_add(count as u64, Ordering::Relaxed);
                anyhow::Ok(())
            });
            first = last;
        }
        if let Some(finished) = requests.join_next().await {
            finished??;
            progress.set(already + appended.load(Ordering::Relaxed));
        }
    }
    Ok(appended.load(Ordering::Relaxed))
}
