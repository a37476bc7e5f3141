use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::opportunity::{
    FollowUpStatus, NewOpportunity, OpportunityCommand as C, OpportunityDecider,
    OpportunityEvent as E, OpportunityStatus, Reminder,
};
use domain::pipeline::PipelineDefinition;
use domain::values::{
    ActivityId, ActivityKind, Amount, ForecastCategory, LeadId, Outcome, PipelineSlug, Probability,
    Text, weighted_amount,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Step, assert_idempotent, run};
use crate::support::{
    currency, default_pipeline, follow_up, kind, revised_pipeline, stage, text, uuid,
};

const OPEN_CATEGORIES: [ForecastCategory; 3] = [
    ForecastCategory::Pipeline,
    ForecastCategory::BestCase,
    ForecastCategory::Commit,
];

fn texts() -> impl Strategy<Value = Text> {
    prop::sample::select(vec!["price", " timing ", "Zoë's budget", "競合"]).prop_map(text)
}

fn stages() -> impl Strategy<Value = domain::values::StageName> {
    prop::sample::select(vec![
        "new",
        "contacted",
        "quoted",
        "negotiation",
        "demo",
        "won",
    ])
    .prop_map(stage)
}

fn moments() -> impl Strategy<Value = DateTime<Utc>> {
    // 2026 to 2028, with sub-second precision so that the round trip keeps nanoseconds.
    (0i64..3 * 366 * 86_400, 0u32..1_000_000_000).prop_map(|(seconds, nanos)| {
        DateTime::from_timestamp(1_767_225_600 + seconds, nanos).expect("in range")
    })
}

fn dates() -> impl Strategy<Value = NaiveDate> {
    // 0001-01-01 to 9999-12-31.
    (1i32..=3_652_059).prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).unwrap())
}

fn amounts() -> impl Strategy<Value = Amount> {
    prop_oneof![0i64..10_000_000, 0i64..=i64::MAX]
        .prop_map(|minor| Amount::parse(minor.into()).unwrap())
}

fn probabilities() -> impl Strategy<Value = Probability> {
    (0i128..=100).prop_map(|percent| Probability::parse(percent).unwrap())
}

fn owners() -> impl Strategy<Value = Text> {
    prop::sample::select(vec!["alice", "bob"]).prop_map(text)
}

/// The commands of a deal. Override categories are the open ones only, as the command boundary
/// parses them (`ForecastCategory::parse_open`).
fn command(definitions: Vec<PipelineDefinition>) -> impl Strategy<Value = C> {
    let definition = prop::sample::select(definitions);
    let currencies = prop::sample::select(vec!["EUR", "USD", "JPY"]).prop_map(currency);
    let follow_ups = (0u128..4).prop_map(follow_up);
    let kinds =
        prop::sample::select(vec!["call-back", "stale-deal", "close-date-passed"]).prop_map(kind);
    let create = (
        prop::option::of(stages()),
        amounts(),
        currencies.clone(),
        dates(),
        owners(),
        definition.clone(),
    )
        .prop_map(
            |(stage, amount, currency, date, owner, definition)| C::Create {
                opportunity: NewOpportunity {
                    name: text("Deal"),
                    lead_id: Some(LeadId(uuid(1))),
                    pipeline: PipelineSlug::default_pipeline(),
                    stage,
                    amount,
                    currency,
                    expected_close_date: date,
                    owner,
                },
                definition,
            },
        );
    prop_oneof![
        1 => create,
        6 => (stages(), prop::option::of(texts()), definition.clone()).prop_map(
            |(stage, reason, definition)| C::ChangeStage { stage, reason, definition }
        ),
        3 => (
            prop::option::of(probabilities()),
            prop::option::of(prop::sample::select(OPEN_CATEGORIES.to_vec())),
        )
            .prop_map(|(probability, forecast_category)| C::OverrideProbability {
                probability,
                forecast_category,
            }),
        2 => (amounts(), currencies).prop_map(|(amount, currency)| C::ChangeAmount { amount, currency }),
        2 => dates().prop_map(|expected_close_date| C::ChangeCloseDate { expected_close_date }),
        2 => owners().prop_map(|owner| C::ChangeOwner { owner }),
        1 => (0u128..4, prop::sample::select(ActivityKind::ALL.to_vec()), texts(), moments())
            .prop_map(|(id, kind, summary, occurred_at)| C::LogActivity {
                activity_id: ActivityId(uuid(id)),
                kind,
                summary,
                occurred_at,
            }),
        3 => (follow_ups.clone(), kinds.clone(), moments(), texts()).prop_map(
            |(follow_up_id, kind, due_at, rule)| C::ScheduleFollowUp { follow_up_id, kind, due_at, rule }
        ),
        2 => follow_ups.clone().prop_map(|follow_up_id| C::CompleteFollowUp { follow_up_id }),
        2 => (follow_ups.clone(), texts())
            .prop_map(|(follow_up_id, reason)| C::CancelFollowUp { follow_up_id, reason }),
        3 => ((0u128..6).prop_map(follow_up), kinds, moments())
            .prop_map(|(follow_up_id, kind, due_at)| C::FireFollowUp { follow_up_id, kind, due_at }),
        2 => ((0u128..6).prop_map(follow_up), 0i64..30, any::<bool>(), moments(), moments())
            .prop_map(|(reminder_id, days, stale, due_at, now)| C::FireReminder {
                reminder_id,
                reminder: if stale {
                    Reminder::StaleDeal { stale_after: TimeDelta::days(days) }
                } else {
                    Reminder::CloseDatePassed
                },
                due_at,
                now,
            }),
        2 => (
            prop::sample::select(vec![Outcome::Won, Outcome::Lost]),
            prop::option::of(texts()),
            moments(),
        )
            .prop_map(|(outcome, reason, closed_at)| C::Close { outcome, reason, closed_at }),
        2 => (prop::option::of(stages()), definition)
            .prop_map(|(stage, definition)| C::Reopen { stage, definition }),
    ]
}

fn commands(definitions: Vec<PipelineDefinition>) -> impl Strategy<Value = Vec<C>> {
    // Most runs start by creating the deal; the rest check that nothing happens to a missing one.
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(command(definitions.clone()), 0..40),
        prop::sample::select(definitions),
    )
        .prop_map(|(create_first, rest, definition)| {
            let create = C::Create {
                opportunity: NewOpportunity {
                    name: text("Deal"),
                    lead_id: None,
                    pipeline: PipelineSlug::default_pipeline(),
                    stage: None,
                    amount: Amount::parse(1_000).unwrap(),
                    currency: currency("EUR"),
                    expected_close_date: NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(),
                    owner: text("alice"),
                },
                definition,
            };
            create_first
                .then_some(create)
                .into_iter()
                .chain(rest)
                .collect()
        })
}

/// What a closed deal still accepts: activities, ending its follow-ups, and a reopen.
fn allowed_while_closed(event: &E) -> bool {
    matches!(
        event,
        E::ActivityLogged { .. }
            | E::FollowUpCompleted { .. }
            | E::FollowUpCancelled { .. }
            | E::OpportunityReopened { .. }
    )
}

fn check(
    definitions: &[PipelineDefinition],
    step: &Step<'_, OpportunityDecider>,
) -> Result<(), TestCaseError> {
    let Some(deal) = step.after else {
        prop_assert!(step.history.is_empty(), "no deal without events");
        return Ok(());
    };
    prop_assert!(matches!(step.history[0], E::OpportunityCreated(_)));
    prop_assert_eq!(
        step.history
            .iter()
            .filter(|event| matches!(event, E::OpportunityCreated(_)))
            .count(),
        1,
        "created once"
    );
    prop_assert!(step.emitted().len() <= 1, "one event per command");

    match deal.status {
        OpportunityStatus::Won => {
            prop_assert_eq!(deal.probability(), Probability::CERTAIN);
            prop_assert_eq!(deal.forecast_category(), ForecastCategory::Closed);
            prop_assert!(deal.closed_at.is_some());
        }
        OpportunityStatus::Lost => {
            prop_assert_eq!(deal.probability(), Probability::NONE);
            prop_assert_eq!(deal.forecast_category(), ForecastCategory::Omitted);
            prop_assert!(deal.closed_at.is_some());
            prop_assert!(deal.close_reason.is_some(), "a lost deal has a reason");
        }
        OpportunityStatus::Open => {
            prop_assert_eq!(deal.closed_at, None);
            prop_assert_eq!(&deal.close_reason, &None);
            prop_assert!(OPEN_CATEGORIES.contains(&deal.forecast_category()));
            // The deal's stage, with the figures it entered it with, is a stage of a definition.
            let in_a_definition = definitions.iter().any(|definition| {
                definition.stage(&deal.stage).is_some_and(|stage| {
                    stage.probability == deal.stage_probability
                        && stage.forecast_category == deal.stage_forecast_category
                })
            });
            prop_assert!(
                in_a_definition,
                "stage {} ({}%) is in no definition",
                deal.stage,
                deal.stage_probability.percent()
            );
        }
    }
    prop_assert_eq!(
        deal.weighted_amount(),
        weighted_amount(deal.amount, deal.probability())
    );
    prop_assert!(deal.weighted_amount() <= deal.amount.minor_units());

    let Some(before) = step.before else {
        return Ok(());
    };

    // Follow-ups are never forgotten, and a completed or cancelled one stays so.
    for (id, earlier) in &before.follow_ups {
        let Some(now) = deal.follow_ups.get(id) else {
            return Err(TestCaseError::fail(format!("follow-up {id} disappeared")));
        };
        if !earlier.status.is_pending() {
            prop_assert_eq!(now.status, earlier.status, "follow-up {} ended", id);
        }
    }

    if !before.is_open() {
        for event in step.emitted() {
            prop_assert!(allowed_while_closed(event), "closed deal took {:?}", event);
        }
    }

    for event in step.emitted() {
        match event {
            E::StageChanged { from, to, .. } => {
                prop_assert_eq!(from, &before.stage);
                prop_assert_ne!(from, to, "moving to the current stage appends nothing");
                prop_assert_eq!(deal.probability_override, None);
                prop_assert_eq!(deal.forecast_category_override, None);
            }
            E::OpportunityReopened { .. } => {
                prop_assert!(!before.is_open());
                prop_assert_eq!(deal.probability_override, None);
                prop_assert_eq!(deal.forecast_category_override, None);
            }
            E::OpportunityClosed {
                outcome: Outcome::Lost,
                reason,
                ..
            } => prop_assert!(reason.is_some()),
            E::CloseDateChanged {
                expected_close_date,
                previous,
            } => {
                prop_assert_eq!(previous, &before.expected_close_date);
                prop_assert_ne!(previous, expected_close_date);
            }
            E::OwnerChanged { owner, previous } => {
                prop_assert_eq!(previous, &before.owner);
                prop_assert_ne!(previous, owner);
            }
            E::FollowUpScheduled { follow_up_id, .. } => {
                prop_assert!(!before.follow_ups.contains_key(follow_up_id));
            }
            E::FollowUpDue { follow_up_id, .. } => {
                // Fires only for an open deal, and only once per follow-up.
                prop_assert!(before.is_open());
                // A reminder fires only while its condition holds.
                if let C::FireReminder { reminder, now, .. } = step.command {
                    prop_assert!(reminder.holds(before, *now));
                }
                prop_assert!(
                    before
                        .follow_ups
                        .get(follow_up_id)
                        .is_none_or(|follow_up| follow_up.status == FollowUpStatus::Open)
                );
                prop_assert_eq!(deal.follow_ups[follow_up_id].status, FollowUpStatus::Due);
            }
            _ => {}
        }
    }

    match step.command {
        C::ChangeStage { .. }
        | C::OverrideProbability { .. }
        | C::ChangeAmount { .. }
        | C::ChangeCloseDate { .. }
        | C::ChangeOwner { .. }
        | C::CompleteFollowUp { .. }
        | C::CancelFollowUp { .. }
        | C::FireFollowUp { .. }
        | C::FireReminder { .. } => assert_idempotent(step)?,
        _ => {}
    }
    Ok(())
}

proptest! {
    /// With the built-in pipeline only, an open deal is always in one of its stages.
    #[test]
    fn deal_invariants_hold_in_the_default_pipeline(commands in commands(vec![default_pipeline()])) {
        run::<OpportunityDecider>(&commands, |step| check(&[default_pipeline()], step))?;
    }

    /// Commands carry the pipeline's current definition, which a revision changes between two
    /// commands: a deal keeps the figures of the definition it entered its stage with.
    #[test]
    fn deal_invariants_hold_across_pipeline_revisions(
        commands in commands(vec![default_pipeline(), revised_pipeline()])
    ) {
        let definitions = [default_pipeline(), revised_pipeline()];
        run::<OpportunityDecider>(&commands, |step| check(&definitions, step))?;
    }
}
