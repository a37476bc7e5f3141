//! The opportunity aggregate: a deal moving through its pipeline's stages until it is closed won
//! or lost, with its amount, close date, owner, activities and follow-ups.
//!
//! Commands that depend on a pipeline carry its current definition; the shell loads it. That keeps
//! the decision pure while a pipeline revision takes effect for the next command without
//! rewriting any event.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decider::Decider;
use crate::pipeline::{PipelineDefinition, StageDefinition};
use crate::values::{
    ActivityId, ActivityKind, Amount, Currency, FollowUpId, FollowUpKind, ForecastCategory, LeadId,
    Outcome, Owner, PipelineSlug, Probability, StageName, Text, weighted_amount,
};

/// A deal was created, from a qualified lead or directly (an import): the first event of every
/// opportunity stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpportunityCreated {
    /// The deal's name.
    pub name: Text,
    /// The lead the deal was converted from; null for a deal created directly.
    pub lead_id: Option<LeadId>,
    /// The slug of the pipeline the deal moves through.
    pub pipeline: PipelineSlug,
    /// The stage the deal starts in (the pipeline's first stage unless one was given).
    pub stage: StageName,
    /// The starting stage's probability at the time of creation.
    pub probability: Probability,
    /// The starting stage's forecast category at the time of creation.
    pub forecast_category: ForecastCategory,
    /// The deal's value in minor units of `currency`.
    pub amount: Amount,
    /// The currency of `amount`.
    pub currency: Currency,
    /// When the deal is expected to close.
    pub expected_close_date: NaiveDate,
    /// Who owns the deal.
    pub owner: Owner,
}

/// Every `event_type` of [`OpportunityEvent`], in catalog order: what consumers (the projector,
/// the workflow's rules) can name and check against.
pub const EVENT_TYPES: [&str; 13] = [
    "OpportunityCreated",
    "StageChanged",
    "ProbabilityOverridden",
    "AmountChanged",
    "CloseDateChanged",
    "OwnerChanged",
    "ActivityLogged",
    "FollowUpScheduled",
    "FollowUpCompleted",
    "FollowUpCancelled",
    "FollowUpDue",
    "OpportunityClosed",
    "OpportunityReopened",
];

/// The events of an `opportunity-<id>` stream. The doc comments of the variants and their fields
/// are the descriptions in the published JSON Schemas (docs/schemas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event_type", content = "data")]
pub enum OpportunityEvent {
    OpportunityCreated(OpportunityCreated),
    /// The deal moved to another stage of its pipeline. It takes the new stage's probability and
    /// forecast category, and any probability override is cleared.
    StageChanged {
        /// The stage the deal left.
        from: StageName,
        /// The stage the deal entered.
        to: StageName,
        /// The entered stage's probability, as defined when the deal entered it.
        probability: Probability,
        /// The entered stage's forecast category, as defined when the deal entered it.
        forecast_category: ForecastCategory,
        /// Why the deal moved; null when no reason was given.
        reason: Option<Text>,
    },
    /// The deal's own probability and/or forecast category were set, overriding its stage's. A
    /// null field keeps its value; both stand until the next stage change or a reopen.
    ProbabilityOverridden {
        /// The deal's own probability; null keeps the current one.
        probability: Option<Probability>,
        /// The deal's own forecast category (`pipeline`, `best_case` or `commit`); null keeps the
        /// current one.
        forecast_category: Option<ForecastCategory>,
    },
    /// The deal's amount and/or currency changed.
    AmountChanged {
        /// The new amount in minor units of `currency`.
        amount: Amount,
        /// The currency of the new amount.
        currency: Currency,
    },
    /// The deal's expected close date changed.
    CloseDateChanged {
        /// The new expected close date.
        expected_close_date: NaiveDate,
        /// The expected close date before this change.
        previous: NaiveDate,
    },
    /// The deal's owner changed.
    OwnerChanged {
        /// The new owner.
        owner: Owner,
        /// The owner before this change.
        previous: Owner,
    },
    /// A touch with the customer (or a note) was logged; accepted on closed deals too.
    ActivityLogged {
        /// Identifies the activity.
        activity_id: ActivityId,
        /// What kind of touch it was.
        kind: ActivityKind,
        /// What happened, in the user's words.
        summary: Text,
        /// When the activity happened (which may be before it was logged).
        occurred_at: DateTime<Utc>,
    },
    /// A follow-up was planned on an open deal, usually by a workflow rule.
    FollowUpScheduled {
        /// Identifies the follow-up within the deal.
        follow_up_id: FollowUpId,
        /// What kind of follow-up it is, such as `first-contact` or `quote-follow-up`.
        kind: FollowUpKind,
        /// When the follow-up falls due; its reminder (`FollowUpDue`) fires then if it is still
        /// open.
        due_at: DateTime<Utc>,
        /// The name of the rule that scheduled it.
        rule: Text,
    },
    /// A scheduled follow-up was done.
    FollowUpCompleted {
        /// The follow-up that was completed.
        follow_up_id: FollowUpId,
    },
    /// A scheduled follow-up was called off, for example because the deal closed.
    FollowUpCancelled {
        /// The follow-up that was cancelled.
        follow_up_id: FollowUpId,
        /// Why it was cancelled.
        reason: Text,
    },
    /// A reminder fired: a scheduled follow-up reaching its due time, or a `stale-deal` or
    /// `close-date-passed` reminder, which has no scheduled follow-up behind it.
    FollowUpDue {
        /// The follow-up that fell due, or the id of the reminder when none was scheduled.
        follow_up_id: FollowUpId,
        /// The follow-up's kind, or `stale-deal` / `close-date-passed` for those reminders.
        kind: FollowUpKind,
        /// The time the reminder was due (it may fire a little later).
        due_at: DateTime<Utc>,
    },
    /// The deal was closed won or lost. A closed deal counts with probability 100 and category
    /// `closed` when won, 0 and `omitted` when lost.
    OpportunityClosed {
        /// How the deal ended: `won` or `lost`.
        outcome: Outcome,
        /// Why it ended; always present when lost, null when no reason was given for a win.
        reason: Option<Text>,
        /// When the deal was closed.
        closed_at: DateTime<Utc>,
    },
    /// A closed deal was opened again, in the given stage, with that stage's probability and
    /// category; overrides are cleared.
    OpportunityReopened {
        /// The stage the deal is reopened in.
        stage: StageName,
        /// That stage's probability at the time of the reopen.
        probability: Probability,
        /// That stage's forecast category at the time of the reopen.
        forecast_category: ForecastCategory,
    },
}

/// A new deal, from a qualified lead or imported directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOpportunity {
    pub name: Text,
    pub lead_id: Option<LeadId>,
    pub pipeline: PipelineSlug,
    /// The first stage of the pipeline when absent.
    pub stage: Option<StageName>,
    pub amount: Amount,
    pub currency: Currency,
    pub expected_close_date: NaiveDate,
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpportunityCommand {
    Create {
        opportunity: NewOpportunity,
        definition: PipelineDefinition,
    },
    ChangeStage {
        stage: StageName,
        reason: Option<Text>,
        definition: PipelineDefinition,
    },
    OverrideProbability {
        probability: Option<Probability>,
        forecast_category: Option<ForecastCategory>,
    },
    ChangeAmount {
        amount: Amount,
        currency: Currency,
    },
    ChangeCloseDate {
        expected_close_date: NaiveDate,
    },
    ChangeOwner {
        owner: Owner,
    },
    LogActivity {
        activity_id: ActivityId,
        kind: ActivityKind,
        summary: Text,
        occurred_at: DateTime<Utc>,
    },
    ScheduleFollowUp {
        follow_up_id: FollowUpId,
        kind: FollowUpKind,
        due_at: DateTime<Utc>,
        rule: Text,
    },
    CompleteFollowUp {
        follow_up_id: FollowUpId,
    },
    CancelFollowUp {
        follow_up_id: FollowUpId,
        reason: Text,
    },
    /// Fires a reminder. For a scheduled follow-up it fires only while the follow-up is open, so a
    /// timer that fires late or twice has no second effect.
    FireFollowUp {
        follow_up_id: FollowUpId,
        kind: FollowUpKind,
        due_at: DateTime<Utc>,
    },
    /// Fires a reminder without a scheduled follow-up behind it, once, and only if its condition
    /// still holds at `now`: it was planned on the deal as it was, and activity, a follow-up
    /// planned ahead or a new close date may have come since. Otherwise it appends nothing.
    FireReminder {
        reminder_id: FollowUpId,
        reminder: Reminder,
        due_at: DateTime<Utc>,
        /// The time of firing, passed in so that the decision stays pure.
        now: DateTime<Utc>,
    },
    Close {
        outcome: Outcome,
        reason: Option<Text>,
        closed_at: DateTime<Utc>,
    },
    Reopen {
        stage: Option<StageName>,
        definition: PipelineDefinition,
    },
}

/// A reminder with no scheduled follow-up behind it (stale deal, close date passed), and the condition it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reminder {
    /// `stale-deal`: no activity for `stale_after`, and no follow-up planned after the time of
    /// firing (a deal with a follow-up scheduled in the future is not stale).
    StaleDeal { stale_after: TimeDelta },
    /// `close-date-passed`: the deal's expected close date is over (in UTC).
    CloseDatePassed,
}

impl Reminder {
    /// The kind of the `FollowUpDue` a stale-deal reminder fires (and its rule's name).
    pub const STALE_DEAL: &'static str = "stale-deal";
    /// The kind of the `FollowUpDue` a close-date-passed reminder fires (and its rule's name).
    pub const CLOSE_DATE_PASSED: &'static str = "close-date-passed";

    /// The kind of the `FollowUpDue` it fires.
    pub fn kind(self) -> FollowUpKind {
        let name = match self {
            Reminder::StaleDeal { .. } => Reminder::STALE_DEAL,
            Reminder::CloseDatePassed => Reminder::CLOSE_DATE_PASSED,
        };
        // Both names are constant slugs.
        FollowUpKind::parse(name).unwrap_or_else(|_| unreachable!())
    }

    /// Whether the reminder is due on `deal` at `now`.
    pub fn holds(self, deal: &Opportunity, now: DateTime<Utc>) -> bool {
        match self {
            Reminder::StaleDeal { stale_after } => {
                let quiet = deal
                    .last_activity_at
                    .is_none_or(|active| active + stale_after <= now);
                let planned_ahead = deal.follow_ups.values().any(|follow_up| {
                    follow_up.status == FollowUpStatus::Open && follow_up.due_at > now
                });
                quiet && !planned_ahead
            }
            Reminder::CloseDatePassed => now.date_naive() > deal.expected_close_date,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityStatus {
    Open,
    Won,
    Lost,
}

impl OpportunityStatus {
    /// The probability a deal in this status counts with: 100 once won, 0 once lost, otherwise
    /// its own override or its stage's. The one place this rule lives; read models use it too.
    pub fn probability(self, stage: Probability, overridden: Option<Probability>) -> Probability {
        match self {
            OpportunityStatus::Won => Outcome::Won.standing().0,
            OpportunityStatus::Lost => Outcome::Lost.standing().0,
            OpportunityStatus::Open => overridden.unwrap_or(stage),
        }
    }

    /// The forecast category by the same rule: `closed` once won, `omitted` once lost.
    pub fn forecast_category(
        self,
        stage: ForecastCategory,
        overridden: Option<ForecastCategory>,
    ) -> ForecastCategory {
        match self {
            OpportunityStatus::Won => Outcome::Won.standing().1,
            OpportunityStatus::Lost => Outcome::Lost.standing().1,
            OpportunityStatus::Open => overridden.unwrap_or(stage),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpStatus {
    /// Scheduled, not yet due.
    Open,
    /// Its reminder fired and nobody has completed it yet.
    Due,
    Completed,
    Cancelled,
}

impl FollowUpStatus {
    /// Open and due follow-ups still ask for someone's attention.
    pub fn is_pending(self) -> bool {
        matches!(self, FollowUpStatus::Open | FollowUpStatus::Due)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowUp {
    pub kind: FollowUpKind,
    pub due_at: DateTime<Utc>,
    pub status: FollowUpStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opportunity {
    pub name: Text,
    pub lead_id: Option<LeadId>,
    pub pipeline: PipelineSlug,
    pub stage: StageName,
    /// The stage's probability and category as they were when the deal entered it.
    pub stage_probability: Probability,
    pub stage_forecast_category: ForecastCategory,
    /// This deal's own figures; cleared by the next stage change or a reopen.
    pub probability_override: Option<Probability>,
    pub forecast_category_override: Option<ForecastCategory>,
    pub amount: Amount,
    pub currency: Currency,
    pub expected_close_date: NaiveDate,
    pub owner: Owner,
    pub status: OpportunityStatus,
    pub close_reason: Option<Text>,
    pub closed_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub follow_ups: BTreeMap<FollowUpId, FollowUp>,
}

impl Opportunity {
    pub fn probability(&self) -> Probability {
        self.status
            .probability(self.stage_probability, self.probability_override)
    }

    pub fn forecast_category(&self) -> ForecastCategory {
        self.status.forecast_category(
            self.stage_forecast_category,
            self.forecast_category_override,
        )
    }

    pub fn weighted_amount(&self) -> i64 {
        weighted_amount(self.amount, self.probability())
    }

    pub fn is_open(&self) -> bool {
        self.status == OpportunityStatus::Open
    }
}

/// `None` until created.
pub type OpportunityState = Option<Opportunity>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpportunityError {
    #[error("opportunity not found")]
    OpportunityNotFound,
    #[error("opportunity already exists")]
    OpportunityAlreadyExists,
    #[error("stage {stage} does not exist in pipeline {pipeline}")]
    StageNotInPipeline {
        stage: StageName,
        pipeline: PipelineSlug,
    },
    #[error(
        "a closed opportunity accepts no stage, probability, amount, close date or owner change and no new follow-up until it is reopened"
    )]
    OpportunityClosed,
    #[error("the opportunity is already closed")]
    OpportunityAlreadyClosed,
    #[error("only a closed opportunity can be reopened")]
    OpportunityNotClosed,
    #[error("a reason is required when a deal is lost")]
    LostReasonRequired,
    #[error("a probability override needs a probability, a forecast category or both")]
    EmptyOverride,
    #[error("forecast category {} belongs to closed deals only", .0.as_str())]
    ClosedCategoryOnOpenDeal(ForecastCategory),
    #[error("pipeline {0} has no stages")]
    PipelineHasNoStages(PipelineSlug),
    #[error("follow-up {0} not found on this opportunity")]
    FollowUpNotFound(FollowUpId),
    #[error("follow-up {0} already exists")]
    FollowUpAlreadyExists(FollowUpId),
    #[error("follow-up {0} was cancelled and cannot be completed")]
    FollowUpCancelled(FollowUpId),
    #[error("follow-up {0} was completed and cannot be cancelled")]
    FollowUpCompleted(FollowUpId),
}

pub struct OpportunityDecider;

fn existing(state: &OpportunityState) -> Result<&Opportunity, OpportunityError> {
    state.as_ref().ok_or(OpportunityError::OpportunityNotFound)
}

fn open(state: &OpportunityState) -> Result<&Opportunity, OpportunityError> {
    let opportunity = existing(state)?;
    if opportunity.is_open() {
        Ok(opportunity)
    } else {
        Err(OpportunityError::OpportunityClosed)
    }
}

fn stage_in<'a>(
    definition: &'a PipelineDefinition,
    pipeline: &PipelineSlug,
    stage: &StageName,
) -> Result<&'a StageDefinition, OpportunityError> {
    definition
        .stage(stage)
        .ok_or_else(|| OpportunityError::StageNotInPipeline {
            stage: stage.clone(),
            pipeline: pipeline.clone(),
        })
}

fn first_stage<'a>(
    definition: &'a PipelineDefinition,
    pipeline: &PipelineSlug,
) -> Result<&'a StageDefinition, OpportunityError> {
    definition
        .first_stage()
        .ok_or_else(|| OpportunityError::PipelineHasNoStages(pipeline.clone()))
}

/// Wraps a single event, or nothing when the command changes nothing.
fn unless_unchanged(unchanged: bool, event: OpportunityEvent) -> Vec<OpportunityEvent> {
    if unchanged { vec![] } else { vec![event] }
}

impl Decider for OpportunityDecider {
    type State = OpportunityState;
    type Command = OpportunityCommand;
    type Event = OpportunityEvent;
    type Error = OpportunityError;

    fn decide(
        command: &OpportunityCommand,
        state: &OpportunityState,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        use OpportunityCommand as C;
        use OpportunityEvent as E;
        match command {
            C::Create {
                opportunity: new,
                definition,
            } => {
                if state.is_some() {
                    return Err(OpportunityError::OpportunityAlreadyExists);
                }
                let stage = match &new.stage {
                    Some(stage) => stage_in(definition, &new.pipeline, stage)?,
                    None => first_stage(definition, &new.pipeline)?,
                };
                Ok(vec![E::OpportunityCreated(OpportunityCreated {
                    name: new.name.clone(),
                    lead_id: new.lead_id,
                    pipeline: new.pipeline.clone(),
                    stage: stage.name.clone(),
                    probability: stage.probability,
                    forecast_category: stage.forecast_category,
                    amount: new.amount,
                    currency: new.currency.clone(),
                    expected_close_date: new.expected_close_date,
                    owner: new.owner.clone(),
                })])
            }
            C::ChangeStage {
                stage,
                reason,
                definition,
            } => {
                let opportunity = open(state)?;
                // Checked before the stage's existence: staying in a stage that a revision has
                // since removed is still a no-op, not an error.
                if &opportunity.stage == stage {
                    return Ok(vec![]);
                }
                let target = stage_in(definition, &opportunity.pipeline, stage)?;
                Ok(vec![E::StageChanged {
                    from: opportunity.stage.clone(),
                    to: target.name.clone(),
                    probability: target.probability,
                    forecast_category: target.forecast_category,
                    reason: reason.clone(),
                }])
            }
            C::OverrideProbability {
                probability,
                forecast_category,
            } => {
                let opportunity = open(state)?;
                if probability.is_none() && forecast_category.is_none() {
                    return Err(OpportunityError::EmptyOverride);
                }
                if let Some(category @ (ForecastCategory::Closed | ForecastCategory::Omitted)) =
                    forecast_category
                {
                    return Err(OpportunityError::ClosedCategoryOnOpenDeal(*category));
                }
                let unchanged = probability.is_none_or(|p| p == opportunity.probability())
                    && forecast_category.is_none_or(|c| c == opportunity.forecast_category());
                Ok(unless_unchanged(
                    unchanged,
                    E::ProbabilityOverridden {
                        probability: *probability,
                        forecast_category: *forecast_category,
                    },
                ))
            }
            C::ChangeAmount { amount, currency } => {
                let opportunity = open(state)?;
                Ok(unless_unchanged(
                    opportunity.amount == *amount && &opportunity.currency == currency,
                    E::AmountChanged {
                        amount: *amount,
                        currency: currency.clone(),
                    },
                ))
            }
            C::ChangeCloseDate {
                expected_close_date,
            } => {
                let opportunity = open(state)?;
                Ok(unless_unchanged(
                    opportunity.expected_close_date == *expected_close_date,
                    E::CloseDateChanged {
                        expected_close_date: *expected_close_date,
                        previous: opportunity.expected_close_date,
                    },
                ))
            }
            C::ChangeOwner { owner } => {
                let opportunity = open(state)?;
                Ok(unless_unchanged(
                    &opportunity.owner == owner,
                    E::OwnerChanged {
                        owner: owner.clone(),
                        previous: opportunity.owner.clone(),
                    },
                ))
            }
            C::LogActivity {
                activity_id,
                kind,
                summary,
                occurred_at,
            } => {
                existing(state)?;
                Ok(vec![E::ActivityLogged {
                    activity_id: *activity_id,
                    kind: *kind,
                    summary: summary.clone(),
                    occurred_at: *occurred_at,
                }])
            }
            C::ScheduleFollowUp {
                follow_up_id,
                kind,
                due_at,
                rule,
            } => {
                let opportunity = open(state)?;
                if opportunity.follow_ups.contains_key(follow_up_id) {
                    return Err(OpportunityError::FollowUpAlreadyExists(*follow_up_id));
                }
                Ok(vec![E::FollowUpScheduled {
                    follow_up_id: *follow_up_id,
                    kind: kind.clone(),
                    due_at: *due_at,
                    rule: rule.clone(),
                }])
            }
            C::CompleteFollowUp { follow_up_id } => {
                let follow_up = existing(state)?
                    .follow_ups
                    .get(follow_up_id)
                    .ok_or(OpportunityError::FollowUpNotFound(*follow_up_id))?;
                match follow_up.status {
                    FollowUpStatus::Open | FollowUpStatus::Due => Ok(vec![E::FollowUpCompleted {
                        follow_up_id: *follow_up_id,
                    }]),
                    FollowUpStatus::Completed => Ok(vec![]),
                    FollowUpStatus::Cancelled => {
                        Err(OpportunityError::FollowUpCancelled(*follow_up_id))
                    }
                }
            }
            C::CancelFollowUp {
                follow_up_id,
                reason,
            } => {
                let follow_up = existing(state)?
                    .follow_ups
                    .get(follow_up_id)
                    .ok_or(OpportunityError::FollowUpNotFound(*follow_up_id))?;
                match follow_up.status {
                    FollowUpStatus::Open | FollowUpStatus::Due => Ok(vec![E::FollowUpCancelled {
                        follow_up_id: *follow_up_id,
                        reason: reason.clone(),
                    }]),
                    FollowUpStatus::Cancelled => Ok(vec![]),
                    FollowUpStatus::Completed => {
                        Err(OpportunityError::FollowUpCompleted(*follow_up_id))
                    }
                }
            }
            C::FireFollowUp {
                follow_up_id,
                kind,
                due_at,
            } => {
                let opportunity = existing(state)?;
                let still_wanted = opportunity.is_open()
                    && opportunity
                        .follow_ups
                        .get(follow_up_id)
                        .is_none_or(|follow_up| follow_up.status == FollowUpStatus::Open);
                Ok(unless_unchanged(
                    !still_wanted,
                    E::FollowUpDue {
                        follow_up_id: *follow_up_id,
                        kind: kind.clone(),
                        due_at: *due_at,
                    },
                ))
            }
            C::FireReminder {
                reminder_id,
                reminder,
                due_at,
                now,
            } => {
                let opportunity = existing(state)?;
                let due = opportunity.is_open()
                    && !opportunity.follow_ups.contains_key(reminder_id)
                    && reminder.holds(opportunity, *now);
                Ok(unless_unchanged(
                    !due,
                    E::FollowUpDue {
                        follow_up_id: *reminder_id,
                        kind: reminder.kind(),
                        due_at: *due_at,
                    },
                ))
            }
            C::Close {
                outcome,
                reason,
                closed_at,
            } => {
                let opportunity = existing(state)?;
                if !opportunity.is_open() {
                    return Err(OpportunityError::OpportunityAlreadyClosed);
                }
                if *outcome == Outcome::Lost && reason.is_none() {
                    return Err(OpportunityError::LostReasonRequired);
                }
                Ok(vec![E::OpportunityClosed {
                    outcome: *outcome,
                    reason: reason.clone(),
                    closed_at: *closed_at,
                }])
            }
            C::Reopen { stage, definition } => {
                let opportunity = existing(state)?;
                if opportunity.is_open() {
                    return Err(OpportunityError::OpportunityNotClosed);
                }
                let target = match stage {
                    Some(stage) => stage_in(definition, &opportunity.pipeline, stage)?,
                    None => first_stage(definition, &opportunity.pipeline)?,
                };
                Ok(vec![E::OpportunityReopened {
                    stage: target.name.clone(),
                    probability: target.probability,
                    forecast_category: target.forecast_category,
                }])
            }
        }
    }

    fn evolve(state: OpportunityState, event: &OpportunityEvent) -> OpportunityState {
        use OpportunityEvent as E;
        if let E::OpportunityCreated(created) = event {
            return Some(Opportunity {
                name: created.name.clone(),
                lead_id: created.lead_id,
                pipeline: created.pipeline.clone(),
                stage: created.stage.clone(),
                stage_probability: created.probability,
                stage_forecast_category: created.forecast_category,
                probability_override: None,
                forecast_category_override: None,
                amount: created.amount,
                currency: created.currency.clone(),
                expected_close_date: created.expected_close_date,
                owner: created.owner.clone(),
                status: OpportunityStatus::Open,
                close_reason: None,
                closed_at: None,
                last_activity_at: None,
                follow_ups: BTreeMap::new(),
            });
        }
        let mut deal = state?;
        match event {
            E::OpportunityCreated(_) => {}
            E::StageChanged {
                to,
                probability,
                forecast_category,
                ..
            } => {
                deal.stage = to.clone();
                deal.stage_probability = *probability;
                deal.stage_forecast_category = *forecast_category;
                deal.probability_override = None;
                deal.forecast_category_override = None;
            }
            E::ProbabilityOverridden {
                probability,
                forecast_category,
            } => {
                deal.probability_override = probability.or(deal.probability_override);
                deal.forecast_category_override =
                    forecast_category.or(deal.forecast_category_override);
            }
            E::AmountChanged { amount, currency } => {
                deal.amount = *amount;
                deal.currency = currency.clone();
            }
            E::CloseDateChanged {
                expected_close_date,
                ..
            } => deal.expected_close_date = *expected_close_date,
            E::OwnerChanged { owner, .. } => deal.owner = owner.clone(),
            E::ActivityLogged { occurred_at, .. } => {
                deal.last_activity_at = deal.last_activity_at.max(Some(*occurred_at));
            }
            E::FollowUpScheduled {
                follow_up_id,
                kind,
                due_at,
                ..
            } => {
                deal.follow_ups.insert(
                    *follow_up_id,
                    FollowUp {
                        kind: kind.clone(),
                        due_at: *due_at,
                        status: FollowUpStatus::Open,
                    },
                );
            }
            E::FollowUpCompleted { follow_up_id } => {
                set_follow_up_status(&mut deal, follow_up_id, FollowUpStatus::Completed)
            }
            E::FollowUpCancelled { follow_up_id, .. } => {
                set_follow_up_status(&mut deal, follow_up_id, FollowUpStatus::Cancelled)
            }
            E::FollowUpDue {
                follow_up_id,
                kind,
                due_at,
            } => {
                deal.follow_ups
                    .entry(*follow_up_id)
                    .and_modify(|follow_up| follow_up.status = FollowUpStatus::Due)
                    .or_insert_with(|| FollowUp {
                        kind: kind.clone(),
                        due_at: *due_at,
                        status: FollowUpStatus::Due,
                    });
            }
            E::OpportunityClosed {
                outcome,
                reason,
                closed_at,
            } => {
                deal.status = match outcome {
                    Outcome::Won => OpportunityStatus::Won,
                    Outcome::Lost => OpportunityStatus::Lost,
                };
                deal.close_reason = reason.clone();
                deal.closed_at = Some(*closed_at);
            }
            E::OpportunityReopened {
                stage,
                probability,
                forecast_category,
            } => {
                deal.status = OpportunityStatus::Open;
                deal.stage = stage.clone();
                deal.stage_probability = *probability;
                deal.stage_forecast_category = *forecast_category;
                deal.probability_override = None;
                deal.forecast_category_override = None;
                deal.close_reason = None;
                deal.closed_at = None;
            }
        }
        Some(deal)
    }
}

fn set_follow_up_status(deal: &mut Opportunity, follow_up_id: &FollowUpId, status: FollowUpStatus) {
    if let Some(follow_up) = deal.follow_ups.get_mut(follow_up_id) {
        follow_up.status = status;
    }
}
