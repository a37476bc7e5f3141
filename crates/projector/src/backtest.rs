//! The backtest of a store: for every period that has ended, the forecast made some days before
//! it began, with the stage defaults and with historical win rates side by side, beside what was
//! actually closed won in it; then each model's mean absolute error per currency.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Months, Utc};

use crate::analytics::{self, AccuracyRow, Calibration, Period, ProbabilityModel, Timeline};
use crate::rules::{Granularity, Month};

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
