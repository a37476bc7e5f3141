//! `dealstream forecast`: the forecast table, now, as of an earlier instant (`--as-of`: what was
//! known then) or valid at one (`--valid-at`: the world then, by what is known), or both.
//!
//! The figures are the rows `GET /v1/forecast` answers with the same parameters (amounts in minor
//! units, as the API gives them), computed by `projector::asof` from the store: the nearest
//! snapshot, then the events after it through the projector's own fold. So the command does not
//! depend on a projector having caught up, and without either instant it answers from every event
//! in the store. `--probability historical` weighs open deals with their stages' win rates as of
//! the instant instead (`projector::analytics`), as `probability=historical` does.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use eventstore::EventStore;
use projector::analytics::{self, Calibration, ProbabilityModel};
use projector::asof::{Covered, Horizon, Known};
use projector::read::{ForecastFilter, ForecastRow};
use projector::rules::Granularity;

#[derive(clap::Args)]
pub struct ForecastArgs {
    /// Only the events recorded at or before this RFC 3339 instant: what was known then.
    #[arg(long)]
    as_of: Option<String>,
    /// Only the events that occurred at or before this RFC 3339 instant: the world then.
    #[arg(long)]
    valid_at: Option<String>,
    /// month or quarter, of the expected close date (of the close date once closed).
    #[arg(long, default_value = "month")]
    period: String,
    /// stage (each stage's default probability) or historical (each stage's win rate as of the
    /// instant; docs/forecasting.md).
    #[arg(long, default_value = "stage")]
    probability: String,
}

/// The horizon the arguments ask for; `now` refuses instants after it, as the API does.
fn horizon(args: &ForecastArgs, now: DateTime<Utc>) -> anyhow::Result<Horizon> {
    let instant = |option: &str, text: &Option<String>| -> anyhow::Result<Option<DateTime<Utc>>> {
        let Some(text) = text else {
            return Ok(None);
        };
        let instant = DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!(
                    "{option}: {text:?} is not an RFC 3339 instant such as 2026-11-26T10:00:00Z"
                )
            })?
            .with_timezone(&Utc);
        if instant > now {
            bail!(
                "{option}: {} is in the future (now is {})",
                instant.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                now.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
        }
        Ok(Some(instant))
    };
    let known = instant("--as-of", &args.as_of)?.map_or(Known::Everything, Known::Instant);
    Ok(Horizon {
        known,
        valid_at: instant("--valid-at", &args.valid_at)?,
    })
}

/// The forecast rows the arguments ask for, and what they cover.
pub async fn rows(
    store: &EventStore,
    args: &ForecastArgs,
    calibration: Calibration,
    now: DateTime<Utc>,
) -> anyhow::Result<(Granularity, Vec<ForecastRow>, Covered)> {
    let granularity = Granularity::parse(&args.period)
        .with_context(|| format!("--period: {:?} is not one of month, quarter", args.period))?;
    let model = ProbabilityModel::parse(&args.probability).with_context(|| {
        format!(
            "--probability: {:?} is not one of stage, historical",
            args.probability
        )
    })?;
    let horizon = horizon(args, now)?;
    let filter = ForecastFilter::default();
    let (rows, covered) = projector::asof::forecast(store, granularity, &filter, horizon)
        .await
        .context("could not fold the forecast from the event store")?;
    if model == ProbabilityModel::Stage {
        return Ok((granularity, rows, covered));
    }
    let at = covered.instant().unwrap_or(now);
    let (weighed, _) = analytics::historical(store, Some(horizon), at, calibration)
        .await
        .context("could not fold the win rates from the event store")?;
    let rows = projector::asof::forecast_answer(&weighed.forecast(), granularity, &filter)?;
    Ok((granularity, rows, covered))
}

/// The table: a line saying what it covers, then one aligned line per row.
pub fn table(granularity: Granularity, rows: &[ForecastRow], covered: &Covered) -> String {
    let mut heading = format!("forecast by {}", granularity.as_str());
    let format = |instant: DateTime<Utc>| instant.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    if let Some(valid_at) = covered.valid_at {
        write!(heading, ", valid at {}", format(valid_at)).unwrap_or_default();
    }
    if let Some(as_of) = covered.as_of {
        write!(heading, ", as of {}", format(as_of)).unwrap_or_default();
    }
    write!(
        heading,
        ", through position {} (amounts in minor units)",
        covered.position
    )
    .unwrap_or_default();
    let mut lines: Vec<[String; 11]> = vec![
        [
            "period",
            "owner",
            "pipeline",
            "currency",
            "open_count",
            "pipeline_amount",
            "weighted_amount",
            "commit",
            "best_case",
            "closed_won",
            "closed_lost",
        ]
        .map(str::to_owned),
    ];
    lines.extend(rows.iter().map(|row| {
        [
            row.period.clone(),
            row.owner.clone(),
            row.pipeline.clone(),
            row.currency.clone(),
            row.open_count.to_string(),
            row.pipeline_amount.to_string(),
            row.weighted_amount.to_string(),
            row.commit.to_string(),
            row.best_case.to_string(),
            row.closed_won.to_string(),
            row.closed_lost.to_string(),
        ]
    }));
    let mut text = heading;
    text.push('\n');
    text.push_str(&aligned(&lines, 4));
    if rows.is_empty() {
        text.push_str("(no deals)\n");
    }
    text
}

/// `lines` in aligned columns, two spaces apart: the first `names` columns to the left, the
/// figures after them to the right.
pub fn aligned<const N: usize>(lines: &[[String; N]], names: usize) -> String {
    let mut widths = [0usize; N];
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column < names {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Prints the table the arguments ask for.
pub async fn run(
    store: &EventStore,
    args: &ForecastArgs,
    calibration: Calibration,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (granularity, rows, covered) = rows(store, args, calibration, now).await?;
    print!("{}", table(granularity, &rows, &covered));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, NaiveDate, Utc};
    use commands::{CommandContext, CommandHandler, SystemClock};
    use domain::opportunity::NewOpportunity;
    use domain::values::{Amount, Currency, OpportunityId, PipelineSlug, Text, parse_owner};
    use eventstore::EventStore;
    use testkit::TestDb;
    use uuid::Uuid;

    use super::{Calibration, ForecastArgs, rows, table};

    fn args(as_of: Option<&str>, valid_at: Option<&str>, period: &str) -> ForecastArgs {
        ForecastArgs {
            as_of: as_of.map(str::to_owned),
            valid_at: valid_at.map(str::to_owned),
            period: period.to_owned(),
            probability: "stage".to_owned(),
        }
    }

    #[tokio::test]
    async fn the_table_has_the_rows_the_api_answers_at_each_instant() {
        let database = TestDb::new().await;
        projector::migrate(&database.pool).await.unwrap();
        let store = EventStore::new(database.pool.clone());
        let handler = CommandHandler::new(store.clone(), Arc::new(SystemClock));
        handler.ensure_default_pipeline().await.unwrap();
        let mut context = CommandContext::new("import:test");
        context.occurred_at = Some("2025-01-10T09:00:00Z".parse().unwrap());
        handler
            .create_opportunity(
                &context,
                OpportunityId(Uuid::now_v7()),
                NewOpportunity {
                    name: Text::parse("name", "deal", 100).unwrap(),
                    lead_id: None,
                    pipeline: PipelineSlug::default_pipeline(),
                    stage: None,
                    amount: Amount::parse(10_005).unwrap(),
                    currency: Currency::parse("EUR").unwrap(),
                    expected_close_date: NaiveDate::from_ymd_opt(2025, 2, 28).unwrap(),
                    owner: parse_owner("alice").unwrap(),
                },
            )
            .await
            .unwrap();
        let now = Utc::now();

        // Created in `new` (10 %, pipeline): weighted 1 000.5, rounded away from zero to 1 001.
        let (granularity, found, covered) = rows(
            &store,
            &args(None, None, "quarter"),
            Calibration::default(),
            now,
        )
        .await
        .unwrap();
        let text = table(granularity, &found, &covered);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("forecast by quarter, through position 2"),
            "{text}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "2025-Q1", "alice", "default", "EUR", "1", "10005", "1001", "0", "0", "0", "0"
            ]
        );

        // Valid before it occurred: nothing. Known before it was recorded: nothing either.
        let (granularity, found, covered) = rows(
            &store,
            &args(None, Some("2025-01-01T00:00:00Z"), "month"),
            Calibration::default(),
            now,
        )
        .await
        .unwrap();
        assert!(found.is_empty());
        let text = table(granularity, &found, &covered);
        assert!(
            text.starts_with(
                "forecast by month, valid at 2025-01-01T00:00:00Z, through position 0"
            ),
            "{text}"
        );
        assert!(text.ends_with("(no deals)\n"), "{text}");
        let (_, found, covered) = rows(
            &store,
            &args(
                Some("2025-12-01T00:00:00Z"),
                Some("2025-01-11T00:00:00Z"),
                "month",
            ),
            Calibration::default(),
            now,
        )
        .await
        .unwrap();
        assert!(found.is_empty());
        assert_eq!(
            covered.as_of,
            Some("2025-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
    }

    #[tokio::test]
    async fn bad_arguments_name_the_option() {
        let database = TestDb::new().await;
        projector::migrate(&database.pool).await.unwrap();
        let store = EventStore::new(database.pool.clone());
        let now = Utc::now();
        for (arguments, words) in [
            (
                args(Some("yesterday"), None, "month"),
                ["--as-of", "RFC 3339"],
            ),
            (
                args(None, Some("2999-01-01T00:00:00Z"), "month"),
                ["--valid-at", "in the future"],
            ),
            (args(None, None, "week"), ["--period", "month, quarter"]),
            (
                ForecastArgs {
                    probability: "gut".to_owned(),
                    ..args(None, None, "month")
                },
                ["--probability", "stage, historical"],
            ),
        ] {
            let error = format!(
                "{:#}",
                rows(&store, &arguments, Calibration::default(), now)
                    .await
                    .unwrap_err()
            );
            for word in words {
                assert!(error.contains(word), "{error}");
            }
        }
    }
}
