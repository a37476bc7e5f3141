//! Forecasting from history over HTTP: `GET /v1/analytics/win-rates`,
//! `GET /v1/analytics/forecast-accuracy`, `GET /v1/analytics/slippage`, `GET /v1/analytics/funnel`,
//! `GET /v1/work-queue`,
//! and the `probability=historical` parameter of the
//! board, forecast, trend and opportunity queries.
//!
//! The figures come from `projector::analytics`, which folds the store's log with the
//! projector's own fold; this module only parses, checks and shapes them.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::values::{PipelineSlug, parse_duration};
use projector::analytics::{
    self, Axis, Calibration, Period, ProbabilityModel, Rates, StageRate, Timeline,
};
use projector::asof::{Covered, Horizon, Known};
use projector::rules::ReadModel;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::extract::Query;
use crate::problem::ApiError;
use crate::time_travel::{
    invalid, parse_date, parse_instant, parse_period, refuse_future, required,
};

/// At most this many lead times in one accuracy query.
const MAX_LEAD_TIMES: usize = 100;

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

/// `probability=stage|historical`, `stage` when absent.
pub(crate) fn probability_model(value: &Option<String>) -> Result<ProbabilityModel, ApiError> {
    match non_empty(value) {
        None => Ok(ProbabilityModel::Stage),
        Some(text) => ProbabilityModel::parse(text).ok_or_else(|| {
            invalid(format!(
                "probability: {text:?} is not one of stage, historical"
            ))
        }),
    }
}

/// `time=recorded|occurred`, `recorded` when absent.
pub(crate) fn axis(value: &Option<String>) -> Result<Axis, ApiError> {
    match non_empty(value) {
        None => Ok(Axis::Recorded),
        Some(text) => Axis::parse(text)
            .ok_or_else(|| invalid(format!("time: {text:?} is not one of recorded, occurred"))),
    }
}

/// The historical model of a query: every deal as of its horizon (live when `None`) weighed
/// with the stage rates as of the answer's instant (now for a live query), and those rates.
pub(crate) struct Historical {
    pub model: ReadModel,
    pub rates: Rates,
}

pub(crate) async fn historical(
    app: &AppState,
    answered: Option<(Horizon, Covered)>,
) -> Result<Historical, ApiError> {
    let at = answered
        .and_then(|(_, covered)| covered.instant())
        .unwrap_or_else(|| app.handler.now());
    let (model, rates) = analytics::historical(
        app.handler.store(),
        answered.map(|(horizon, _)| horizon),
        at,
        app.calibration(),
    )
    .await?;
    Ok(Historical { model, rates })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinRatesQuery {
    pipeline: Option<String>,
    as_of: Option<String>,
    lookback: Option<String>,
    time: Option<String>,
}

#[derive(Serialize)]
pub struct StageWinRate {
    stage: String,
    default_probability: u8,
    won: u64,
    lost: u64,
    historical_probability: u8,
}

impl From<StageRate> for StageWinRate {
    fn from(rate: StageRate) -> Self {
        StageWinRate {
            stage: rate.stage.to_string(),
            default_probability: rate.default_probability.percent(),
            won: rate.won,
            lost: rate.lost,
            historical_probability: rate.historical_probability.percent(),
        }
    }
}

#[derive(Serialize)]
pub struct WinRates {
    pipeline: String,
    as_of: DateTime<Utc>,
    lookback: String,
    prior_weight: u32,
    time: &'static str,
    stages: Vec<StageWinRate>,
}

/// `lookback`: digits and a unit is its shape (400 otherwise); one longer than the longest
/// duration accepted is out of range (422).
fn lookback(value: &Option<String>) -> Result<(String, TimeDelta), ApiError> {
    let Some(text) = non_empty(value) else {
        return Ok(("365d".to_owned(), analytics::DEFAULT_LOOKBACK));
    };
    let shaped = text
        .strip_suffix(['s', 'm', 'h', 'd'])
        .is_some_and(|number| {
            !number.is_empty() && number.bytes().all(|byte| byte.is_ascii_digit())
        });
    match parse_duration(text) {
        Ok(duration) => Ok((text.to_owned(), duration)),
        Err(problem) if shaped => Err(invalid(format!("lookback: {problem}"))),
        Err(problem) => Err(ApiError::BadRequest(format!("lookback: {problem}"))),
    }
}

/// `GET /v1/analytics/win-rates?pipeline=&as_of=&lookback=&time=`: each stage's won and lost
/// closes in the look-back window before `as_of` (now when absent) and its historical
/// probability. A pipeline defined later than `as_of` has no stages yet.
pub async fn win_rates(
    State(app): State<AppState>,
    Query(query): Query<WinRatesQuery>,
) -> Result<Json<WinRates>, ApiError> {
    let pipeline = required(&query.pipeline, "pipeline")?;
    let (lookback_text, lookback) = lookback(&query.lookback)?;
    let axis = axis(&query.time)?;
    let at = match non_empty(&query.as_of) {
        None => app.handler.now(),
        Some(text) => {
            let instant = parse_instant("as_of", text)?;
            refuse_future(&app, "as_of", instant)?;
            instant
        }
    };
    let not_found = || ApiError::NotFound(format!("pipeline {pipeline:?} not found"));
    let slug = PipelineSlug::parse(pipeline).map_err(|_| not_found())?;
    if app
        .handler
        .store()
        .read_stream(&slug.stream_id())
        .await?
        .is_empty()
    {
        return Err(not_found());
    }
    let known = match axis {
        Axis::Recorded => Known::Instant(at),
        Axis::Occurred => Known::Everything,
    };
    let timeline = Timeline::load(app.handler.store(), known, axis).await?;
    let history = timeline.at(at);
    let calibration = Calibration {
        lookback,
        ..app.calibration()
    };
    let stages = timeline
        .win_rates(&history, slug.as_str(), at, calibration)
        .unwrap_or_default();
    Ok(Json(WinRates {
        pipeline: slug.to_string(),
        as_of: at,
        lookback: lookback_text,
        prior_weight: calibration.prior_weight,
        time: axis.as_str(),
        stages: stages.into_iter().map(StageWinRate::from).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyQuery {
    period: Option<String>,
    currency: Option<String>,
    lead_days: Option<String>,
    probability: Option<String>,
    time: Option<String>,
}

#[derive(Serialize)]
pub struct AccuracyRow {
    lead_days: i64,
    as_of: DateTime<Utc>,
    weighted_amount: i128,
    commit: i128,
    best_case: i128,
    actual_closed_won: i128,
    error: i128,
    abs_pct_error: Option<f64>,
}

#[derive(Serialize)]
pub struct Accuracy {
    period: String,
    currency: String,
    probability: &'static str,
    time: &'static str,
    rows: Vec<AccuracyRow>,
}

/// `0,30,90`: whole numbers of days, none negative. Digits and commas are its shape (400
/// otherwise); a number past 65,535 days, or more than [`MAX_LEAD_TIMES`] of them, is out of
/// range (422).
fn lead_days(value: &Option<String>) -> Result<Vec<i64>, ApiError> {
    let Some(text) = non_empty(value) else {
        return Ok(vec![0, 30, 90]);
    };
    let parts: Vec<&str> = text.split(',').collect();
    if parts
        .iter()
        .any(|part| part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Err(ApiError::BadRequest(format!(
            "lead_days: {text:?} is not a comma-separated list of whole numbers of days, such as 0,30,90"
        )));
    }
    if parts.len() > MAX_LEAD_TIMES {
        return Err(invalid(format!(
            "lead_days: {} lead times, more than {MAX_LEAD_TIMES}",
            parts.len()
        )));
    }
    parts
        .iter()
        .map(|part| {
            part.parse::<u16>()
                .map(i64::from)
                .map_err(|_| invalid(format!("lead_days: {part} is more than {} days", u16::MAX)))
        })
        .collect()
}

/// `GET /v1/analytics/forecast-accuracy`: the forecast of a period made `lead_days` before its
/// first day beside what was closed won in it as known now. Lead times whose instant is still
/// to come are left out: no forecast was made then yet.
pub async fn forecast_accuracy(
    State(app): State<AppState>,
    Query(query): Query<AccuracyQuery>,
) -> Result<Json<Accuracy>, ApiError> {
    let period_text = required(&query.period, "period")?;
    let (first, last) = parse_period(period_text)?;
    let currency = required(&query.currency, "currency")?;
    let lead_days = lead_days(&query.lead_days)?;
    let model = probability_model(&query.probability)?;
    let axis = axis(&query.time)?;
    let now = app.handler.now();
    let timeline = Timeline::load(app.handler.store(), Known::Everything, axis).await?;
    let period = Period { first, last };
    let rows = analytics::accuracy(
        &timeline,
        &[(period, currency.to_owned())],
        &lead_days,
        model,
        app.calibration(),
        now,
    );
    Ok(Json(Accuracy {
        period: period_text.to_owned(),
        currency: currency.to_owned(),
        probability: model.as_str(),
        time: axis.as_str(),
        rows: rows
            .into_iter()
            .flatten()
            .filter(|row| row.as_of <= now)
            .map(|row| AccuracyRow {
                lead_days: row.lead_days,
                as_of: row.as_of,
                weighted_amount: row.weighted_amount,
                commit: row.commit,
                best_case: row.best_case,
                actual_closed_won: row.actual_closed_won,
                error: row.error,
                abs_pct_error: row.abs_pct_error,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlippageQuery {
    period: Option<String>,
    as_of: Option<String>,
    time: Option<String>,
}

#[derive(Serialize)]
pub struct SlippedDeal {
    opportunity_id: Uuid,
    name: String,
    owner: String,
    amount: i64,
    currency: String,
    expected_close_date_at_start: NaiveDate,
    expected_close_date: NaiveDate,
}

#[derive(Serialize)]
pub struct Slippage {
    period: String,
    as_of: DateTime<Utc>,
    time: &'static str,
    deals: Vec<SlippedDeal>,
}

/// `GET /v1/analytics/slippage?period=&as_of=&time=`: the deals expected in the period when it
/// began whose expected close date lies outside it as of `as_of` (now when absent).
pub async fn slippage(
    State(app): State<AppState>,
    Query(query): Query<SlippageQuery>,
) -> Result<Json<Slippage>, ApiError> {
    let period_text = required(&query.period, "period")?;
    let (first, last) = parse_period(period_text)?;
    let axis = axis(&query.time)?;
    let at = match non_empty(&query.as_of) {
        None => app.handler.now(),
        Some(text) => {
            let instant = parse_instant("as_of", text)?;
            refuse_future(&app, "as_of", instant)?;
            instant
        }
    };
    let known = match axis {
        Axis::Recorded => Known::Instant(at),
        Axis::Occurred => Known::Everything,
    };
    let timeline = Timeline::load(app.handler.store(), known, axis).await?;
    let deals = analytics::slippage(&timeline, Period { first, last }, at)
        .into_iter()
        .map(|slipped| SlippedDeal {
            opportunity_id: slipped.deal.id,
            name: slipped.deal.name.to_string(),
            owner: slipped.deal.owner.to_string(),
            amount: slipped.deal.amount.minor_units(),
            currency: slipped.deal.currency.to_string(),
            expected_close_date_at_start: slipped.expected_close_date_at_start,
            expected_close_date: slipped.deal.expected_close_date,
        })
        .collect();
    Ok(Json(Slippage {
        period: period_text.to_owned(),
        as_of: at,
        time: axis.as_str(),
        deals,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkQueueQuery {
    owner: Option<String>,
}

#[derive(Serialize)]
pub struct WorkItem {
    opportunity_id: Uuid,
    name: String,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    due_at: Option<DateTime<Utc>>,
    currency: String,
    weighted_amount: i64,
}

#[derive(Serialize)]
pub struct WorkQueue {
    items: Vec<WorkItem>,
}

/// `GET /v1/work-queue?owner=`: what needs doing now about the open deals, largest weighted
/// amount at stake first.
pub async fn work_queue(
    State(app): State<AppState>,
    Query(query): Query<WorkQueueQuery>,
) -> Result<Json<WorkQueue>, ApiError> {
    let now = app.handler.now();
    let timeline = Timeline::load(app.handler.store(), Known::Everything, Axis::Recorded).await?;
    let history = timeline.at(DateTime::<Utc>::MAX_UTC);
    let items = analytics::work_queue(&history.model, non_empty(&query.owner), now)
        .into_iter()
        .map(|item| WorkItem {
            opportunity_id: item.deal.id,
            name: item.deal.name.to_string(),
            reason: item.reason.as_str(),
            due_at: item.due_at,
            currency: item.deal.currency.to_string(),
            weighted_amount: item.deal.weighted_amount(),
        })
        .collect();
    Ok(Json(WorkQueue { items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    pipeline: Option<String>,
    from: Option<String>,
    to: Option<String>,
    owner: Option<String>,
    currency: Option<String>,
}

#[derive(Serialize)]
pub struct FunnelStage {
    stage: String,
    entered: u64,
    advanced: u64,
    won: u64,
    lost: u64,
    open: u64,
    conversion_to_won_pct: Option<f64>,
    median_days_in_stage: Option<f64>,
}

#[derive(Serialize)]
pub struct FunnelLeads {
    captured: u64,
    qualified: u64,
    disqualified: u64,
    converted: u64,
}

#[derive(Serialize)]
pub struct Velocity {
    currency: String,
    per_day: f64,
}

#[derive(Serialize)]
pub struct Funnel {
    pipeline: String,
    from: NaiveDate,
    to: NaiveDate,
    stages: Vec<FunnelStage>,
    leads: FunnelLeads,
    win_rate_pct: Option<f64>,
    median_cycle_days: Option<f64>,
    velocity: Vec<Velocity>,
}

/// `GET /v1/analytics/funnel?pipeline=&from=&to=&owner=&currency=`: the funnel of the days from
/// `from` to `to`, both included, by business time (`occurred_at`).
pub async fn funnel(
    State(app): State<AppState>,
    Query(query): Query<FunnelQuery>,
) -> Result<Json<Funnel>, ApiError> {
    let pipeline = required(&query.pipeline, "pipeline")?;
    let from = parse_date("from", required(&query.from, "from")?)?;
    let to = parse_date("to", required(&query.to, "to")?)?;
    if to < from {
        return Err(invalid(format!("to: {to} is before from: {from}")));
    }
    let not_found = || ApiError::NotFound(format!("pipeline {pipeline:?} not found"));
    let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = to
        .succ_opt()
        .ok_or_else(|| invalid(format!("to: {to} has no next day")))?
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let filter = analytics::FunnelFilter {
        pipeline: pipeline.to_owned(),
        from: start,
        to: end,
        owner: non_empty(&query.owner).map(str::to_owned),
        currency: non_empty(&query.currency).map(str::to_owned),
    };
    let timeline = Timeline::load(app.handler.store(), Known::Everything, Axis::Occurred).await?;
    let funnel = analytics::funnel(&timeline, &filter).ok_or_else(not_found)?;
    Ok(Json(Funnel {
        pipeline: pipeline.to_owned(),
        from,
        to,
        stages: funnel
            .stages
            .into_iter()
            .map(|stage| FunnelStage {
                stage: stage.stage.to_string(),
                entered: stage.entered,
                advanced: stage.advanced,
                won: stage.won,
                lost: stage.lost,
                open: stage.open,
                conversion_to_won_pct: stage.conversion_to_won_pct,
                median_days_in_stage: stage.median_days_in_stage,
            })
            .collect(),
        leads: FunnelLeads {
            captured: funnel.leads.captured,
            qualified: funnel.leads.qualified,
            disqualified: funnel.leads.disqualified,
            converted: funnel.leads.converted,
        },
        win_rate_pct: funnel.win_rate_pct,
        median_cycle_days: funnel.median_cycle_days,
        velocity: funnel
            .velocity
            .into_iter()
            .map(|(currency, per_day)| Velocity { currency, per_day })
            .collect(),
    }))
}
