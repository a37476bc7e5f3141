//! How `projections rebuild` shows its progress: a bar with events done, rate and time left on a
//! terminal, plain log lines (at most one every few seconds) otherwise.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use projector::{RebuildPhase, RebuildProgress};

/// A log line at most this often when not on a terminal, so that logs stay readable.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub fn rebuild_reporter(on_terminal: bool) -> impl FnMut(&RebuildProgress) + Send {
    let bar = on_terminal.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} positions, {msg}, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last_log: Option<Instant> = None;
    move |progress: &RebuildProgress| {
        if let Some(bar) = &bar {
            bar.set_prefix(progress.projection.name());
            bar.set_length(progress.head.max(progress.position).max(0) as u64);
            bar.set_position(progress.position.max(0) as u64);
            bar.set_message(format!("{} events applied", progress.events_applied));
            if progress.phase == RebuildPhase::Done {
                bar.finish();
            }
            return;
        }
        let due = last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due || progress.phase != RebuildPhase::Replaying {
            last_log = Some(Instant::now());
            tracing::info!(
                projection = progress.projection.name(),
                phase = ?progress.phase,
                position = progress.position,
                head = progress.head,
                events_applied = progress.events_applied,
                positions_per_second = progress.positions_per_second.round(),
                eta_seconds = progress.eta.map(|eta| eta.as_secs()),
                "rebuilding"
            );
        }
    }
}
