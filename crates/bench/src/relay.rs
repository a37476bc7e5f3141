//! The `relay` scenario: the relay catching up a backlog it has never published, beside a
//! baseline of raw pipelined JetStream publishes of the same payloads.
//!
//! The backlog is a generated opportunity history (see `history`), appended before the relay
//! starts; the figure runs from starting the relay on an empty stream until it has confirmed
//! the store's head, so it includes setting up the stream and the resume check. The baseline
//! publishes each event's envelope, serialised and addressed as the relay does it, with the
//! same de-duplication id and position header and as many acks in flight, into a scratch stream
//! of the same kind, from memory: no store reads and no expected-last-sequence chain. What the
//! relay adds over it is exactly those two.

use chrono::TimeDelta;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use relay::subject::{POSITION_HEADER, event_subject};

use crate::report::{Compare, Figure, Report};
use crate::{BenchOptions, Deployment, Progress, history};

/// Events read per query while preparing the baseline's messages.
const PREPARE_BATCH: i64 = 10_000;

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let store = deployment.store();
    let backlog = options.backlog.max(1);
    progress.counted("relay: appending the backlog", backlog);
    history::append(store, backlog, progress, 0, TimeDelta::zero()).await?;
    let head = store.head_position().await?;
    let in_flight = relay::DEFAULT_MAX_IN_FLIGHT;

    progress.counted("relay: catching up", head as u64);
    let config = deployment.relay_config()?;
    let stats = config.stats.clone();
    let started = Instant::now();
    let relay = deployment.start_relay(config).await?;
    while stats.last_published_position() < head {
        anyhow::ensure!(!relay.is_finished(), "the relay stopped while catching up");
        progress.set(stats.last_published_position() as u64);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    relay.stop().await?;

    progress.step("relay-raw: preparing the same payloads");
    let messages = prepare(deployment).await?;
    let payload_bytes = messages
        .iter()
        .map(|message| message.payload.len())
        .sum::<usize>() as f64
        / messages.len().max(1) as f64;
    report.figures.push(
        Figure::new("relay", in_flight as u64, "in flight", "events")
            .measured(stats.confirmed(), elapsed)
            .against("relay-raw", Compare::Throughput)
            .with("payload_bytes", payload_bytes.round()),
    );
    progress.counted("relay-raw: publishing", messages.len() as u64);
    let raw = publish_raw(deployment, messages, in_flight, progress).await?;
    report
        .figures
        .push(raw.with("payload_bytes", payload_bytes.round()));
    Ok(())
}

/// One event as the relay would publish it.
struct Message {
    subject: String,
    payload: Vec<u8>,
    event_id: String,
    position: i64,
}

/// Every event of the store, serialised and addressed as the relay does it, under the scratch
/// stream's prefix.
async fn prepare(deployment: &Deployment) -> anyhow::Result<Vec<Message>> {
    let prefix = raw_prefix(deployment);
    let mut messages = Vec::new();
    let mut after = 0;
    loop {
        let events = deployment
            .store()
            .read_all(after, PREPARE_BATCH, None)
            .await?;
        let Some(last) = events.last() else { break };
        after = last.position;
        for event in &events {
            messages.push(Message {
                subject: event_subject(&prefix, event),
                payload: serde_json::to_vec(event)?,
                event_id: event.event_id.to_string(),
                position: event.position,
            });
        }
    }
    Ok(messages)
}

fn raw_prefix(deployment: &Deployment) -> String {
    format!("{}_raw", deployment.subject_prefix)
}

async fn publish_raw(
    deployment: &Deployment,
    messages: Vec<Message>,
    in_flight: usize,
    progress: &Progress,
) -> anyhow::Result<Figure> {
    let prefix = raw_prefix(deployment);
    let stream = format!("{}_RAW", deployment.stream_name);
    deployment
        .jetstream
        .create_stream(jetstream::stream::Config {
            name: stream,
            subjects: vec![relay::subject::stream_subjects(&prefix)],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: relay::DEFAULT_DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .context("could not create the raw publish stream")?;
    // The relay's client settings, so that only the relay's own work differs.
    let context = jetstream::ContextBuilder::new()
        .timeout(relay::DEFAULT_ACK_TIMEOUT)
        .ack_timeout(relay::DEFAULT_ACK_TIMEOUT)
        .max_ack_inflight(in_flight.saturating_mul(4))
        .backpressure_on_inflight(true)
        .build(deployment.nats.clone());
    let count = messages.len() as u64;
    let mut pending = VecDeque::with_capacity(in_flight);
    let mut confirmed = 0u64;
    let started = Instant::now();
    for message in messages {
        if pending.len() >= in_flight {
            let ack: jetstream::context::PublishAckFuture =
                pending.pop_front().context("a publish in flight")?;
            ack.await.context("a raw publish was refused")?;
            confirmed += 1;
            if confirmed % 4096 == 0 {
                progress.set(confirmed);
            }
        }
        let publish = PublishMessage::build()
            .payload(message.payload.into())
            .message_id(message.event_id)
            .header(POSITION_HEADER, message.position.to_string());
        pending.push_back(
            context
                .send_publish(message.subject, publish)
                .await
                .context("a raw publish failed")?,
        );
    }
    for ack in pending {
        ack.await.context("a raw publish was refused")?;
        confirmed += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(confirmed == count, "raw publishes went missing");
    Ok(
        Figure::new("relay-raw", in_flight as u64, "in flight", "events")
            .measured(confirmed, elapsed),
    )
}
