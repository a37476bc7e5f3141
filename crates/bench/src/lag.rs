//! The `lag` scenario: commands at a steady rate through the HTTP API, with the relay and the
//! pipeline projector running, and for each command the time from its HTTP answer until the
//! pipeline read model shows it (its checkpoint reaches the command's position).
//!
//! The load is open-loop: command `i` is sent at `start + i / rate` whatever happened to the
//! earlier ones, so a slow answer does not quietly lower the rate (at most `MAX_IN_FLIGHT` are
//! outstanding; past that the achieved rate falls below the asked one, which the report shows).
//! The baseline, `lag-http`, is the same commands' HTTP round trip: lag is read as a multiple of
//! what a client already waits for the command itself.
//!
//! One watcher polls the checkpoint every millisecond on a dedicated connection, and only while
//! commands are waiting, so the lag figures have a resolution of about a millisecond.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::report::{Compare, Figure, Report};
use crate::stats::Latency;
use crate::workload::{Random, create_deals, next_command};
use crate::{BenchOptions, Deployment, Progress};

/// Commands awaiting their answer at once; beyond it the sender waits and the rate drops.
const MAX_IN_FLIGHT: usize = 512;
/// How long after the last answer a command may take to show before it counts as an error.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    progress.step("lag: starting the relay and the pipeline projector");
    let relay = deployment.start_relay(deployment.relay_config()?).await?;
    let projector = deployment.start_projector();
    let deals = create_deals(deployment, options.deals).await?;
    let head = deployment.store().head_position().await?;
    let caught_up = projector::read::wait_for(
        &deployment.pool,
        projector::Projection::Pipeline,
        head,
        Duration::from_secs(60),
    )
    .await?;
    anyhow::ensure!(
        caught_up,
        "the pipeline projector did not catch up within 60s"
    );

    let client = deployment
        .http_client()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    for &rate in &options.rates {
        progress.step(format!("lag: {rate} commands/s asked"));
        let (lag, http) = drive(deployment, &client, &deals, rate, options.seconds).await?;
        tracing::info!(rate, achieved = http.per_second, "lag measured");
        report.figures.push(lag);
        report.figures.push(http);
        anyhow::ensure!(
            !relay.is_finished() && !projector.is_finished(),
            "the relay or the projector stopped during the lag scenario"
        );
    }
    projector.stop().await?;
    relay.stop().await?;
    Ok(())
}

/// What one command's task reports.
enum Sent {
    Accepted { round_trip: Duration },
    Conflict,
    Failed,
}

async fn drive(
    deployment: &Deployment,
    client: &reqwest::Client,
    deals: &[Uuid],
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(Figure, Figure)> {
    let (answered, positions) = mpsc::unbounded_channel::<(i64, Instant)>();
    let watcher = tokio::spawn(watch(deployment.database.clone(), positions));

    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut random = Random(0xD1B5_4A32_D192_ED03 ^ u64::from(rate));
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0u32.. {
        let due = started + interval * index;
        if due > started + duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let deal = deals[random.below(deals.len())];
        let (path, body) = next_command(&mut random, deal);
        let request = client.post(deployment.url(&path)).json(&body);
        let answered = answered.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let Ok(response) = request.send().await else {
                return Sent::Failed;
            };
            let status = response.status();
            if status == reqwest::StatusCode::CONFLICT {
                return Sent::Conflict;
            }
            let position = match response.json::<serde_json::Value>().await {
                Ok(body) if status.is_success() => body["position"].as_i64(),
                _ => None,
            };
            let Some(position) = position else {
                return Sent::Failed;
            };
            let now = Instant::now();
            // The watcher only ends after every sender is gone, so this cannot fail while it
            // matters; a closed channel would show up as fewer visible commands.
            let _ = answered.send((position, now));
            Sent::Accepted {
                round_trip: now - sent,
            }
        });
    }
    drop(answered);
    let (mut round_trips, mut conflicts, mut failures) = (Vec::new(), 0, 0);
    while let Some(finished) = tasks.join_next().await {
        match finished.context("a lag client task failed")? {
            Sent::Accepted { round_trip } => round_trips.push(round_trip),
            Sent::Conflict => conflicts += 1,
            Sent::Failed => failures += 1,
        }
    }
    let sending = started.elapsed().as_secs_f64();
    let (mut lags, invisible) = watcher.await.context("the lag watcher failed")??;

    let mut lag = Figure::new("lag", u64::from(rate), "asked/s", "commands")
        .measured(lags.len() as u64, sending)
        .against("lag-http", Compare::P99Latency)
        .with("asked_per_second", f64::from(rate));
    lag.latency = Some(Latency::of(&mut lags));
    lag.errors = failures + invisible;
    lag.conflicts = conflicts;
    let mut http = Figure::new("lag-http", u64::from(rate), "asked/s", "commands")
        .measured(round_trips.len() as u64, sending)
        .with("asked_per_second", f64::from(rate));
    http.latency = Some(Latency::of(&mut round_trips));
    http.errors = failures;
    http.conflicts = conflicts;
    Ok((lag, http))
}

/// Polls the pipeline checkpoint while commands wait for it, and returns each command's lag
/// (answer to visible) and how many never became visible.
async fn watch(
    database: tokio_postgres::Config,
    mut positions: mpsc::UnboundedReceiver<(i64, Instant)>,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let (client, connection) = database
        .connect(tokio_postgres::NoTls)
        .await
        .context("the lag watcher could not connect")?;
    let connection = tokio::spawn(connection);
    let checkpoint = client
        .prepare("select position from projection_checkpoints where projection = 'pipeline'")
        .await?;
    let mut waiting: BTreeMap<i64, Vec<Instant>> = BTreeMap::new();
    let mut lags = Vec::new();
    let mut open = true;
    let mut closed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while open {
            match positions.try_recv() {
                Ok((position, answered)) => waiting.entry(position).or_default().push(answered),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    closed_at = Some(Instant::now());
                }
            }
        }
        if !waiting.is_empty() {
            let row = client.query_opt(&checkpoint, &[]).await?;
            let reached: i64 = row.map_or(Ok(0), |row| row.try_get(0))?;
            let now = Instant::now();
            let later = waiting.split_off(&(reached + 1));
            for answered in std::mem::replace(&mut waiting, later)
                .into_values()
                .flatten()
            {
                lags.push(now.saturating_duration_since(answered));
            }
        }
        if !open
            && (waiting.is_empty()
                || closed_at.is_some_and(|closed| closed.elapsed() > VISIBILITY_TIMEOUT))
        {
            break;
        }
        tick.tick().await;
    }
    drop(client);
    connection.abort();
    let invisible = waiting.values().map(|answers| answers.len() as u64).sum();
    Ok((lags, invisible))
}
