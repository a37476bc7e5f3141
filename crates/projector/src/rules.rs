//! The pure rules of the read models: what one opportunity event does to a deal's row
//! ([`apply`]), and where a deal counts on the board ([`board_contribution`]) and in the forecast
//! ([`forecast_contribution`]).
//!
//! Nothing here does I/O or reads a clock: event times come from the envelope. The SQL in
//! `persist` only stores what these functions decide (a deal's old contribution is subtracted and
//! its new one added), and [`ReadModel`] folds the very same functions in memory, so "what did the
//! board and the forecast say at instant T" ([`fold_until`]) is not a second copy of the rules.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Add, Neg, Sub};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::codec::{self, DecodeError};
use domain::opportunity::{FollowUpStatus, OpportunityEvent, OpportunityStatus};
use domain::values::{
    Amount, Currency, FollowUpKind, ForecastCategory, Outcome, Owner, PipelineSlug, Probability,
    StageName, Text, weighted_amount,
};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The event types of the opportunity stream this build understands. Any other type in that
/// category (a newer build's event) is skipped rather than treated as corrupt.
pub const OPPORTUNITY_EVENT_TYPES: &[&str] = &domain::opportunity::EVENT_TYPES;

/// One follow-up of a deal as the read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUpEntry {
    pub kind: FollowUpKind,
    pub due_at: DateTime<Utc>,
    pub status: FollowUpStatus,
}

/// One row of the pipeline read model: a deal as of the last event applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealView {
    pub id: Uuid,
    pub name: Text,
    pub lead_id: Option<Uuid>,
    pub pipeline: PipelineSlug,
    pub stage: StageName,
    /// The stage's figures as they were when the deal entered it.
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
    /// `occurred_at` of the creation.
    pub created_at: DateTime<Utc>,
    /// When the deal entered its current stage (creation, stage change or reopen), by
    /// `occurred_at`.
    pub entered_stage_at: DateTime<Utc>,
    /// Milliseconds spent in each stage over the finished stints only; the current stint of an
    /// open deal is added at read time ([`DealView::time_in_stage_ms`]), since it grows with the
    /// clock and a read model must not.
    pub finished_stage_ms: BTreeMap<StageName, i64>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub follow_ups: BTreeMap<Uuid, FollowUpEntry>,
    /// The stream version of the last event applied.
    pub version: i64,
    /// The global position of the last event applied.
    pub position: i64,
    /// `recorded_at` of the last event applied: when the row last changed, not a business time.
    pub updated_at: DateTime<Utc>,
}

impl DealView {
    pub fn is_open(&self) -> bool {
        self.status == OpportunityStatus::Open
    }

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

    /// Rounded per deal, halves away from zero; sums add these figures.
    pub fn weighted_amount(&self) -> i64 {
        weighted_amount(self.amount, self.probability())
    }

    /// The earliest due time among follow-ups still planned (status open).
    pub fn next_follow_up_at(&self) -> Option<DateTime<Utc>> {
        self.follow_ups
            .values()
            .filter(|follow_up| follow_up.status == FollowUpStatus::Open)
            .map(|follow_up| follow_up.due_at)
            .min()
    }

    /// Follow-ups that still ask for attention: planned or due, not completed or cancelled.
    pub fn open_follow_ups(&self) -> usize {
        self.follow_ups
            .values()
            .filter(|follow_up| follow_up.status.is_pending())
            .count()
    }

    /// Cumulative time in each stage, with the current stint of an open deal counted up to `now`.
    pub fn time_in_stage_ms(&self, now: DateTime<Utc>) -> BTreeMap<StageName, i64> {
        let mut total = self.finished_stage_ms.clone();
        if self.is_open() {
            *total.entry(self.stage.clone()).or_default() +=
                millis_between(self.entered_stage_at, now);
        }
        total
    }

    /// The calendar month the deal counts in: its expected close date while open, the UTC date
    /// of `closed_at` once closed.
    pub fn forecast_month(&self) -> Month {
        let date = match (self.is_open(), self.closed_at) {
            (false, Some(closed_at)) => closed_at.date_naive(),
            _ => self.expected_close_date,
        };
        Month::of(date)
    }

    fn finish_stint(&mut self, at: DateTime<Utc>) {
        let elapsed = millis_between(self.entered_stage_at, at);
        *self
            .finished_stage_ms
            .entry(self.stage.clone())
            .or_default() += elapsed;
    }
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// Where and when an event happened, from its envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventContext {
    pub opportunity_id: Uuid,
    pub stream_version: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    /// Business time: the times a deal's row keeps (creation, stage entry, time in stage) are
    /// taken from it, so that imported history shows when things happened, not when they were
    /// loaded. Equal to `recorded_at` for everything not imported.
    pub occurred_at: DateTime<Utc>,
}

/// What the read models make of a stored event.
#[derive(Debug)]
pub enum Decoded {
    Opportunity(EventContext, Box<OpportunityEvent>),
    /// Another category, or an event type this build does not know: skipped. An unknown type is
    /// a kind of fact a newer build added, which these read models have no rule for, so skipping
    /// it loses nothing they show; a new version of a known type is another matter
    /// ([`Decoded::UnknownSchemaVersion`]).
    Irrelevant,
    /// A known event type written with a schema version this build cannot upcast, by a newer
    /// build during a rolling upgrade. Not skipped: it may change what the read models show, so
    /// a projection stops before it until the projector is upgraded.
    UnknownSchemaVersion {
        schema_version: i32,
    },
    /// A known opportunity event whose data does not decode or holds a value the read models
    /// cannot store. Skipped as well, and reported, because a projection that stops forever on
    /// one bad event helps nobody; a rebuild skips it in exactly the same way.
    Malformed(MalformedEvent),
}

/// Why a known opportunity event is skipped.
#[derive(Debug, thiserror::Error)]
pub enum MalformedEvent {
    #[error(transparent)]
    Decode(DecodeError),
    /// PostgreSQL refuses the date (`date`, `timestamptz`), which would fail the whole batch.
    #[error("{field} {date} is outside the years 1 to 9999 that the read models store")]
    DateOutOfRange {
        field: &'static str,
        date: NaiveDate,
    },
}

/// Decodes the envelope into the opportunity event it holds, if any.
pub fn decode(event: &RecordedEvent) -> Decoded {
    if event.category() != "opportunity"
        || !OPPORTUNITY_EVENT_TYPES.contains(&event.event_type.as_str())
    {
        return Decoded::Irrelevant;
    }
    let Ok(opportunity_id) = Uuid::parse_str(event.entity_id()) else {
        return Decoded::Irrelevant;
    };
    let decoded = match codec::decode::<OpportunityEvent>(
        &event.event_type,
        event.schema_version,
        event.data.clone(),
    ) {
        Ok(decoded) => decoded,
        Err(DecodeError::UnknownSchemaVersion { schema_version, .. }) => {
            return Decoded::UnknownSchemaVersion { schema_version };
        }
        Err(error) => return Decoded::Malformed(MalformedEvent::Decode(error)),
    };
    if let Err(error) = check_storable_dates(&decoded) {
        return Decoded::Malformed(error);
    }
    Decoded::Opportunity(
        EventContext {
            opportunity_id,
            stream_version: event.stream_version,
            position: event.position,
            recorded_at: event.recorded_at,
            occurred_at: event.occurred_at,
        },
        Box::new(decoded),
    )
}

/// The years of dates and times the read models store. Chrono accepts years PostgreSQL refuses
/// (year 0 and before, which it has no name for, and serialises years past 9999 with a sign), and
/// older data may hold them, so they are caught here, before any SQL sees them.
const STORABLE_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Checks every date of `event` that may end up in a read-model column or a forecast month.
/// `recorded_at` is not checked: the store writes it from its own clock.
fn check_storable_dates(event: &OpportunityEvent) -> Result<(), MalformedEvent> {
    use OpportunityEvent as E;
    let (field, date) = match event {
        E::OpportunityCreated(created) => ("expected_close_date", created.expected_close_date),
        E::CloseDateChanged {
            expected_close_date,
            ..
        } => ("expected_close_date", *expected_close_date),
        E::ActivityLogged { occurred_at, .. } => ("occurred_at", occurred_at.date_naive()),
        E::FollowUpScheduled { due_at, .. } | E::FollowUpDue { due_at, .. } => {
            ("due_at", due_at.date_naive())
        }
        E::OpportunityClosed { closed_at, .. } => ("closed_at", closed_at.date_naive()),
        _ => return Ok(()),
    };
    if STORABLE_YEARS.contains(&date.year()) {
        Ok(())
    } else {
        Err(MalformedEvent::DateOutOfRange { field, date })
    }
}

/// Folds one opportunity event into a deal's row. `None` until the deal is created; an event for
/// a deal that was never created leaves it `None` (events are facts: nothing is rejected).
pub fn apply(
    view: Option<DealView>,
    event: &OpportunityEvent,
    context: &EventContext,
) -> Option<DealView> {
    use OpportunityEvent as E;
    let at = context.occurred_at;
    let mut deal = match (view, event) {
        (_, E::OpportunityCreated(created)) => DealView {
            id: context.opportunity_id,
            name: created.name.clone(),
            lead_id: created.lead_id.map(|lead| lead.0),
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
            created_at: at,
            entered_stage_at: at,
            finished_stage_ms: BTreeMap::new(),
            last_activity_at: None,
            follow_ups: BTreeMap::new(),
            version: 0,
            position: 0,
            updated_at: at,
        },
        (None, _) => return None,
        (Some(deal), _) => deal,
    };
    match event {
        E::OpportunityCreated(_) => {}
        E::StageChanged {
            to,
            probability,
            forecast_category,
            ..
        } => {
            deal.finish_stint(at);
            deal.stage = to.clone();
            deal.entered_stage_at = at;
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
            deal.forecast_category_override = forecast_category.or(deal.forecast_category_override);
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
                follow_up_id.0,
                FollowUpEntry {
                    kind: kind.clone(),
                    due_at: *due_at,
                    status: FollowUpStatus::Open,
                },
            );
        }
        E::FollowUpCompleted { follow_up_id } => {
            if let Some(follow_up) = deal.follow_ups.get_mut(&follow_up_id.0) {
                follow_up.status = FollowUpStatus::Completed;
            }
        }
        E::FollowUpCancelled { follow_up_id, .. } => {
            if let Some(follow_up) = deal.follow_ups.get_mut(&follow_up_id.0) {
                follow_up.status = FollowUpStatus::Cancelled;
            }
        }
        E::FollowUpDue {
            follow_up_id,
            kind,
            due_at,
        } => {
            // A reminder without a scheduled follow-up behind it (stale deal, close date passed)
            // becomes a due follow-up of its own, as in the aggregate.
            deal.follow_ups
                .entry(follow_up_id.0)
                .and_modify(|follow_up| follow_up.status = FollowUpStatus::Due)
                .or_insert_with(|| FollowUpEntry {
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
            if deal.is_open() {
                deal.finish_stint(at);
            }
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
            deal.entered_stage_at = at;
            deal.stage_probability = *probability;
            deal.stage_forecast_category = *forecast_category;
            deal.probability_override = None;
            deal.forecast_category_override = None;
            deal.close_reason = None;
            deal.closed_at = None;
        }
    }
    deal.version = context.stream_version;
    deal.position = context.position;
    deal.updated_at = context.recorded_at;
    Some(deal)
}

/// Figures that are summed: signed and 128 bits wide, so that a sum of many i64 amounts never
/// overflows and a delta (new contribution minus old) can be negative.
pub type Sum = i128;

/// A board cell: per pipeline, stage and currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BoardKey {
    pub pipeline: String,
    pub stage: String,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardFigures {
    pub count: Sum,
    pub amount: Sum,
    pub weighted_amount: Sum,
}

/// Where a deal counts on the board: open deals only, in their current stage.
pub fn board_contribution(view: &DealView) -> Option<(BoardKey, BoardFigures)> {
    view.is_open().then(|| {
        (
            BoardKey {
                pipeline: view.pipeline.to_string(),
                stage: view.stage.to_string(),
                currency: view.currency.to_string(),
            },
            BoardFigures {
                count: 1,
                amount: view.amount.minor_units().into(),
                weighted_amount: view.weighted_amount().into(),
            },
        )
    })
}

/// A calendar month, the grain the forecast is stored in; quarters are sums of their months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    pub fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        // year and month come from a valid date, so the first of that month exists.
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a month built from a date")
    }

    pub fn label(self, granularity: Granularity) -> String {
        match granularity {
            Granularity::Month => format!("{:04}-{:02}", self.year, self.month),
            Granularity::Quarter => format!("{:04}-Q{}", self.year, self.month.div_ceil(3)),
        }
    }
}

/// How forecast periods are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Month,
    Quarter,
}

impl Granularity {
    pub fn parse(value: &str) -> Option<Granularity> {
        match value {
            "month" => Some(Granularity::Month),
            "quarter" => Some(Granularity::Quarter),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Month => "month",
            Granularity::Quarter => "quarter",
        }
    }
}

/// A forecast cell: per month, owner, pipeline and currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForecastKey {
    pub month: Month,
    pub owner: String,
    pub pipeline: String,
    pub currency: String,
}

/// The figures of one forecast cell (month, owner, pipeline, currency), as `GET /v1/forecast`
/// answers them. `deals` counts every deal in the cell, open or closed, so that a cell
/// disappears exactly when no deal counts in it any more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForecastFigures {
    pub deals: Sum,
    pub open_count: Sum,
    /// All open amounts.
    pub pipeline_amount: Sum,
    /// Open deals only.
    pub weighted_amount: Sum,
    /// `commit` plus open amounts in category best_case.
    pub best_case: Sum,
    /// `closed_won` plus open amounts in category commit.
    pub commit: Sum,
    pub closed_won: Sum,
    pub closed_lost: Sum,
}

/// Where a deal counts in the forecast: every deal counts once, in the month of its expected
/// close date while open or of its close date once closed.
pub fn forecast_contribution(view: &DealView) -> (ForecastKey, ForecastFigures) {
    let amount = Sum::from(view.amount.minor_units());
    let mut figures = ForecastFigures {
        deals: 1,
        ..ForecastFigures::default()
    };
    match view.status {
        OpportunityStatus::Open => {
            figures.open_count = 1;
            figures.pipeline_amount = amount;
            figures.weighted_amount = view.weighted_amount().into();
            match view.forecast_category() {
                ForecastCategory::Commit => {
                    figures.commit = amount;
                    figures.best_case = amount;
                }
                ForecastCategory::BestCase => figures.best_case = amount,
                _ => {}
            }
        }
        OpportunityStatus::Won => {
            figures.closed_won = amount;
            figures.commit = amount;
            figures.best_case = amount;
        }
        OpportunityStatus::Lost => figures.closed_lost = amount,
    }
    (
        ForecastKey {
            month: view.forecast_month(),
            owner: view.owner.to_string(),
            pipeline: view.pipeline.to_string(),
            currency: view.currency.to_string(),
        },
        figures,
    )
}

macro_rules! figures_arithmetic {
    ($type:ident { $($field:ident),* }) => {
        impl Add for $type {
            type Output = $type;
            fn add(self, other: $type) -> $type {
                $type { $($field: self.$field + other.$field),* }
            }
        }
        impl Sub for $type {
            type Output = $type;
            fn sub(self, other: $type) -> $type {
                $type { $($field: self.$field - other.$field),* }
            }
        }
        impl Neg for $type {
            type Output = $type;
            fn neg(self) -> $type {
                $type { $($field: -self.$field),* }
            }
        }
        impl $type {
            pub fn is_zero(&self) -> bool {
                *self == $type::default()
            }
        }
    };
}

figures_arithmetic!(BoardFigures {
    count,
    amount,
    weighted_amount
});
figures_arithmetic!(ForecastFigures {
    deals,
    open_count,
    pipeline_amount,
    weighted_amount,
    best_case,
    commit,
    closed_won,
    closed_lost
});

/// Adds `figures` to the cell `key` of `sums`, dropping cells that reach zero so that a map of
/// deltas, or of totals, holds only cells that matter.
pub fn accumulate<K: Ord, F>(sums: &mut BTreeMap<K, F>, key: K, figures: F)
where
    F: Copy + Default + PartialEq + Add<Output = F>,
{
    let cell = sums.entry(key);
    match cell {
        std::collections::btree_map::Entry::Occupied(mut occupied) => {
            let total = *occupied.get() + figures;
            if total == F::default() {
                occupied.remove();
            } else {
                *occupied.get_mut() = total;
            }
        }
        std::collections::btree_map::Entry::Vacant(vacant) => {
            if figures != F::default() {
                vacant.insert(figures);
            }
        }
    }
}

/// How the board and forecast change when a deal goes from `before` to `after`: the old
/// contribution subtracted, the new one added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deltas {
    pub board: BTreeMap<BoardKey, BoardFigures>,
    pub forecast: BTreeMap<ForecastKey, ForecastFigures>,
}

impl Deltas {
    pub fn record(&mut self, before: Option<&DealView>, after: Option<&DealView>) {
        if let Some((key, figures)) = before.and_then(board_contribution) {
            accumulate(&mut self.board, key, -figures);
        }
        if let Some((key, figures)) = after.and_then(board_contribution) {
            accumulate(&mut self.board, key, figures);
        }
        if let Some((key, figures)) = before.map(forecast_contribution) {
            accumulate(&mut self.forecast, key, -figures);
        }
        if let Some((key, figures)) = after.map(forecast_contribution) {
            accumulate(&mut self.forecast, key, figures);
        }
    }
}

/// Folds decoded events into the rows they touch and answers how the sums change. `rows` must
/// hold, for every deal the events touch, its row before them (`None` for a deal not created
/// yet); it is left holding the rows after them. The SQL batches, the rebuild and the as-of
/// folds all go through here, so the live tables and every answer from history share one fold.
pub fn fold_batch(
    rows: &mut HashMap<Uuid, Option<DealView>>,
    events: &[(EventContext, Box<OpportunityEvent>)],
) -> Changes {
    let before: HashMap<Uuid, Option<DealView>> = events
        .iter()
        .map(|(context, _)| {
            let id = context.opportunity_id;
            (id, rows.get(&id).cloned().flatten())
        })
        .collect();
    for (context, event) in events {
        let slot = rows.entry(context.opportunity_id).or_default();
        *slot = apply(slot.take(), event, context);
    }
    let mut changes = Changes::default();
    let mut ids: Vec<&Uuid> = before.keys().collect();
    ids.sort_unstable();
    for id in ids {
        let old = before[id].as_ref();
        let new = rows.get(id).and_then(Option::as_ref);
        if old != new {
            changes.deltas.record(old, new);
            changes.changed.push(*id);
        }
    }
    changes
}

/// What [`fold_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub deltas: Deltas,
    /// The deals whose row changed, in id order.
    pub changed: Vec<Uuid>,
}

/// Forecast rows per period label (`2026-12` or `2026-Q4`), owner, pipeline and currency, from
/// the cells per month.
pub fn forecast_rows(
    cells: &BTreeMap<ForecastKey, ForecastFigures>,
    granularity: Granularity,
) -> BTreeMap<(String, String, String, String), ForecastFigures> {
    let mut rows = BTreeMap::new();
    for (key, figures) in cells {
        accumulate(
            &mut rows,
            (
                key.month.label(granularity),
                key.owner.clone(),
                key.pipeline.clone(),
                key.currency.clone(),
            ),
            *figures,
        );
    }
    rows
}

/// The read models held in memory: every deal's row, and the position of the last event folded.
/// Folding history through it answers what the board and the forecast said at any instant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadModel {
    pub deals: BTreeMap<Uuid, DealView>,
    pub position: i64,
}

impl ReadModel {
    /// Folds one stored event; events of other categories, unknown types or schema versions and
    /// malformed ones only move the position (an answer from memory has no checkpoint to hold).
    pub fn apply(&mut self, event: &RecordedEvent) {
        self.position = self.position.max(event.position);
        if let Decoded::Opportunity(context, decoded) = decode(event) {
            let before = self.deals.remove(&context.opportunity_id);
            if let Some(after) = apply(before, &decoded, &context) {
                self.deals.insert(context.opportunity_id, after);
            }
        }
    }

    /// Open deals per pipeline, stage and currency.
    pub fn board(&self) -> BTreeMap<BoardKey, BoardFigures> {
        let mut board = BTreeMap::new();
        for (key, figures) in self.deals.values().filter_map(board_contribution) {
            accumulate(&mut board, key, figures);
        }
        board
    }

    /// Forecast cells per month.
    pub fn forecast(&self) -> BTreeMap<ForecastKey, ForecastFigures> {
        let mut forecast = BTreeMap::new();
        for (key, figures) in self.deals.values().map(forecast_contribution) {
            accumulate(&mut forecast, key, figures);
        }
        forecast
    }

    /// Forecast rows per period label (`2026-12` or `2026-Q4`), owner, pipeline and currency.
    pub fn forecast_by(
        &self,
        granularity: Granularity,
    ) -> BTreeMap<(String, String, String, String), ForecastFigures> {
        forecast_rows(&self.forecast(), granularity)
    }
}

/// The read models as they stood at `instant`: every event recorded at or before it, folded in
/// position order. `recorded_at` never decreases as the position grows (the append takes a global lock), so the
/// store as of an instant is a prefix of the log and the fold stops at the first later event.
pub fn fold_until<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    instant: DateTime<Utc>,
) -> ReadModel {
    let mut model = ReadModel::default();
    for event in events {
        if event.recorded_at > instant {
            break;
        }
        model.apply(event);
    }
    model
}
