//! The `asof` scenario: `GET /v1/forecast?as_of=<instant>` at random instants over a large
//! generated history, beside the live `GET /v1/forecast` (which reads the projector's tables)
//! measured in the same run, query for query in turn, so both see the same machine.
//!
//! The forecast projection is rebuilt over the history first, which writes its snapshots every
//! 1,000 positions as the live projector does; an answer as of an instant then folds at most
//! that many events after the nearest snapshot. Besides instants drawn over the whole history
//! (`asof`), instants drawn from its oldest tenth (`asof-old`) and its newest tenth
//! (`asof-recent`) show whether the cost depends on how far back the instant lies
//! (`old_vs_recent_p50` on `asof-old`). Each is read against the live query's p50.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use platform::CancellationToken;
use projector::{Projection, RebuildOptions};

use crate::report::{Compare, Figure, Report};
use crate::stats::Latency;
use crate::workload::Random;
use crate::{BenchOptions, Deployment, Progress, history};

/// Queries of each kind run before measuring, so that connections and caches are warm for all.
const WARM_UP: usize = 5;

/// The kinds of query measured, in the order they take turns.
const KINDS: [Kind; 4] = [Kind::Live, Kind::Anywhere, Kind::Old, Kind::Recent];

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The live query, from the tables: the baseline.
    Live,
    /// As of an instant anywhere in the history.
    Anywhere,
    /// As of an instant in the oldest tenth of the history.
    Old,
    /// As of an instant in the newest tenth of the history.
    Recent,
}

impl Kind {
    fn scenario(self) -> &'static str {
        match self {
            Kind::Live => "asof-live",
            Kind::Anywhere => "asof",
            Kind::Old => "asof-old",
            Kind::Recent => "asof-recent",
        }
    }

    /// The share of the history's time span instants are drawn from.
    fn span(self) -> (f64, f64) {
        match self {
            Kind::Live | Kind::Anywhere => (0.0, 1.0),
            Kind::Old => (0.0, 0.1),
            Kind::Recent => (0.9, 1.0),
        }
    }
}

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let store = deployment.store();
    let target = options.asof_events.max(1);
    progress.counted("asof: appending history", target);
    let written = history::append(store, target, progress, 0, TimeDelta::zero()).await?;
    progress.counted(
        format!("asof: forecast tables and snapshots over {written} events"),
        written,
    );
    projector::rebuild(
        Projection::Forecast,
        store,
        &RebuildOptions::default(),
        &CancellationToken::new(),
        &mut |state| progress.set(state.events_applied),
    )
    .await?;
    let (first, last) = recorded_span(deployment).await?;

    let client = deployment.http_client().build()?;
    let queries = options.asof_queries.max(1);
    // Deterministic, so that two runs ask for the same instants.
    let mut draw = Random(0x9E37_79B9_7F4A_7C15);
    let mut path = |kind: Kind| {
        let (from, to) = kind.span();
        let fraction = from + (to - from) * draw.fraction();
        match kind {
            Kind::Live => "/v1/forecast".to_owned(),
            _ => {
                let offset = (last - first).num_microseconds().unwrap_or(i64::MAX) as f64;
                let instant = first + chrono::Duration::microseconds((offset * fraction) as i64);
                format!(
                    "/v1/forecast?as_of={}",
                    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
                )
            }
        }
    };
    for _ in 0..WARM_UP {
        for kind in KINDS {
            get(&client, deployment, &path(kind)).await?;
        }
    }
    progress.counted(
        format!("asof: {queries} forecast queries of each kind"),
        queries as u64,
    );
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut errors = [0u64; 4];
    for round in 0..queries {
        for (index, kind) in KINDS.into_iter().enumerate() {
            let path = path(kind);
            let started = Instant::now();
            let ok = get(&client, deployment, &path).await?;
            samples[index].push(started.elapsed());
            if !ok {
                errors[index] += 1;
            }
        }
        progress.set(round as u64 + 1);
    }

    let p50 = |samples: &[Duration]| Latency::of(&mut samples.to_vec()).p50_ms;
    let (old_p50, recent_p50) = (p50(&samples[2]), p50(&samples[3]));
    for (index, kind) in KINDS.into_iter().enumerate() {
        let seconds: f64 = samples[index].iter().map(Duration::as_secs_f64).sum();
        let mut figure = Figure::new(kind.scenario(), written, "events", "queries")
            .measured(samples[index].len() as u64, seconds);
        figure.latency = Some(Latency::of(&mut samples[index]));
        figure.errors = errors[index];
        if let Kind::Live = kind {
            report.figures.push(figure);
            continue;
        }
        figure = figure.against("asof-live", Compare::P50Latency);
        if let Kind::Old = kind
            && recent_p50 > 0.0
        {
            figure = figure.with("old_vs_recent_p50", old_p50 / recent_p50);
        }
        report.figures.push(figure);
    }
    Ok(())
}

/// The `recorded_at` of the first and of the last event.
async fn recorded_span(deployment: &Deployment) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let store = deployment.store();
    let head = store.head_position().await?;
    let first = store.read_all(0, 1, None).await?;
    let last = store.read_all(head - 1, 1, None).await?;
    match (first.first(), last.first()) {
        (Some(first), Some(last)) => Ok((first.recorded_at, last.recorded_at)),
        _ => anyhow::bail!("the asof history is empty"),
    }
}

/// One query; whether it answered 200. A transport failure ends the scenario.
async fn get(
    client: &reqwest::Client,
    deployment: &Deployment,
    path: &str,
) -> anyhow::Result<bool> {
    let response = client
        .get(deployment.url(path))
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let ok = response.status().is_success();
    if !ok {
        tracing::warn!(path, status = %response.status(), "asof query failed");
    }
    // The body is part of the answer's cost.
    response
        .bytes()
        .await
        .with_context(|| format!("GET {path}"))?;
    Ok(ok)
}
