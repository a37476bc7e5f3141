//! `dealstream backtest`: for every past period of the store, the forecast made `--lead-days`
//! before it began, with the stage defaults and with historical win rates side by side, beside
//! what was actually closed won in it; then each model's mean absolute error per currency.
//!
//! The figures are those `GET /v1/analytics/forecast-accuracy` answers, computed by
//! `projector::analytics` in one forward fold over the store's log for both models.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, Datelike, Months, Utc};
use eventstore::EventStore;
use projector::analytics::{
    self, AccuracyRow, Axis, Calibration, Period, ProbabilityModel, Timeline,
};
use projector::asof::Known;
use projector::rules::{Granularity, Month};

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// month or quarter.
    #[arg(long, default_value = "quarter")]
    period: String,
    /// Days before each period's first day that its forecast is taken, comma-separated.
    #[arg(long, default_value = "0,30,90", value_delimiter = ',')]
    lead_days: Vec<u16>,
    /// `occurred` judges what the world looked like then, which is what imported history
    /// (every event recorded on the day it was loaded) can show; `recorded` judges what the
    /// system knew then.
    #[arg(long, default_value = "occurred")]
    time: String,
}

/// One period, currency and lead time, with both models.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub period: String,
    pub currency: String,
    pub stage: AccuracyRow,
    pub historical: AccuracyRow,
}

/// Every line, oldest period first, and each model's mean absolute error per currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    pub lines: Vec<Line>,
    /// `(currency, stage MAE, historical MAE)`, in minor units.
    pub mean_absolute_errors: Vec<(String, f64, f64)>,
}

/// The periods that ended by `now`, from the one holding the earliest event on the timeline's
/// axis.
fn past_periods(
    first: DateTime<Utc>,
    granularity: Granularity,
    now: DateTime<Utc>,
) -> Vec<(String, Period)> {
    let months = match granularity {
        Granularity::Month => 1,
        Granularity::Quarter => 3,
    };
    let date = first.date_naive();
    let start_month = (date.month0() / months) * months + 1;
    let mut first_day = date.with_day(1).and_then(|day| day.with_month(start_month));
    let mut periods = Vec::new();
    while let Some(day) = first_day {
        let Some(next) = day.checked_add_months(Months::new(months)) else {
            break;
        };
        if next.and_time(chrono::NaiveTime::MIN).and_utc() > now {
            break;
        }
        let period = Period {
            first: Month::of(day),
            last: Month::of(next.pred_opt().unwrap_or(day)),
        };
        periods.push((period.first.label(granularity), period));
        first_day = Some(next);
    }
    periods
}

/// The backtest of every past period of `timeline`, in each currency its deals use.
pub fn backtest(
    timeline: &Timeline,
    granularity: Granularity,
    lead_days: &[i64],
    calibration: Calibration,
    now: DateTime<Utc>,
) -> Backtest {
    let Some(first) = timeline.first_time() else {
        return Backtest {
            lines: Vec::new(),
            mean_absolute_errors: Vec::new(),
        };
    };
    let currencies: BTreeSet<String> = timeline
        .at(now)
        .model
        .deals
        .values()
        .map(|deal| deal.currency.to_string())
        .collect();
    let periods = past_periods(first, granularity, now);
    let targets: Vec<(Period, String)> = periods
        .iter()
        .flat_map(|(_, period)| {
            currencies
                .iter()
                .map(|currency| (*period, currency.clone()))
        })
        .collect();
    let run = |model| analytics::accuracy(timeline, &targets, lead_days, model, calibration, now);
    let (stage, historical) = (
        run(ProbabilityModel::Stage),
        run(ProbabilityModel::Historical),
    );
    let labels = periods
        .iter()
        .flat_map(|(label, _)| currencies.iter().map(move |currency| (label, currency)));
    let lines: Vec<Line> = labels
        .zip(stage.into_iter().zip(historical))
        .flat_map(|((label, currency), (stage, historical))| {
            stage
                .into_iter()
                .zip(historical)
                .map(|(stage, historical)| Line {
                    period: label.clone(),
                    currency: currency.clone(),
                    stage,
                    historical,
                })
        })
        .collect();
    let mean_absolute_errors = currencies
        .iter()
        .filter_map(|currency| {
            let errors: Vec<(i128, i128)> = lines
                .iter()
                .filter(|line| &line.currency == currency)
                .map(|line| (line.stage.error.abs(), line.historical.error.abs()))
                .collect();
            let count = errors.len() as f64;
            (!errors.is_empty()).then(|| {
                let (stage, historical) = errors
                    .iter()
                    .fold((0.0, 0.0), |(stage, historical), (s, h)| {
                        (stage + *s as f64, historical + *h as f64)
                    });
                (currency.clone(), stage / count, historical / count)
            })
        })
        .collect();
    Backtest {
        lines,
        mean_absolute_errors,
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"))
}

/// The table: one aligned line per period, currency and lead time, then the errors.
pub fn table(backtest: &Backtest) -> String {
    let mut lines: Vec<[String; 10]> = vec![
        [
            "period",
            "currency",
            "lead_days",
            "actual_won",
            "stage_weighted",
            "stage_error",
            "stage_abs_pct",
            "historical_weighted",
            "historical_error",
            "historical_abs_pct",
        ]
        .map(str::to_owned),
    ];
    lines.extend(backtest.lines.iter().map(|line| {
        [
            line.period.clone(),
            line.currency.clone(),
            line.stage.lead_days.to_string(),
            line.stage.actual_closed_won.to_string(),
            line.stage.weighted_amount.to_string(),
            line.stage.error.to_string(),
            percent(line.stage.abs_pct_error),
            line.historical.weighted_amount.to_string(),
            line.historical.error.to_string(),
            percent(line.historical.abs_pct_error),
        ]
    }));
    let mut text = "backtest (amounts in minor units)\n".to_owned();
    text.push_str(&crate::forecast::aligned(&lines, 2));
    if backtest.lines.is_empty() {
        text.push_str("(no past period)\n");
    }
    for (currency, stage, historical) in &backtest.mean_absolute_errors {
        writeln!(
            text,
            "mean absolute error {currency}: stage {stage:.0}, historical {historical:.0}"
        )
        .unwrap_or_default();
    }
    text
}

/// Prints the backtest of the store.
pub async fn run(
    store: &EventStore,
    args: &BacktestArgs,
    calibration: Calibration,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let granularity = Granularity::parse(&args.period)
        .with_context(|| format!("--period: {:?} is not one of month, quarter", args.period))?;
    let axis = Axis::parse(&args.time)
        .with_context(|| format!("--time: {:?} is not one of recorded, occurred", args.time))?;
    let lead_days: Vec<i64> = args.lead_days.iter().copied().map(i64::from).collect();
    let timeline = Timeline::load(store, Known::Everything, axis)
        .await
        .context("could not read the event store")?;
    print!(
        "{}",
        table(&backtest(
            &timeline,
            granularity,
            &lead_days,
            calibration,
            now
        ))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::collections::BTreeSet;

    use chrono::{DateTime, TimeDelta, Utc};
    use clap::Parser;
    use commands::{CommandHandler, SystemClock};
    use domain::values::parse_owner;
    use projector::analytics::{Axis, Calibration, Timeline};
    use projector::asof::Known;
    use projector::rules::Granularity;
    use testkit::TestDb;

    use super::{backtest, table};
    use crate::demo::{BASE_WIN, DemoArgs, history};
    use crate::import::{Importer, import};

    #[derive(Parser)]
    struct Demo {
        #[command(flatten)]
        arguments: DemoArgs,
    }

    /// On the demo's 18 months (ending on a fixed day, so the history is the same every day the
    /// suite runs): the win rates recover the demo's documented propensities (each stage's
    /// historical probability is nearer its propensity than the stage default is), and the
    /// backtest covers the six quarters that ended, both models agreeing while nothing had
    /// closed yet.
    #[tokio::test]
    async fn the_demo_history_is_calibrated_and_backtested() {
        let end: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let demo = Demo::parse_from(["demo", "--months", "18"]);
        let lines = history(&demo.arguments, end).unwrap();
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let database = TestDb::new().await;
        let handler = CommandHandler::new(database.store(), Arc::new(SystemClock));
        handler.ensure_default_pipeline().await.unwrap();
        let importer = Importer {
            handler: &handler,
            default_owner: parse_owner("unassigned").unwrap(),
        };
        let report = import(&importer, text.as_bytes(), false, |_| {}, |_, _| {})
            .await
            .unwrap();
        assert_eq!(report.refused, []);
        let timeline = Timeline::load(handler.store(), Known::Everything, Axis::Occurred)
            .await
            .unwrap();

        let calibration = Calibration {
            lookback: TimeDelta::days(36_500),
            ..Calibration::default()
        };
        let rates = timeline
            .win_rates(&timeline.at(end), "default", end, calibration)
            .unwrap();
        for (rate, propensity) in rates.iter().zip(BASE_WIN) {
            let historical = f64::from(rate.historical_probability.percent());
            let default = f64::from(rate.default_probability.percent());
            assert!(
                (historical - propensity * 100.0).abs() < (default - propensity * 100.0).abs(),
                "{rate:?} against a propensity of {propensity}"
            );
        }

        let result = backtest(
            &timeline,
            Granularity::Quarter,
            &[0, 30, 90],
            Calibration::default(),
            end,
        );
        let quarters: BTreeSet<&str> = result
            .lines
            .iter()
            .map(|line| line.period.as_str())
            .collect();
        assert_eq!(
            quarters.into_iter().collect::<Vec<_>>(),
            [
                "2024-Q4", "2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4", "2026-Q1"
            ]
        );
        let first = result.lines.iter().filter(|line| line.period == "2024-Q4");
        for line in first {
            assert_eq!(line.stage, line.historical, "{}", table(&result));
        }
        assert_eq!(result.mean_absolute_errors.len(), 3, "EUR, GBP and USD");
    }
}
