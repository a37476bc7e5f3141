//! `dealstream bench`: load scenarios measured beside a baseline taken in the same run, against
//! the same servers, so that the figures are ratios that survive a noisy machine.
//!
//! Every scenario works in a scratch deployment of its own: a schema created, migrated and
//! dropped here, and a JetStream stream and subject prefix derived from that schema, deleted at
//! the end. So scenarios never touch a deployment's data nor each other's (the timers scenario's
//! workflow does not wade through the commands scenario's events, the rebuild's history holds
//! only what it generated). Scenarios live in their own modules; this one owns the options, the
//! order they run in, and the report. It reports what it measured and never judges it: targets
//! are for people to read in docs/performance.md.
//!
//! Read next: `commands` (the shape every scenario follows), then `deployment`.

mod analytics;
mod asof;
mod commands;
mod cpu;
mod deployment;
mod function_baseline;
mod history;
mod lag;
mod memory;
mod progress;
mod rebuild;
mod relay;
mod report;
mod stats;
mod stream_length;
mod timers;
mod workload;

use std::io::IsTerminal;
use std::time::Duration;

use clap::Parser;

pub use deployment::Deployment;
pub use progress::Progress;
pub use report::{Compare, Figure, Report};

/// The scenarios `--scenario` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Single-event commands through the HTTP API, beside plain inserts.
    Commands,
    /// The same commands on streams of 10, 100 and 1,000 events, side by side.
    StreamLength,
    /// Commands at a steady rate, and the time until the pipeline read model shows each one.
    Lag,
    /// The relay catching up a backlog, beside raw pipelined JetStream publishes.
    Relay,
    /// `projections rebuild pipeline`, beside reading the same events in order.
    Rebuild,
    /// Follow-ups falling due at one instant, beside plain single-event commands.
    Timers,
    /// The forecast as of random instants over a large history, beside the live forecast.
    Asof,
    /// Historical win rates and a six-quarter backtest over a large history, beside reading it.
    Analytics,
    /// Every scenario.
    All,
}

impl Scenario {
    fn includes(self, scenario: Scenario) -> bool {
        self == Scenario::All || self == scenario
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// How long each measured step of `commands` and `lag` runs.
    #[arg(long, value_parser = parse_seconds, default_value = "10")]
    pub seconds: Duration,
    /// Client concurrencies of `commands`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub clients: Vec<usize>,
    /// Opportunities created before `commands` and `lag` start.
    #[arg(long, default_value_t = 200)]
    pub deals: usize,
    /// Events per stream that `stream-length` measures commands at, comma-separated; each is
    /// read against the first.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub stream_lengths: Vec<u64>,
    /// Commands per second `lag` asks for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200,500,1000")]
    pub rates: Vec<u32>,
    /// Events the relay catches up in `relay`.
    #[arg(long, default_value_t = 200_000)]
    pub backlog: u64,
    /// Opportunity events in the history `rebuild` replays. Memory is also measured at a fifth of
    /// this (200,000 by default), to show it does not grow with the history.
    #[arg(long, default_value_t = 1_000_000)]
    pub rebuild_events: u64,
    /// Opportunity events in the history `asof` asks the forecast of.
    #[arg(long, default_value_t = 1_000_000)]
    pub asof_events: u64,
    /// Forecast queries `asof` makes of each kind (live, as of any instant, an old one, a
    /// recent one).
    #[arg(long, default_value_t = 200)]
    pub asof_queries: usize,
    /// Opportunity events, occurred over the last 18 months, that `analytics` computes win rates
    /// and a backtest over.
    #[arg(long, default_value_t = 1_000_000)]
    pub analytics_events: u64,
    /// Follow-ups that fall due at one instant in `timers`.
    #[arg(long, default_value_t = 2_000)]
    pub timers: usize,
    /// Prints the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchOptions {
    /// The options with every default `dealstream bench` uses, for tests and callers that
    /// change only a few.
    pub fn defaults() -> BenchOptions {
        #[derive(Parser)]
        struct Command {
            #[command(flatten)]
            options: BenchOptions,
        }
        Command::parse_from(["bench"]).options
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// Runs the chosen scenarios against scratch schemas in `database_url`'s database and scratch
/// streams on `nats_url`. A progress bar goes to stderr when it is a terminal.
pub async fn run(
    database_url: &str,
    nats_url: &str,
    options: &BenchOptions,
) -> anyhow::Result<Report> {
    let progress = Progress::new(std::io::stderr().is_terminal());
    let mut report = Report::new(database_url, nats_url, options).await?;
    let scenario = options.scenario;
    // Cheapest first, so that a failing server shows up early; rebuild before relay, so that
    // the relay baseline's payloads held in memory cannot inflate rebuild's memory figures.
    if scenario.includes(Scenario::Commands) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = commands::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::StreamLength) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = stream_length::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Lag) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = lag::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Timers) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = timers::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Rebuild) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = rebuild::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Asof) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = asof::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Analytics) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = analytics::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    if scenario.includes(Scenario::Relay) {
        let deployment = Deployment::start(database_url, nats_url).await?;
        let outcome = relay::run(&deployment, options, &progress, &mut report).await;
        deployment.stop().await;
        outcome?;
    }
    progress.finish();
    report.link_baselines();
    Ok(report)
}
