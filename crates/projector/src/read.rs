//! Reads over the read-model tables, for the API. Only this crate knows the tables' shape; the
//! API turns these typed answers into HTTP.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::Projection;
use crate::error::ProjectorError;
use crate::rules::{DealView, Granularity, Sum};

/// The position `projection` has applied up to; 0 before its first batch.
pub async fn checkpoint(pool: &Pool, projection: Projection) -> Result<i64, ProjectorError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "select position from projection_checkpoints where projection = $1",
            &[&projection.name()],
        )
        .await?;
    Ok(match row {
        Some(row) => row.try_get(0)?,
        None => 0,
    })
}

/// Waits until `projection` has applied `position`, polling its checkpoint. `false` when it has
/// not within `timeout`.
pub async fn wait_for(
    pool: &Pool,
    projection: Projection,
    position: i64,
    timeout: Duration,
) -> Result<bool, ProjectorError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if checkpoint(pool, projection).await? >= position {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn decode_view(value: serde_json::Value) -> Result<DealView, ProjectorError> {
    serde_json::from_value(value)
        .map_err(|error| ProjectorError::Corrupt(format!("a deals row does not decode: {error}")))
}

/// One deal's row, if the pipeline projection has it.
pub async fn deal(pool: &Pool, id: Uuid) -> Result<Option<DealView>, ProjectorError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("select view from deals where id = $1", &[&id])
        .await?;
    row.map(|row| decode_view(row.try_get(0)?)).transpose()
}

#[derive(Debug, Clone, Default)]
pub struct DealFilter {
    pub stage: Option<String>,
    pub owner: Option<String>,
    /// `open`, `won` or `lost`.
    pub status: Option<String>,
    /// Only deals with a greater id (the cursor).
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Deals in id order (ids are UUID v7, so roughly creation order), filtered.
pub async fn deals(pool: &Pool, filter: &DealFilter) -> Result<Vec<DealView>, ProjectorError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "select view from deals \
             where ($1::text is null or stage = $1) and ($2::text is null or owner = $2) \
               and ($3::text is null or status = $3) and ($4::uuid is null or id > $4) \
             order by id limit $5",
            &[
                &filter.stage,
                &filter.owner,
                &filter.status,
                &filter.after,
                &filter.limit,
            ],
        )
        .await?;
    rows.into_iter()
        .map(|row| decode_view(row.try_get(0)?))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardCell {
    pub stage: String,
    pub currency: String,
    pub count: i64,
    pub amount: Sum,
    pub weighted_amount: Sum,
}

/// Open deals of one pipeline per stage and currency, in byte order (as [`crate::asof`] sorts).
pub async fn board(pool: &Pool, pipeline: &str) -> Result<Vec<BoardCell>, ProjectorError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "select stage, currency, count, amount::text, weighted_amount::text from board \
             where pipeline = $1 order by stage collate \"C\", currency collate \"C\"",
            &[&pipeline],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(BoardCell {
                stage: row.try_get(0)?,
                currency: row.try_get(1)?,
                count: row.try_get(2)?,
                amount: sum(row.try_get(3)?)?,
                weighted_amount: sum(row.try_get(4)?)?,
            })
        })
        .collect()
}

fn sum(text: String) -> Result<Sum, ProjectorError> {
    text.parse()
        .map_err(|_| ProjectorError::Corrupt(format!("sum {text:?} is not an integer in range")))
}

#[derive(Debug, Clone, Default)]
pub struct ForecastFilter {
    pub owner: Option<String>,
    pub pipeline: Option<String>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForecastRow {
    /// `2026-12` or `2026-Q4`.
    pub period: String,
    pub owner: String,
    pub pipeline: String,
    pub currency: String,
    pub open_count: i64,
    pub pipeline_amount: Sum,
    pub weighted_amount: Sum,
    pub commit: Sum,
    pub best_case: Sum,
    pub closed_won: Sum,
    pub closed_lost: Sum,
}

/// Forecast rows per period, owner, pipeline and currency, in that order (byte order, as
/// [`crate::asof`] sorts).
pub async fn forecast(
    pool: &Pool,
    granularity: Granularity,
    filter: &ForecastFilter,
) -> Result<Vec<ForecastRow>, ProjectorError> {
    let client = pool.get().await?;
    let period = match granularity {
        Granularity::Month => "to_char(month, 'YYYY-MM')",
        Granularity::Quarter => "to_char(month, 'YYYY-\"Q\"Q')",
    };
    let sql = format!(
        "select {period} as period, owner, pipeline, currency, sum(open_count)::bigint, \
           sum(pipeline_amount)::text, sum(weighted_amount)::text, sum(\"commit\")::text, \
           sum(best_case)::text, sum(closed_won)::text, sum(closed_lost)::text \
         from forecast \
         where ($1::text is null or owner = $1) and ($2::text is null or pipeline = $2) \
           and ($3::text is null or currency = $3) \
         group by 1, owner, pipeline, currency \
         order by 1, owner collate \"C\", pipeline collate \"C\", \
           currency collate \"C\""
    );
    let rows = client
        .query(&sql, &[&filter.owner, &filter.pipeline, &filter.currency])
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ForecastRow {
                period: row.try_get(0)?,
                owner: row.try_get(1)?,
                pipeline: row.try_get(2)?,
                currency: row.try_get(3)?,
                open_count: row.try_get(4)?,
                pipeline_amount: sum(row.try_get(5)?)?,
                weighted_amount: sum(row.try_get(6)?)?,
                commit: sum(row.try_get(7)?)?,
                best_case: sum(row.try_get(8)?)?,
                closed_won: sum(row.try_get(9)?)?,
                closed_lost: sum(row.try_get(10)?)?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpRow {
    pub id: Uuid,
    pub opportunity_id: Uuid,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub status: String,
    pub owner: String,
}

/// Follow-ups with one of `statuses`, optionally of one owner's deals, soonest due first.
pub async fn follow_ups(
    pool: &Pool,
    owner: Option<&str>,
    statuses: &[&str],
    limit: i64,
) -> Result<Vec<FollowUpRow>, ProjectorError> {
    let client = pool.get().await?;
    follow_ups_with(&**client, owner, statuses, limit).await
}

async fn follow_ups_with(
    client: &impl GenericClient,
    owner: Option<&str>,
    statuses: &[&str],
    limit: i64,
) -> Result<Vec<FollowUpRow>, ProjectorError> {
    let rows = client
        .query(
            "select f.id, f.opportunity_id, f.kind, f.due_at, f.status, d.owner \
             from follow_ups f join deals d on d.id = f.opportunity_id \
             where f.status = any($1) and ($2::text is null or d.owner = $2) \
             order by f.due_at, f.id limit $3",
            &[&statuses, &owner, &limit],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(FollowUpRow {
                id: row.try_get(0)?,
                opportunity_id: row.try_get(1)?,
                kind: row.try_get(2)?,
                due_at: row.try_get(3)?,
                status: row.try_get(4)?,
                owner: row.try_get(5)?,
            })
        })
        .collect()
}
