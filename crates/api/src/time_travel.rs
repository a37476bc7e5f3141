//! Time travel on the read endpoints (docs/forecasting.md): the `as_of`, `as_of_position` and
//! `valid_at` parameters, the fields every answer from history carries, and
//! `GET /v1/forecast/trend`.
//!
//! The answers themselves come from `projector::asof`, which folds the store through the
//! projector's own rules; this module only parses, checks and shapes them.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::codec;
use domain::decider::Decider;
use domain::pipeline::{Pipeline, PipelineDefinition, PipelineEvent};
use domain::values::PipelineSlug;
use projector::analytics::{Axis, ProbabilityModel, Timeline};
use projector::asof::{Covered, Horizon, Known};
use projector::rules::{ForecastFigures, ForecastKey, Month};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::Query;
use crate::problem::ApiError;
use axum::Json;
use axum::extract::State;

/// The instant of each axis an answer from history was asked for.
#[derive(Serialize)]
pub struct Instants {
    /// The instant the answer stands at: the `as_of` asked for, or for `as_of_position` the
    /// `recorded_at` of the event at that position; `null` before the first event. Absent when
    /// neither was asked for (`valid_at` alone: everything known now).
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<Option<DateTime<Utc>>>,
    /// The `valid_at` asked for; absent when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_at: Option<DateTime<Utc>>,
}

impl Instants {
    fn of(horizon: Horizon, covered: Covered) -> Instants {
        Instants {
            as_of: (horizon.known != Known::Everything).then_some(covered.as_of),
            valid_at: covered.valid_at,
        }
    }
}

/// What an answer from history says it covers.
#[derive(Serialize)]
pub struct AsOfFields {
    #[serde(flatten)]
    instants: Instants,
    /// The last position included.
    position: i64,
}

impl AsOfFields {
    pub fn new(horizon: Horizon, covered: Covered) -> Self {
        AsOfFields {
            instants: Instants::of(horizon, covered),
            position: covered.position,
        }
    }
}

/// The same for one deal, whose own `position` is already the position of its last event.
#[derive(Serialize)]
pub struct DealAsOfFields {
    #[serde(flatten)]
    instants: Instants,
    as_of_position: i64,
}

impl DealAsOfFields {
    pub fn new(horizon: Horizon, covered: Covered) -> Self {
        DealAsOfFields {
            instants: Instants::of(horizon, covered),
            as_of_position: covered.position,
        }
    }
}

pub(crate) fn parse_instant(parameter: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| {
            ApiError::BadRequest(format!(
                "{parameter}: {text:?} is not an RFC 3339 instant such as \
                 2026-11-26T10:00:00Z ({error})"
            ))
        })
}

pub(crate) fn refuse_future(
    app: &AppState,
    parameter: &str,
    instant: DateTime<Utc>,
) -> Result<(), ApiError> {
    let now = app.handler.now();
    if instant > now {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: format!(
                "{parameter}: {} is in the future (now is {})",
                instant.to_rfc3339(),
                now.to_rfc3339()
            ),
        });
    }
    Ok(())
}

/// The horizon that `as_of`, `as_of_position` and `valid_at` ask for, if any. Unlike the
/// filters, an empty value is not absent: it is no instant and no position, hence 400.
pub async fn horizon(
    app: &AppState,
    as_of: Option<&str>,
    as_of_position: Option<&str>,
    valid_at: Option<&str>,
) -> Result<Option<Horizon>, ApiError> {
    let valid_at = match valid_at {
        None => None,
        Some(text) => {
            let instant = parse_instant("valid_at", text)?;
            refuse_future(app, "valid_at", instant)?;
            Some(instant)
        }
    };
    let known = known(app, as_of, as_of_position).await?;
    Ok(match (known, valid_at) {
        (None, None) => None,
        (known, valid_at) => Some(Horizon {
            known: known.unwrap_or(Known::Everything),
            valid_at,
        }),
    })
}

/// What `as_of` or `as_of_position` say was known, if either is given.
async fn known(
    app: &AppState,
    as_of: Option<&str>,
    as_of_position: Option<&str>,
) -> Result<Option<Known>, ApiError> {
    match (as_of, as_of_position) {
        (None, None) => Ok(None),
        // Each is well-formed on its own, so the pair is a rule no schema can express: 422.
        (Some(_), Some(_)) => Err(invalid(
            "as_of and as_of_position: give one of them, not both".to_owned(),
        )),
        (Some(text), None) => {
            let instant = parse_instant("as_of", text)?;
            refuse_future(app, "as_of", instant)?;
            Ok(Some(Known::Instant(instant)))
        }
        (None, Some(text)) => {
            let position: i64 = text.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "as_of_position: {text:?} is not a position (a whole number)"
                ))
            })?;
            if position < 0 {
                return Err(ApiError::Unprocessable {
                    rule: "invalid-value",
                    detail: "as_of_position: must not be negative".to_owned(),
                });
            }
            // A position past the head has not happened yet: the future, as for `as_of`.
            let head = app.handler.store().head_position().await?;
            if position > head {
                return Err(ApiError::Unprocessable {
                    rule: "invalid-value",
                    detail: format!(
                        "as_of_position: {position} is beyond the last committed position {head}"
                    ),
                });
            }
            Ok(Some(Known::Position(position)))
        }
    }
}

/// The pipeline's definition by the events up to `covered` that `horizon` counts: `None` if it
/// was not defined yet.
pub async fn pipeline_as_of(
    app: &AppState,
    slug: &PipelineSlug,
    horizon: Horizon,
    covered: Covered,
) -> Result<Option<PipelineDefinition>, ApiError> {
    let events = app.handler.store().read_stream(&slug.stream_id()).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("pipeline {slug} not found")));
    }
    let decoded = events
        .into_iter()
        .take_while(|event| event.position <= covered.position)
        .filter(|event| horizon.includes(event))
        .map(|event| {
            codec::decode::<PipelineEvent>(&event.event_type, event.schema_version, event.data)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(Pipeline::fold(&decoded))
}

/// More points than this in one trend is a 422.
pub const MAX_TREND_POINTS: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    period: Option<String>,
    currency: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    owner: Option<String>,
    pipeline: Option<String>,
    probability: Option<String>,
    time: Option<String>,
}

#[derive(Serialize)]
pub struct TrendPoint {
    at: DateTime<Utc>,
    open_count: i128,
    pipeline_amount: i128,
    weighted_amount: i128,
    best_case: i128,
    commit: i128,
    closed_won: i128,
    closed_lost: i128,
    /// The last position this point includes.
    position: i64,
}

#[derive(Serialize)]
pub struct Trend {
    period: String,
    currency: String,
    step: &'static str,
    time: &'static str,
    points: Vec<TrendPoint>,
}

pub(crate) fn required<'a>(
    value: &'a Option<String>,
    parameter: &str,
) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{parameter}: required")))
}

pub(crate) fn invalid(detail: String) -> ApiError {
    ApiError::Unprocessable {
        rule: "invalid-value",
        detail,
    }
}

/// `2026-12` (a month) or `2026-Q4` (a quarter): the months it covers.
pub(crate) fn parse_period(text: &str) -> Result<(Month, Month), ApiError> {
    let refused = || {
        invalid(format!(
            "period: {text:?} is not a month such as 2026-12 or a quarter such as 2026-Q4"
        ))
    };
    let (year, rest) = text.split_once('-').ok_or_else(refused)?;
    if year.len() != 4 {
        return Err(refused());
    }
    let year: i32 = year.parse().map_err(|_| refused())?;
    let (first, last) = match rest.strip_prefix('Q') {
        Some(quarter) => {
            let quarter: u32 = quarter.parse().map_err(|_| refused())?;
            if !(1..=4).contains(&quarter) || rest.len() != 2 {
                return Err(refused());
            }
            (quarter * 3 - 2, quarter * 3)
        }
        None => {
            let month: u32 = rest.parse().map_err(|_| refused())?;
            if !(1..=12).contains(&month) || rest.len() != 2 {
                return Err(refused());
            }
            (month, month)
        }
    };
    if !(1..=9999).contains(&year) {
        return Err(refused());
    }
    Ok((Month { year, month: first }, Month { year, month: last }))
}

pub(crate) fn parse_date(parameter: &str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        invalid(format!(
            "{parameter}: {text:?} is not a date such as 2026-10-01"
        ))
    })
}

/// The trend's points with the historical model: one forward fold over the log on the trend's
/// axis, each point weighed with the stage rates as of its own instant.
async fn historical_trend(
    app: &AppState,
    instants: &[DateTime<Utc>],
    time: &str,
    select: impl Fn(&ForecastKey) -> bool,
) -> Result<Vec<(ForecastFigures, i64)>, ApiError> {
    let axis = Axis::parse(time).unwrap_or(Axis::Recorded);
    let timeline = Timeline::load(app.handler.store(), Known::Everything, axis).await?;
    let calibration = app.calibration();
    let mut points = Vec::with_capacity(instants.len());
    timeline.fold_at(instants, |at, history| {
        let weighed = timeline.weighed(history, ProbabilityModel::Historical, at, calibration);
        let total = weighed
            .forecast()
            .iter()
            .filter(|(key, _)| select(key))
            .fold(ForecastFigures::default(), |total, (_, figures)| {
                total + *figures
            });
        points.push((total, weighed.position));
    });
    Ok(points)
}

/// `GET /v1/forecast/trend`: one period's forecast as of (`time=recorded`) or valid at
/// (`time=occurred`) 00:00:00Z of each day or week from `from` to `to`. Points after now are left
/// out: nothing was known of them yet.
pub async fn trend(
    State(app): State<AppState>,
    Query(query): Query<TrendQuery>,
) -> Result<Json<Trend>, ApiError> {
    let period = required(&query.period, "period")?;
    let currency = required(&query.currency, "currency")?;
    let from = parse_date("from", required(&query.from, "from")?)?;
    let to = parse_date("to", required(&query.to, "to")?)?;
    let (first_month, last_month) = parse_period(period)?;
    let (step_name, step) = match query.step.as_deref().filter(|step| !step.is_empty()) {
        None | Some("day") => ("day", Duration::days(1)),
        Some("week") => ("week", Duration::weeks(1)),
        Some(other) => return Err(invalid(format!("step: {other:?} is not one of day, week"))),
    };
    let (time, horizon): (_, fn(DateTime<Utc>) -> Horizon) =
        match query.time.as_deref().filter(|time| !time.is_empty()) {
            None | Some("recorded") => ("recorded", Horizon::as_of),
            Some("occurred") => ("occurred", Horizon::valid_at),
            Some(other) => {
                return Err(invalid(format!(
                    "time: {other:?} is not one of recorded, occurred"
                )));
            }
        };
    let model = crate::analytics_routes::probability_model(&query.probability)?;
    if to < from {
        return Err(invalid(format!("to: {to} is before from: {from}")));
    }
    let count = (to - from).num_days() / step.num_days() + 1;
    if count > MAX_TREND_POINTS as i64 {
        return Err(invalid(format!(
            "from {from} to {to} by {step_name} is {count} points, more than {MAX_TREND_POINTS}"
        )));
    }
    crate::read_routes::ensure_read_models(&app).await?;
    let now = app.handler.now();
    let first = from.and_time(chrono::NaiveTime::MIN).and_utc();
    let instants: Vec<DateTime<Utc>> = (0..count)
        .map_while(|index| first.checked_add_signed(step * index as i32))
        .take_while(|instant| *instant <= now)
        .collect();
    let horizons: Vec<Horizon> = instants.iter().copied().map(horizon).collect();
    let owner = query.owner.as_deref().filter(|owner| !owner.is_empty());
    let pipeline = query
        .pipeline
        .as_deref()
        .filter(|pipeline| !pipeline.is_empty());
    let select = |key: &ForecastKey| {
        (first_month..=last_month).contains(&key.month)
            && key.currency == currency
            && owner.is_none_or(|owner| key.owner == owner)
            && pipeline.is_none_or(|pipeline| key.pipeline == pipeline)
    };
    let totals = match model {
        ProbabilityModel::Stage => {
            projector::asof::forecast_trend(app.handler.store(), &horizons, select)
                .await?
                .into_iter()
                .map(|(figures, covered)| (figures, covered.position))
                .collect()
        }
        ProbabilityModel::Historical => historical_trend(&app, &instants, time, select).await?,
    };
    Ok(Json(Trend {
        period: period.to_owned(),
        currency: currency.to_owned(),
        step: step_name,
        time,
        points: instants
            .into_iter()
            .zip(totals)
            .map(|(at, (figures, position))| TrendPoint {
                at,
                open_count: figures.open_count,
                pipeline_amount: figures.pipeline_amount,
                weighted_amount: figures.weighted_amount,
                best_case: figures.best_case,
                commit: figures.commit,
                closed_won: figures.closed_won,
                closed_lost: figures.closed_lost,
                position,
            })
            .collect(),
    }))
}
