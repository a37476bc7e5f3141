//! The read models as of an earlier instant or position (docs/forecasting.md): the same answers the
//! queries in [`crate::read`] gave when their tables had applied exactly the events known then.
//!
//! Each answer starts from the nearest [`crate::snapshot`] at or before its horizon and folds
//! the events after it, read from the store, through [`rules::fold_batch`] or
//! [`ReadModel::apply`]: the fold the projector's batches use, never a second copy of the rules.
//! Sums (board, forecast, trend) load only the deals the folded events touch; lists of deals and
//! follow-ups need every deal and load them all. Nothing here writes.
//!
//! The events known at an instant are a prefix of the log, because `recorded_at` never decreases
//! as the position grows: a fold stops at the first event past its horizon. `valid_at` (business
//! time) filters those by `occurred_at`, which is not a prefix: such a fold reads every known
//! event after its snapshot, so its cost grows with how far back `valid_at` lies.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::GenericClient;
use eventstore::{EventStore, RecordedEvent};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use crate::Projection;
use crate::error::ProjectorError;
use crate::read::{BoardCell, DealFilter, FollowUpRow, ForecastFilter, ForecastRow};
use crate::rules::{
    self, BoardFigures, BoardKey, DealView, Decoded, Deltas, ForecastFigures, ForecastKey,
    Granularity, ReadModel, accumulate,
};
use crate::snapshot::{self, Mark};

/// Events read from the store per query while folding.
const PAGE: i64 = 1_000;

/// What was known: the events recorded at or before an instant, those at or below a position,
/// or every event in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Instant(DateTime<Utc>),
    Position(i64),
    Everything,
}

/// Which events an answer from history takes into account: those known (on the transaction-time
/// axis), and of those, when `valid_at` is given, the ones with `occurred_at <= valid_at` (the
/// business-time axis), folded in position order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub known: Known,
    pub valid_at: Option<DateTime<Utc>>,
}

impl Horizon {
    /// The events recorded at or before `instant`.
    pub fn as_of(instant: DateTime<Utc>) -> Horizon {
        Horizon {
            known: Known::Instant(instant),
            valid_at: None,
        }
    }

    /// The events at or below `position`.
    pub fn as_of_position(position: i64) -> Horizon {
        Horizon {
            known: Known::Position(position),
            valid_at: None,
        }
    }

    /// The events, of every one known now, that occurred at or before `instant`.
    pub fn valid_at(instant: DateTime<Utc>) -> Horizon {
        Horizon {
            known: Known::Everything,
            valid_at: Some(instant),
        }
    }

    /// Whether `event`, and so every later one, lies past what was known. The known events are
    /// a prefix of the log, because `recorded_at` never decreases as the position grows.
    fn ends_before(self, event: &RecordedEvent) -> bool {
        match self.known {
            Known::Instant(instant) => event.recorded_at > instant,
            Known::Position(position) => event.position > position,
            Known::Everything => false,
        }
    }

    /// Whether a known event counts. Those that occurred after `valid_at` are not a prefix: an
    /// imported event may sit anywhere after it in the log, so a fold skips them and goes on.
    /// Within one stream they are a suffix (`occurred_at` never decreases with the version),
    /// so every deal is folded from a prefix of its own events.
    pub fn includes(self, event: &RecordedEvent) -> bool {
        self.valid_at
            .is_none_or(|valid_at| event.occurred_at <= valid_at)
    }

    /// The bounds a snapshot must lie within to serve this horizon. `occurred_at` is never after
    /// `recorded_at`, so every event recorded by `valid_at` occurred by then too: a snapshot
    /// recorded by then holds only events that count.
    fn snapshot_bounds(self) -> (i64, DateTime<Utc>) {
        let (position, instant) = match self.known {
            Known::Instant(instant) => (i64::MAX, instant),
            Known::Position(position) => (position, DateTime::<Utc>::MAX_UTC),
            Known::Everything => (i64::MAX, DateTime::<Utc>::MAX_UTC),
        };
        (
            position,
            self.valid_at
                .map_or(instant, |valid_at| valid_at.min(instant)),
        )
    }
}

/// What an answer from history covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// The last position included; 0 when no event is.
    pub position: i64,
    /// The instant of the transaction-time axis: the `as_of` asked for, or for a position the
    /// `recorded_at` of the event there. `None` for position 0 and when every event is known.
    pub as_of: Option<DateTime<Utc>>,
    /// The instant of the business-time axis, when one was asked for.
    pub valid_at: Option<DateTime<Utc>>,
    /// The last position read, included or not: where a fold goes on from.
    scanned: i64,
}

impl Covered {
    fn start(horizon: Horizon, mark: Option<Mark>) -> Covered {
        let as_of = match horizon.known {
            Known::Instant(instant) => Some(instant),
            Known::Position(_) => mark.map(|mark| mark.recorded_at),
            Known::Everything => None,
        };
        let position = mark.map_or(0, |mark| mark.position);
        Covered {
            position,
            as_of,
            valid_at: horizon.valid_at,
            scanned: position,
        }
    }

    /// The instant at which fields that grow with the clock (time in the current stage) are
    /// computed: the world at `valid_at` when asked for, else at `as_of`.
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        self.valid_at.or(self.as_of)
    }

    /// Records that `event` was read; whether it counts is `horizon`'s to say.
    fn read(&mut self, horizon: Horizon, event: &RecordedEvent) {
        self.scanned = event.position;
        if let Known::Position(_) = horizon.known {
            self.as_of = Some(event.recorded_at);
        }
        if horizon.includes(event) {
            self.position = event.position;
        }
    }
}

/// The next known events after `after`; empty once there are no more. The second value tells
/// whether later pages may hold more. Events that occurred after `valid_at` are left in: the
/// caller skips them, and reads past them.
async fn page(
    store: &EventStore,
    after: i64,
    horizon: Horizon,
) -> Result<(Vec<RecordedEvent>, bool), ProjectorError> {
    let mut events = store.read_all(after, PAGE, None).await?;
    let full = events.len() as i64 == PAGE;
    match events.iter().position(|event| horizon.ends_before(event)) {
        Some(end) => {
            events.truncate(end);
            Ok((events, false))
        }
        None => Ok((events, full)),
    }
}

/// A transaction that sees one consistent set of snapshot tables, even if a rebuild swaps them
/// meanwhile (the swap waits for it).
async fn snapshot_reader(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, ProjectorError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The board's or the forecast's sums folded up to a horizon, with the rows of the deals the
/// folded events touched; the others are as the snapshot it started from has them.
struct Tally {
    projection: Projection,
    /// The snapshot the untouched deals are read from; 0 when there is none.
    base: i64,
    deals: HashMap<Uuid, Option<DealView>>,
    sums: Deltas,
    covered: Covered,
}

impl Tally {
    /// Starts from the nearest snapshot of `projection` at or before `horizon`.
    async fn start(
        client: &impl GenericClient,
        projection: Projection,
        horizon: Horizon,
    ) -> Result<Tally, ProjectorError> {
        let (position, instant) = horizon.snapshot_bounds();
        let mark = snapshot::nearest(client, projection, position, instant).await?;
        let sums = match mark {
            Some(mark) => snapshot::sums(client, projection, mark.position).await?,
            None => Deltas::default(),
        };
        Ok(Tally {
            projection,
            base: mark.map_or(0, |mark| mark.position),
            deals: HashMap::new(),
            sums,
            covered: Covered::start(horizon, mark),
        })
    }

    /// Starts again from a snapshot when there is one past what is read so far, then folds the
    /// events up to `horizon` (not before what is read already). A fold that skipped events for
    /// `valid_at` cannot take them in later, so only a horizon without `valid_at` may be
    /// advanced to a later one.
    async fn advance(
        &mut self,
        client: &impl GenericClient,
        store: &EventStore,
        horizon: Horizon,
    ) -> Result<(), ProjectorError> {
        let (position, instant) = horizon.snapshot_bounds();
        if let Some(mark) = snapshot::nearest(client, self.projection, position, instant).await?
            && mark.position > self.covered.scanned
        {
            *self = Tally::start(client, self.projection, horizon).await?;
        }
        if let Known::Instant(instant) = horizon.known {
            self.covered.as_of = Some(instant);
        }
        loop {
            let (events, more) = page(store, self.covered.scanned, horizon).await?;
            let decoded: Vec<_> = events
                .iter()
                .filter(|event| horizon.includes(event))
                .filter_map(|event| match rules::decode(event) {
                    Decoded::Opportunity(context, event) => Some((context, event)),
                    _ => None,
                })
                .collect();
            let unknown: Vec<Uuid> = decoded
                .iter()
                .map(|(context, _)| context.opportunity_id)
                .filter(|id| !self.deals.contains_key(id))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !unknown.is_empty() {
                let mut found = if self.base > 0 {
                    snapshot::deals(client, self.projection, self.base, Some(&unknown)).await?
                } else {
                    HashMap::new()
                };
                for id in unknown {
                    self.deals.insert(id, found.remove(&id));
                }
            }
            let changes = rules::fold_batch(&mut self.deals, &decoded);
            for (key, figures) in changes.deltas.board {
                accumulate(&mut self.sums.board, key, figures);
            }
            for (key, figures) in changes.deltas.forecast {
                accumulate(&mut self.sums.forecast, key, figures);
            }
            for event in &events {
                self.covered.read(horizon, event);
            }
            if !more {
                return Ok(());
            }
        }
    }
}

/// Every deal's row as of `horizon` (the pipeline projection's snapshots).
async fn read_model(
    store: &EventStore,
    horizon: Horizon,
) -> Result<(ReadModel, Covered), ProjectorError> {
    let mut client = store.pool().get().await?;
    let transaction = snapshot_reader(&mut client).await?;
    let (position, instant) = horizon.snapshot_bounds();
    let mark = snapshot::nearest(&transaction, Projection::Pipeline, position, instant).await?;
    let mut model = ReadModel::default();
    if let Some(mark) = mark {
        let deals =
            snapshot::deals(&transaction, Projection::Pipeline, mark.position, None).await?;
        model.deals = deals.into_iter().collect();
        model.position = mark.position;
    }
    transaction.commit().await?;
    let mut covered = Covered::start(horizon, mark);
    loop {
        let (events, more) = page(store, covered.scanned, horizon).await?;
        for event in &events {
            if horizon.includes(event) {
                model.apply(event);
            }
            covered.read(horizon, event);
        }
        if !more {
            return Ok((model, covered));
        }
    }
}

/// Every event `known` covers, from the first, in position order. Analytics fold the whole log
/// (`crate::analytics`): the snapshots do not keep the closes a win rate counts.
pub(crate) async fn known_events(
    store: &EventStore,
    known: Known,
) -> Result<Vec<RecordedEvent>, ProjectorError> {
    let horizon = Horizon {
        known,
        valid_at: None,
    };
    let mut events = Vec::new();
    loop {
        let after = events
            .last()
            .map_or(0, |event: &RecordedEvent| event.position);
        let (page, more) = page(store, after, horizon).await?;
        events.extend(page);
        if !more {
            return Ok(events);
        }
    }
}

/// Where `horizon` stands in the log, without folding anything.
pub async fn covered(store: &EventStore, horizon: Horizon) -> Result<Covered, ProjectorError> {
    let client = store.pool().get().await?;
    let (position, instant) = horizon.snapshot_bounds();
    let mark = snapshot::nearest(&client, Projection::Pipeline, position, instant).await?;
    drop(client);
    let mut covered = Covered::start(horizon, mark);
    loop {
        let (events, more) = page(store, covered.scanned, horizon).await?;
        for event in &events {
            covered.read(horizon, event);
        }
        if !more {
            return Ok(covered);
        }
    }
}

/// [`crate::read::board`] as of `horizon`.
pub async fn board(
    store: &EventStore,
    pipeline: &str,
    horizon: Horizon,
) -> Result<(Vec<BoardCell>, Covered), ProjectorError> {
    let mut client = store.pool().get().await?;
    let transaction = snapshot_reader(&mut client).await?;
    let mut tally = Tally::start(&transaction, Projection::Pipeline, horizon).await?;
    tally.advance(&transaction, store, horizon).await?;
    transaction.commit().await?;
    Ok((board_cells(tally.sums.board, pipeline)?, tally.covered))
}

/// The cells of one pipeline's board, from the board's sums.
pub fn board_cells(
    board: BTreeMap<BoardKey, BoardFigures>,
    pipeline: &str,
) -> Result<Vec<BoardCell>, ProjectorError> {
    board
        .into_iter()
        .filter(|(key, _)| key.pipeline == pipeline)
        .map(|(key, figures)| {
            Ok(BoardCell {
                stage: key.stage,
                currency: key.currency,
                count: i64::try_from(figures.count).map_err(|_| {
                    ProjectorError::Corrupt(format!("board count {} overflows", figures.count))
                })?,
                amount: figures.amount,
                weighted_amount: figures.weighted_amount,
            })
        })
        .collect()
}

/// The forecast rows of `cells` that `filter` keeps.
pub fn forecast_answer(
    cells: &BTreeMap<ForecastKey, ForecastFigures>,
    granularity: Granularity,
    filter: &ForecastFilter,
) -> Result<Vec<ForecastRow>, ProjectorError> {
    let wanted =
        |value: &str, filter: &Option<String>| filter.as_deref().is_none_or(|f| f == value);
    rules::forecast_rows(cells, granularity)
        .into_iter()
        .filter(|((_, owner, pipeline, currency), _)| {
            wanted(owner, &filter.owner)
                && wanted(pipeline, &filter.pipeline)
                && wanted(currency, &filter.currency)
        })
        .map(|((period, owner, pipeline, currency), figures)| {
            Ok(ForecastRow {
                period,
                owner,
                pipeline,
                currency,
                open_count: i64::try_from(figures.open_count).map_err(|_| {
                    ProjectorError::Corrupt(format!("open count {} overflows", figures.open_count))
                })?,
                pipeline_amount: figures.pipeline_amount,
                weighted_amount: figures.weighted_amount,
                commit: figures.commit,
                best_case: figures.best_case,
                closed_won: figures.closed_won,
                closed_lost: figures.closed_lost,
            })
        })
        .collect()
}

/// [`crate::read::forecast`] as of `horizon`.
pub async fn forecast(
    store: &EventStore,
    granularity: Granularity,
    filter: &ForecastFilter,
    horizon: Horizon,
) -> Result<(Vec<ForecastRow>, Covered), ProjectorError> {
    let mut client = store.pool().get().await?;
    let transaction = snapshot_reader(&mut client).await?;
    let mut tally = Tally::start(&transaction, Projection::Forecast, horizon).await?;
    tally.advance(&transaction, store, horizon).await?;
    transaction.commit().await?;
    let rows = forecast_answer(&tally.sums.forecast, granularity, filter)?;
    Ok((rows, tally.covered))
}

/// The forecast cells that `select` keeps, summed, as of each of `horizons` (ascending): one
/// fold that moves forward, starting again from a snapshot whenever one lies between two
/// horizons. A horizon with `valid_at` is folded on its own, from the nearest snapshot before
/// it, since what counts at one `valid_at` is not a prefix of what counts at the next.
pub async fn forecast_trend(
    store: &EventStore,
    horizons: &[Horizon],
    select: impl Fn(&ForecastKey) -> bool,
) -> Result<Vec<(ForecastFigures, Covered)>, ProjectorError> {
    let Some(first) = horizons.first() else {
        return Ok(Vec::new());
    };
    let mut client = store.pool().get().await?;
    let transaction = snapshot_reader(&mut client).await?;
    let mut tally = Tally::start(&transaction, Projection::Forecast, *first).await?;
    let mut points = Vec::with_capacity(horizons.len());
    for (index, horizon) in horizons.iter().enumerate() {
        if horizon.valid_at.is_some() && index > 0 {
            tally = Tally::start(&transaction, Projection::Forecast, *horizon).await?;
        }
        tally.advance(&transaction, store, *horizon).await?;
        let total = tally
            .sums
            .forecast
            .iter()
            .filter(|(key, _)| select(key))
            .fold(ForecastFigures::default(), |total, (_, figures)| {
                total + *figures
            });
        points.push((total, tally.covered));
    }
    transaction.commit().await?;
    Ok(points)
}

/// [`crate::read::deals`] as of `horizon`.
pub async fn deals(
    store: &EventStore,
    filter: &DealFilter,
    horizon: Horizon,
) -> Result<(Vec<DealView>, Covered), ProjectorError> {
    let (model, covered) = read_model(store, horizon).await?;
    let limit = usize::try_from(filter.limit).unwrap_or(0);
    let deals = model
        .deals
        .into_values()
        .filter(|deal| {
            filter
                .stage
                .as_deref()
                .is_none_or(|stage| deal.stage.as_str() == stage)
                && filter
                    .owner
                    .as_deref()
                    .is_none_or(|owner| deal.owner.as_str() == owner)
                && filter
                    .status
                    .as_deref()
                    .is_none_or(|status| serde_name(&deal.status) == status)
                && filter.after.is_none_or(|after| deal.id > after)
        })
        .take(limit)
        .collect();
    Ok((deals, covered))
}

/// [`crate::read::follow_ups`] as of `horizon`.
pub async fn follow_ups(
    store: &EventStore,
    owner: Option<&str>,
    statuses: &[&str],
    limit: i64,
    horizon: Horizon,
) -> Result<(Vec<FollowUpRow>, Covered), ProjectorError> {
    let (model, covered) = read_model(store, horizon).await?;
    let mut rows: Vec<FollowUpRow> = model
        .deals
        .values()
        .filter(|deal| owner.is_none_or(|owner| deal.owner.as_str() == owner))
        .flat_map(|deal| {
            deal.follow_ups.iter().map(|(id, follow_up)| FollowUpRow {
                id: *id,
                opportunity_id: deal.id,
                kind: serde_name(&follow_up.kind),
                // The follow_ups table keeps microseconds, as PostgreSQL does.
                due_at: follow_up.due_at.round_subsecs(6),
                status: serde_name(&follow_up.status),
                owner: deal.owner.to_string(),
            })
        })
        .filter(|row| statuses.contains(&row.status.as_str()))
        .collect();
    rows.sort_by_key(|row| (row.due_at, row.id));
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, covered))
}

/// One deal as of `horizon`, folded from its own stream; `None` if it did not exist yet.
pub async fn deal(
    store: &EventStore,
    id: Uuid,
    horizon: Horizon,
) -> Result<(Option<DealView>, Covered), ProjectorError> {
    let covered = covered(store, horizon).await?;
    let events = store.read_stream(&format!("opportunity-{id}")).await?;
    let mut model = ReadModel::default();
    events
        .iter()
        .take_while(|event| event.position <= covered.position)
        .filter(|event| horizon.includes(event))
        .for_each(|event| model.apply(event));
    Ok((model.deals.remove(&id), covered))
}

/// The text the tables store for a value: its serde name (`open`, `stale-deal`).
fn serde_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}
