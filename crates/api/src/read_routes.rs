//! Query endpoints served from the read models of the `projector` crate:
//! a deal, the deal list, the board, the forecast and the follow-ups.
//!
//! Read-your-writes: every one of them takes `min_position=N` and waits (at most
//! [`READ_YOUR_WRITES_WAIT`]) until the projection it reads has applied position N, else answers
//! 503 with `Retry-After`.
//!
//! Time travel: every one of them also takes `as_of` or `as_of_position`, and `valid_at`
//! (`crate::time_travel`), and then answers from `projector::asof` instead of the tables, in the
//! same shape, with the fields that say what the answer covers.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use domain::opportunity::{FollowUpStatus, OpportunityStatus};
use domain::values::{ForecastCategory, OpportunityId, PipelineSlug, StageName};
use projector::analytics::ProbabilityModel;
use projector::rules::{DealView, Granularity, ReadModel};
use projector::{Projection, ProjectorError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::analytics_routes;
use crate::extract::{Query, path_uuid};
use crate::problem::ApiError;
use crate::time_travel::{self, AsOfFields, DealAsOfFields};

/// How long a query with `min_position` waits for the read model before answering 503.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
const MAX_FOLLOW_UPS: i64 = 1000;

impl From<ProjectorError> for ApiError {
    fn from(error: ProjectorError) -> Self {
        if error.is_transient() {
            tracing::warn!(error = %error, "read model unavailable");
            ApiError::Unavailable("the read model is unavailable, retry later".to_owned())
        } else {
            ApiError::Internal(Box::new(error))
        }
    }
}

/// Makes sure the read-model tables exist, once per process.
pub(crate) async fn ensure_read_models(app: &AppState) -> Result<(), ApiError> {
    let pool = app.handler.store().pool();
    app.read_models_migrated
        .get_or_try_init(|| projector::migrate(pool))
        .await?;
    Ok(())
}

/// Makes sure the read-model tables exist, then waits for `min_position`.
async fn ready(
    app: &AppState,
    projection: Projection,
    min_position: Option<i64>,
) -> Result<(), ApiError> {
    let pool = app.handler.store().pool();
    ensure_read_models(app).await?;
    let Some(position) = min_position else {
        return Ok(());
    };
    if position < 0 {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: "min_position: must not be negative".to_owned(),
        });
    }
    // Every position a command answers with is committed, so one beyond the head names a write
    // that never happened: no read model will ever reach it, and waiting would only delay the
    // client's error.
    let head = app.handler.store().head_position().await?;
    if position > head {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: format!(
                "min_position: {position} is beyond the last committed position {head}"
            ),
        });
    }
    if projector::read::wait_for(pool, projection, position, app.read_your_writes_wait).await? {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "the {projection} read model has not applied position {position} yet, retry later"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionQuery {
    min_position: Option<i64>,
    as_of: Option<String>,
    as_of_position: Option<String>,
    valid_at: Option<String>,
    probability: Option<String>,
}

#[derive(Serialize)]
pub struct FollowUpView {
    id: Uuid,
    kind: String,
    due_at: DateTime<Utc>,
    status: FollowUpStatus,
}

#[derive(Serialize)]
pub struct OpportunityView {
    id: OpportunityId,
    name: String,
    lead_id: Option<Uuid>,
    pipeline: String,
    stage: String,
    status: OpportunityStatus,
    amount: i64,
    currency: String,
    probability: u8,
    weighted_amount: i64,
    forecast_category: ForecastCategory,
    owner: String,
    expected_close_date: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<String>,
    entered_stage_at: DateTime<Utc>,
    /// Whole seconds spent in each stage, the current stint of an open deal up to now.
    time_in_stage: BTreeMap<String, i64>,
    last_activity_at: Option<DateTime<Utc>>,
    next_follow_up_at: Option<DateTime<Utc>>,
    open_follow_ups: usize,
    follow_ups: Vec<FollowUpView>,
    version: i64,
    /// The position of the last event reflected here.
    position: i64,
    /// Set on an answer from history.
    #[serde(flatten)]
    as_of: Option<DealAsOfFields>,
}

impl OpportunityView {
    fn of(deal: &DealView, now: DateTime<Utc>) -> Self {
        OpportunityView {
            id: OpportunityId(deal.id),
            name: deal.name.to_string(),
            lead_id: deal.lead_id,
            pipeline: deal.pipeline.to_string(),
            stage: deal.stage.to_string(),
            status: deal.status,
            amount: deal.amount.minor_units(),
            currency: deal.currency.to_string(),
            probability: deal.probability().percent(),
            weighted_amount: deal.weighted_amount(),
            forecast_category: deal.forecast_category(),
            owner: deal.owner.to_string(),
            expected_close_date: deal.expected_close_date,
            closed_at: deal.closed_at,
            close_reason: deal.close_reason.as_ref().map(ToString::to_string),
            entered_stage_at: deal.entered_stage_at,
            time_in_stage: deal
                .time_in_stage_ms(now)
                .into_iter()
                .map(|(stage, millis)| (stage.to_string(), millis / 1000))
                .collect(),
            last_activity_at: deal.last_activity_at,
            next_follow_up_at: deal.next_follow_up_at(),
            open_follow_ups: deal.open_follow_ups(),
            follow_ups: deal
                .follow_ups
                .iter()
                .map(|(id, follow_up)| FollowUpView {
                    id: *id,
                    kind: follow_up.kind.to_string(),
                    due_at: follow_up.due_at,
                    status: follow_up.status,
                })
                .collect(),
            version: deal.version,
            position: deal.position,
            as_of: None,
        }
    }
}

/// `GET /v1/opportunities/{id}` from the pipeline read model. A deal the read model does not hold
/// yet is folded from its stream with the same rules, so that a deal that exists is never a 404.
pub async fn opportunity(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PositionQuery>,
) -> Result<Json<OpportunityView>, ApiError> {
    let id = OpportunityId(path_uuid("opportunity", &id)?);
    let model = analytics_routes::probability_model(&query.probability)?;
    let horizon = time_travel::horizon(
        &app,
        query.as_of.as_deref(),
        query.as_of_position.as_deref(),
        query.valid_at.as_deref(),
    )
    .await?;
    ready(&app, Projection::Pipeline, query.min_position).await?;
    if let Some(horizon) = horizon {
        let (deal, covered) = projector::asof::deal(app.handler.store(), id.0, horizon).await?;
        let deal = deal.ok_or_else(|| {
            ApiError::NotFound(format!(
                "opportunity {id} not found as of position {}",
                covered.position
            ))
        })?;
        let deal = match model {
            ProbabilityModel::Stage => deal,
            ProbabilityModel::Historical => {
                analytics_routes::historical(&app, Some((horizon, covered)))
                    .await?
                    .rates
                    .reweigh(&deal)
            }
        };
        let mut view = OpportunityView::of(
            &deal,
            covered.instant().unwrap_or_else(|| app.handler.now()),
        );
        view.as_of = Some(DealAsOfFields::new(horizon, covered));
        return Ok(Json(view));
    }
    let pool = app.handler.store().pool();
    let deal = match projector::read::deal(pool, id.0).await? {
        Some(deal) => deal,
        None => {
            let events = app.handler.store().read_stream(&id.stream_id()).await?;
            let mut model = ReadModel::default();
            events.iter().for_each(|event| model.apply(event));
            model
                .deals
                .remove(&id.0)
                .ok_or_else(|| ApiError::NotFound(format!("opportunity {id} not found")))?
        }
    };
    let deal = match model {
        ProbabilityModel::Stage => deal,
        ProbabilityModel::Historical => analytics_routes::historical(&app, None)
            .await?
            .rates
            .reweigh(&deal),
    };
    Ok(Json(OpportunityView::of(&deal, app.handler.now())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    stage: Option<String>,
    owner: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    min_position: Option<i64>,
    as_of: Option<String>,
    as_of_position: Option<String>,
    valid_at: Option<String>,
    probability: Option<String>,
}

#[derive(Serialize)]
pub struct OpportunityList {
    opportunities: Vec<OpportunityView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    /// Set on an answer from history.
    #[serde(flatten)]
    as_of: Option<AsOfFields>,
}

/// Cursors are opaque to clients; today they carry the last id of the page.
const CURSOR_PREFIX: &str = "o1";

fn encode_cursor(id: Uuid) -> String {
    format!("{CURSOR_PREFIX}{}", id.simple())
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|rest| Uuid::try_parse(rest).ok())
        .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor this API handed out".to_owned()))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

/// `GET /v1/opportunities?stage=&owner=&status=&limit=&cursor=`
pub async fn opportunities(
    State(app): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<OpportunityList>, ApiError> {
    let model = analytics_routes::probability_model(&query.probability)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: format!("limit: must be from 1 to {MAX_PAGE}"),
        });
    }
    let status = non_empty(query.status);
    if let Some(status) = &status {
        if !matches!(status.as_str(), "open" | "won" | "lost") {
            return Err(ApiError::Unprocessable {
                rule: "invalid-value",
                detail: format!("status: {status:?} is not one of open, won, lost"),
            });
        }
    }
    let stage = non_empty(query.stage)
        .map(|stage| StageName::parse(&stage).map(|_| stage))
        .transpose()?;
    let after = non_empty(query.cursor)
        .map(|cursor| decode_cursor(&cursor))
        .transpose()?;
    let horizon = time_travel::horizon(
        &app,
        query.as_of.as_deref(),
        query.as_of_position.as_deref(),
        query.valid_at.as_deref(),
    )
    .await?;
    ready(&app, Projection::Pipeline, query.min_position).await?;
    let filter = projector::read::DealFilter {
        stage,
        owner: non_empty(query.owner),
        status,
        after,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let (mut deals, covered) = match horizon {
        Some(horizon) => {
            let (deals, covered) =
                projector::asof::deals(app.handler.store(), &filter, horizon).await?;
            (deals, Some((horizon, covered)))
        }
        None => (
            projector::read::deals(app.handler.store().pool(), &filter).await?,
            None,
        ),
    };
    if model == ProbabilityModel::Historical {
        let rates = analytics_routes::historical(&app, covered).await?.rates;
        deals = deals.iter().map(|deal| rates.reweigh(deal)).collect();
    }
    let more = deals.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    deals.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| deals.last().map(|deal| encode_cursor(deal.id)))
        .flatten();
    let now = covered
        .and_then(|(_, covered)| covered.instant())
        .unwrap_or_else(|| app.handler.now());
    Ok(Json(OpportunityList {
        opportunities: deals
            .iter()
            .map(|deal| OpportunityView::of(deal, now))
            .collect(),
        next_cursor,
        as_of: covered.map(|(horizon, covered)| AsOfFields::new(horizon, covered)),
    }))
}

#[derive(Serialize)]
pub struct BoardTotal {
    currency: String,
    count: i64,
    amount: i128,
    weighted_amount: i128,
}

#[derive(Serialize)]
pub struct BoardColumn {
    stage: String,
    totals: Vec<BoardTotal>,
}

#[derive(Serialize)]
pub struct Board {
    pipeline: String,
    columns: Vec<BoardColumn>,
    /// Set on an answer from history.
    #[serde(flatten)]
    as_of: Option<AsOfFields>,
}

/// `GET /v1/pipelines/{slug}/board`: columns in the pipeline's stage order, empty stages
/// included; stages a revision removed but that still hold deals follow at the end.
pub async fn board(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<PositionQuery>,
) -> Result<Json<Board>, ApiError> {
    let slug = PipelineSlug::parse(&slug)
        .map_err(|_| ApiError::NotFound(format!("pipeline {slug:?} not found")))?;
    let model = analytics_routes::probability_model(&query.probability)?;
    let horizon = time_travel::horizon(
        &app,
        query.as_of.as_deref(),
        query.as_of_position.as_deref(),
        query.valid_at.as_deref(),
    )
    .await?;
    ready(&app, Projection::Pipeline, query.min_position).await?;
    let (definition, cells, covered) = match horizon {
        Some(horizon) => {
            let (cells, covered) =
                projector::asof::board(app.handler.store(), slug.as_str(), horizon).await?;
            let definition = time_travel::pipeline_as_of(&app, &slug, horizon, covered).await?;
            (definition, cells, Some((horizon, covered)))
        }
        None => {
            let definition = app
                .handler
                .load_pipeline(&slug)
                .await?
                .state
                .ok_or_else(|| ApiError::NotFound(format!("pipeline {slug} not found")))?;
            let cells = projector::read::board(app.handler.store().pool(), slug.as_str()).await?;
            (Some(definition), cells, None)
        }
    };
    let cells = match model {
        ProbabilityModel::Stage => cells,
        ProbabilityModel::Historical => {
            let weighed = analytics_routes::historical(&app, covered).await?.model;
            projector::asof::board_cells(weighed.board(), slug.as_str())?
        }
    };
    let mut columns: Vec<BoardColumn> = definition
        .iter()
        .flat_map(|definition| &definition.stages)
        .map(|stage| BoardColumn {
            stage: stage.name.to_string(),
            totals: Vec::new(),
        })
        .collect();
    for cell in cells {
        let index = match columns.iter().position(|column| column.stage == cell.stage) {
            Some(index) => index,
            None => {
                columns.push(BoardColumn {
                    stage: cell.stage.clone(),
                    totals: Vec::new(),
                });
                columns.len() - 1
            }
        };
        columns[index].totals.push(BoardTotal {
            currency: cell.currency,
            count: cell.count,
            amount: cell.amount,
            weighted_amount: cell.weighted_amount,
        });
    }
    Ok(Json(Board {
        pipeline: slug.to_string(),
        columns,
        as_of: covered.map(|(horizon, covered)| AsOfFields::new(horizon, covered)),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    period: Option<String>,
    owner: Option<String>,
    pipeline: Option<String>,
    currency: Option<String>,
    min_position: Option<i64>,
    as_of: Option<String>,
    as_of_position: Option<String>,
    valid_at: Option<String>,
    probability: Option<String>,
}

#[derive(Serialize)]
pub struct ForecastRow {
    period: String,
    owner: String,
    pipeline: String,
    currency: String,
    open_count: i64,
    pipeline_amount: i128,
    weighted_amount: i128,
    commit: i128,
    best_case: i128,
    closed_won: i128,
    closed_lost: i128,
}

#[derive(Serialize)]
pub struct Forecast {
    period: &'static str,
    rows: Vec<ForecastRow>,
    /// Set on an answer from history.
    #[serde(flatten)]
    as_of: Option<AsOfFields>,
}

/// `GET /v1/forecast?period=month|quarter&owner=&pipeline=&currency=`
pub async fn forecast(
    State(app): State<AppState>,
    Query(query): Query<ForecastQuery>,
) -> Result<Json<Forecast>, ApiError> {
    let granularity = match non_empty(query.period) {
        None => Granularity::Month,
        Some(period) => Granularity::parse(&period).ok_or_else(|| ApiError::Unprocessable {
            rule: "invalid-value",
            detail: format!("period: {period:?} is not one of month, quarter"),
        })?,
    };
    let model = analytics_routes::probability_model(&query.probability)?;
    let horizon = time_travel::horizon(
        &app,
        query.as_of.as_deref(),
        query.as_of_position.as_deref(),
        query.valid_at.as_deref(),
    )
    .await?;
    ready(&app, Projection::Forecast, query.min_position).await?;
    let filter = projector::read::ForecastFilter {
        owner: non_empty(query.owner),
        pipeline: non_empty(query.pipeline),
        currency: non_empty(query.currency),
    };
    let (rows, covered) = match horizon {
        Some(horizon) => {
            let (rows, covered) =
                projector::asof::forecast(app.handler.store(), granularity, &filter, horizon)
                    .await?;
            (rows, Some((horizon, covered)))
        }
        None => (
            projector::read::forecast(app.handler.store().pool(), granularity, &filter).await?,
            None,
        ),
    };
    let rows = match model {
        ProbabilityModel::Stage => rows,
        ProbabilityModel::Historical => {
            let weighed = analytics_routes::historical(&app, covered).await?.model;
            projector::asof::forecast_answer(&weighed.forecast(), granularity, &filter)?
        }
    };
    Ok(Json(Forecast {
        as_of: covered.map(|(horizon, covered)| AsOfFields::new(horizon, covered)),
        period: granularity.as_str(),
        rows: rows
            .into_iter()
            .map(|row| ForecastRow {
                period: row.period,
                owner: row.owner,
                pipeline: row.pipeline,
                currency: row.currency,
                open_count: row.open_count,
                pipeline_amount: row.pipeline_amount,
                weighted_amount: row.weighted_amount,
                commit: row.commit,
                best_case: row.best_case,
                closed_won: row.closed_won,
                closed_lost: row.closed_lost,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpQuery {
    owner: Option<String>,
    status: Option<String>,
    min_position: Option<i64>,
    as_of: Option<String>,
    as_of_position: Option<String>,
    valid_at: Option<String>,
}

#[derive(Serialize)]
pub struct FollowUpItem {
    id: Uuid,
    opportunity_id: Uuid,
    kind: String,
    due_at: DateTime<Utc>,
    status: String,
    owner: String,
}

#[derive(Serialize)]
pub struct FollowUps {
    follow_ups: Vec<FollowUpItem>,
    /// Set on an answer from history.
    #[serde(flatten)]
    as_of: Option<AsOfFields>,
}

/// `GET /v1/follow-ups?owner=&status=open|due`: without a status, both open and due ones.
pub async fn follow_ups(
    State(app): State<AppState>,
    Query(query): Query<FollowUpQuery>,
) -> Result<Json<FollowUps>, ApiError> {
    let statuses: &[&str] = match non_empty(query.status).as_deref() {
        None => &["open", "due"],
        Some("open") => &["open"],
        Some("due") => &["due"],
        Some(other) => {
            return Err(ApiError::Unprocessable {
                rule: "invalid-value",
                detail: format!("status: {other:?} is not one of open, due"),
            });
        }
    };
    let horizon = time_travel::horizon(
        &app,
        query.as_of.as_deref(),
        query.as_of_position.as_deref(),
        query.valid_at.as_deref(),
    )
    .await?;
    ready(&app, Projection::Pipeline, query.min_position).await?;
    let owner = non_empty(query.owner);
    let (rows, covered) = match horizon {
        Some(horizon) => {
            let (rows, covered) = projector::asof::follow_ups(
                app.handler.store(),
                owner.as_deref(),
                statuses,
                MAX_FOLLOW_UPS,
                horizon,
            )
            .await?;
            (rows, Some((horizon, covered)))
        }
        None => (
            projector::read::follow_ups(
                app.handler.store().pool(),
                owner.as_deref(),
                statuses,
                MAX_FOLLOW_UPS,
            )
            .await?,
            None,
        ),
    };
    Ok(Json(FollowUps {
        as_of: covered.map(|(horizon, covered)| AsOfFields::new(horizon, covered)),
        follow_ups: rows
            .into_iter()
            .map(|row| FollowUpItem {
                id: row.id,
                opportunity_id: row.opportunity_id,
                kind: row.kind,
                due_at: row.due_at,
                status: row.status,
                owner: row.owner,
            })
            .collect(),
    }))
}
