//! The `commands` scenario and its `baseline-insert` baseline.
//!
//! Clients send single-event commands (stage moves, activities, amount changes) over HTTP to a
//! population of deals for a fixed time. The baseline then inserts as many events, with the same
//! payload, into a scratch copy of the events table, one INSERT per transaction, with as many
//! connections as there were clients: the cost of durably writing one event per commit with no
//! domain, no HTTP and no ordering guarantee. Only group commit lets commands beat it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::report::{Compare, Figure, Report};
use crate::stats::Latency;
use crate::workload::{Random, create_deals, next_command};
use crate::{BenchOptions, Deployment, Progress, cpu, function_baseline};

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    progress.step(format!("commands: creating {} deals", options.deals));
    let deals = create_deals(deployment, options.deals).await?;
    for &clients in &options.clients {
        progress.step(format!("commands: {clients} clients"));
        let figure = drive_commands(deployment, &deals, clients, options.seconds).await?;
        tracing::info!(clients, per_second = figure.per_second, "commands measured");
        let events = figure.count.max(1_000);
        report.figures.push(figure);
        let payload = sample_payload(deployment).await?;
        progress.step(format!(
            "baseline-insert: {events} events, {clients} connections"
        ));
        let baseline = baseline_insert(deployment, clients, events, payload.clone()).await?;
        report.figures.push(baseline);
        progress.step(format!("baseline-function: {clients} connections"));
        let function =
            function_baseline::run(deployment, &deals, clients, options.seconds, payload).await?;
        report.figures.push(function);
    }
    Ok(())
}

/// What the load generator did in one step.
#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    conflicts: u64,
    errors: u64,
    /// The generator thread's own CPU time.
    cpu: Duration,
}

/// `clients` clients sending single-event commands to `deals` for `duration`, from a thread and
/// runtime of their own, so that the generator's CPU time is told apart from the server's: the
/// figure carries both, and PostgreSQL's, per command.
pub(crate) async fn drive_commands(
    deployment: &Deployment,
    deals: &[Uuid],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Figure> {
    let client = deployment.http_client().pool_max_idle_per_host(256);
    let base = deployment.url("");
    let deals: Arc<[Uuid]> = deals.into();
    let (done, finished) = tokio::sync::oneshot::channel();
    let meter = cpu::Meter::start();
    let started = Instant::now();
    std::thread::spawn(move || {
        let load = (|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let before = cpu::this_thread();
            let mut load =
                runtime.block_on(generate(client.build()?, base, deals, clients, duration))?;
            load.cpu = cpu::this_thread().saturating_sub(before);
            anyhow::Ok(load)
        })();
        // The receiver only goes away when the bench itself is ending.
        let _ = done.send(load);
    });
    let mut load = finished
        .await
        .context("the load generator's thread died")??;
    let elapsed = started.elapsed().as_secs_f64();
    let spent = meter.stop();
    let commands = load.latencies.len() as u64;
    let mut figure = Figure::new("commands", clients as u64, "clients", "commands")
        .measured(commands, elapsed)
        .against("baseline-insert", Compare::Throughput)
        .with(
            "server_cpu_ms",
            cpu::ms_per(spent.process.saturating_sub(load.cpu), commands),
        )
        .with("postgres_cpu_ms", cpu::ms_per(spent.postgres, commands))
        .with("generator_cpu_ms", cpu::ms_per(load.cpu, commands));
    figure.latency = Some(Latency::of(&mut load.latencies));
    figure.errors = load.errors;
    figure.conflicts = load.conflicts;
    Ok(figure)
}

async fn generate(
    client: reqwest::Client,
    base: String,
    deals: Arc<[Uuid]>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..clients {
        let (client, deals, base) = (client.clone(), deals.clone(), base.clone());
        tasks.spawn(async move {
            let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ (seed as u64 + 1));
            let mut load = Load::default();
            while Instant::now() < deadline {
                let deal = deals[random.below(deals.len())];
                let (path, body) = next_command(&mut random, deal);
                let sent = Instant::now();
                let status = client
                    .post(format!("{base}{path}"))
                    .json(&body)
                    .send()
                    .await
                    .map(|response| response.status());
                load.latencies.push(sent.elapsed());
                match status {
                    Ok(status) if status.is_success() => {}
                    Ok(reqwest::StatusCode::CONFLICT) => load.conflicts += 1,
                    _ => load.errors += 1,
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(finished) = tasks.join_next().await {
        let load = finished.context("a bench client failed")?;
        total.latencies.extend(load.latencies);
        total.conflicts += load.conflicts;
        total.errors += load.errors;
    }
    Ok(total)
}

/// A recent event's data and metadata, so that baseline rows carry a realistic payload.
async fn sample_payload(deployment: &Deployment) -> anyhow::Result<(Value, Value)> {
    let store = deployment.handler.store();
    let head = store.head_position().await?;
    let event = store
        .read_all(head - 1, 1, None)
        .await?
        .pop()
        .context("the commands scenario wrote no event")?;
    Ok((event.data, event.metadata))
}

async fn baseline_insert(
    deployment: &Deployment,
    clients: usize,
    events: u64,
    (data, metadata): (Value, Value),
) -> anyhow::Result<Figure> {
    {
        let client = deployment.pool.get().await?;
        client
            .batch_execute(
                "drop table if exists baseline_events;
                 drop sequence if exists baseline_positions;
                 create sequence baseline_positions;
                 create table baseline_events (like events including all);
                 alter table baseline_events alter column position
                     set default nextval('baseline_positions');",
            )
            .await
            .context("could not create the baseline table")?;
    }
    let remaining = Arc::new(AtomicU64::new(events));
    let meter = cpu::Meter::start();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let pool = deployment.pool.clone();
        let remaining = remaining.clone();
        let (data, metadata) = (data.clone(), metadata.clone());
        tasks.spawn(async move {
            let client = pool.get().await?;
            let insert = client
                .prepare(
                    "insert into baseline_events (event_id, stream_id, stream_version, \
                     event_type, schema_version, recorded_at, data, metadata) \
                     values ($1, $2, 1, 'ActivityLogged', 1, clock_timestamp(), $3, $4)",
                )
                .await?;
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                let stream_id = format!("opportunity-{}", Uuid::now_v7());
                let sent = Instant::now();
                client
                    .execute(&insert, &[&Uuid::now_v7(), &stream_id, &data, &metadata])
                    .await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(finished) = tasks.join_next().await {
        latencies.extend(finished.context("a baseline client failed")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spent = meter.stop();
    let inserts = latencies.len() as u64;
    let payload_bytes = (data.to_string().len() + metadata.to_string().len()) as f64;
    let mut figure = Figure::new("baseline-insert", clients as u64, "connections", "events")
        .measured(inserts, elapsed)
        .with("payload_bytes", payload_bytes)
        .with("postgres_cpu_ms", cpu::ms_per(spent.postgres, inserts))
        .with("generator_cpu_ms", cpu::ms_per(spent.process, inserts));
    figure.latency = Some(Latency::of(&mut latencies));
    Ok(figure)
}
