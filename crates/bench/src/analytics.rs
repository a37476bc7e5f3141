//! The `analytics` scenario: historical win rates and a six-quarter backtest over a generated
//! history that occurred over the last 18 months, each timed from reading the store to the
//! answer, beside a baseline that only reads the same events in position order.
//!
//! Both analyses read the whole log and sort it on the business axis before folding it, as
//! `GET /v1/analytics/win-rates` and `dealstream backtest` do, so the ratio to the ordered read
//! is what the fold, the sort and the forecasts at each instant add to the scan every answer
//! needs anyway.

use std::time::Instant;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use projector::RebuildOptions;
use projector::analytics::{Axis, Calibration, Timeline};
use projector::asof::Known;
use projector::backtest::backtest;
use projector::rules::Granularity;

use crate::rebuild::read_in_order;
use crate::report::{Compare, Figure, Report};
use crate::{BenchOptions, Deployment, Progress, history};

/// How far back the generated history reaches: six whole quarters and the current one.
const HISTORY_SPAN: TimeDelta = TimeDelta::days(548);
/// The backtest's lead times, as `dealstream backtest` defaults them.
const LEAD_DAYS: [i64; 3] = [0, 30, 90];

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let store = deployment.store();
    let target = options.analytics_events.max(1);
    progress.counted("analytics: appending history", target);
    let written = history::append(store, target, progress, 0, HISTORY_SPAN).await?;

    progress.counted(format!("analytics-read: {written} events"), written);
    let started = Instant::now();
    let batch_size = RebuildOptions::default().batch_size;
    let read = read_in_order(store, None, batch_size, progress).await?;
    report.figures.push(
        Figure::new("analytics-read", written, "events", "events")
            .measured(read, started.elapsed().as_secs_f64()),
    );

    let now = Utc::now();
    let calibration = Calibration::default();
    progress.step(format!("analytics-win-rates: {written} events"));
    let started = Instant::now();
    let timeline = Timeline::load(store, Known::Everything, Axis::Occurred).await?;
    let rates = timeline
        .win_rates(&timeline.at(now), "default", now, calibration)
        .context("the generated history has no default pipeline")?;
    // Every deal passes the first stage, so its counts are every close in the look-back.
    let closed = rates.first().map_or(0, |rate| rate.won + rate.lost);
    report.figures.push(
        Figure::new("analytics-win-rates", written, "events", "events")
            .measured(read, started.elapsed().as_secs_f64())
            .against("analytics-read", Compare::Throughput)
            .with("closes_counted", closed as f64),
    );
    drop(timeline);

    progress.step(format!("analytics-backtest: {written} events"));
    let started = Instant::now();
    let timeline = Timeline::load(store, Known::Everything, Axis::Occurred).await?;
    let result = backtest(
        &timeline,
        Granularity::Quarter,
        &LEAD_DAYS,
        calibration,
        now,
    );
    let quarters = result.lines.len() / LEAD_DAYS.len() / result.mean_absolute_errors.len().max(1);
    report.figures.push(
        Figure::new("analytics-backtest", written, "events", "events")
            .measured(read, started.elapsed().as_secs_f64())
            .against("analytics-read", Compare::Throughput)
            .with("quarters", quarters as f64)
            .with("lines", result.lines.len() as f64),
    );
    Ok(())
}
