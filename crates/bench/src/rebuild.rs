//! The `rebuild` scenario: `projector::rebuild` of the pipeline projection over a generated
//! history, beside a baseline that only reads the same events from the store in order, in the
//! rebuild's batch size and with its category filter.
//!
//! It runs in two phases, at a fifth of the history (200,000 events by default) and at the whole
//! of it (1,000,000), and reports the process's peak resident memory during each rebuild. Equal
//! peaks show memory independent of history size. The peak is reset between phases through
//! `/proc/self/clear_refs`; where the kernel refuses, the largest resident size sampled after
//! each batch stands in for it.

use std::time::Instant;

use chrono::TimeDelta;
use eventstore::EventStore;
use platform::CancellationToken;
use projector::{Projection, RebuildOptions, RebuildProgress};

use crate::report::{Compare, Figure, Report};
use crate::{BenchOptions, Deployment, Progress, history, memory};

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let total = options.rebuild_events.max(1);
    let first = (total / 5).max(1);
    let phases: Vec<u64> = if first < total {
        vec![first, total]
    } else {
        vec![total]
    };
    let store = deployment.store();
    let rebuild_options = RebuildOptions::default();
    let mut written = 0;
    for target in phases {
        progress.counted("rebuild: appending history", target);
        written += history::append(
            store,
            target.saturating_sub(written),
            progress,
            written,
            TimeDelta::zero(),
        )
        .await?;

        progress.counted(format!("rebuild-read: {written} events"), written);
        report
            .figures
            .push(read_baseline(deployment, &rebuild_options, written, progress).await?);

        progress.counted(format!("rebuild: {written} events"), written);
        let reset = memory::reset_peak();
        let before = memory::resident_kib().unwrap_or(0);
        let mut sampled_peak = before;
        let mut on_batch = |state: &RebuildProgress| {
            sampled_peak = sampled_peak.max(memory::resident_kib().unwrap_or(0));
            progress.set(state.events_applied);
        };
        let started = Instant::now();
        let rebuilt = projector::rebuild(
            Projection::Pipeline,
            store,
            &rebuild_options,
            &CancellationToken::new(),
            &mut on_batch,
        )
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let peak = match (reset, memory::peak_kib()) {
            (true, Some(peak)) => peak,
            _ => sampled_peak,
        };
        tracing::info!(events = rebuilt.events_applied, elapsed, "rebuild measured");
        let mut figure = Figure::new("rebuild", written, "events", "events")
            .measured(rebuilt.events_applied, elapsed)
            .against("rebuild-read", Compare::Throughput)
            .with("rss_before_mib", memory::mib(before))
            .with("peak_rss_mib", memory::mib(peak))
            .with("batch_size", rebuild_options.batch_size as f64);
        if !reset {
            // Sampled after each batch: a lower bound of the true peak.
            figure = figure.with("peak_rss_sampled", 1.0);
        }
        report.figures.push(figure);
    }
    Ok(())
}

/// Reads every opportunity event in position order, as the rebuild does, and nothing else.
async fn read_baseline(
    deployment: &Deployment,
    options: &RebuildOptions,
    history: u64,
    progress: &Progress,
) -> anyhow::Result<Figure> {
    let started = Instant::now();
    let read = read_in_order(
        deployment.store(),
        Some("opportunity"),
        options.batch_size,
        progress,
    )
    .await?;
    Ok(Figure::new("rebuild-read", history, "events", "events")
        .measured(read, started.elapsed().as_secs_f64())
        .with("batch_size", options.batch_size as f64))
}

/// Reads every event of `category` (every event when `None`) in position order, `batch_size` at
/// a time, and does nothing with them: what any fold over the log costs at the least. Returns
/// how many it read.
pub async fn read_in_order(
    store: &EventStore,
    category: Option<&str>,
    batch_size: i64,
    progress: &Progress,
) -> anyhow::Result<u64> {
    let (mut after, mut read) = (0, 0u64);
    loop {
        let events = store.read_all(after, batch_size, category).await?;
        let Some(last) = events.last() else { break };
        after = last.position;
        read += events.len() as u64;
        progress.set(read);
    }
    Ok(read)
}
