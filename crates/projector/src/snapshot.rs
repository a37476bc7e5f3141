//! Snapshots of the read models: the cache that makes an answer as of any position cost the same
//! however far back it is.
//!
//! Each projection writes, in the transaction of the batch that applies it, a snapshot right
//! after every event whose position starts a new interval of `snapshot_every` positions (so at
//! every multiple of it, since live batches have no gaps): the sums of its board or forecast,
//! and the rows of the deals that changed since its previous snapshot. A deal's row at a snapshot
//! is its latest version at or below it. [`crate::asof`] starts from the nearest snapshot and
//! folds only the events after it.
//!
//! Snapshots are a cache. Deleting them all ([`drop_all`]) changes no answer: the next snapshot
//! finds no previous one and copies every deal, and until then answers fold from the first
//! event. A rebuild writes them afresh with the other tables. Deleting only some of them is not
//! supported: a deal copied by a deleted snapshot would be missing from the later ones.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use eventstore::RecordedEvent;
use serde::Deserialize;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::Projection;
use crate::error::ProjectorError;
use crate::rules::{BoardFigures, BoardKey, DealView, Deltas, ForecastFigures, ForecastKey, Month};

/// Positions between two snapshots: an answer as of any position folds at most about this many
/// events after its snapshot. Each snapshot copies the deals changed since the previous one.
pub const DEFAULT_SNAPSHOT_EVERY: i64 = 1_000;

/// Whether the event at `position`, applied right after the one at `previous`, starts a new
/// interval of `every` positions. `every` of 0 or less writes no snapshots.
pub(crate) fn crosses(previous: i64, position: i64, every: i64) -> bool {
    every > 0 && position.div_euclid(every) > previous.div_euclid(every)
}

fn marks_table(projection: Projection) -> &'static str {
    match projection {
        Projection::Pipeline => "pipeline_snapshots",
        Projection::Forecast => "forecast_snapshots",
    }
}

fn versions_table(projection: Projection) -> &'static str {
    match projection {
        Projection::Pipeline => "pipeline_snapshot_deals",
        Projection::Forecast => "forecast_snapshot_deals",
    }
}

/// The table of sums, its key columns, and the expression of a deal row's last position.
fn sums_source(projection: Projection) -> (&'static str, &'static str, &'static str) {
    match projection {
        Projection::Pipeline => ("board", "pipeline, stage, currency", "position"),
        Projection::Forecast => (
            "forecast",
            "month, owner, pipeline, currency",
            "(view ->> 'position')::bigint",
        ),
    }
}

/// Writes the snapshot right after `event`, from the projection's tables as they stand in
/// `transaction` (which has applied everything up to `event`).
pub(crate) async fn write(
    transaction: &Transaction<'_>,
    projection: Projection,
    suffix: &str,
    event: &RecordedEvent,
) -> Result<(), ProjectorError> {
    let marks = format!("{}{suffix}", marks_table(projection));
    let versions = format!("{}{suffix}", versions_table(projection));
    let deals = format!("{}{suffix}", projection.deals_table());
    let (sums, key, deal_position) = sums_source(projection);
    let previous: i64 = transaction
        .query_one(
            &format!("select coalesce(max(position), 0)::bigint from {marks} where position < $1"),
            &[&event.position],
        )
        .await?
        .try_get(0)?;
    transaction
        .execute(
            &format!(
                "insert into {versions} (id, position, view) \
                 select id, $1, view from {deals} where {deal_position} > $2 \
                 on conflict do nothing"
            ),
            &[&event.position, &previous],
        )
        .await?;
    transaction
        .execute(
            &format!(
                "insert into {marks} (position, recorded_at, sums) \
                 select $1, $2, coalesce(jsonb_agg(to_jsonb(s) order by {key}), '[]'::jsonb) \
                 from {sums}{suffix} s \
                 on conflict do nothing"
            ),
            &[&event.position, &event.recorded_at],
        )
        .await?;
    Ok(())
}

/// A snapshot: the position it was taken right after, and that event's `recorded_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
}

/// The latest snapshot of `projection` at or below `position` and recorded at or before
/// `instant`.
pub(crate) async fn nearest(
    client: &impl GenericClient,
    projection: Projection,
    position: i64,
    instant: DateTime<Utc>,
) -> Result<Option<Mark>, ProjectorError> {
    let row = client
        .query_opt(
            &format!(
                "select position, recorded_at from {} \
                 where position <= $1 and recorded_at <= $2 order by position desc limit 1",
                marks_table(projection)
            ),
            &[&position, &instant],
        )
        .await?;
    row.map(|row| {
        Ok(Mark {
            position: row.try_get(0)?,
            recorded_at: row.try_get(1)?,
        })
    })
    .transpose()
}

#[derive(Deserialize)]
struct BoardRow {
    pipeline: String,
    stage: String,
    currency: String,
    count: i128,
    amount: i128,
    weighted_amount: i128,
}

#[derive(Deserialize)]
struct ForecastRow {
    month: NaiveDate,
    owner: String,
    pipeline: String,
    currency: String,
    deals: i128,
    open_count: i128,
    pipeline_amount: i128,
    weighted_amount: i128,
    best_case: i128,
    commit: i128,
    closed_won: i128,
    closed_lost: i128,
}

/// The sums of the snapshot at `position`: the board's cells for the pipeline projection, the
/// forecast's for the forecast projection.
pub(crate) async fn sums(
    client: &impl GenericClient,
    projection: Projection,
    position: i64,
) -> Result<Deltas, ProjectorError> {
    let row = client
        .query_one(
            &format!(
                "select sums::text from {} where position = $1",
                marks_table(projection)
            ),
            &[&position],
        )
        .await?;
    // Read as text: sums may exceed i64, and serde_json reads wider integers only from text.
    let text: String = row.try_get(0)?;
    let corrupt = |error: serde_json::Error| {
        ProjectorError::Corrupt(format!(
            "{} at {position} does not decode: {error}",
            marks_table(projection)
        ))
    };
    let mut sums = Deltas::default();
    match projection {
        Projection::Pipeline => {
            for row in serde_json::from_str::<Vec<BoardRow>>(&text).map_err(corrupt)? {
                sums.board.insert(
                    BoardKey {
                        pipeline: row.pipeline,
                        stage: row.stage,
                        currency: row.currency,
                    },
                    BoardFigures {
                        count: row.count,
                        amount: row.amount,
                        weighted_amount: row.weighted_amount,
                    },
                );
            }
        }
        Projection::Forecast => {
            for row in serde_json::from_str::<Vec<ForecastRow>>(&text).map_err(corrupt)? {
                sums.forecast.insert(
                    ForecastKey {
                        month: Month::of(row.month),
                        owner: row.owner,
                        pipeline: row.pipeline,
                        currency: row.currency,
                    },
                    ForecastFigures {
                        deals: row.deals,
                        open_count: row.open_count,
                        pipeline_amount: row.pipeline_amount,
                        weighted_amount: row.weighted_amount,
                        best_case: row.best_case,
                        commit: row.commit,
                        closed_won: row.closed_won,
                        closed_lost: row.closed_lost,
                    },
                );
            }
        }
    }
    Ok(sums)
}

/// The rows of deals at the snapshot at `position`: those of `ids`, or of every deal.
pub(crate) async fn deals(
    client: &impl GenericClient,
    projection: Projection,
    position: i64,
    ids: Option<&[Uuid]>,
) -> Result<HashMap<Uuid, DealView>, ProjectorError> {
    let table = versions_table(projection);
    let rows = match ids {
        Some(ids) => {
            client
                .query(
                    &format!(
                        "select distinct on (id) id, view from {table} \
                         where id = any($1) and position <= $2 order by id, position desc"
                    ),
                    &[&ids, &position],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!(
                        "select distinct on (id) id, view from {table} \
                         where position <= $1 order by id, position desc"
                    ),
                    &[&position],
                )
                .await?
        }
    };
    rows.into_iter()
        .map(|row| {
            let id: Uuid = row.try_get(0)?;
            let view: serde_json::Value = row.try_get(1)?;
            let view = serde_json::from_value(view).map_err(|error| {
                ProjectorError::Corrupt(format!("{table} row {id} does not decode: {error}"))
            })?;
            Ok((id, view))
        })
        .collect()
}

/// Deletes every snapshot of every projection. Answers stay the same; those as of earlier
/// positions fold more events until the projectors have written new snapshots.
pub async fn drop_all(pool: &Pool) -> Result<(), ProjectorError> {
    let client = pool.get().await?;
    let mut statements = String::new();
    for projection in Projection::ALL {
        statements.push_str(&format!(
            "delete from {}; delete from {};",
            marks_table(projection),
            versions_table(projection)
        ));
    }
    client.batch_execute(&statements).await?;
    Ok(())
}
