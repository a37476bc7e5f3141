//! `baseline-function`: the nearest honest peer of dealstream's append on the same server, a
//! message-db-style store. Each event is written by one call of a PL/pgSQL function in its own
//! transaction, as message-db's `write_message` does: take a transaction-scoped advisory lock on
//! the stream's category, read the stream's version through the `(stream_id, stream_version)`
//! index, check the expected version, insert. The lock is held until the commit, so every write
//! to one category waits for the previous one's commit: what such a store buys ordering with.
//!
//! It runs for the same time as the commands it stands beside, on the same deals' streams (in a
//! scratch copy of the events table), with as many connections as there were clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::report::{Compare, Figure};
use crate::stats::Latency;
use crate::workload::Random;
use crate::{Deployment, cpu};

const SETUP: &str = "
    drop table if exists baseline_messages;
    drop sequence if exists baseline_message_positions;
    create sequence baseline_message_positions;
    create table baseline_messages (like events including all);
    alter table baseline_messages alter column position
        set default nextval('baseline_message_positions');
    create or replace function baseline_write_message(
        id uuid, stream text, type text, payload jsonb, meta jsonb, expected bigint
    ) returns bigint language plpgsql as $$
    declare
        current bigint;
    begin
        perform pg_advisory_xact_lock(hashtext(split_part(stream, '-', 1)));
        select coalesce(max(stream_version), 0) into current
            from baseline_messages where stream_id = stream;
        if expected is not null and current <> expected then
            raise exception 'wrong expected version % of %: it is at %', expected, stream, current;
        end if;
        insert into baseline_messages (event_id, stream_id, stream_version, event_type,
            schema_version, recorded_at, data, metadata)
        values (id, stream, current + 1, type, 1, clock_timestamp(), payload, meta);
        return current + 1;
    end $$;";

pub async fn run(
    deployment: &Deployment,
    deals: &[Uuid],
    clients: usize,
    duration: Duration,
    (data, metadata): (Value, Value),
) -> anyhow::Result<Figure> {
    deployment
        .pool
        .get()
        .await?
        .batch_execute(SETUP)
        .await
        .context("could not create the message-db-style baseline")?;
    let streams: Arc<[String]> = deals
        .iter()
        .map(|deal| format!("opportunity-{deal}"))
        .collect();
    let meter = cpu::Meter::start();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..clients {
        let (pool, streams) = (deployment.pool.clone(), streams.clone());
        let (data, metadata) = (data.clone(), metadata.clone());
        tasks.spawn(async move {
            let client = pool.get().await?;
            let write = client
                .prepare("select baseline_write_message($1, $2, 'ActivityLogged', $3, $4, null)")
                .await?;
            let mut random = Random(0x2545_F491_4F6C_DD1D ^ (seed as u64 + 1));
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let stream = &streams[random.below(streams.len())];
                let sent = Instant::now();
                client
                    .query_one(&write, &[&Uuid::now_v7(), stream, &data, &metadata])
                    .await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(finished) = tasks.join_next().await {
        latencies.extend(finished.context("a baseline-function client failed")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spent = meter.stop();
    let writes = latencies.len() as u64;
    let mut figure = Figure::new("baseline-function", clients as u64, "connections", "events")
        .measured(writes, elapsed)
        .against("baseline-insert", Compare::Throughput)
        .with("postgres_cpu_ms", cpu::ms_per(spent.postgres, writes))
        .with("generator_cpu_ms", cpu::ms_per(spent.process, writes));
    figure.latency = Some(Latency::of(&mut latencies));
    Ok(figure)
}
