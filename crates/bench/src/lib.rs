//! `dealstream bench`: load scenarios measured beside a baseline taken in the same run, against
//! the same servers, so that the figures are ratios that survive a noisy machine.
//!
//! Every run works in a scratch schema of its own (created, migrated and dropped here), so it
//! never touches a deployment's data. Scenarios live in their own modules; this one owns the
//! options, the deployment a run starts in-process, and the report. It reports what it measured
//! and never judges it: targets are for people to read in docs/performance.md.

mod commands;
mod deployment;
mod report;
mod stats;

use std::time::Duration;

pub use deployment::Deployment;
pub use report::{Figure, Report};

/// The scenarios `--scenario` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Single-event commands through the HTTP API, beside plain inserts.
    Commands,
    /// Every scenario.
    All,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// How long each measured step runs.
    #[arg(long, value_parser = parse_seconds, default_value = "10")]
    pub seconds: Duration,
    /// Client concurrencies to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub clients: Vec<usize>,
    /// Opportunities created before the command scenarios start.
    #[arg(long, default_value_t = 200)]
    pub deals: usize,
    /// Prints the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// Runs the chosen scenarios against a scratch schema in `database_url`'s database.
pub async fn run(database_url: &str, options: &BenchOptions) -> anyhow::Result<Report> {
    let deployment = Deployment::start(database_url).await?;
    let mut report = Report::new(&deployment, options).await?;
    let outcome = async {
        if matches!(options.scenario, Scenario::Commands | Scenario::All) {
            commands::run(&deployment, options, &mut report).await?;
        }
        anyhow::Ok(())
    }
    .await;
    deployment.stop().await;
    outcome.map(|()| report)
}
