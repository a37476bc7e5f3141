use chrono::{DateTime, TimeDelta, Utc};
use domain::opportunity::{
    FollowUpStatus, NewOpportunity, OpportunityCommand as C, OpportunityCreated,
    OpportunityDecider as Deal, OpportunityError, OpportunityEvent as E, OpportunityStatus,
    Reminder,
};
use domain::pipeline::PipelineDefinition;
use domain::values::{
    ActivityId, ActivityKind, ForecastCategory, LeadId, Outcome, PipelineSlug, Probability,
};

use crate::support::{
    Spec, at, cents, currency, date, default_pipeline, follow_up, kind, percent, revised_pipeline,
    stage, text, uuid,
};

fn new_deal(stage_name: Option<&str>) -> NewOpportunity {
    NewOpportunity {
        name: text("Fleet renewal"),
        lead_id: Some(LeadId(uuid(7))),
        pipeline: PipelineSlug::default_pipeline(),
        stage: stage_name.map(stage),
        amount: cents(1_000_000),
        currency: currency("EUR"),
        expected_close_date: date(2026, 12, 31),
        owner: text("alice"),
    }
}

fn created() -> E {
    E::OpportunityCreated(OpportunityCreated {
        name: text("Fleet renewal"),
        lead_id: Some(LeadId(uuid(7))),
        pipeline: PipelineSlug::default_pipeline(),
        stage: stage("new"),
        probability: percent(10),
        forecast_category: ForecastCategory::Pipeline,
        amount: cents(1_000_000),
        currency: currency("EUR"),
        expected_close_date: date(2026, 12, 31),
        owner: text("alice"),
    })
}

fn change_stage(to: &str) -> C {
    C::ChangeStage {
        stage: stage(to),
        reason: None,
        definition: default_pipeline(),
    }
}

fn stage_changed(from: &str, to: &str, probability: i128, category: ForecastCategory) -> E {
    E::StageChanged {
        from: stage(from),
        to: stage(to),
        probability: percent(probability),
        forecast_category: category,
        reason: None,
    }
}

fn overridden(probability: Option<i128>, category: Option<ForecastCategory>) -> E {
    E::ProbabilityOverridden {
        probability: probability.map(percent),
        forecast_category: category,
    }
}

fn override_to(probability: Option<i128>, category: Option<ForecastCategory>) -> C {
    C::OverrideProbability {
        probability: probability.map(percent),
        forecast_category: category,
    }
}

fn won() -> E {
    E::OpportunityClosed {
        outcome: Outcome::Won,
        reason: None,
        closed_at: at(2026, 11, 1, 9),
    }
}

fn lost() -> E {
    E::OpportunityClosed {
        outcome: Outcome::Lost,
        reason: Some(text("went with a competitor")),
        closed_at: at(2026, 11, 1, 9),
    }
}

fn schedule(id: u128) -> C {
    C::ScheduleFollowUp {
        follow_up_id: follow_up(id),
        kind: kind("call-back"),
        due_at: at(2026, 10, 1, 9),
        rule: text("manual"),
    }
}

fn scheduled(id: u128) -> E {
    E::FollowUpScheduled {
        follow_up_id: follow_up(id),
        kind: kind("call-back"),
        due_at: at(2026, 10, 1, 9),
        rule: text("manual"),
    }
}

fn fire(id: u128, reminder: &str) -> C {
    C::FireFollowUp {
        follow_up_id: follow_up(id),
        kind: kind(reminder),
        due_at: at(2026, 10, 1, 9),
    }
}

fn due(id: u128, reminder: &str) -> E {
    E::FollowUpDue {
        follow_up_id: follow_up(id),
        kind: kind(reminder),
        due_at: at(2026, 10, 1, 9),
    }
}

fn complete(id: u128) -> C {
    C::CompleteFollowUp {
        follow_up_id: follow_up(id),
    }
}

fn completed(id: u128) -> E {
    E::FollowUpCompleted {
        follow_up_id: follow_up(id),
    }
}

fn cancel(id: u128) -> C {
    C::CancelFollowUp {
        follow_up_id: follow_up(id),
        reason: text("no longer needed"),
    }
}

fn cancelled(id: u128) -> E {
    E::FollowUpCancelled {
        follow_up_id: follow_up(id),
        reason: text("no longer needed"),
    }
}

fn reopen(to: Option<&str>) -> C {
    C::Reopen {
        stage: to.map(stage),
        definition: default_pipeline(),
    }
}

fn reopened(to: &str, probability: i128, category: ForecastCategory) -> E {
    E::OpportunityReopened {
        stage: stage(to),
        probability: percent(probability),
        forecast_category: category,
    }
}

/// One command of each kind that a closed deal must refuse.
fn changes() -> Vec<C> {
    vec![
        change_stage("quoted"),
        change_stage("new"),
        override_to(Some(60), None),
        override_to(None, Some(ForecastCategory::Commit)),
        C::ChangeAmount {
            amount: cents(5),
            currency: currency("EUR"),
        },
        C::ChangeCloseDate {
            expected_close_date: date(2027, 1, 31),
        },
        C::ChangeOwner { owner: text("bob") },
        schedule(1),
    ]
}

// Creation

#[test]
fn create_starts_in_the_first_stage_by_default() {
    let deal = Deal::given([])
        .when(C::Create {
            opportunity: new_deal(None),
            definition: default_pipeline(),
        })
        .then([created()])
        .unwrap();
    assert_eq!(deal.status, OpportunityStatus::Open);
    assert_eq!(deal.probability(), percent(10));
    assert_eq!(deal.forecast_category(), ForecastCategory::Pipeline);
    assert_eq!(deal.weighted_amount(), 100_000);
}

#[test]
fn create_in_a_named_stage_takes_its_figures() {
    let E::OpportunityCreated(mut expected) = created() else {
        unreachable!()
    };
    expected.stage = stage("quoted");
    expected.probability = percent(50);
    expected.forecast_category = ForecastCategory::BestCase;
    Deal::given([])
        .when(C::Create {
            opportunity: new_deal(Some("quoted")),
            definition: default_pipeline(),
        })
        .then([E::OpportunityCreated(expected)]);
}

#[test]
fn create_in_an_unknown_stage_is_refused() {
    Deal::given([])
        .when(C::Create {
            opportunity: new_deal(Some("demo")),
            definition: default_pipeline(),
        })
        .then_error(OpportunityError::StageNotInPipeline {
            stage: stage("demo"),
            pipeline: PipelineSlug::default_pipeline(),
        });
}

#[test]
fn create_twice_is_refused() {
    Deal::given([created()])
        .when(C::Create {
            opportunity: new_deal(None),
            definition: default_pipeline(),
        })
        .then_error(OpportunityError::OpportunityAlreadyExists);
}

#[test]
fn commands_on_a_missing_deal_are_refused() {
    let mut commands = changes();
    commands.extend([
        C::LogActivity {
            activity_id: ActivityId(uuid(1)),
            kind: ActivityKind::Call,
            summary: text("hello"),
            occurred_at: at(2026, 1, 1, 1),
        },
        complete(1),
        cancel(1),
        fire(1, "stale-deal"),
        C::Close {
            outcome: Outcome::Won,
            reason: None,
            closed_at: at(2026, 1, 1, 1),
        },
        reopen(None),
    ]);
    for command in commands {
        Deal::given([])
            .when(command)
            .then_error(OpportunityError::OpportunityNotFound);
    }
}

// Stages

#[test]
fn stage_change_carries_the_stage_figures_and_reason() {
    let deal = Deal::given([created()])
        .when(C::ChangeStage {
            stage: stage("negotiation"),
            reason: Some(text("budget approved")),
            definition: default_pipeline(),
        })
        .then([E::StageChanged {
            from: stage("new"),
            to: stage("negotiation"),
            probability: percent(75),
            forecast_category: ForecastCategory::Commit,
            reason: Some(text("budget approved")),
        }])
        .unwrap();
    assert_eq!(deal.stage, stage("negotiation"));
    assert_eq!(deal.probability(), percent(75));
    assert_eq!(deal.forecast_category(), ForecastCategory::Commit);
    assert_eq!(deal.weighted_amount(), 750_000);
}

#[test]
fn stages_may_move_backwards() {
    Deal::given([
        created(),
        stage_changed("new", "quoted", 50, ForecastCategory::BestCase),
    ])
    .when(change_stage("contacted"))
    .then([stage_changed(
        "quoted",
        "contacted",
        20,
        ForecastCategory::Pipeline,
    )]);
}

#[test]
fn moving_to_the_current_stage_is_a_no_op() {
    Deal::given([created()])
        .when(change_stage("new"))
        .then_nothing();
    Deal::given([
        created(),
        stage_changed("new", "quoted", 50, ForecastCategory::BestCase),
    ])
    .when(C::ChangeStage {
        stage: stage("quoted"),
        reason: Some(text("again")),
        definition: default_pipeline(),
    })
    .then_nothing();
}

#[test]
fn the_stage_must_exist_in_the_pipeline() {
    for missing in ["demo", "won", "New", "quoted-2"] {
        let Ok(missing) = domain::values::StageName::parse(missing) else {
            continue;
        };
        Deal::given([created()])
            .when(C::ChangeStage {
                stage: missing.clone(),
                reason: None,
                definition: default_pipeline(),
            })
            .then_error(OpportunityError::StageNotInPipeline {
                stage: missing,
                pipeline: PipelineSlug::default_pipeline(),
            });
    }
}

#[test]
fn a_revision_takes_effect_for_the_next_stage_change() {
    let deal = Deal::given([created()])
        .when(C::ChangeStage {
            stage: stage("demo"),
            reason: None,
            definition: revised_pipeline(),
        })
        .then([stage_changed("new", "demo", 30, ForecastCategory::BestCase)])
        .unwrap();
    assert_eq!(deal.probability(), percent(30));
    // `quoted` was removed by the revision.
    Deal::given([created()])
        .when(C::ChangeStage {
            stage: stage("quoted"),
            reason: None,
            definition: revised_pipeline(),
        })
        .then_error(OpportunityError::StageNotInPipeline {
            stage: stage("quoted"),
            pipeline: PipelineSlug::default_pipeline(),
        });
}

#[test]
fn a_deal_keeps_the_figures_it_entered_its_stage_with() {
    // `new` is 10% in the default pipeline and 5% after the revision: the deal keeps 10% until it
    // moves, because revisions never rewrite history.
    let deal = Deal::given([created()])
        .when(C::ChangeStage {
            stage: stage("new"),
            reason: None,
            definition: revised_pipeline(),
        })
        .then_nothing()
        .unwrap();
    assert_eq!(deal.probability(), percent(10));
}

// Overrides

#[test]
fn override_sets_the_deal_own_figures() {
    let deal = Deal::given([created()])
        .when(override_to(Some(35), Some(ForecastCategory::Commit)))
        .then([overridden(Some(35), Some(ForecastCategory::Commit))])
        .unwrap();
    assert_eq!(deal.probability(), percent(35));
    assert_eq!(deal.forecast_category(), ForecastCategory::Commit);
    assert_eq!(deal.weighted_amount(), 350_000);
}

#[test]
fn an_absent_override_field_keeps_its_value() {
    let deal = Deal::given([created(), overridden(Some(35), None)])
        .when(override_to(None, Some(ForecastCategory::BestCase)))
        .then([overridden(None, Some(ForecastCategory::BestCase))])
        .unwrap();
    assert_eq!(deal.probability(), percent(35));
    assert_eq!(deal.forecast_category(), ForecastCategory::BestCase);
}

#[test]
fn an_empty_override_is_refused() {
    Deal::given([created()])
        .when(override_to(None, None))
        .then_error(OpportunityError::EmptyOverride);
}

#[test]
fn an_open_deal_cannot_take_a_closed_category() {
    for category in [ForecastCategory::Closed, ForecastCategory::Omitted] {
        Deal::given([created()])
            .when(override_to(None, Some(category)))
            .then_error(OpportunityError::ClosedCategoryOnOpenDeal(category));
    }
}

#[test]
fn staying_in_a_stage_a_revision_removed_is_a_no_op() {
    let without_new = PipelineDefinition::new(
        text("Trimmed"),
        default_pipeline().stages.into_iter().skip(1).collect(),
    )
    .unwrap();
    Deal::given([created()])
        .when(C::ChangeStage {
            stage: stage("new"),
            reason: None,
            definition: without_new,
        })
        .then_nothing();
}

#[test]
fn overriding_with_the_current_figures_is_a_no_op() {
    Deal::given([created()])
        .when(override_to(Some(10), Some(ForecastCategory::Pipeline)))
        .then_nothing();
    Deal::given([created(), overridden(Some(35), None)])
        .when(override_to(Some(35), None))
        .then_nothing();
    Deal::given([created(), overridden(Some(35), None)])
        .when(override_to(None, Some(ForecastCategory::Pipeline)))
        .then_nothing();
}

#[test]
fn an_override_stands_until_the_next_stage_change() {
    let history = [
        created(),
        overridden(Some(90), Some(ForecastCategory::Commit)),
        E::AmountChanged {
            amount: cents(2_000_000),
            currency: currency("EUR"),
        },
        E::OwnerChanged {
            owner: text("bob"),
            previous: text("alice"),
        },
    ];
    let deal = Deal::given(history.clone())
        .when(change_stage("new"))
        .then_nothing()
        .unwrap();
    assert_eq!(deal.probability(), percent(90));
    assert_eq!(deal.forecast_category(), ForecastCategory::Commit);
    assert_eq!(deal.weighted_amount(), 1_800_000);

    let deal = Deal::given(history)
        .when(change_stage("contacted"))
        .then([stage_changed(
            "new",
            "contacted",
            20,
            ForecastCategory::Pipeline,
        )])
        .unwrap();
    assert_eq!(deal.probability_override, None);
    assert_eq!(deal.forecast_category_override, None);
    assert_eq!(deal.probability(), percent(20));
    assert_eq!(deal.forecast_category(), ForecastCategory::Pipeline);
}

// Amount, close date, owner

#[test]
fn amount_changes_and_no_ops() {
    Deal::given([created()])
        .when(C::ChangeAmount {
            amount: cents(0),
            currency: currency("EUR"),
        })
        .then([E::AmountChanged {
            amount: cents(0),
            currency: currency("EUR"),
        }]);
    Deal::given([created()])
        .when(C::ChangeAmount {
            amount: cents(1_000_000),
            currency: currency("USD"),
        })
        .then([E::AmountChanged {
            amount: cents(1_000_000),
            currency: currency("USD"),
        }]);
    Deal::given([created()])
        .when(C::ChangeAmount {
            amount: cents(1_000_000),
            currency: currency("EUR"),
        })
        .then_nothing();
}

#[test]
fn close_date_change_records_the_previous_date() {
    Deal::given([created()])
        .when(C::ChangeCloseDate {
            expected_close_date: date(2027, 3, 31),
        })
        .then([E::CloseDateChanged {
            expected_close_date: date(2027, 3, 31),
            previous: date(2026, 12, 31),
        }]);
    Deal::given([created()])
        .when(C::ChangeCloseDate {
            expected_close_date: date(2026, 12, 31),
        })
        .then_nothing();
}

#[test]
fn owner_change_records_the_previous_owner() {
    Deal::given([created()])
        .when(C::ChangeOwner { owner: text("bob") })
        .then([E::OwnerChanged {
            owner: text("bob"),
            previous: text("alice"),
        }]);
    Deal::given([created()])
        .when(C::ChangeOwner {
            owner: text("alice"),
        })
        .then_nothing();
}

// Closing and reopening

#[test]
fn winning_fixes_probability_at_100_and_category_closed() {
    let deal = Deal::given([created(), overridden(Some(35), None)])
        .when(C::Close {
            outcome: Outcome::Won,
            reason: None,
            closed_at: at(2026, 11, 1, 9),
        })
        .then([won()])
        .unwrap();
    assert_eq!(deal.status, OpportunityStatus::Won);
    assert_eq!(deal.probability(), Probability::CERTAIN);
    assert_eq!(deal.forecast_category(), ForecastCategory::Closed);
    assert_eq!(deal.weighted_amount(), 1_000_000);
    assert_eq!(deal.closed_at, Some(at(2026, 11, 1, 9)));
}

#[test]
fn a_won_deal_may_give_a_reason() {
    Deal::given([created()])
        .when(C::Close {
            outcome: Outcome::Won,
            reason: Some(text("best price")),
            closed_at: at(2026, 11, 1, 9),
        })
        .then([E::OpportunityClosed {
            outcome: Outcome::Won,
            reason: Some(text("best price")),
            closed_at: at(2026, 11, 1, 9),
        }]);
}

#[test]
fn losing_requires_a_reason() {
    Deal::given([created()])
        .when(C::Close {
            outcome: Outcome::Lost,
            reason: None,
            closed_at: at(2026, 11, 1, 9),
        })
        .then_error(OpportunityError::LostReasonRequired);
    let deal = Deal::given([created()])
        .when(C::Close {
            outcome: Outcome::Lost,
            reason: Some(text("went with a competitor")),
            closed_at: at(2026, 11, 1, 9),
        })
        .then([lost()])
        .unwrap();
    assert_eq!(deal.status, OpportunityStatus::Lost);
    assert_eq!(deal.probability(), Probability::NONE);
    assert_eq!(deal.forecast_category(), ForecastCategory::Omitted);
    assert_eq!(deal.weighted_amount(), 0);
    assert_eq!(deal.close_reason, Some(text("went with a competitor")));
}

#[test]
fn closing_a_closed_deal_is_refused() {
    for history in [[created(), won()], [created(), lost()]] {
        Deal::given(history)
            .when(C::Close {
                outcome: Outcome::Won,
                reason: None,
                closed_at: at(2026, 11, 2, 9),
            })
            .then_error(OpportunityError::OpportunityAlreadyClosed);
    }
}

#[test]
fn a_closed_deal_refuses_changes_and_overrides() {
    for history in [[created(), won()], [created(), lost()]] {
        for command in changes() {
            Deal::given(history.clone())
                .when(command)
                .then_error(OpportunityError::OpportunityClosed);
        }
    }
}

#[test]
fn a_closed_deal_still_logs_activities() {
    let deal = Deal::given([created(), won()])
        .when(C::LogActivity {
            activity_id: ActivityId(uuid(9)),
            kind: ActivityKind::QuoteSent,
            summary: text("sent the final invoice"),
            occurred_at: at(2026, 11, 3, 9),
        })
        .then([E::ActivityLogged {
            activity_id: ActivityId(uuid(9)),
            kind: ActivityKind::QuoteSent,
            summary: text("sent the final invoice"),
            occurred_at: at(2026, 11, 3, 9),
        }])
        .unwrap();
    assert_eq!(deal.last_activity_at, Some(at(2026, 11, 3, 9)));
}

#[test]
fn last_activity_is_the_latest_occurrence_not_the_latest_logged() {
    let logged = |n: u128, hour: u32| E::ActivityLogged {
        activity_id: ActivityId(uuid(n)),
        kind: ActivityKind::Note,
        summary: text("note"),
        occurred_at: at(2026, 5, 1, hour),
    };
    let deal = Deal::given([created(), logged(1, 12)])
        .when(C::LogActivity {
            activity_id: ActivityId(uuid(2)),
            kind: ActivityKind::Note,
            summary: text("note"),
            occurred_at: at(2026, 5, 1, 8),
        })
        .then([logged(2, 8)])
        .unwrap();
    assert_eq!(deal.last_activity_at, Some(at(2026, 5, 1, 12)));
}

#[test]
fn reopen_uses_the_first_stage_by_default_and_clears_overrides() {
    for closed in [won(), lost()] {
        let deal = Deal::given([
            created(),
            stage_changed("new", "negotiation", 75, ForecastCategory::Commit),
            overridden(Some(95), Some(ForecastCategory::BestCase)),
            closed,
        ])
        .when(reopen(None))
        .then([reopened("new", 10, ForecastCategory::Pipeline)])
        .unwrap();
        assert_eq!(deal.status, OpportunityStatus::Open);
        assert_eq!(deal.stage, stage("new"));
        assert_eq!(deal.probability_override, None);
        assert_eq!(deal.forecast_category_override, None);
        assert_eq!(deal.probability(), percent(10));
        assert_eq!(deal.forecast_category(), ForecastCategory::Pipeline);
        assert_eq!(deal.close_reason, None);
        assert_eq!(deal.closed_at, None);
    }
}

#[test]
fn reopen_into_a_named_stage() {
    Deal::given([created(), lost()])
        .when(reopen(Some("quoted")))
        .then([reopened("quoted", 50, ForecastCategory::BestCase)]);
    Deal::given([created(), lost()])
        .when(C::Reopen {
            stage: None,
            definition: revised_pipeline(),
        })
        .then([reopened("new", 5, ForecastCategory::Pipeline)]);
}

#[test]
fn reopen_into_an_unknown_stage_is_refused() {
    Deal::given([created(), won()])
        .when(reopen(Some("demo")))
        .then_error(OpportunityError::StageNotInPipeline {
            stage: stage("demo"),
            pipeline: PipelineSlug::default_pipeline(),
        });
}

#[test]
fn only_a_closed_deal_can_be_reopened() {
    Deal::given([created()])
        .when(reopen(None))
        .then_error(OpportunityError::OpportunityNotClosed);
    Deal::given([
        created(),
        won(),
        reopened("new", 10, ForecastCategory::Pipeline),
    ])
    .when(reopen(None))
    .then_error(OpportunityError::OpportunityNotClosed);
}

#[test]
fn a_reopened_deal_accepts_changes_again() {
    Deal::given([
        created(),
        won(),
        reopened("new", 10, ForecastCategory::Pipeline),
    ])
    .when(change_stage("quoted"))
    .then([stage_changed(
        "new",
        "quoted",
        50,
        ForecastCategory::BestCase,
    )]);
}

// Follow-ups

#[test]
fn schedule_a_follow_up() {
    let deal = Deal::given([created()])
        .when(schedule(1))
        .then([scheduled(1)])
        .unwrap();
    let follow_up = &deal.follow_ups[&follow_up(1)];
    assert_eq!(follow_up.status, FollowUpStatus::Open);
    assert_eq!(follow_up.kind, kind("call-back"));
    assert_eq!(follow_up.due_at, at(2026, 10, 1, 9));
}

#[test]
fn a_follow_up_id_is_scheduled_once() {
    for history in [
        vec![created(), scheduled(1)],
        vec![created(), scheduled(1), completed(1)],
        vec![created(), scheduled(1), cancelled(1)],
        vec![created(), due(1, "stale-deal")],
    ] {
        Deal::given(history)
            .when(schedule(1))
            .then_error(OpportunityError::FollowUpAlreadyExists(follow_up(1)));
    }
}

#[test]
fn complete_a_follow_up() {
    for history in [
        vec![created(), scheduled(1)],
        vec![created(), scheduled(1), due(1, "call-back")],
    ] {
        let deal = Deal::given(history)
            .when(complete(1))
            .then([completed(1)])
            .unwrap();
        assert_eq!(
            deal.follow_ups[&follow_up(1)].status,
            FollowUpStatus::Completed
        );
    }
    Deal::given([created(), scheduled(1), completed(1)])
        .when(complete(1))
        .then_nothing();
    Deal::given([created(), scheduled(1), cancelled(1)])
        .when(complete(1))
        .then_error(OpportunityError::FollowUpCancelled(follow_up(1)));
    Deal::given([created(), scheduled(1)])
        .when(complete(2))
        .then_error(OpportunityError::FollowUpNotFound(follow_up(2)));
}

#[test]
fn cancel_a_follow_up() {
    for history in [
        vec![created(), scheduled(1)],
        vec![created(), scheduled(1), due(1, "call-back")],
    ] {
        let deal = Deal::given(history)
            .when(cancel(1))
            .then([cancelled(1)])
            .unwrap();
        assert_eq!(
            deal.follow_ups[&follow_up(1)].status,
            FollowUpStatus::Cancelled
        );
    }
    Deal::given([created(), scheduled(1), cancelled(1)])
        .when(cancel(1))
        .then_nothing();
    Deal::given([created(), scheduled(1), completed(1)])
        .when(cancel(1))
        .then_error(OpportunityError::FollowUpCompleted(follow_up(1)));
    Deal::given([created()])
        .when(cancel(1))
        .then_error(OpportunityError::FollowUpNotFound(follow_up(1)));
}

#[test]
fn follow_ups_of_a_closed_deal_can_still_be_completed_or_cancelled() {
    Deal::given([created(), scheduled(1), won()])
        .when(complete(1))
        .then([completed(1)]);
    Deal::given([created(), scheduled(1), lost()])
        .when(cancel(1))
        .then([cancelled(1)]);
}

#[test]
fn firing_an_open_follow_up_makes_it_due() {
    let deal = Deal::given([created(), scheduled(1)])
        .when(fire(1, "call-back"))
        .then([due(1, "call-back")])
        .unwrap();
    assert_eq!(deal.follow_ups[&follow_up(1)].status, FollowUpStatus::Due);
    assert!(deal.follow_ups[&follow_up(1)].status.is_pending());
}

#[test]
fn firing_again_or_after_the_follow_up_ended_appends_nothing() {
    for history in [
        vec![created(), scheduled(1), due(1, "call-back")],
        vec![created(), scheduled(1), completed(1)],
        vec![created(), scheduled(1), cancelled(1)],
        vec![created(), scheduled(1), due(1, "call-back"), completed(1)],
    ] {
        Deal::given(history)
            .when(fire(1, "call-back"))
            .then_nothing();
    }
}

#[test]
fn firing_on_a_closed_deal_appends_nothing() {
    for closed in [won(), lost()] {
        Deal::given([created(), scheduled(1), closed.clone()])
            .when(fire(1, "call-back"))
            .then_nothing();
        Deal::given([created(), closed])
            .when(fire(2, "stale-deal"))
            .then_nothing();
    }
}

#[test]
fn reminders_fire_without_a_scheduled_follow_up() {
    for reminder in ["stale-deal", "close-date-passed"] {
        let deal = Deal::given([created(), scheduled(1)])
            .when(fire(2, reminder))
            .then([due(2, reminder)])
            .unwrap();
        let fired = &deal.follow_ups[&follow_up(2)];
        assert_eq!(fired.status, FollowUpStatus::Due);
        assert_eq!(fired.kind, kind(reminder));
        assert_eq!(deal.follow_ups[&follow_up(1)].status, FollowUpStatus::Open);
        // The same reminder firing twice has no second effect, and it can be completed.
        Deal::given([created(), due(2, reminder)])
            .when(fire(2, reminder))
            .then_nothing();
        Deal::given([created(), due(2, reminder)])
            .when(complete(2))
            .then([completed(2)]);
    }
}

fn stale() -> Reminder {
    Reminder::StaleDeal {
        stale_after: TimeDelta::days(14),
    }
}

fn remind(id: u128, reminder: Reminder, now: DateTime<Utc>) -> C {
    C::FireReminder {
        reminder_id: follow_up(id),
        reminder,
        due_at: at(2026, 10, 1, 9),
        now,
    }
}

fn call_at(occurred_at: DateTime<Utc>) -> E {
    E::ActivityLogged {
        activity_id: ActivityId(uuid(40)),
        kind: ActivityKind::Call,
        summary: text("call"),
        occurred_at,
    }
}

#[test]
fn a_stale_deal_reminder_fires_only_while_the_deal_is_still_stale() {
    let now = at(2026, 10, 20, 9);
    // Quiet for 14 days or more, nothing planned ahead: due.
    Deal::given([created()])
        .when(remind(2, stale(), now))
        .then([due(2, "stale-deal")]);
    Deal::given([created(), call_at(now - TimeDelta::days(14))])
        .when(remind(2, stale(), now))
        .then([due(2, "stale-deal")]);
    // Activity logged since it was planned: no longer stale.
    Deal::given([created(), call_at(now - TimeDelta::days(3))])
        .when(remind(2, stale(), now))
        .then_nothing();
    // A follow-up planned ahead (due 2026-10-01 09:00): not stale until that has passed.
    Deal::given([created(), scheduled(1)])
        .when(remind(2, stale(), at(2026, 9, 30, 9)))
        .then_nothing();
    Deal::given([created(), scheduled(1)])
        .when(remind(2, stale(), at(2026, 10, 2, 9)))
        .then([due(2, "stale-deal")]);
    // Closed since, or fired already.
    Deal::given([created(), won()])
        .when(remind(2, stale(), now))
        .then_nothing();
    Deal::given([created(), due(2, "stale-deal")])
        .when(remind(2, stale(), now))
        .then_nothing();
}

#[test]
fn a_close_date_reminder_fires_only_once_the_current_close_date_is_over() {
    // The close date is 2026-12-31: over once that whole day has passed, in UTC.
    Deal::given([created()])
        .when(remind(2, Reminder::CloseDatePassed, at(2026, 12, 31, 23)))
        .then_nothing();
    Deal::given([created()])
        .when(remind(2, Reminder::CloseDatePassed, at(2027, 1, 1, 0)))
        .then([due(2, "close-date-passed")]);
    // Moved since it was planned: not passed any more.
    Deal::given([
        created(),
        E::CloseDateChanged {
            expected_close_date: date(2027, 3, 31),
            previous: date(2026, 12, 31),
        },
    ])
    .when(remind(2, Reminder::CloseDatePassed, at(2027, 1, 2, 9)))
    .then_nothing();
    Deal::given([created(), lost()])
        .when(remind(2, Reminder::CloseDatePassed, at(2027, 1, 2, 9)))
        .then_nothing();
}

#[test]
fn a_reopened_deal_fires_its_open_follow_ups_again() {
    Deal::given([
        created(),
        scheduled(1),
        won(),
        reopened("new", 10, ForecastCategory::Pipeline),
    ])
    .when(fire(1, "call-back"))
    .then([due(1, "call-back")]);
}

#[test]
fn errors_name_the_rule() {
    assert!(
        OpportunityError::StageNotInPipeline {
            stage: stage("demo"),
            pipeline: PipelineSlug::default_pipeline(),
        }
        .to_string()
        .contains("stage demo does not exist in pipeline default")
    );
    assert!(
        OpportunityError::LostReasonRequired
            .to_string()
            .contains("reason is required")
    );
    assert!(
        OpportunityError::OpportunityClosed
            .to_string()
            .contains("closed opportunity")
    );
}
