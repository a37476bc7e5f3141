//! The `stream-length` scenario: the same single-event commands as `commands`, on deals whose
//! streams already hold 10, 100 and 1,000 events. A command must cost the same on a deal's
//! thousandth event as on its tenth, so each length's throughput is read against the shortest
//! one measured in the same run (`vs_shortest_streams`).

use anyhow::Context;
use commands::{CommandContext, OpportunityRequest};
use domain::opportunity::OpportunityCommand;
use domain::values::{ActivityId, ActivityKind, OpportunityId, Text};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::commands::drive_commands;
use crate::report::{Compare, Report};
use crate::workload::create_deals;
use crate::{BenchOptions, Deployment, Progress};

/// Deals per length: enough that 16 clients rarely collide on one deal, few enough that the
/// 1,000-event set is written in well under a minute.
const DEALS: usize = 64;
const CLIENTS: usize = 16;

pub async fn run(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &Progress,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut shortest_per_second = None;
    for &length in &options.stream_lengths {
        progress.step(format!("stream-length: {DEALS} deals of {length} events"));
        let deals = deals_of_length(deployment, length).await?;
        progress.step(format!("stream-length: commands on {length}-event streams"));
        let mut figure = drive_commands(deployment, &deals, CLIENTS, options.seconds).await?;
        figure.scenario = "stream-length";
        figure.level = length;
        figure.level_unit = "events per stream";
        figure.baseline = None;
        figure.compare = Compare::Throughput;
        let shortest = *shortest_per_second.get_or_insert(figure.per_second);
        if shortest > 0.0 {
            let ratio = figure.per_second / shortest;
            figure = figure.with("vs_shortest_streams", ratio);
        }
        report.figures.push(figure.with("clients", CLIENTS as f64));
    }
    Ok(())
}

/// Creates the deals, then logs activities on each until its stream holds `length` events.
async fn deals_of_length(deployment: &Deployment, length: u64) -> anyhow::Result<Vec<Uuid>> {
    let deals = create_deals(deployment, DEALS).await?;
    let summary = Text::parse("summary", "bench history", Text::SHORT)?;
    futures::stream::iter(deals.iter().copied())
        .map(|deal| {
            let summary = summary.clone();
            async move {
                for _ in 1..length {
                    let command = OpportunityCommand::LogActivity {
                        activity_id: ActivityId(Uuid::now_v7()),
                        kind: ActivityKind::Note,
                        summary: summary.clone(),
                        occurred_at: deployment.handler.now(),
                    };
                    deployment
                        .handler
                        .handle_opportunity(
                            &CommandContext::new("bench:setup"),
                            OpportunityId(deal),
                            OpportunityRequest::Other(command),
                        )
                        .await
                        .context("could not grow a bench deal's stream")?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(DEALS)
        .try_collect::<()>()
        .await?;
    Ok(deals)
}
