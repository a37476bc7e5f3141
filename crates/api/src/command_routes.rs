//! Command endpoints: read the ids in the path, turn the body into a command with the one
//! conversion `dealstream import` uses too (`command_bodies`: 400 for shape, 422 for range), hand
//! it to the command handler, answer `{id, version, position}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use commands::CommandResult;
use domain::values::{FollowUpId, LeadId, OpportunityId, PipelineSlug};
use uuid::Uuid;

use crate::command_bodies::{
    ActivityBody, AmountBody, CloseBody, CloseDateBody, CommandBody, EmptyBody, Fresh, LeadBody,
    OpportunityBody, OwnerBody, PipelineBody, ProbabilityBody, QualifyBody, ReasonBody, ReopenBody,
    StageBody,
};
use crate::extract::{CommandRequest, path_uuid};
use crate::problem::ApiError;
use crate::{AppState, auth};

type Answer = Result<(StatusCode, Json<CommandResult>), ApiError>;

/// Converts the request's body on `target` and sends the command; a live request's "now" is the
/// handler's clock and anything it creates gets a new UUID v7.
async fn send<B: CommandBody>(
    app: &AppState,
    request: &CommandRequest<B>,
    target: B::Target,
    status: StatusCode,
) -> Answer {
    let fresh = Fresh {
        now: app.handler.now(),
        id: Uuid::now_v7(),
    };
    let mut command = request.body.command(target, &fresh)?;
    auth::check_ownership(app, &request.identity, &mut command).await?;
    let result = command
        .send(&app.handler, &request.context, &app.default_owner)
        .await?;
    Ok((status, Json(result)))
}

fn lead(id: &str) -> Result<LeadId, ApiError> {
    path_uuid("lead", id).map(LeadId)
}

fn deal(id: &str) -> Result<OpportunityId, ApiError> {
    path_uuid("opportunity", id).map(OpportunityId)
}

pub async fn capture_lead(
    State(app): State<AppState>,
    request: CommandRequest<LeadBody>,
) -> Answer {
    let id = LeadId(Uuid::now_v7());
    send(&app, &request, id, StatusCode::CREATED).await
}

pub async fn qualify_lead(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<QualifyBody>,
) -> Answer {
    let target = (lead(&id)?, OpportunityId(Uuid::now_v7()));
    send(&app, &request, target, StatusCode::OK).await
}

pub async fn disqualify_lead(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ReasonBody>,
) -> Answer {
    send(&app, &request, lead(&id)?, StatusCode::OK).await
}

pub async fn create_opportunity(
    State(app): State<AppState>,
    request: CommandRequest<OpportunityBody>,
) -> Answer {
    let id = OpportunityId(Uuid::now_v7());
    send(&app, &request, id, StatusCode::CREATED).await
}

pub async fn change_stage(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<StageBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn override_probability(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ProbabilityBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn change_amount(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<AmountBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn change_close_date(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<CloseDateBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn change_owner(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<OwnerBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn log_activity(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ActivityBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::CREATED).await
}

pub async fn close(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<CloseBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn reopen(
    State(app): State<AppState>,
    Path(id): Path<String>,
    request: CommandRequest<ReopenBody>,
) -> Answer {
    send(&app, &request, deal(&id)?, StatusCode::OK).await
}

pub async fn complete_follow_up(
    State(app): State<AppState>,
    Path((id, follow_up_id)): Path<(String, String)>,
    request: CommandRequest<EmptyBody>,
) -> Answer {
    let follow_up_id = FollowUpId(path_uuid("follow-up", &follow_up_id)?);
    send(&app, &request, (deal(&id)?, follow_up_id), StatusCode::OK).await
}

pub async fn define_pipeline(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    request: CommandRequest<PipelineBody>,
) -> Answer {
    let slug = PipelineSlug::parse(&slug)?;
    send(&app, &request, slug, StatusCode::OK).await
}
