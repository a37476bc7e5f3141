//! Forecasting from history: historical win rates per pipeline and stage, the forecast with those
//! rates in place of the stage defaults, and the accuracy of past forecasts against what was
//! actually won.
//!
//! Everything here is computed from the store's log, folded through [`ReadModel::apply`] (the
//! projector's one fold) with a little bookkeeping beside it: each pipeline's definitions and
//! each deal's latest close. Nothing is read from the read-model tables or their snapshots, whose
//! rows do not keep the closes a win rate needs, so an answer depends on nothing but the events
//! up to its instant and is the same whenever it is asked, and after any rebuild.
//!
//! A [`Timeline`] holds the known events sorted on one time axis: by position for
//! `time=recorded`, by `occurred_at` (then position) for `time=occurred`. Within one stream
//! `occurred_at` never decreases, so the second order folds every deal and pipeline from its own
//! events in stream order, as the position order does; it only interleaves streams differently.
//! [`Timeline::fold_at`] then visits many instants in one forward pass, which is what a backtest
//! over every past period needs. Read `win_rates` first.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::codec;
use domain::decider::Decider;
use domain::opportunity::{FollowUpStatus, OpportunityStatus};
use domain::pipeline::{Pipeline, PipelineDefinition, PipelineEvent};
use domain::values::{Outcome, Probability, StageName};
use eventstore::{EventStore, RecordedEvent};
use uuid::Uuid;

use crate::asof::{Horizon, Known};
use crate::error::ProjectorError;
use crate::rules::{DealView, ForecastFigures, ForecastKey, Month, ReadModel};

/// The prior weight `k` when the rules file does not set `[forecast] prior_weight`.
pub const DEFAULT_PRIOR_WEIGHT: u32 = 5;

/// The look-back when a query does not give one: a year.
pub const DEFAULT_LOOKBACK: TimeDelta = TimeDelta::days(365);

/// Which time an instant is read on: what the system knew then (`recorded_at`) or what had
/// happened by then according to everything known now (`occurred_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Recorded,
    Occurred,
}

impl Axis {
    pub fn parse(text: &str) -> Option<Axis> {
        match text {
            "recorded" => Some(Axis::Recorded),
            "occurred" => Some(Axis::Occurred),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Recorded => "recorded",
            Axis::Occurred => "occurred",
        }
    }

    fn time(self, event: &RecordedEvent) -> DateTime<Utc> {
        match self {
            Axis::Recorded => event.recorded_at,
            Axis::Occurred => event.occurred_at,
        }
    }
}

/// Which probability an open deal is weighted with when no override stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbabilityModel {
    /// Its stage's default probability, as recorded when it entered the stage.
    Stage,
    /// Its stage's historical win rate as of the query's instant.
    Historical,
}

impl ProbabilityModel {
    pub fn parse(text: &str) -> Option<ProbabilityModel> {
        match text {
            "stage" => Some(ProbabilityModel::Stage),
            "historical" => Some(ProbabilityModel::Historical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProbabilityModel::Stage => "stage",
            ProbabilityModel::Historical => "historical",
        }
    }
}

/// How historical win rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// Closes with `closed_at` in (T − lookback, T] count.
    pub lookback: TimeDelta,
    /// `k`: how many imaginary deals at the stage's default probability each rate starts from,
    /// so a stage with few closes stays near its default.
    pub prior_weight: u32,
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration {
            lookback: DEFAULT_LOOKBACK,
            prior_weight: DEFAULT_PRIOR_WEIGHT,
        }
    }
}

/// A deal's latest close as of the fold: what a win rate counts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Close {
    pipeline: String,
    outcome: Outcome,
    closed_at: DateTime<Utc>,
    /// Every stage the deal had been in when it closed, the one it closed from included.
    stages: BTreeSet<StageName>,
}

/// The fold of the events up to an instant: every deal's row, every pipeline's definition, and
/// each deal's latest close. A reopened deal keeps its latest close here: that close is still
/// the latest `OpportunityClosed` of its history until it is closed again.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub model: ReadModel,
    pipelines: BTreeMap<String, PipelineDefinition>,
    closes: BTreeMap<Uuid, Close>,
}

impl History {
    /// Folds one event. An undecodable pipeline event is skipped, as the read models skip a
    /// malformed opportunity event.
    pub fn apply(&mut self, event: &RecordedEvent) {
        self.model.apply(event);
        match event.category() {
            "pipeline" => {
                let slug = event.entity_id();
                if let Ok(decoded) = codec::decode::<PipelineEvent>(
                    &event.event_type,
                    event.schema_version,
                    event.data.clone(),
                ) {
                    let before = self.pipelines.remove(slug);
                    if let Some(after) = Pipeline::evolve(before, &decoded) {
                        self.pipelines.insert(slug.to_owned(), after);
                    }
                }
            }
            "opportunity" if event.event_type == "OpportunityClosed" => {
                if let Some(close) = self.closing(event) {
                    let (id, close) = close;
                    self.closes.insert(id, close);
                }
            }
            _ => {}
        }
    }

    /// The close the deal's row records right after its `OpportunityClosed` was folded.
    fn closing(&self, event: &RecordedEvent) -> Option<(Uuid, Close)> {
        let id = Uuid::parse_str(event.entity_id()).ok()?;
        let deal = self.model.deals.get(&id)?;
        let outcome = match deal.status {
            OpportunityStatus::Won => Outcome::Won,
            OpportunityStatus::Lost => Outcome::Lost,
            OpportunityStatus::Open => return None,
        };
        Some((
            id,
            Close {
                pipeline: deal.pipeline.to_string(),
                outcome,
                closed_at: deal.closed_at?,
                stages: deal.finished_stage_ms.keys().cloned().collect(),
            },
        ))
    }
}

/// One stage's historical win rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRate {
    pub stage: StageName,
    pub default_probability: Probability,
    pub won: u64,
    pub lost: u64,
    pub historical_probability: Probability,
}

/// `(won + k × d / 100) / (won + lost + k) × 100`, rounded to a whole percent with halves away
/// from zero: computed in integers as `(100 × won + k × d) / (won + lost + k)`, so no float
/// rounding can move a half. With no closes and no prior (`k = 0`) there is nothing to divide,
/// and the default stands.
pub fn historical_probability(
    won: u64,
    lost: u64,
    prior_weight: u32,
    default: Probability,
) -> Probability {
    let numerator =
        100 * u128::from(won) + u128::from(prior_weight) * u128::from(default.percent());
    let denominator = u128::from(won) + u128::from(lost) + u128::from(prior_weight);
    if denominator == 0 {
        return default;
    }
    let rounded = (2 * numerator + denominator) / (2 * denominator);
    // won ≤ won + lost and d ≤ 100, so the quotient is at most 100.
    Probability::parse(rounded as i128).unwrap_or(default)
}

/// The events known, sorted on one axis, with each pipeline's first definition.
#[derive(Debug, Clone)]
pub struct Timeline {
    axis: Axis,
    events: Vec<RecordedEvent>,
    /// Each pipeline's first definition among the known events: the stage defaults of an instant
    /// before the pipeline was defined on that axis. History imported into a fresh store is such
    /// a case: the pipelines are defined when the store is set up, long after the deals occurred.
    first_definitions: BTreeMap<String, PipelineDefinition>,
}

impl Timeline {
    /// Sorts `events` (in position order) on `axis`.
    pub fn new(mut events: Vec<RecordedEvent>, axis: Axis) -> Timeline {
        if axis == Axis::Occurred {
            events.sort_by_key(|event| (event.occurred_at, event.position));
        }
        let mut first_definitions = BTreeMap::new();
        let mut pipelines = History::default();
        for event in events.iter().filter(|event| event.category() == "pipeline") {
            pipelines.apply(event);
            for (slug, definition) in &pipelines.pipelines {
                first_definitions
                    .entry(slug.clone())
                    .or_insert_with(|| definition.clone());
            }
        }
        Timeline {
            axis,
            events,
            first_definitions,
        }
    }

    /// Reads the events `known` covers from the store.
    pub async fn load(
        store: &EventStore,
        known: Known,
        axis: Axis,
    ) -> Result<Timeline, ProjectorError> {
        let events = crate::asof::known_events(store, known).await?;
        Ok(Timeline::new(events, axis))
    }

    pub fn axis(&self) -> Axis {
        self.axis
    }

    /// The time of the earliest event on the axis.
    pub fn first_time(&self) -> Option<DateTime<Utc>> {
        self.events.first().map(|event| self.axis.time(event))
    }

    /// Whether the pipeline is defined anywhere in the known events.
    pub fn knows_pipeline(&self, slug: &str) -> bool {
        self.first_definitions.contains_key(slug)
    }

    /// Visits each of `instants` (ascending) with the fold of the events whose time on the axis
    /// is at or before it: one forward pass, whatever the number of instants.
    pub fn fold_at(
        &self,
        instants: &[DateTime<Utc>],
        mut visit: impl FnMut(DateTime<Utc>, &History),
    ) {
        let mut history = History::default();
        let mut next = 0;
        for instant in instants {
            while let Some(event) = self.events.get(next)
                && self.axis.time(event) <= *instant
            {
                history.apply(event);
                next += 1;
            }
            visit(*instant, &history);
        }
    }

    /// The fold at one instant.
    pub fn at(&self, instant: DateTime<Utc>) -> History {
        let mut folded = History::default();
        self.fold_at(&[instant], |_, history| folded = history.clone());
        folded
    }

    /// The pipeline's definition at the fold's instant, or its first one if it was not defined
    /// yet then.
    pub fn definition<'a>(
        &'a self,
        history: &'a History,
        slug: &str,
    ) -> Option<&'a PipelineDefinition> {
        history
            .pipelines
            .get(slug)
            .or_else(|| self.first_definitions.get(slug))
    }

    /// The win rate of each stage of `pipeline` as of `at`, in the pipeline's stage order;
    /// `None` if the pipeline is not known at all.
    pub fn win_rates(
        &self,
        history: &History,
        pipeline: &str,
        at: DateTime<Utc>,
        calibration: Calibration,
    ) -> Option<Vec<StageRate>> {
        let definition = self.definition(history, pipeline)?;
        let window = |closed_at: DateTime<Utc>| {
            closed_at <= at
                && at
                    .checked_sub_signed(calibration.lookback)
                    .is_none_or(|start| closed_at > start)
        };
        let closes: Vec<&Close> = history
            .closes
            .values()
            .filter(|close| close.pipeline == pipeline && window(close.closed_at))
            .collect();
        Some(
            definition
                .stages
                .iter()
                .map(|stage| {
                    let count = |outcome: Outcome| {
                        closes
                            .iter()
                            .filter(|close| {
                                close.outcome == outcome && close.stages.contains(&stage.name)
                            })
                            .count() as u64
                    };
                    let (won, lost) = (count(Outcome::Won), count(Outcome::Lost));
                    StageRate {
                        stage: stage.name.clone(),
                        default_probability: stage.probability,
                        won,
                        lost,
                        historical_probability: historical_probability(
                            won,
                            lost,
                            calibration.prior_weight,
                            stage.probability,
                        ),
                    }
                })
                .collect(),
        )
    }

    /// Every stage's historical probability as of `at`, for every pipeline known.
    pub fn rates(&self, history: &History, at: DateTime<Utc>, calibration: Calibration) -> Rates {
        let pipelines: BTreeSet<&String> = history
            .pipelines
            .keys()
            .chain(self.first_definitions.keys())
            .collect();
        let mut rates = BTreeMap::new();
        for pipeline in pipelines {
            for rate in self
                .win_rates(history, pipeline, at, calibration)
                .unwrap_or_default()
            {
                rates.insert((pipeline.clone(), rate.stage), rate.historical_probability);
            }
        }
        Rates(rates)
    }

    /// Every deal of the fold as `model` weighs it at `at` (see [`Rates::reweigh`]).
    pub fn weighed(
        &self,
        history: &History,
        model: ProbabilityModel,
        at: DateTime<Utc>,
        calibration: Calibration,
    ) -> ReadModel {
        match model {
            ProbabilityModel::Stage => history.model.clone(),
            ProbabilityModel::Historical => {
                self.rates(history, at, calibration).apply(&history.model)
            }
        }
    }
}

/// Historical probabilities per pipeline and stage, as of one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates(BTreeMap<(String, StageName), Probability>);

impl Rates {
    /// The deal with its stage's historical probability in place of the stage default, if it is
    /// open. An override still wins, since [`DealView::probability`] prefers it. A deal in a
    /// stage its pipeline no longer has keeps the probability it entered the stage with.
    pub fn reweigh(&self, deal: &DealView) -> DealView {
        let mut deal = deal.clone();
        if deal.is_open()
            && let Some(rate) = self.0.get(&(deal.pipeline.to_string(), deal.stage.clone()))
        {
            deal.stage_probability = *rate;
        }
        deal
    }

    /// Every deal of `model` reweighed.
    pub fn apply(&self, model: &ReadModel) -> ReadModel {
        ReadModel {
            deals: model
                .deals
                .iter()
                .map(|(id, deal)| (*id, self.reweigh(deal)))
                .collect(),
            position: model.position,
        }
    }
}

/// Every deal known at `horizon` (everything for a live answer, `None`) weighed with the
/// historical rates as of `at`, the answer's instant; and those rates. With `valid_at` the fold
/// stops at that instant on the business axis; otherwise it takes every known event.
pub async fn historical(
    store: &EventStore,
    horizon: Option<Horizon>,
    at: DateTime<Utc>,
    calibration: Calibration,
) -> Result<(ReadModel, Rates), ProjectorError> {
    let known = horizon.map_or(Known::Everything, |horizon| horizon.known);
    let valid_at = horizon.and_then(|horizon| horizon.valid_at);
    let axis = if valid_at.is_some() {
        Axis::Occurred
    } else {
        Axis::Recorded
    };
    let timeline = Timeline::load(store, known, axis).await?;
    let history = timeline.at(valid_at.unwrap_or(DateTime::<Utc>::MAX_UTC));
    let rates = timeline.rates(&history, at, calibration);
    Ok((rates.apply(&history.model), rates))
}

/// The months a forecast period covers, first and last included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    pub first: Month,
    pub last: Month,
}

impl Period {
    /// The period's first instant: 00:00:00Z of its first day.
    pub fn start(self) -> DateTime<Utc> {
        self.first
            .first_day()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
    }

    pub fn contains(self, month: Month) -> bool {
        (self.first..=self.last).contains(&month)
    }
}

/// The sum of the forecast cells of `period` in `currency`.
pub fn period_total(
    cells: &BTreeMap<ForecastKey, ForecastFigures>,
    period: Period,
    currency: &str,
) -> ForecastFigures {
    cells
        .iter()
        .filter(|(key, _)| period.contains(key.month) && key.currency == currency)
        .fold(ForecastFigures::default(), |total, (_, figures)| {
            total + *figures
        })
}

/// One lead time of a forecast-accuracy answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyRow {
    pub lead_days: i64,
    /// The instant the forecast was made: `lead_days` before the period's first day.
    pub as_of: DateTime<Utc>,
    pub weighted_amount: i128,
    pub commit: i128,
    pub best_case: i128,
    pub actual_closed_won: i128,
    /// `weighted_amount − actual_closed_won`.
    pub error: i128,
    /// `|error| / actual_closed_won × 100`; `None` when nothing was won.
    pub abs_pct_error: Option<f64>,
}

/// What the forecast of each `(period, currency)` said `lead_days` before the period began,
/// beside what was closed won in it as known at `now`: for each target, one row per lead time, in
/// the order given. One forward pass over the timeline serves every target and lead time.
pub fn accuracy(
    timeline: &Timeline,
    targets: &[(Period, String)],
    lead_days: &[i64],
    model: ProbabilityModel,
    calibration: Calibration,
    now: DateTime<Utc>,
) -> Vec<Vec<AccuracyRow>> {
    let instant = |period: Period, lead: i64| {
        period
            .start()
            .checked_sub_signed(TimeDelta::days(lead))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    let mut instants: Vec<DateTime<Utc>> = targets
        .iter()
        .flat_map(|(period, _)| lead_days.iter().map(|lead| instant(*period, *lead)))
        .filter(|at| *at <= now)
        .chain([now])
        .collect();
    instants.sort();
    instants.dedup();
    let mut forecasts: BTreeMap<DateTime<Utc>, BTreeMap<ForecastKey, ForecastFigures>> =
        BTreeMap::new();
    // What was won is what is known now, whichever model forecast it.
    let mut actual_cells = BTreeMap::new();
    timeline.fold_at(&instants, |at, history| {
        if at == now {
            actual_cells = history.model.forecast();
        }
        let weighed = timeline.weighed(history, model, at, calibration);
        forecasts.insert(at, weighed.forecast());
    });
    let actual_cells = &actual_cells;
    targets
        .iter()
        .map(|(period, currency)| {
            let actual = period_total(actual_cells, *period, currency).closed_won;
            lead_days
                .iter()
                .map(|lead| {
                    let as_of = instant(*period, *lead);
                    let figures = forecasts
                        .get(&as_of)
                        .map(|cells| period_total(cells, *period, currency))
                        .unwrap_or_default();
                    let error = figures.weighted_amount - actual;
                    AccuracyRow {
                        lead_days: *lead,
                        as_of,
                        weighted_amount: figures.weighted_amount,
                        commit: figures.commit,
                        best_case: figures.best_case,
                        actual_closed_won: actual,
                        error,
                        abs_pct_error: (actual != 0).then(|| {
                            (error.abs() as f64 / actual as f64 * 100.0 * 100.0).round() / 100.0
                        }),
                    }
                })
                .collect()
        })
        .collect()
}

/// A deal whose expected close date lay in a period when the period began, and lies outside it
/// now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slipped {
    /// The deal as of the answer's instant.
    pub deal: DealView,
    pub expected_close_date_at_start: NaiveDate,
}

/// The open deals expected to close in `period` when it began that, by `at`, were expected to
/// close outside it: moved later (or earlier) out of the period. Empty before the period began.
pub fn slippage(timeline: &Timeline, period: Period, at: DateTime<Utc>) -> Vec<Slipped> {
    let start = period.start();
    if at <= start {
        return Vec::new();
    }
    let mut at_start: BTreeMap<Uuid, NaiveDate> = BTreeMap::new();
    let mut slipped = Vec::new();
    timeline.fold_at(&[start, at], |instant, history| {
        if instant == start {
            at_start = history
                .model
                .deals
                .values()
                .filter(|deal| {
                    deal.is_open() && period.contains(Month::of(deal.expected_close_date))
                })
                .map(|deal| (deal.id, deal.expected_close_date))
                .collect();
            return;
        }
        for (id, date) in &at_start {
            if let Some(deal) = history.model.deals.get(id)
                && !period.contains(Month::of(deal.expected_close_date))
            {
                slipped.push(Slipped {
                    deal: deal.clone(),
                    expected_close_date_at_start: *date,
                });
            }
        }
    });
    slipped
}

/// Why a deal is in the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkReason {
    FollowUpDue,
    Stale,
    CloseDatePassed,
}

impl WorkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkReason::FollowUpDue => "follow-up-due",
            WorkReason::Stale => "stale",
            WorkReason::CloseDatePassed => "close-date-passed",
        }
    }
}

/// One thing to do about one open deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub deal: DealView,
    pub reason: WorkReason,
    /// When the follow-up or reminder fell due; for a close date the workflow has not reminded
    /// anyone of yet, none.
    pub due_at: Option<DateTime<Utc>>,
}

/// What needs doing now about the open deals of `model` (of `owner`, when given): every follow-up
/// fallen due (a fired reminder, or a planned follow-up whose time has come), every stale-deal
/// reminder standing, and every expected close date before today, once per deal and reason.
/// Largest weighted amount at stake first; then earliest due, then by deal.
pub fn work_queue(model: &ReadModel, owner: Option<&str>, now: DateTime<Utc>) -> Vec<WorkItem> {
    let mut items = Vec::new();
    for deal in model
        .deals
        .values()
        .filter(|deal| deal.is_open() && owner.is_none_or(|owner| deal.owner.as_str() == owner))
    {
        let mut reasons: BTreeMap<WorkReason, Option<DateTime<Utc>>> = BTreeMap::new();
        for follow_up in deal.follow_ups.values() {
            let fallen_due = follow_up.status == FollowUpStatus::Due
                || (follow_up.status == FollowUpStatus::Open && follow_up.due_at <= now);
            if !fallen_due {
                continue;
            }
            let reason = match follow_up.kind.as_str() {
                "stale-deal" => WorkReason::Stale,
                "close-date-passed" => WorkReason::CloseDatePassed,
                _ => WorkReason::FollowUpDue,
            };
            let due = reasons.entry(reason).or_insert(Some(follow_up.due_at));
            *due = (*due).min(Some(follow_up.due_at));
        }
        if deal.expected_close_date < now.date_naive() {
            reasons.entry(WorkReason::CloseDatePassed).or_insert(None);
        }
        items.extend(reasons.into_iter().map(|(reason, due_at)| WorkItem {
            deal: deal.clone(),
            reason,
            due_at,
        }));
    }
    items.sort_by(|left, right| {
        right
            .deal
            .weighted_amount()
            .cmp(&left.deal.weighted_amount())
            .then(left.due_at.cmp(&right.due_at))
            .then(left.deal.id.cmp(&right.deal.id))
            .then(left.reason.cmp(&right.reason))
    });
    items
}

/// Which deals and which business-time window a funnel covers: `from` included, `to` excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelFilter {
    pub pipeline: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub owner: Option<String>,
    pub currency: Option<String>,
}

impl FunnelFilter {
    fn covers(&self, deal: &DealView) -> bool {
        deal.pipeline.as_str() == self.pipeline
            && self
                .owner
                .as_deref()
                .is_none_or(|owner| deal.owner.as_str() == owner)
            && self
                .currency
                .as_deref()
                .is_none_or(|currency| deal.currency.as_str() == currency)
    }

    fn within(&self, instant: DateTime<Utc>) -> bool {
        self.from <= instant && instant < self.to
    }
}

/// How a deal's latest stint in a stage, begun in the window, had ended by the window's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stint {
    Open,
    Advanced,
    Won,
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageFunnel {
    pub stage: StageName,
    pub entered: u64,
    pub advanced: u64,
    pub won: u64,
    pub lost: u64,
    pub open: u64,
    pub conversion_to_won_pct: Option<f64>,
    pub median_days_in_stage: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeadFunnel {
    pub captured: u64,
    pub qualified: u64,
    pub disqualified: u64,
    pub converted: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub stages: Vec<StageFunnel>,
    pub leads: LeadFunnel,
    pub win_rate_pct: Option<f64>,
    pub median_cycle_days: Option<f64>,
    /// Per currency: open deals × average won amount × win rate ÷ average cycle days.
    pub velocity: Vec<(String, f64)>,
}

fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 86_400_000.0
}

/// One decimal, as the funnel's percentages and days are given.
fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        length if length % 2 == 1 => Some(tenths(values[middle])),
        _ => Some(tenths((values[middle - 1] + values[middle]) / 2.0)),
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| tenths(part as f64 * 100.0 / whole as f64))
}

/// The funnel of `filter`'s deals over its window, by business time, folded up to the window's
/// end: for each stage, the deals that entered it in the window and how their latest stint there
/// ended (moved on, won, lost, still open), the share of them won by then, and the median length
/// of the stints that ended in the window; the leads captured, qualified, disqualified and
/// converted in it (leads have no pipeline, owner or currency: every lead counts); the share
/// won of the deals closed in it and their median cycle (creation to close); and the sales
/// velocity per currency. `None` for a pipeline never defined.
pub fn funnel(timeline: &Timeline, filter: &FunnelFilter) -> Option<Funnel> {
    let mut history = History::default();
    let mut stints: BTreeMap<(Uuid, StageName), Stint> = BTreeMap::new();
    let mut stint_days: BTreeMap<StageName, Vec<f64>> = BTreeMap::new();
    let mut leads = LeadFunnel::default();
    // Per deal closed in the window: its latest close's outcome, amount, currency and cycle.
    let mut closes: BTreeMap<Uuid, (Outcome, i64, String, f64)> = BTreeMap::new();
    for event in &timeline.events {
        let at = timeline.axis.time(event);
        if at >= filter.to {
            break;
        }
        let in_window = filter.within(at);
        if in_window {
            match event.event_type.as_str() {
                "LeadCaptured" => leads.captured += 1,
                "LeadQualified" => leads.qualified += 1,
                "LeadDisqualified" => leads.disqualified += 1,
                "LeadConverted" => leads.converted += 1,
                _ => {}
            }
        }
        let id = (event.category() == "opportunity")
            .then(|| Uuid::parse_str(event.entity_id()).ok())
            .flatten();
        let before = id.and_then(|id| history.model.deals.get(&id).cloned());
        history.apply(event);
        let Some(after) = id.and_then(|id| history.model.deals.get(&id)) else {
            continue;
        };
        if !filter.covers(after) || !in_window {
            continue;
        }
        let entered = match &before {
            None => true,
            Some(before) if !before.is_open() => after.is_open(),
            Some(before) => {
                let ended = if !after.is_open() {
                    Some(if after.status == OpportunityStatus::Won {
                        Stint::Won
                    } else {
                        Stint::Lost
                    })
                } else {
                    (after.entered_stage_at != before.entered_stage_at
                        || after.stage != before.stage)
                        .then_some(Stint::Advanced)
                };
                if let Some(ended) = ended {
                    if let Some(stint) = stints.get_mut(&(after.id, before.stage.clone())) {
                        *stint = ended;
                    }
                    stint_days
                        .entry(before.stage.clone())
                        .or_default()
                        .push(days(before.entered_stage_at, at));
                }
                ended == Some(Stint::Advanced)
            }
        };
        if entered && after.is_open() {
            stints.insert((after.id, after.stage.clone()), Stint::Open);
        }
        if let Some(closed_at) = after.closed_at
            && event.event_type == "OpportunityClosed"
            && filter.within(closed_at)
        {
            let outcome = if after.status == OpportunityStatus::Won {
                Outcome::Won
            } else {
                Outcome::Lost
            };
            closes.insert(
                after.id,
                (
                    outcome,
                    after.amount.minor_units(),
                    after.currency.to_string(),
                    days(after.created_at, closed_at),
                ),
            );
        }
    }
    let definition = timeline.definition(&history, &filter.pipeline)?;
    let stages = definition
        .stages
        .iter()
        .map(|stage| {
            let of_stage: Vec<(&Uuid, &Stint)> = stints
                .iter()
                .filter(|((_, name), _)| *name == stage.name)
                .map(|((id, _), stint)| (id, stint))
                .collect();
            let count = |wanted: Stint| {
                of_stage
                    .iter()
                    .filter(|(_, stint)| **stint == wanted)
                    .count() as u64
            };
            let entered = of_stage.len() as u64;
            let converted = of_stage
                .iter()
                .filter(|(id, _)| {
                    history
                        .model
                        .deals
                        .get(id)
                        .is_some_and(|deal| deal.status == OpportunityStatus::Won)
                })
                .count() as u64;
            StageFunnel {
                stage: stage.name.clone(),
                entered,
                advanced: count(Stint::Advanced),
                won: count(Stint::Won),
                lost: count(Stint::Lost),
                open: count(Stint::Open),
                conversion_to_won_pct: percent(converted, entered),
                median_days_in_stage: median(stint_days.remove(&stage.name).unwrap_or_default()),
            }
        })
        .collect();
    let won = |close: &&(Outcome, i64, String, f64)| close.0 == Outcome::Won;
    let won_count = closes.values().filter(won).count() as u64;
    let currencies: BTreeSet<&String> = closes.values().filter(won).map(|close| &close.2).collect();
    let velocity = currencies
        .into_iter()
        .map(|currency| {
            let in_currency: Vec<&(Outcome, i64, String, f64)> = closes
                .values()
                .filter(|close| &close.2 == currency)
                .collect();
            let won_deals: Vec<&(Outcome, i64, String, f64)> = in_currency
                .iter()
                .copied()
                .filter(|close| close.0 == Outcome::Won)
                .collect();
            let count = won_deals.len() as f64;
            let average_amount = won_deals.iter().map(|close| close.1 as f64).sum::<f64>() / count;
            let average_cycle = won_deals.iter().map(|close| close.3).sum::<f64>() / count;
            let win_rate = count / in_currency.len() as f64;
            let open = history
                .model
                .deals
                .values()
                .filter(|deal| {
                    deal.is_open() && filter.covers(deal) && deal.currency.as_str() == currency
                })
                .count() as f64;
            let per_day = if average_cycle > 0.0 {
                open * average_amount * win_rate / average_cycle
            } else {
                0.0
            };
            (currency.clone(), per_day.round())
        })
        .collect();
    Some(Funnel {
        stages,
        leads,
        win_rate_pct: percent(won_count, closes.len() as u64),
        median_cycle_days: median(closes.values().filter(won).map(|close| close.3).collect()),
        velocity,
    })
}

#[cfg(test)]
mod tests {
    use domain::values::Probability;

    use super::historical_probability;

    fn percent(value: u8) -> Probability {
        Probability::parse(value.into()).unwrap()
    }

    #[test]
    fn the_rate_is_rounded_half_away_from_zero_in_integers() {
        // (100 × 0 + 1 × 25) / (0 + 1 + 1) = 12.5 -> 13
        assert_eq!(historical_probability(0, 1, 1, percent(25)), percent(13));
        // (100 × 1 + 5 × 50) / (1 + 2 + 5) = 43.75 -> 44
        assert_eq!(historical_probability(1, 2, 5, percent(50)), percent(44));
        // No closes: the prior alone, the default.
        assert_eq!(historical_probability(0, 0, 5, percent(75)), percent(75));
        // No closes and no prior: nothing to divide, the default stands.
        assert_eq!(historical_probability(0, 0, 0, percent(20)), percent(20));
        // Without a prior the observed rate: 2 of 3 won = 66.7 -> 67.
        assert_eq!(historical_probability(2, 1, 0, percent(10)), percent(67));
        assert_eq!(historical_probability(7, 0, 0, percent(10)), percent(100));
    }
}
