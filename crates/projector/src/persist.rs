//! Turns a batch of events into SQL. The rules decide everything: this module loads the rows a
//! batch touches, folds the batch through [`rules::apply`] in memory, and writes back the changed
//! rows and the sums' deltas (each changed deal's old contribution subtracted, its new one added).
//! One statement per table per batch, whatever the batch size, with the rows passed as one JSON
//! document; numbers in JSON are read by PostgreSQL as `numeric`, so deltas wider than i64 pass
//! through exactly.
//!
//! Table names carry a suffix: `""` for the live tables, `"_rebuild"` while a rebuild fills fresh
//! ones.

use std::collections::HashMap;

use eventstore::RecordedEvent;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::Projection;
use crate::error::ProjectorError;
use crate::rules::{self, DealView, Decoded, Deltas};

/// What a batch did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Opportunity events folded into rows.
    pub events: u64,
    /// Known events that do not decode or hold values the tables cannot store, skipped.
    pub malformed: u64,
    /// The position of the last event taken into account (applied or skipped), where the
    /// checkpoint may go; `None` when the batch stopped at its first event.
    pub through: Option<i64>,
    /// Why the batch stopped before its end: an event with a schema version this build cannot
    /// read. Neither it nor any later event of the batch was taken into account.
    pub stopped: Option<ProjectorError>,
}

/// Applies `events` (ascending positions, none applied before) to the projection's tables, on
/// top of the state at position `after`, and writes a snapshot wherever the position crosses a
/// multiple of `snapshot_every` (see [`crate::snapshot`]). Leaves the checkpoint to the caller,
/// which writes it in the same transaction.
pub(crate) async fn apply_events(
    transaction: &Transaction<'_>,
    projection: Projection,
    suffix: &str,
    after: i64,
    snapshot_every: i64,
    events: &[RecordedEvent],
) -> Result<Applied, ProjectorError> {
    // The state right after each event that starts a new interval is a snapshot.
    let mut previous = after;
    let mut chunk_ends: Vec<(usize, bool)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if crate::snapshot::crosses(previous, event.position, snapshot_every) {
            chunk_ends.push((index + 1, true));
        }
        previous = event.position;
    }
    chunk_ends.push((events.len(), false));

    let mut applied = Applied::default();
    let mut start = 0;
    for (end, snapshot) in chunk_ends {
        let chunk = &events[start..end];
        start = end;
        let chunk_applied = apply_chunk(transaction, projection, suffix, chunk).await?;
        applied.events += chunk_applied.events;
        applied.malformed += chunk_applied.malformed;
        applied.through = chunk_applied.through.or(applied.through);
        if chunk_applied.stopped.is_some() {
            applied.stopped = chunk_applied.stopped;
            break;
        }
        if let (true, Some(last)) = (snapshot, chunk.last()) {
            crate::snapshot::write(transaction, projection, suffix, last).await?;
        }
    }
    Ok(applied)
}

async fn apply_chunk(
    transaction: &Transaction<'_>,
    projection: Projection,
    suffix: &str,
    events: &[RecordedEvent],
) -> Result<Applied, ProjectorError> {
    let mut applied = Applied::default();
    let mut decoded = Vec::new();
    for event in events {
        match rules::decode(event) {
            Decoded::Opportunity(context, event) => decoded.push((context, event)),
            Decoded::Irrelevant => {}
            Decoded::UnknownSchemaVersion { schema_version } => {
                applied.stopped = Some(ProjectorError::UnknownSchemaVersion {
                    position: event.position,
                    event_type: event.event_type.clone(),
                    schema_version,
                });
                break;
            }
            Decoded::Malformed(error) => {
                applied.malformed += 1;
                tracing::error!(
                    projection = projection.name(),
                    position = event.position,
                    stream_id = %event.stream_id,
                    error = %error,
                    "skipping a malformed event"
                );
            }
        }
        applied.through = Some(event.position);
    }
    if decoded.is_empty() {
        return Ok(applied);
    }
    applied.events = decoded.len() as u64;

    let mut ids: Vec<Uuid> = decoded
        .iter()
        .map(|(context, _)| context.opportunity_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();

    let state_table = format!("{}{suffix}", projection.deals_table());
    let rows = transaction
        .query(
            &format!("select id, view from {state_table} where id = any($1)"),
            &[&ids],
        )
        .await?;
    let mut deals: HashMap<Uuid, Option<DealView>> = HashMap::with_capacity(ids.len());
    for row in rows {
        let id: Uuid = row.try_get(0)?;
        let view: serde_json::Value = row.try_get(1)?;
        let view: DealView = serde_json::from_value(view).map_err(|error| {
            ProjectorError::Corrupt(format!("{state_table} row {id} does not decode: {error}"))
        })?;
        deals.insert(id, Some(view));
    }
    let changes = rules::fold_batch(&mut deals, &decoded);
    // A deal row is never removed: no event deletes a deal.
    let changed: Vec<&DealView> = changes
        .changed
        .iter()
        .filter_map(|id| deals.get(id).and_then(Option::as_ref))
        .collect();
    let deltas = &changes.deltas;

    match projection {
        Projection::Pipeline => {
            write_deals(transaction, suffix, &changed).await?;
            write_follow_ups(transaction, suffix, &changed).await?;
            write_board(transaction, suffix, deltas).await?;
        }
        Projection::Forecast => {
            write_forecast_deals(transaction, suffix, &changed).await?;
            write_forecast(transaction, suffix, deltas).await?;
        }
    }
    Ok(applied)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ProjectorError> {
    serde_json::to_string(value)
        .map_err(|error| ProjectorError::Unexpected(std::sync::Arc::new(error)))
}

#[derive(Serialize)]
struct DealRow<'a> {
    id: Uuid,
    pipeline: &'a str,
    stage: &'a str,
    status: domain::opportunity::OpportunityStatus,
    owner: &'a str,
    currency: &'a str,
    amount: i64,
    probability: u8,
    weighted_amount: i64,
    forecast_category: domain::values::ForecastCategory,
    expected_close_date: chrono::NaiveDate,
    closed_at: Option<chrono::DateTime<chrono::Utc>>,
    entered_stage_at: chrono::DateTime<chrono::Utc>,
    last_activity_at: Option<chrono::DateTime<chrono::Utc>>,
    next_follow_up_at: Option<chrono::DateTime<chrono::Utc>>,
    open_follow_ups: usize,
    version: i64,
    position: i64,
    view: &'a DealView,
}

async fn write_deals(
    transaction: &Transaction<'_>,
    suffix: &str,
    deals: &[&DealView],
) -> Result<(), ProjectorError> {
    if deals.is_empty() {
        return Ok(());
    }
    let rows: Vec<DealRow<'_>> = deals
        .iter()
        .map(|deal| DealRow {
            id: deal.id,
            pipeline: deal.pipeline.as_str(),
            stage: deal.stage.as_str(),
            status: deal.status,
            owner: deal.owner.as_str(),
            currency: deal.currency.as_str(),
            amount: deal.amount.minor_units(),
            probability: deal.probability().percent(),
            weighted_amount: deal.weighted_amount(),
            forecast_category: deal.forecast_category(),
            expected_close_date: deal.expected_close_date,
            closed_at: deal.closed_at,
            entered_stage_at: deal.entered_stage_at,
            last_activity_at: deal.last_activity_at,
            next_follow_up_at: deal.next_follow_up_at(),
            open_follow_ups: deal.open_follow_ups(),
            version: deal.version,
            position: deal.position,
            view: deal,
        })
        .collect();
    let columns = "id, pipeline, stage, status, owner, currency, amount, probability, \
                   weighted_amount, forecast_category, expected_close_date, closed_at, \
                   entered_stage_at, last_activity_at, next_follow_up_at, open_follow_ups, \
                   version, position, view";
    let sql = format!(
        "insert into deals{suffix} ({columns}) select {columns} \
         from jsonb_to_recordset($1::text::jsonb) as r(id uuid, pipeline text, stage text, \
           status text, owner text, currency text, amount bigint, probability int, \
           weighted_amount bigint, forecast_category text, expected_close_date date, \
           closed_at timestamptz, entered_stage_at timestamptz, last_activity_at timestamptz, \
           next_follow_up_at timestamptz, open_follow_ups int, version bigint, position bigint, \
           view jsonb) \
         on conflict (id) do update set pipeline = excluded.pipeline, stage = excluded.stage, \
           status = excluded.status, owner = excluded.owner, currency = excluded.currency, \
           amount = excluded.amount, probability = excluded.probability, \
           weighted_amount = excluded.weighted_amount, \
           forecast_category = excluded.forecast_category, \
           expected_close_date = excluded.expected_close_date, closed_at = excluded.closed_at, \
           entered_stage_at = excluded.entered_stage_at, \
           last_activity_at = excluded.last_activity_at, \
           next_follow_up_at = excluded.next_follow_up_at, \
           open_follow_ups = excluded.open_follow_ups, version = excluded.version, \
           position = excluded.position, view = excluded.view"
    );
    transaction.execute(&sql, &[&to_json(&rows)?]).await?;
    Ok(())
}

async fn write_follow_ups(
    transaction: &Transaction<'_>,
    suffix: &str,
    deals: &[&DealView],
) -> Result<(), ProjectorError> {
    if deals.is_empty() {
        return Ok(());
    }
    // A changed deal's follow-ups are replaced as a whole: they are few per deal, and this keeps
    // the table a plain copy of the rows the rules hold.
    let ids: Vec<Uuid> = deals.iter().map(|deal| deal.id).collect();
    transaction
        .execute(
            &format!("delete from follow_ups{suffix} where opportunity_id = any($1)"),
            &[&ids],
        )
        .await?;
    let rows: Vec<serde_json::Value> = deals
        .iter()
        .flat_map(|deal| {
            deal.follow_ups.iter().map(|(id, follow_up)| {
                json!({
                    "opportunity_id": deal.id,
                    "id": id,
                    "kind": follow_up.kind,
                    "due_at": follow_up.due_at,
                    "status": follow_up.status,
                })
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    transaction
        .execute(
            &format!(
                "insert into follow_ups{suffix} (opportunity_id, id, kind, due_at, status) \
                 select opportunity_id, id, kind, due_at, status \
                 from jsonb_to_recordset($1::text::jsonb) as r(opportunity_id uuid, id uuid, \
                   kind text, due_at timestamptz, status text)"
            ),
            &[&to_json(&rows)?],
        )
        .await?;
    Ok(())
}

async fn write_forecast_deals(
    transaction: &Transaction<'_>,
    suffix: &str,
    deals: &[&DealView],
) -> Result<(), ProjectorError> {
    if deals.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = deals
        .iter()
        .map(|deal| json!({ "id": deal.id, "view": deal }))
        .collect();
    transaction
        .execute(
            &format!(
                "insert into forecast_deals{suffix} (id, view) select id, view \
                 from jsonb_to_recordset($1::text::jsonb) as r(id uuid, view jsonb) \
                 on conflict (id) do update set view = excluded.view"
            ),
            &[&to_json(&rows)?],
        )
        .await?;
    Ok(())
}

async fn write_board(
    transaction: &Transaction<'_>,
    suffix: &str,
    deltas: &Deltas,
) -> Result<(), ProjectorError> {
    if deltas.board.is_empty() {
        return Ok(());
    }
    #[derive(Serialize)]
    struct Row<'a> {
        pipeline: &'a str,
        stage: &'a str,
        currency: &'a str,
        count: i128,
        amount: i128,
        weighted_amount: i128,
    }
    let rows: Vec<Row<'_>> = deltas
        .board
        .iter()
        .map(|(key, figures)| Row {
            pipeline: &key.pipeline,
            stage: &key.stage,
            currency: &key.currency,
            count: figures.count,
            amount: figures.amount,
            weighted_amount: figures.weighted_amount,
        })
        .collect();
    let document = to_json(&rows)?;
    transaction
        .execute(
            &format!(
                "insert into board{suffix} as b (pipeline, stage, currency, count, amount, \
                   weighted_amount) \
                 select pipeline, stage, currency, count, amount, weighted_amount \
                 from jsonb_to_recordset($1::text::jsonb) as r(pipeline text, stage text, \
                   currency text, count bigint, amount numeric, weighted_amount numeric) \
                 on conflict (pipeline, stage, currency) do update set \
                   count = b.count + excluded.count, amount = b.amount + excluded.amount, \
                   weighted_amount = b.weighted_amount + excluded.weighted_amount"
            ),
            &[&document],
        )
        .await?;
    transaction
        .execute(
            &format!(
                "delete from board{suffix} b using jsonb_to_recordset($1::text::jsonb) \
                   as r(pipeline text, stage text, currency text) \
                 where b.pipeline = r.pipeline and b.stage = r.stage \
                   and b.currency = r.currency and b.count = 0"
            ),
            &[&document],
        )
        .await?;
    Ok(())
}

async fn write_forecast(
    transaction: &Transaction<'_>,
    suffix: &str,
    deltas: &Deltas,
) -> Result<(), ProjectorError> {
    if deltas.forecast.is_empty() {
        return Ok(());
    }
    #[derive(Serialize)]
    struct Row<'a> {
        month: chrono::NaiveDate,
        owner: &'a str,
        pipeline: &'a str,
        currency: &'a str,
        deals: i128,
        open_count: i128,
        pipeline_amount: i128,
        weighted_amount: i128,
        best_case: i128,
        commit: i128,
        closed_won: i128,
        closed_lost: i128,
    }
    let rows: Vec<Row<'_>> = deltas
        .forecast
        .iter()
        .map(|(key, figures)| Row {
            month: key.month.first_day(),
            owner: &key.owner,
            pipeline: &key.pipeline,
            currency: &key.currency,
            deals: figures.deals,
            open_count: figures.open_count,
            pipeline_amount: figures.pipeline_amount,
            weighted_amount: figures.weighted_amount,
            best_case: figures.best_case,
            commit: figures.commit,
            closed_won: figures.closed_won,
            closed_lost: figures.closed_lost,
        })
        .collect();
    let document = to_json(&rows)?;
    transaction
        .execute(
            &format!(
                "insert into forecast{suffix} as f (month, owner, pipeline, currency, deals, \
                   open_count, pipeline_amount, weighted_amount, best_case, \"commit\", \
                   closed_won, closed_lost) \
                 select month, owner, pipeline, currency, deals, open_count, pipeline_amount, \
                   weighted_amount, best_case, \"commit\", closed_won, closed_lost \
                 from jsonb_to_recordset($1::text::jsonb) as r(month date, owner text, \
                   pipeline text, currency text, deals bigint, open_count bigint, \
                   pipeline_amount numeric, weighted_amount numeric, best_case numeric, \
                   \"commit\" numeric, closed_won numeric, closed_lost numeric) \
                 on conflict (month, owner, pipeline, currency) do update set \
                   deals = f.deals + excluded.deals, \
                   open_count = f.open_count + excluded.open_count, \
                   pipeline_amount = f.pipeline_amount + excluded.pipeline_amount, \
                   weighted_amount = f.weighted_amount + excluded.weighted_amount, \
                   best_case = f.best_case + excluded.best_case, \
                   \"commit\" = f.\"commit\" + excluded.\"commit\", \
                   closed_won = f.closed_won + excluded.closed_won, \
                   closed_lost = f.closed_lost + excluded.closed_lost"
            ),
            &[&document],
        )
        .await?;
    transaction
        .execute(
            &format!(
                "delete from forecast{suffix} f using jsonb_to_recordset($1::text::jsonb) \
                   as r(month date, owner text, pipeline text, currency text) \
                 where f.month = r.month and f.owner = r.owner and f.pipeline = r.pipeline \
                   and f.currency = r.currency and f.deals = 0"
            ),
            &[&document],
        )
        .await?;
    Ok(())
}

/// Locks the projection's checkpoint row for the rest of the transaction and reads it. Every
/// batch and every swap takes this lock first, before touching any projection table, so batches
/// of the same projection (even from two processes) and a rebuild's swap are serialized and a
/// batch never sees a half-swapped set of tables.
pub(crate) async fn lock_checkpoint(
    transaction: &Transaction<'_>,
    projection: Projection,
) -> Result<i64, ProjectorError> {
    transaction
        .execute(
            "insert into projection_checkpoints (projection) values ($1) on conflict do nothing",
            &[&projection.name()],
        )
        .await?;
    let row = transaction
        .query_one(
            "select position from projection_checkpoints where projection = $1 for update",
            &[&projection.name()],
        )
        .await?;
    Ok(row.try_get(0)?)
}

pub(crate) async fn save_checkpoint(
    transaction: &Transaction<'_>,
    projection: Projection,
    position: i64,
) -> Result<(), ProjectorError> {
    transaction
        .execute(
            "update projection_checkpoints set position = $2, updated_at = now() \
             where projection = $1",
            &[&projection.name(), &position],
        )
        .await?;
    Ok(())
}
