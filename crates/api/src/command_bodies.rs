//! Command bodies and the one conversion of each into a domain command.
//!
//! The HTTP routes (`command_routes`) and `dealstream import` both turn a JSON body into a
//! [`Command`] here, so an imported line is validated exactly like a request: the same body types
//! (unknown fields refused, 400 for shape), the same parsing constructors (422 for range), the same
//! deciders. What differs between the two is passed in: the target's ids (from the path, or from
//! the import line), and [`Fresh`], the time and the id a command may need that the client did not
//! give (the clock and a new UUID v7 for a request; the line's `occurred_at` and an id derived
//! from the line for an import, so that importing is deterministic).
//!
//! `schedule_follow_up` has no HTTP route (follow-ups are the workflow's), but imported history
//! carries them, so its body is defined here too. Read `command_routes` for the HTTP side and
//! `docs/import.md` for the import format.

use chrono::{DateTime, Utc};
use commands::{
    CommandContext, CommandError, CommandHandler, CommandResult, OpportunityRequest,
    QualifiedOpportunity,
};
use domain::lead::{Criteria, Email, LeadProfile};
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::pipeline::{PipelineDefinition, StageDefinition};
use domain::values::{
    ActivityId, ActivityKind, Amount, Country, Currency, FollowUpId, FollowUpKind,
    ForecastCategory, InvalidValue, LeadId, OpportunityId, Outcome, Owner, PipelineSlug,
    Probability, StageName, Text, parse_date, parse_instant, parse_owner,
};
use serde::Deserialize;
use serde_json::{Number, Value};
use uuid::Uuid;

use crate::extract::parse_body;
use crate::problem::ApiError;

/// What a command needs that its body does not say.
#[derive(Debug, Clone, Copy)]
pub struct Fresh {
    /// "Now" for the command: the default of an activity's `occurred_at` and a deal's
    /// `closed_at`.
    pub now: DateTime<Utc>,
    /// The id of what the command creates inside a deal (an activity, a follow-up) when the body
    /// names none.
    pub id: Uuid,
}

/// A validated command with its target, ready for the command handler.
#[derive(Debug, Clone)]
pub enum Command {
    CaptureLead {
        id: LeadId,
        profile: LeadProfile,
    },
    QualifyLead {
        id: LeadId,
        criteria: Criteria,
        opportunity_id: OpportunityId,
        draft: QualifiedOpportunity,
    },
    DisqualifyLead {
        id: LeadId,
        reason: Text,
    },
    CreateOpportunity {
        id: OpportunityId,
        opportunity: NewOpportunity,
    },
    Opportunity {
        id: OpportunityId,
        request: OpportunityRequest,
    },
    DefinePipeline {
        slug: PipelineSlug,
        definition: PipelineDefinition,
    },
}

impl Command {
    /// Sends the command through the handler. `default_owner` owns a deal converted from a lead
    /// that was never routed, when the body names no owner.
    pub async fn send(
        self,
        handler: &CommandHandler,
        context: &CommandContext,
        default_owner: &Owner,
    ) -> Result<CommandResult, CommandError> {
        match self {
            Command::CaptureLead { id, profile } => {
                handler.capture_lead(context, id, profile).await
            }
            Command::QualifyLead {
                id,
                criteria,
                opportunity_id,
                draft,
            } => {
                handler
                    .qualify_lead(
                        context,
                        id,
                        criteria,
                        opportunity_id,
                        draft,
                        default_owner.clone(),
                    )
                    .await
            }
            Command::DisqualifyLead { id, reason } => {
                handler.disqualify_lead(context, id, reason).await
            }
            Command::CreateOpportunity { id, opportunity } => {
                handler.create_opportunity(context, id, opportunity).await
            }
            Command::Opportunity { id, request } => {
                handler.handle_opportunity(context, id, request).await
            }
            Command::DefinePipeline { slug, definition } => {
                handler.define_pipeline(context, &slug, definition).await
            }
        }
    }
}

/// A command body: what it reads from JSON and how it becomes a [`Command`] on its target.
pub trait CommandBody {
    /// The ids that name what the command acts on (and, for a creation, the new entity's).
    type Target;

    fn command(&self, target: Self::Target, fresh: &Fresh) -> Result<Command, ApiError>;
}

/// Reads a JSON number as an integer of any width, so that the caller can say "too large" or
/// "negative" (422) rather than "wrong type" (400).
fn integer(field: &'static str, number: &Number) -> Result<i128, InvalidValue> {
    if let Some(value) = number.as_i64() {
        return Ok(value.into());
    }
    if let Some(value) = number.as_u64() {
        return Ok(value.into());
    }
    match number.as_f64() {
        // Beyond i64 a JSON integer arrives as a float; clamping keeps it out of range.
        Some(value) if value.fract() == 0.0 && value.is_finite() => {
            Ok(if value < 0.0 { i128::MIN } else { i128::MAX })
        }
        _ => Err(InvalidValue::new(field, "must be a whole number")),
    }
}

fn amount(number: &Number) -> Result<Amount, InvalidValue> {
    Amount::parse(integer("amount", number)?)
}

fn probability(number: &Number) -> Result<Probability, InvalidValue> {
    Probability::parse(integer("probability", number)?)
}

fn optional_text(
    field: &'static str,
    value: &Option<String>,
    max_chars: usize,
) -> Result<Option<Text>, InvalidValue> {
    value
        .as_deref()
        .map(|text| Text::parse(field, text, max_chars))
        .transpose()
}

fn pipeline_or_default(value: &Option<String>) -> Result<PipelineSlug, InvalidValue> {
    value
        .as_deref()
        .map_or_else(|| Ok(PipelineSlug::default_pipeline()), PipelineSlug::parse)
}

fn on_deal(id: OpportunityId, command: OpportunityCommand) -> Command {
    Command::Opportunity {
        id,
        request: OpportunityRequest::Other(command),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    name: String,
    company: Option<String>,
    email: Option<String>,
    country: Option<String>,
    source: Option<String>,
}

impl CommandBody for LeadBody {
    type Target = LeadId;

    fn command(&self, id: LeadId, _: &Fresh) -> Result<Command, ApiError> {
        let profile = LeadProfile {
            name: Text::parse("name", &self.name, Text::SHORT)?,
            company: optional_text("company", &self.company, Text::SHORT)?,
            email: self.email.as_deref().map(Email::parse).transpose()?,
            country: self.country.as_deref().map(Country::parse).transpose()?,
            source: optional_text("source", &self.source, Text::SHORT)?,
        };
        Ok(Command::CaptureLead { id, profile })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriteriaBody {
    budget: bool,
    authority: bool,
    need: bool,
    timeline: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualifiedOpportunityBody {
    name: String,
    amount: Number,
    currency: String,
    expected_close_date: String,
    pipeline: Option<String>,
    owner: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualifyBody {
    criteria: CriteriaBody,
    opportunity: QualifiedOpportunityBody,
}

impl CommandBody for QualifyBody {
    /// The lead, and the deal it becomes.
    type Target = (LeadId, OpportunityId);

    fn command(
        &self,
        (id, opportunity_id): (LeadId, OpportunityId),
        _: &Fresh,
    ) -> Result<Command, ApiError> {
        let QualifyBody {
            criteria,
            opportunity,
        } = self;
        let criteria = Criteria {
            budget: criteria.budget,
            authority: criteria.authority,
            need: criteria.need,
            timeline: criteria.timeline,
        };
        let draft = QualifiedOpportunity {
            name: Text::parse("opportunity.name", &opportunity.name, Text::SHORT)?,
            pipeline: pipeline_or_default(&opportunity.pipeline)?,
            amount: amount(&opportunity.amount)?,
            currency: Currency::parse(&opportunity.currency)?,
            expected_close_date: parse_date(
                "expected_close_date",
                &opportunity.expected_close_date,
            )?,
            owner: opportunity.owner.as_deref().map(parse_owner).transpose()?,
        };
        Ok(Command::QualifyLead {
            id,
            criteria,
            opportunity_id,
            draft,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: String,
}

impl CommandBody for ReasonBody {
    type Target = LeadId;

    fn command(&self, id: LeadId, _: &Fresh) -> Result<Command, ApiError> {
        let reason = Text::parse("reason", &self.reason, Text::LONG)?;
        Ok(Command::DisqualifyLead { id, reason })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpportunityBody {
    name: String,
    amount: Number,
    currency: String,
    expected_close_date: String,
    pipeline: Option<String>,
    stage: Option<String>,
    owner: String,
}

impl CommandBody for OpportunityBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let opportunity = NewOpportunity {
            name: Text::parse("name", &self.name, Text::SHORT)?,
            lead_id: None,
            pipeline: pipeline_or_default(&self.pipeline)?,
            stage: self.stage.as_deref().map(StageName::parse).transpose()?,
            amount: amount(&self.amount)?,
            currency: Currency::parse(&self.currency)?,
            expected_close_date: parse_date("expected_close_date", &self.expected_close_date)?,
            owner: parse_owner(&self.owner)?,
        };
        Ok(Command::CreateOpportunity { id, opportunity })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    stage: String,
    reason: Option<String>,
}

impl CommandBody for StageBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let request = OpportunityRequest::ChangeStage {
            stage: StageName::parse(&self.stage)?,
            reason: optional_text("reason", &self.reason, Text::LONG)?,
        };
        Ok(Command::Opportunity { id, request })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilityBody {
    probability: Option<Number>,
    forecast_category: Option<String>,
}

impl CommandBody for ProbabilityBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let command = OpportunityCommand::OverrideProbability {
            probability: self.probability.as_ref().map(probability).transpose()?,
            forecast_category: self
                .forecast_category
                .as_deref()
                .map(ForecastCategory::parse_open)
                .transpose()?,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    amount: Number,
    currency: String,
}

impl CommandBody for AmountBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let command = OpportunityCommand::ChangeAmount {
            amount: amount(&self.amount)?,
            currency: Currency::parse(&self.currency)?,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseDateBody {
    expected_close_date: String,
}

impl CommandBody for CloseDateBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let command = OpportunityCommand::ChangeCloseDate {
            expected_close_date: parse_date("expected_close_date", &self.expected_close_date)?,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    owner: String,
}

impl CommandBody for OwnerBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let command = OpportunityCommand::ChangeOwner {
            owner: parse_owner(&self.owner)?,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    kind: String,
    summary: String,
    occurred_at: Option<String>,
}

impl CommandBody for ActivityBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, fresh: &Fresh) -> Result<Command, ApiError> {
        let occurred_at = match &self.occurred_at {
            None => fresh.now,
            Some(text) => parse_instant("occurred_at", text)?,
        };
        let command = OpportunityCommand::LogActivity {
            activity_id: ActivityId(fresh.id),
            kind: ActivityKind::parse(&self.kind)?,
            summary: Text::parse("summary", &self.summary, Text::LONG)?,
            occurred_at,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    outcome: String,
    reason: Option<String>,
}

impl CommandBody for CloseBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, fresh: &Fresh) -> Result<Command, ApiError> {
        let command = OpportunityCommand::Close {
            outcome: Outcome::parse(&self.outcome)?,
            reason: optional_text("reason", &self.reason, Text::LONG)?,
            closed_at: fresh.now,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReopenBody {
    stage: Option<String>,
}

impl CommandBody for ReopenBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, _: &Fresh) -> Result<Command, ApiError> {
        let request = OpportunityRequest::Reopen {
            stage: self.stage.as_deref().map(StageName::parse).transpose()?,
        };
        Ok(Command::Opportunity { id, request })
    }
}

/// Completing a follow-up takes no body over HTTP: the follow-up is in the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

impl CommandBody for EmptyBody {
    /// The deal and its follow-up.
    type Target = (OpportunityId, FollowUpId);

    fn command(
        &self,
        (id, follow_up_id): (OpportunityId, FollowUpId),
        _: &Fresh,
    ) -> Result<Command, ApiError> {
        Ok(on_deal(
            id,
            OpportunityCommand::CompleteFollowUp { follow_up_id },
        ))
    }
}

/// The body of `schedule_follow_up`, which only imports send: `{follow_up_id?, kind, due_at,
/// rule?}`. Without an id the follow-up gets [`Fresh::id`]; without a rule it is recorded as
/// scheduled by rule `import`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpBody {
    follow_up_id: Option<Uuid>,
    kind: String,
    due_at: String,
    rule: Option<String>,
}

/// The rule a scheduled follow-up records when an imported line names none.
pub const IMPORTED_FOLLOW_UP_RULE: &str = "import";

impl CommandBody for FollowUpBody {
    type Target = OpportunityId;

    fn command(&self, id: OpportunityId, fresh: &Fresh) -> Result<Command, ApiError> {
        let rule = self.rule.as_deref().unwrap_or(IMPORTED_FOLLOW_UP_RULE);
        let command = OpportunityCommand::ScheduleFollowUp {
            follow_up_id: FollowUpId(self.follow_up_id.unwrap_or(fresh.id)),
            kind: FollowUpKind::parse(&self.kind)?,
            due_at: parse_instant("due_at", &self.due_at)?,
            rule: Text::parse("rule", rule, Text::SHORT)?,
        };
        Ok(on_deal(id, command))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageDefinitionBody {
    name: String,
    probability: Number,
    forecast_category: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    name: String,
    stages: Vec<StageDefinitionBody>,
}

impl CommandBody for PipelineBody {
    type Target = PipelineSlug;

    fn command(&self, slug: PipelineSlug, _: &Fresh) -> Result<Command, ApiError> {
        let stages = self
            .stages
            .iter()
            .map(|stage| {
                Ok(StageDefinition {
                    name: StageName::parse(&stage.name)?,
                    probability: probability(&stage.probability)?,
                    forecast_category: ForecastCategory::parse_open(&stage.forecast_category)?,
                })
            })
            .collect::<Result<Vec<_>, InvalidValue>>()?;
        let definition =
            PipelineDefinition::new(Text::parse("name", &self.name, Text::SHORT)?, stages)?;
        Ok(Command::DefinePipeline { slug, definition })
    }
}

/// The commands an import line may name, in the order `docs/import.md` lists them.
const IMPORT_COMMANDS: [&str; 15] = [
    "capture_lead",
    "qualify_lead",
    "disqualify_lead",
    "create_opportunity",
    "change_stage",
    "override_probability",
    "change_amount",
    "change_close_date",
    "change_owner",
    "log_activity",
    "close",
    "reopen",
    "complete_follow_up",
    "schedule_follow_up",
    "define_pipeline",
];

/// Turns one import line's `command`, `id` and `body` into a command: the body is read as the
/// HTTP body of that command, with the ids the HTTP path would carry taken from the line. Two
/// bodies carry one id more than over HTTP, since an import has no path and no answer to read
/// them from: `qualify_lead`'s `opportunity.id` (the new deal) and `complete_follow_up`'s
/// `follow_up_id`.
pub fn imported(
    command: &str,
    id: &str,
    mut body: Value,
    fresh: &Fresh,
) -> Result<Command, ApiError> {
    match command {
        "capture_lead" => parse_body::<LeadBody>(body)?.command(lead_id(id)?, fresh),
        "qualify_lead" => {
            let opportunity_id = take_id(&mut body, Some("opportunity"), "id")?;
            let target = (lead_id(id)?, OpportunityId(opportunity_id));
            parse_body::<QualifyBody>(body)?.command(target, fresh)
        }
        "disqualify_lead" => parse_body::<ReasonBody>(body)?.command(lead_id(id)?, fresh),
        "create_opportunity" => {
            parse_body::<OpportunityBody>(body)?.command(opportunity_id(id)?, fresh)
        }
        "change_stage" => parse_body::<StageBody>(body)?.command(opportunity_id(id)?, fresh),
        "override_probability" => {
            parse_body::<ProbabilityBody>(body)?.command(opportunity_id(id)?, fresh)
        }
        "change_amount" => parse_body::<AmountBody>(body)?.command(opportunity_id(id)?, fresh),
        "change_close_date" => {
            parse_body::<CloseDateBody>(body)?.command(opportunity_id(id)?, fresh)
        }
        "change_owner" => parse_body::<OwnerBody>(body)?.command(opportunity_id(id)?, fresh),
        "log_activity" => parse_body::<ActivityBody>(body)?.command(opportunity_id(id)?, fresh),
        "close" => parse_body::<CloseBody>(body)?.command(opportunity_id(id)?, fresh),
        "reopen" => parse_body::<ReopenBody>(body)?.command(opportunity_id(id)?, fresh),
        "complete_follow_up" => {
            let follow_up_id = take_id(&mut body, None, "follow_up_id")?;
            let target = (opportunity_id(id)?, FollowUpId(follow_up_id));
            parse_body::<EmptyBody>(body)?.command(target, fresh)
        }
        "schedule_follow_up" => {
            parse_body::<FollowUpBody>(body)?.command(opportunity_id(id)?, fresh)
        }
        "define_pipeline" => {
            let slug = PipelineSlug::parse(id)
                .map_err(|error| ApiError::BadRequest(format!("id: {error}")))?;
            parse_body::<PipelineBody>(body)?.command(slug, fresh)
        }
        unknown => Err(ApiError::BadRequest(format!(
            "unknown command {unknown:?}; expected one of {}",
            IMPORT_COMMANDS.join(", ")
        ))),
    }
}

fn uuid_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BadRequest(format!("id: {id:?} is not a UUID")))
}

fn lead_id(id: &str) -> Result<LeadId, ApiError> {
    uuid_id(id).map(LeadId)
}

fn opportunity_id(id: &str) -> Result<OpportunityId, ApiError> {
    uuid_id(id).map(OpportunityId)
}

/// Removes the required id member `field` from the body (or from its member `within`), so that
/// the rest reads as the HTTP body.
fn take_id(body: &mut Value, within: Option<&str>, field: &str) -> Result<Uuid, ApiError> {
    let path = within.map_or_else(|| field.to_owned(), |outer| format!("{outer}.{field}"));
    let holder = match within {
        None => Some(&mut *body),
        Some(outer) => body.get_mut(outer),
    };
    let taken = holder
        .and_then(Value::as_object_mut)
        .and_then(|members| members.remove(field));
    match taken {
        Some(Value::String(text)) => Uuid::parse_str(&text)
            .map_err(|_| ApiError::BadRequest(format!("{path}: {text:?} is not a UUID"))),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{path}: must be a UUID string"
        ))),
        None => Err(ApiError::BadRequest(format!("missing field `{path}`"))),
    }
}
