//! The `timers` scenario: follow-ups that all fall due at one instant, fired by the workflow.
//!
//! The workflow runs with a `ManualClock` shared with its command handler, and with no rules or
//! reminders, so the only timers are the follow-ups scheduled here, one per deal, through
//! `ScheduleFollowUp` commands. Once the workflow has planned them all, the clock jumps past
//! their due time and the scenario measures until every `FollowUpDue` is in the store:
//! follow-ups fired per second, and each one's delay from the jump to its event's
//! `recorded_at` (the database's clock, the same machine's as ours). The baseline sends as many
//! plain single-event commands (activities) through the same handler, at the concurrency the
//! timer loop fires with: what firing costs beyond the command it ends in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, TimeDelta, Utc};
use commands::{Clock, CommandContext, CommandHandler, OpportunityRequest};
use domain::opportunity::OpportunityCommand;
use domain::values::{ActivityId, ActivityKind, FollowUpId, FollowUpKind, OpportunityId, Text};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;
use workflow::{ManualClock, ServiceOptions, WorkflowConfig};

use crate::report::{Compare, Figure, Report};
use crate::stats::Latency;
use crate::workload::create_deals;
use crate::{BenchOptions, Deployment, Progress};

/// The timer loop's own firing concurrency (`FIRE_CONCURRENCY` in the workflow), which the
/// baseline's clients match.
pub const CONCURRENCY: usize = 16;
/// How long planning or firing may take before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(180);

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = options.timers.max(1);
    let clock = Arc::new(ManualClock::new(Utc::now().trunc_subsecs(6)));
    let handler = CommandHandler::new(deployment.store().clone(), clock.clone());
    progress.step("timers: starting the relay and the workflow");
    let relay = deployment.start_relay(deployment.relay_config()?).await?;
    let mut config = WorkflowConfig::default();
    config.rules.clear();
    config.reminders = workflow::config::Reminders::default();
    let service_options = ServiceOptions::new(
        deployment.subject_prefix.as_str(),
        deployment.stream_name.as_str(),
    );
    let workflow = deployment.spawn("workflow", {
        let (handler, nats, clock) = (handler.clone(), deployment.nats.clone(), clock.clone());
        move |shutdown| async move {
            workflow::run(config, handler, nats, service_options, clock, shutdown)
                .await
                .map_err(anyhow::Error::from)
        }
    });

    progress.step(format!("timers: scheduling {count} follow-ups"));
    let deals = create_deals(deployment, count).await?;
    let due_at = clock.now() + TimeDelta::days(1);
    let kind = FollowUpKind::parse("first-contact")?;
    let rule = Text::parse("rule", "bench", Text::SHORT)?;
    futures::stream::iter(&deals)
        .map(|deal| {
            let command = OpportunityCommand::ScheduleFollowUp {
                follow_up_id: FollowUpId(Uuid::now_v7()),
                kind: kind.clone(),
                due_at,
                rule: rule.clone(),
            };
            let handler = &handler;
            async move {
                handler
                    .handle_opportunity(
                        &CommandContext::new("bench:timers"),
                        OpportunityId(*deal),
                        OpportunityRequest::Other(command),
                    )
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    wait_until(
        deployment,
        "the workflow to plan every follow-up",
        || async {
            let pending = scalar(
                deployment,
                "select count(*) from workflow_timers where fired_at is null",
            )
            .await?;
            Ok(pending >= count as i64)
        },
    )
    .await?;

    progress.step(format!("timers: firing {count} follow-ups"));
    let jumped_at = Utc::now();
    let started = Instant::now();
    clock.advance(TimeDelta::days(1) + TimeDelta::seconds(1));
    wait_until(deployment, "every follow-up to fire", || async {
        let fired = scalar(
            deployment,
            "select count(*) from events where event_type = 'FollowUpDue'",
        )
        .await?;
        Ok(fired >= count as i64)
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut delays: Vec<Duration> = deployment
        .pool
        .get()
        .await?
        .query(
            "select recorded_at from events where event_type = 'FollowUpDue'",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let recorded_at: chrono::DateTime<Utc> = row.try_get(0)?;
            anyhow::Ok((recorded_at - jumped_at).to_std().unwrap_or_default())
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        !workflow.is_finished(),
        "the workflow stopped during the timers scenario"
    );
    workflow.stop().await?;
    relay.stop().await?;
    let mut fired = Figure::new("timers", count as u64, "due", "follow-ups")
        .measured(delays.len() as u64, elapsed)
        .against("timers-baseline", Compare::Throughput);
    fired.latency = Some(Latency::of(&mut delays));
    report.figures.push(fired);

    progress.step(format!("timers-baseline: {count} commands"));
    report
        .figures
        .push(baseline(&handler, &deals, count).await?);
    Ok(())
}

/// `count` activities logged through `handler`, `CONCURRENCY` at a time.
async fn baseline(
    handler: &CommandHandler,
    deals: &[Uuid],
    count: usize,
) -> anyhow::Result<Figure> {
    let summary = Text::parse("summary", "called about the follow-up", Text::LONG)?;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..count)
        .map(|index| {
            let command = OpportunityCommand::LogActivity {
                activity_id: ActivityId(Uuid::now_v7()),
                kind: ActivityKind::Call,
                summary: summary.clone(),
                occurred_at: handler.now(),
            };
            let deal = OpportunityId(deals[index % deals.len()]);
            async move {
                let sent = Instant::now();
                handler
                    .handle_opportunity(
                        &CommandContext::new("bench:timers"),
                        deal,
                        OpportunityRequest::Other(command),
                    )
                    .await?;
                anyhow::Ok(sent.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut figure = Figure::new("timers-baseline", count as u64, "due", "commands")
        .measured(latencies.len() as u64, elapsed)
        .with("concurrency", CONCURRENCY as f64);
    figure.latency = Some(Latency::of(&mut latencies));
    Ok(figure)
}

async fn scalar(deployment: &Deployment, sql: &str) -> anyhow::Result<i64> {
    let client = deployment.pool.get().await?;
    Ok(client.query_one(sql, &[]).await?.try_get(0)?)
}

/// Polls `check` every 5 ms until it holds, for at most `PATIENCE`.
async fn wait_until<F, Fut>(deployment: &Deployment, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while !check().await? {
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what} (schema {})",
            deployment.schema
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
