//! The `dealstream` binary: reads the settings, initialises tracing, wires the adapters and runs
//! the chosen service until it ends or a shutdown signal arrives. Every subcommand's logic lives in
//! a library crate; this file only connects them and reports how they ended.

mod demo;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commands::{CommandHandler, SystemClock};
use domain::values::parse_owner;
use eventstore::EventStore;
use platform::{CancellationToken, Settings};

#[derive(Parser)]
#[command(
    name = "dealstream",
    version,
    about = "Event-sourced opportunity management"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies pending database migrations and exits.
    Migrate,
    /// Serves the HTTP API.
    Api,
    /// Runs every service in one process, for a single node.
    Run,
    /// Writes a realistic sample history through the command layer and prints a summary.
    Demo(demo::DemoArgs),
    /// Measures throughput and latency beside baselines taken in the same run, in a scratch
    /// schema of the configured database.
    Bench(bench::BenchOptions),
}

/// Database connections each process keeps; enough for group commit plus concurrent reads on a
/// small node.
const POOL_SIZE: usize = 16;

/// Owner of a deal converted from a lead nobody was routed to.
const DEFAULT_OWNER: &str = "unassigned";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    platform::telemetry::init(settings.log_format);
    let shutdown = platform::shutdown_signal();
    let result = match cli.command {
        Command::Migrate => migrate(&settings).await,
        Command::Api | Command::Run => serve_api(&settings, shutdown).await,
        Command::Demo(arguments) => {
            let handler = command_handler(&settings).await?;
            demo::run(&handler, &arguments).await
        }
        Command::Bench(options) => run_bench(&settings, &options).await,
    };
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "dealstream stopped with an error"
        );
    }
    result
}

async fn connect(settings: &Settings) -> anyhow::Result<EventStore> {
    let pool = eventstore::pool_from_url(settings.database_url.expose(), POOL_SIZE)
        .with_context(|| format!("invalid DATABASE_URL {}", settings.database_url.redacted()))?;
    eventstore::migrate(&pool).await.with_context(|| {
        format!(
            "could not migrate the database at {}",
            settings.database_url.redacted()
        )
    })?;
    Ok(EventStore::new(pool))
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    connect(settings).await?;
    tracing::info!("database migrated");
    Ok(())
}

async fn command_handler(settings: &Settings) -> anyhow::Result<CommandHandler> {
    let store = connect(settings).await?;
    let handler = CommandHandler::new(store, Arc::new(SystemClock));
    handler
        .ensure_default_pipeline()
        .await
        .context("could not define the default pipeline")?;
    Ok(handler)
}

async fn serve_api(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handler = command_handler(settings).await?;
    let default_owner = parse_owner(DEFAULT_OWNER).context("default owner")?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("could not listen on {}", settings.http_addr))?;
    api::serve(
        listener,
        api::AppState::new(handler, default_owner),
        shutdown,
    )
    .await
    .context("http server failed")
}

async fn run_bench(settings: &Settings, options: &bench::BenchOptions) -> anyhow::Result<()> {
    let report = bench::run(settings.database_url.expose(), options).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
