//! Command endpoints: parse the body into validated values (400 for shape, 422 for range), hand
//! the command to the command handler, answer `{id, version, position}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use commands::{CommandResult, OpportunityRequest, QualifiedOpportunity};
use domain::lead::{Criteria, Email, LeadProfile};
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::pipeline::{PipelineDefinition, StageDefinition};
use domain::values::{
    ActivityId, ActivityKind, Amount, Country, Currency, FollowUpId, ForecastCategory,
    InvalidValue, LeadId, OpportunityId, Outcome, PipelineSlug, Probability, StageName, Text,
    parse_date, parse_instant, parse_owner,
};
use serde::Deserialize;
use serde_json::Number;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{CommandRequest, path_uuid};
use crate::problem::ApiError;

type Answer = Result<(StatusCode, Json<CommandResult>), ApiError>;

fn ok(result: CommandResult) -> Answer {
    Ok((StatusCode::OK, Json(result)))
}

fn created(result: CommandResult) -> Answer {
    Ok((StatusCode::CREATED, Json(result)))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    name: String,
    company: Option<String>,
    email: Option<String>,
    country: Option<String>,
    source: Option<String>,
}

pub async fn capture_lead(
    State(app): State<AppState>,
    request: CommandRequest<LeadBody>,
) -> Answer {
    let body = &request.body;
    let profile = LeadProfile {
        name: Text::parse("name", &body.name, Text::SHORT)?,
        company: optional_text("company", &body.company, Text::SHORT)?,
        email: body.email.as_deref().map(Email::parse).transpose()?,
        country: body.country.as_deref().map(Country::parse).transpose()?,
        source: optional_text("source", &body.source, Text::SHORT)?,
    };
    let id = LeadId(Uuid::now_v7());
    created(
        app.handler
            .capture_lead(&request.context, id, profile)
            .await?,
    )
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

pub async fn qualify_lead(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<QualifyBody>,
) -> Answer {
    let lead_id = LeadId(path_uuid("lead", &id)?);
    let QualifyBody {
        criteria,
        opportunity,
    } = &request.body;
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
        expected_close_date: parse_date("expected_close_date", &opportunity.expected_close_date)?,
        owner: opportunity.owner.as_deref().map(parse_owner).transpose()?,
    };
    let opportunity_id = OpportunityId(Uuid::now_v7());
    let result = app
        .handler
        .qualify_lead(
            &request.context,
            lead_id,
            criteria,
            opportunity_id,
            draft,
            app.default_owner.clone(),
        )
        .await?;
    ok(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: String,
}

pub async fn disqualify_lead(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ReasonBody>,
) -> Answer {
    let lead_id = LeadId(path_uuid("lead", &id)?);
    let reason = Text::parse("reason", &request.body.reason, Text::LONG)?;
    ok(app
        .handler
        .disqualify_lead(&request.context, lead_id, reason)
        .await?)
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

pub async fn create_opportunity(
    State(app): State<AppState>,
    request: CommandRequest<OpportunityBody>,
) -> Answer {
    let body = &request.body;
    let opportunity = NewOpportunity {
        name: Text::parse("name", &body.name, Text::SHORT)?,
        lead_id: None,
        pipeline: pipeline_or_default(&body.pipeline)?,
        stage: body.stage.as_deref().map(StageName::parse).transpose()?,
        amount: amount(&body.amount)?,
        currency: Currency::parse(&body.currency)?,
        expected_close_date: parse_date("expected_close_date", &body.expected_close_date)?,
        owner: parse_owner(&body.owner)?,
    };
    let id = OpportunityId(Uuid::now_v7());
    created(
        app.handler
            .create_opportunity(&request.context, id, opportunity)
            .await?,
    )
}

async fn on_opportunity(
    app: &AppState,
    id: &str,
    context: &commands::CommandContext,
    request: OpportunityRequest,
) -> Result<CommandResult, ApiError> {
    let id = OpportunityId(path_uuid("opportunity", id)?);
    Ok(app.handler.handle_opportunity(context, id, request).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    stage: String,
    reason: Option<String>,
}

pub async fn change_stage(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<StageBody>,
) -> Answer {
    let change = OpportunityRequest::ChangeStage {
        stage: StageName::parse(&request.body.stage)?,
        reason: optional_text("reason", &request.body.reason, Text::LONG)?,
    };
    ok(on_opportunity(&app, &id, &request.context, change).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilityBody {
    probability: Option<Number>,
    forecast_category: Option<String>,
}

pub async fn override_probability(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ProbabilityBody>,
) -> Answer {
    let body = &request.body;
    let command = OpportunityCommand::OverrideProbability {
        probability: body.probability.as_ref().map(probability).transpose()?,
        forecast_category: body
            .forecast_category
            .as_deref()
            .map(ForecastCategory::parse_open)
            .transpose()?,
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    amount: Number,
    currency: String,
}

pub async fn change_amount(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<AmountBody>,
) -> Answer {
    let command = OpportunityCommand::ChangeAmount {
        amount: amount(&request.body.amount)?,
        currency: Currency::parse(&request.body.currency)?,
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseDateBody {
    expected_close_date: String,
}

pub async fn change_close_date(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<CloseDateBody>,
) -> Answer {
    let command = OpportunityCommand::ChangeCloseDate {
        expected_close_date: parse_date("expected_close_date", &request.body.expected_close_date)?,
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    owner: String,
}

pub async fn change_owner(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<OwnerBody>,
) -> Answer {
    let command = OpportunityCommand::ChangeOwner {
        owner: parse_owner(&request.body.owner)?,
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    kind: String,
    summary: String,
    occurred_at: Option<String>,
}

pub async fn log_activity(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ActivityBody>,
) -> Answer {
    let body = &request.body;
    let occurred_at = match &body.occurred_at {
        None => app.handler.now(),
        Some(text) => parse_instant("occurred_at", text)?,
    };
    let command = OpportunityCommand::LogActivity {
        activity_id: ActivityId(Uuid::now_v7()),
        kind: ActivityKind::parse(&body.kind)?,
        summary: Text::parse("summary", &body.summary, Text::LONG)?,
        occurred_at,
    };
    created(
        on_opportunity(
            &app,
            &id,
            &request.context,
            OpportunityRequest::Other(command),
        )
        .await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    outcome: String,
    reason: Option<String>,
}

pub async fn close(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<CloseBody>,
) -> Answer {
    let command = OpportunityCommand::Close {
        outcome: Outcome::parse(&request.body.outcome)?,
        reason: optional_text("reason", &request.body.reason, Text::LONG)?,
        closed_at: app.handler.now(),
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReopenBody {
    stage: Option<String>,
}

pub async fn reopen(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ReopenBody>,
) -> Answer {
    let reopen = OpportunityRequest::Reopen {
        stage: request
            .body
            .stage
            .as_deref()
            .map(StageName::parse)
            .transpose()?,
    };
    ok(on_opportunity(&app, &id, &request.context, reopen).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

pub async fn complete_follow_up(
    State(app): State<AppState>,
    Path((id, follow_up_id)): Path<(String, String)>,
    request: CommandRequest<EmptyBody>,
) -> Answer {
    let command = OpportunityCommand::CompleteFollowUp {
        follow_up_id: FollowUpId(path_uuid("follow-up", &follow_up_id)?),
    };
    ok(on_opportunity(
        &app,
        &id,
        &request.context,
        OpportunityRequest::Other(command),
    )
    .await?)
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

pub async fn define_pipeline(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    request: CommandRequest<PipelineBody>,
) -> Answer {
    let slug = PipelineSlug::parse(&slug)?;
    let stages = request
        .body
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
    let definition = PipelineDefinition::new(
        Text::parse("name", &request.body.name, Text::SHORT)?,
        stages,
    )?;
    ok(app
        .handler
        .define_pipeline(&request.context, &slug, definition)
        .await?)
}
